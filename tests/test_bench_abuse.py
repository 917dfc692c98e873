"""``picospec bench abuse --quick`` end to end: real server and attacker processes.

A smoke test of the benchmark's plumbing (it asserts that every scenario ran
and that the well-behaved edge's tokens never changed under attack), not of
its timings.
"""

from __future__ import annotations

import pytest

from picospec.lab.bench import abuse

pytestmark = [pytest.mark.models, pytest.mark.slow]


def test_quick_abuse_runs_every_attack_and_the_edge_keeps_its_tokens(smollm2):
    result = abuse.run(abuse.QUICK)
    assert [r["scenario"] for r in result["rows"]] == list(abuse.SCENARIOS)
    assert result["violations"] == [] and all(r["same_tokens"] for r in result["rows"])
    assert all(r["rss_peak_mb"] >= r["rss_after_mb"] > 0 for r in result["rows"])
    table = abuse.render(result)
    assert all(name in table for name in abuse.SCENARIOS)
