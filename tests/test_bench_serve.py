"""``picospec bench serve``: the replaying drafter, and a short run end to end.

The end-to-end run is a smoke test of the benchmark's plumbing (real server
processes, real clients over QUIC): every point ran, every generation decoded
exactly the target's recorded output, the JSON lines carry the promised fields,
and unbatched scheduling never put two connections in one turn. It asserts
nothing about timings.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from markov import markov_fingerprint

from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.scheme import Mode
from picospec.codec.sparse import Q_ONE
from picospec.lab.bench.serve import Plan, Recording, ReplayDrafter, parse_edges, parse_modes


def replay() -> ReplayDrafter:
    rec = Recording(prompts=[[1, 2]], outputs=[[3, 4]])
    rec.drafts[(1, 2)] = (3, np.array([3, 5]), np.array([Q_ONE - 100, 100]))
    rec.drafts[(1, 2, 3)] = (5, np.array([5]), np.array([Q_ONE]))
    return ReplayDrafter(rec, markov_fingerprint(), 6, lambda t: t == 4)


def test_the_replay_drafts_what_was_recorded_and_counts_what_was_not():
    d = replay()
    d.prefill([1, 2])
    d.begin([1, 2], 0, None)
    drafts = d.draft(3)
    assert [x.token for x in drafts] == [3, 5, 0]
    assert drafts[0].q is not None and drafts[0].q.prob(5) == pytest.approx(100 / Q_ONE)
    assert d.misses == 1 and d.drafted == 3
    d.rollback(3)
    d.push(4)
    assert d.tokens == [1, 2, 3, 4] and d.is_end(4)
    with pytest.raises(PicospecError, match="cannot decode on its own"):
        d.sample_own()


def test_the_plan_refuses_what_it_cannot_run():
    with pytest.raises(ConfigError, match=r"1\.\.16"):
        Plan(edges=(0, 2))
    with pytest.raises(ConfigError, match=r"1\.\.16"):
        Plan(edges=(32,))
    with pytest.raises(ConfigError, match="commas"):
        parse_edges("1,two")
    assert parse_modes("pipeline, cloud-led") == (Mode.PIPELINE, Mode.CLOUD_LED)
    with pytest.raises(ConfigError, match="--modes takes modes from pipeline"):
        parse_modes("pipeline,fast")
    with pytest.raises(ConfigError, match="--modes takes modes from pipeline"):
        Plan(modes=(Mode.EDGE_ONLY,))


@pytest.mark.models
@pytest.mark.slow
def test_a_short_bench_serve_decodes_exactly_and_prints_one_json_line_per_point(smollm2):
    cmd = [sys.executable, "-m", "picospec", "bench", "serve", "--edges", "1,2",
           "--modes", "pipeline,cloud-only", "--max-tokens", "8", "--generations", "1",
           "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted((r["mode"], r["edges"], r["batched"]) for r in rows) == [
        (mode, n, batched)
        for mode in ("cloud-only", "pipeline")
        for n in (1, 2)
        for batched in (False, True)
    ]
    for r in rows:
        want = "between verdicts" if r["mode"] == "cloud-only" else "block to verdict"
        assert r["latency"] == want
        assert {"aggregate_tok_s", "p50_verdict_ms", "p99_verdict_ms"} <= r.keys()
        assert r["wrong_generations"] == 0 and r["tokens"] > 0
        assert r["p99_verdict_ms"] >= r["p50_verdict_ms"] > 0
        if not r["batched"]:
            assert r["mean_batch"] == 1.0
