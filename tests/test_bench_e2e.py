"""bench e2e: the plan, the contract checks, the summaries, and the quick preset end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from picospec.cli import main
from picospec.codec.errors import ConfigError
from picospec.lab.bench import analysis, e2e, report


def fake_run(**kw):
    run = {
        "mode": "pipeline", "scheme": "greedy", "temperature": 0.0, "rtt_ms": 50.0,
        "rate_mbit": 10.0, "gamma": 4, "depth": 3, "seed": 1, "prompt": 0, "repeat": 0,
        "groups": ["grid"], "prompt_tokens": 30, "n_tokens": 8, "finished": "max tokens",
        "token_ids": [1, 2, 3, 4, 5, 6, 7, 8], "seconds": 0.5, "tok_per_s": 16.0,
        "ttft_ms": 100.0, "rounds": 2, "blocks": [[4, 4], [3, 4]], "mean_accept_len": 3.5,
        "accept_per_position": [1.0, 1.0, 1.0, 0.5], "exact": True, "bytes_up": 200,
        "bytes_down": 90, "wire_up": 0, "wire_down": 0, "target_forwards": 3, "drafted": 8,
        "draft_ms": 6.0, "drafter_prefill_ms": 20.0,
        "forward_ms": {"30": [60.0], "5": [25.0], "4": [22.0]},
        "cloud_busy_ms": 110.0, "cloud_work_units": 4,
    }  # fmt: skip
    run.update(kw)
    return run


def test_plan_merges_groups_that_share_a_point_and_covers_every_group():
    points = e2e.Plan().points()
    keys = [(p.scheme, p.rtt, p.rate, p.gamma, p.depth) for p in points]
    assert len(keys) == len(set(keys))
    base = next(p for p in points if p.scheme == "greedy" and (p.rtt, p.rate) == (50.0, 10.0)
                and p.gamma == 4 and p.depth == 3)  # fmt: skip
    assert set(base.groups) == {"grid", "gamma", "depth"}
    assert base.modes == ("cloud-only", "sync", "pipeline", "cloud-led", "auto")
    sparse = next(p for p in points if p.scheme == "sparse-q")
    assert sparse.modes == ("cloud-only", "sync", "pipeline", "auto")  # cloud-led needs gumbel
    assert {g for p in e2e.QUICK.points() for g in p.groups} == {
        "grid",
        "schemes",
        "gamma",
        "depth",
    }


def test_plan_refuses_a_base_point_outside_the_sweep_and_unknown_schemes():
    with pytest.raises(ConfigError, match="base RTT"):
        replace(e2e.Plan(), rtts=(0.0, 20.0))
    with pytest.raises(ConfigError):
        replace(e2e.Plan(), schemes=("telepathy",))


def test_contract_violations_are_named():
    cloud = fake_run(mode="cloud-only")
    good = fake_run()
    assert e2e.violations([cloud, good]) == []
    wrong = fake_run(token_ids=[1, 2, 3, 9, 5, 6, 7, 8], repeat=1)
    cut = fake_run(finished="connection lost after 3 committed tokens: idle timeout")
    found = e2e.violations([cloud, good, wrong, cut])
    assert any("greedy output differs from cloud-only" in v and "repeat 1" in v for v in found)
    assert any("did not finish: connection lost" in v for v in found)
    a = fake_run(scheme="sparse-q", temperature=0.7)
    b = fake_run(scheme="sparse-q", temperature=0.7, rtt_ms=0.0, token_ids=[8, 7, 6, 5])
    assert any("differ from the same seed" in v for v in e2e.violations([a, b]))


def test_aggregate_puts_speedups_against_the_same_link():
    runs = [
        fake_run(mode="cloud-only", depth=3, tok_per_s=40.0),
        fake_run(mode="sync", depth=1, tok_per_s=20.0),
        fake_run(tok_per_s=30.0),
        fake_run(tok_per_s=34.0, repeat=1),
        fake_run(mode="cloud-only", rtt_ms=0.0, tok_per_s=80.0),
    ]
    rows = {(r["mode"], r["rtt_ms"]): r for r in analysis.aggregate(runs)}
    pipe = rows[("pipeline", 50.0)]
    assert pipe["runs"] == 2 and pipe["tok_per_s"] == 32.0
    assert pipe["vs_cloud_only"] == pytest.approx(0.8) and pipe["vs_sync"] == pytest.approx(1.6)
    assert pipe["forwards_per_token"] == pytest.approx(3 / 8)


def test_each_run_gets_the_model_and_the_simulator_from_its_own_costs():
    result = {
        "forward_ms_by_size": {"1": 10.0},
        "runs": [fake_run(), fake_run(mode="sync", depth=1)],
    }
    analysis.annotate(result)
    for run in result["runs"]:
        assert run["model_tok_per_s"] > 0 and run["sim_tok_per_s"] > 0
    # the sizes the run never evaluated come from the sweep's table
    table = analysis.verify_table_ms(fake_run(), {"1": 10.0, "2": 12.0})
    assert table[:5] == (10.0, 12.0, 14.0, 22.0, 25.0)


@pytest.mark.models
@pytest.mark.slow
def test_quick_preset_measures_validates_and_reports(tmp_path, smollm2):
    plan = replace(e2e.QUICK, exactness_n=20)
    result = e2e.run(plan, "smollm2")
    assert result["violations"] == []
    md = report.write(result, tmp_path)
    text = md.read_text()
    for heading in ("## Validation", "## Table 1", "## Time model and simulator", "## Schemes",
                    "## Exactness", "## Projection", "## auto and cloud-led",
                    "## The paper's regime"):  # fmt: skip
        assert heading in text
    for png in ("tok_s_vs_rtt", "bytes_per_token", "measured_vs_predicted", "paper_regime"):
        assert (tmp_path / "plots" / f"{png}.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "e2e.json").read_text())
    assert len(saved["runs"]) == len(result["runs"]) > 0
    assert all(r["sim_tok_per_s"] > 0 and r["model_tok_per_s"] > 0 for r in saved["runs"])
    modes = {"cloud-only", "edge-only", "sync", "pipeline", "cloud-led", "auto"}
    assert {r["mode"] for r in saved["runs"]} == modes
    autos = [r for r in saved["runs"] if r["mode"] == "auto"]
    assert all(r["plan"].startswith("auto: " + r["chose"]["mode"]) for r in autos)
    # the report can be rewritten from the saved file alone
    assert (
        main(["bench", "report", str(tmp_path / "e2e.json"), "--out", str(tmp_path / "again")]) == 0
    )
    assert (tmp_path / "again" / "RESULTS.md").read_text().count("| pipeline |") > 0
    # and its traces replayed by `picospec sim`
    assert main(["sim", "--trace", str(tmp_path / "e2e.json"), "--rtt", "100"]) == 0


def test_report_load_refuses_other_files(tmp_path):
    other = tmp_path / "x.json"
    other.write_text('{"kind": "something else"}')
    with pytest.raises(ConfigError, match="not a `picospec bench e2e` result"):
        report.load(other)


def test_projection_needs_more_acceptance_for_more_speedup():
    regime = next(iter(analysis.REGIMES))
    low, high = analysis.acceptance_for(1.5, regime), analysis.acceptance_for(2.5, regime)
    assert low is not None and high is not None and 0 < low < high < 1
    assert analysis.acceptance_for(50.0, regime) is None  # beyond the drafter's own rate
