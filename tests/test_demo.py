"""``picospec demo`` on the real pair (shorter generations): every mode, auto
included, agrees token for token under greedy decoding, auto says what it chose
and why, and the outage generation runs locally
while the link is down, marks that text, and keeps the cloud-only prefix."""

from __future__ import annotations

import re

import pytest

from picospec.lab import demo

pytestmark = [pytest.mark.models, pytest.mark.slow]


def test_the_demo_runs_auto_every_mode_and_an_outage(smollm2, capsys):
    assert demo.run(max_tokens=64) == 0
    out = capsys.readouterr().out
    assert "every mode matches cloud-only token for token" in out
    first = out.index("--- auto ---")
    assert first < out.index("--- pipeline ---")
    plans = re.findall(r"^\[auto: (cloud-only|cloud-led|pipeline|sync)\b[^\n]*\]$", out, re.M)
    assert len(plans) == 2, out  # one line each time: the mode and why
    summary = re.search(
        r"\[64 tokens: (\d+) verified by the cloud, (\d+) made locally in [\d.]+ s offline; "
        r"(\d+) datagrams lost to the outage; the verified prefix matches cloud-only\]",
        out,
    )
    assert summary is not None, out
    verified, local, lost = map(int, summary.groups())
    assert verified >= 12 and local > 0 and lost > 0 and verified + local == 64
    assert demo.LOCAL[0] in out and demo.LOCAL[1] in out
