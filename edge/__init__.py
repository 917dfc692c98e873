"""picospec.edge: the device side.

The drafter (a small GGUF model run by llama.cpp), the edge session that keeps
drafting while the cloud verifies, the QUIC client, and the Python API for
robot applications. Imports ``picospec.codec``, never ``picospec.cloud``.
"""
