"""Benchmarks behind ``picospec bench``: validate first, then time, then report ratios."""
