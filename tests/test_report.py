"""The bench e2e report: its prose follows the numbers, its tables show the rows, and a results
file is read back only when it is one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from picospec.codec.errors import ConfigError
from picospec.lab.bench import narrative, report, results, tables


def run(**kw):
    """One annotated run (model and simulator columns included), pipeline at the base point."""
    r = {
        "mode": "pipeline", "scheme": "greedy", "temperature": 0.0, "rtt_ms": 50.0,
        "rate_mbit": 10.0, "gamma": 4, "depth": 3, "seed": 1, "prompt": 0, "repeat": 0,
        "style": "maths", "groups": ["grid"], "prompt_tokens": 30, "n_tokens": 11,
        "finished": "max tokens", "token_ids": list(range(11)), "seconds": 1.1,
        "tok_per_s": 10.0, "ttft_ms": 100.0, "rounds": 3, "blocks": [[4, 4], [3, 4], [2, 4]],
        "mean_accept_len": 3.0, "accept_per_position": [1.0, 1.0, 0.5, 0.0], "exact": True,
        "bytes_up": 200, "bytes_down": 90, "target_forwards": 4, "drafted": 12,
        "draft_ms": 80.0, "drafter_prefill_ms": 20.0,
        "forward_ms": {"30": [60.0], "5": [25.0], "4": [22.0]}, "cloud_busy_ms": 110.0,
        "model_tok_per_s": 10.0, "sim_tok_per_s": 10.0,
    }  # fmt: skip
    r.update(kw)
    if r["mode"] == "pipeline":
        r.setdefault("sim_abandon_tok_per_s", 10.0)
    return r


def cloud_run(**kw):
    """A cloud-only run: ten 20 ms decode steps after a 60 ms prefill, 21 ms a token of wall."""
    base = dict(
        mode="cloud-only", rounds=0, blocks=[], drafted=0, draft_ms=0.0, n_tokens=11,
        seconds=0.31, ttft_ms=100.0, tok_per_s=35.5, model_tok_per_s=36.0,
        sim_tok_per_s=36.0, forward_ms={"30": [60.0], "1": [20.0] * 10}, cloud_busy_ms=265.0,
    )  # fmt: skip
    base.update(kw)
    return run(**base)


PLAN = {
    "rtts": [0.0, 50.0], "rates": [10.0], "schemes": ["greedy"], "gammas": [4], "depths": [3],
    "base_rtt": 50.0, "base_rate": 10.0, "base_gamma": 4, "base_depth": 3, "temperature": 0.7,
    "prompts_per_style": 1, "repeats": 1, "max_tokens": 11,
}  # fmt: skip
MACHINE = {"cpu": "Test CPU", "cores": 2, "python": "3.11", "versions": {"picospec": "0"},
           "date": "today"}  # fmt: skip


def result(runs, **kw):
    """A results dict around runs: the plan's base point is RTT 50 ms, 10 Mbit/s, gamma 4;
    the pair is one network (Net-1B) at two quantisations."""
    r = {
        "kind": results.KIND,
        "pair": "smollm2",
        "plan": PLAN,
        "machine": MACHINE,
        "models": [
            {"role": "target", "path": "/m/Net-1B.Q4_1.gguf", "sha256": "a" * 64},
            {"role": "drafter", "path": "/m/Net-1B.Q2_K.gguf", "sha256": "b" * 64},
        ],
        "forward_ms_by_size": {"1": 20.0, "5": 56.0},
        "runs": runs,
        "violations": [],
        "seconds": 60.0,
    }
    r.update(kw)
    return r


def row(**kw):
    """One aggregated row, as ``analysis.aggregate`` gives it."""
    r = {
        "scheme": "greedy", "rtt_ms": 50.0, "rate_mbit": 10.0, "gamma": 4, "depth": 3,
        "mode": "pipeline", "groups": ["grid"], "runs": 2, "tok_per_s": 20.0,
        "tok_per_s_sd": 1.5, "mean_accept_len": 3.02, "ttft_ms": 300.0, "round_ms": 140.7,
        "draft_ms": 19.0, "t_draft_ms": 76.0, "t_verify_ms": 48.9, "up_bytes_per_token": 24.2,
        "down_bytes_per_token": 10.3, "forwards_per_token": 0.52, "exact": True,
        "vs_cloud_only": 0.5, "vs_sync": 1.1, "model_tok_per_s": 21.0, "sim_tok_per_s": 20.5,
    }  # fmt: skip
    r.update(kw)
    return r


def edge_and(step_alone: float, step_beside: float, **kw):
    """An edge-only run with the drafter's step alone, and a pipeline run with it beside the
    verifier (its drafter busy drafted * step / (seconds - ttft) of the time)."""
    return [
        run(mode="edge-only", draft_ms=step_alone, rounds=0, blocks=[]),
        run(draft_ms=step_beside, **kw),
    ]


def bullet(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


# the prose follows the data


def test_contention_is_reported_only_when_the_drafter_slows_beside_the_verifier():
    calm = bullet(narrative.why(result(edge_and(80.0, 84.0))), "- The drafter step")
    assert "do not slow each other much (+5%)" in calm
    assert "contention is not what limits" in calm
    busy = bullet(narrative.why(result(edge_and(80.0, 100.0))), "- The drafter step")
    assert "slows the drafter's step by 25%" in busy
    assert "contention is not" not in busy


def test_the_drafter_is_called_the_limit_only_when_it_is_busy_most_of_the_time():
    # 12 drafts of 80 ms in 1000 ms after the first token: busy 96%
    limit = bullet(narrative.why(result(edge_and(80.0, 80.0))), "- The drafter step")
    assert "the drafter's speed is (it is busy 96%" in limit
    idle = bullet(narrative.why(result(edge_and(80.0, 80.0, drafted=6))), "- The drafter step")
    assert "nor is the drafter's speed (it is busy only 48%" in idle


def test_sync_close_to_the_model_is_the_protocol_and_far_from_it_is_not():
    close = narrative.why(result([run(mode="sync", depth=1, model_tok_per_s=10.1)]))
    assert "the closed form is the protocol" in bullet(close, "- **sync**")
    far = bullet(
        narrative.why(result([run(mode="sync", depth=1, model_tok_per_s=12.5)])), "- **sync**"
    )
    assert "0.80x the model" in far and "20% off" in far and "leave out" in far
    assert "is the protocol" not in far


def gap_runs(measured: dict[float, float]):
    """Grid pipeline runs at each RTT with measured/model as given (the model at 10 tok/s);
    the simulator matches the measurements and its abandon what-if matches the model."""
    return [
        run(rtt_ms=rtt, tok_per_s=10.0 * ratio, sim_tok_per_s=10.0 * ratio)
        for rtt, ratio in measured.items()
    ]


def test_the_gap_is_placed_at_the_rtt_where_it_is_largest():
    low = bullet(
        narrative.why(result(gap_runs({0.0: 0.90, 100.0: 0.98}))),
        "- **pipeline**",
    )
    assert "largest at the lowest RTT (10.0% at 0 ms, against 2.0% at 100 ms)" in low
    assert "where a serial round is short" in low
    high = bullet(
        narrative.why(result(gap_runs({0.0: 0.98, 100.0: 0.90}))),
        "- **pipeline**",
    )
    assert "largest at the highest RTT (10.0% at 100 ms, against 2.0% at 0 ms)" in high
    assert "serial round is short" not in high


def test_a_gap_that_barely_changes_with_rtt_is_called_the_same_at_every_rtt():
    text = narrative.why(result(gap_runs({0.0: 0.95, 100.0: 0.96})))
    assert "about the same at every RTT (4.0% to 5.0% in the grid)" in text


def test_the_drafter_wait_explains_the_pipeline_only_when_removing_it_closes_the_gap():
    closes = narrative.why(result(gap_runs({0.0: 0.9, 100.0: 0.9})))
    assert "The difference is one thing the closed form leaves out" in closes
    # the what-if leaves the simulator 10% short of the model
    runs = [
        run(rtt_ms=0.0, tok_per_s=8.0, sim_tok_per_s=8.5, sim_abandon_tok_per_s=9.0),
        run(rtt_ms=100.0, tok_per_s=8.0, sim_tok_per_s=8.5, sim_abandon_tok_per_s=9.0),
    ]
    stays = narrative.why(result(runs))
    assert "that wait is not the whole difference" in stays
    assert "leaves out: the edge applies" not in stays


def test_a_pipeline_that_matches_the_model_needs_no_explanation():
    text = narrative.why(result([run(tok_per_s=9.9)]))
    assert "The closed form accounts for the pipeline too." in text
    assert "The gap is" not in text


def test_cloud_only_splits_the_time_beyond_the_forward_on_and_off_the_model_thread():
    text = bullet(narrative.why(result([cloud_run()])), "- **cloud-only**")
    # 21.0 ms a token of wall, 20.0 ms forward, 20.5 ms a token on the model thread
    assert "21.0 ms of wall time against 20.0 ms" in text
    assert "of the other 1.0 ms, 0.5 ms is on the model thread" in text
    assert "0.5 ms outside it" in text
    alone = bullet(narrative.why(result([cloud_run(seconds=0.3)])), "- **cloud-only**")
    assert "the forward is all of it" in alone


def test_regime_says_whether_speculative_decoding_beat_cloud_only():
    lost = narrative.regime(
        result([]), [row(vs_cloud_only=0.6), row(mode="sync", vs_cloud_only=0.5)]
    )
    assert "does not beat the target decoding alone here" in lost
    assert "reaches 0.60x cloud-only (greedy pipeline at RTT 50 ms" in lost
    won = narrative.regime(
        result([]), [row(vs_cloud_only=1.3), row(mode="sync", vs_cloud_only=0.9)]
    )
    assert "beats the target decoding alone in 1 of 2 configurations here, by up to 1.30x" in won


def test_regime_compares_the_drafter_step_with_the_decode_step():
    same = narrative.regime(result([*edge_and(19.0, 20.0), cloud_run()]), [])
    assert "costs about as much as a target decode step (19.0 ms against 20.0 ms)" in same
    fast = narrative.regime(result([*edge_and(5.0, 5.0), cloud_run()]), [])
    assert "is 4.0x faster than a target decode step (5.0 ms against 20.0 ms)" in fast


def test_regime_calls_a_verify_forward_flat_only_when_it_barely_grows():
    steep = narrative.regime(result([]), [])
    assert "over 5 tokens costs 2.8x one decode step" in steep and "well over" in steep
    flat = narrative.regime(result([], forward_ms_by_size={"1": 20.0, "5": 22.0}), [])
    assert "costs only 1.1x one decode step" in flat and "little more than" in flat


def test_validation_claims_clean_runs_only_without_violations():
    clean = narrative.validation(result([run()]))
    assert "each finished cleanly" in clean and "**No violations.**" in clean
    broken = narrative.validation(result([run()], violations=["greedy pipeline: did not finish"]))
    assert "each finished cleanly" not in broken
    assert "**1 violation(s):**" in broken and "- greedy pipeline: did not finish" in broken


def exactness(*rows):
    return {"prompt": "p", "length": 3, "k": 8, "rows": list(rows)}


def ex_row(scheme, *ps, **kw):
    r = {"scheme": scheme, "temperature": 0.7, "n": 200, "rejections": 4,
         "positions": [{"position": i, "p_value": p} for i, p in enumerate(ps)]}  # fmt: skip
    r.update(kw)
    return r


def test_exactness_flags_a_scheme_only_below_the_corrected_threshold():
    text = narrative.exactness_notes(
        exactness(ex_row("sparse-q", 0.03, 0.5), ex_row("gumbel", 0.001, 0.9))
    )
    assert "one below 0.0250 (0.05 shared among them)" in text
    assert "`sparse-q`: lowest p-value 0.0300, consistent with p." in text
    assert "`gumbel`: lowest p-value 0.0010, flagged: not distributed as p." in text
    assert "**these tests disagree: investigate.**" in text


def test_split_note_counts_the_truncated_residuals_and_cites_the_scheme_table():
    split = ex_row("split", 0.5, 0.5, truncated_mass_mean=0.1, truncated_mass_max=0.3,
                   inexact_rejections=3)  # fmt: skip
    text = narrative.exactness_notes(exactness(split), [row(scheme="split", exact=False)])
    assert "3 of 4 residuals here came from a truncated p" in text
    assert "(`exact` is NO in the scheme table)" in text
    every = narrative.exactness_notes(exactness({**split, "inexact_rejections": 4}))
    assert "every residual here came from a truncated p" in every and "`exact` is" not in every


def test_exactness_intro_names_the_gamma_the_length_implies():
    assert "gamma 4, K = 8" in narrative.exactness_intro(
        {**exactness(ex_row("x", 0.5)), "length": 5}
    )


COSTS = {"A": {"sync": 200.0, "block": 100.0, "drafting": 96.0}}


def test_stop_and_wait_note_says_whether_the_paper_range_is_reachable():
    short = narrative.stop_and_wait_note([1.01, 1.3], 1.5, COSTS, 24.0)
    assert "gains 1.01x to 1.30x" in short and "only 2.0x a pipelined block" in short
    assert "needs other timings" in short and "24 bytes per generated token" in short
    reached = narrative.stop_and_wait_note([0.9, 2.0], 2.4, COSTS, 24.0)
    assert "ranges from 0.90x to 2.00x" in reached and "only" not in reached
    assert "These rows reach the paper's 1.9-2.6x over stop-and-wait." in reached


def test_depth_note_blames_the_drafter_only_when_two_blocks_keep_it_busy():
    flat = [{"pipeline_d2": 10.0, "pipeline_d3": 9.0}] * 3
    busy = narrative.depth_note(flat, COSTS)
    assert "no faster than depth 2 in 3 of 3 rows: the drafter is the bottleneck" in busy
    assert "busy 96% of the time" in busy
    idle = {"A": {"sync": 200.0, "block": 100.0, "drafting": 50.0}}
    deeper = narrative.depth_note([{"pipeline_d2": 10.0, "pipeline_d3": 12.0}] * 2, idle)
    assert "Depth 3 is faster than depth 2 in 2 of 2 rows" in deeper
    assert "busy only 50% of the time" in deeper and "bottleneck" not in deeper


def test_projection_intro_names_the_measured_pair_only_when_its_traces_were_used():
    measured = result([], projection=[{"acceptance": "measured here: 0.8/0.9"}])
    assert "greedy pipeline traces (Net-1B Q2_K vs Q4_1)" in narrative.projection_intro(measured)
    fixed = result([], projection=[{"acceptance": "0.8 per position"}])
    assert "Acceptance per position is set to a fixed rate;" in narrative.projection_intro(fixed)


# reading results back


def test_load_refuses_a_file_that_is_not_a_bench_result(tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"kind": "something else"}')
    with pytest.raises(ConfigError, match=r"other\.json is not a `picospec bench e2e` result"):
        report.load(other)


def test_load_refuses_a_missing_file_and_broken_json_naming_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read a bench e2e result from .*missing\.json"):
        results.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        results.load(broken)


def test_a_saved_result_loads_back_unchanged(tmp_path):
    saved = result([run()])
    path = results.save(saved, tmp_path / "out")
    assert path.name == "e2e.json"
    assert results.load(path) == json.loads(json.dumps(saved))


# tables


def header_and_rows(table: str) -> tuple[list[str], list[list[str]]]:
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    return lines[0], lines[2:]


def test_table1_shows_one_row_per_link_and_mode_in_mode_order():
    cloud = row(mode="cloud-only", vs_cloud_only=1.0, vs_sync=2.0, mean_accept_len=None)
    head, body = header_and_rows(tables.table1([row(), cloud]))
    assert head[:4] == ["rate Mbit/s", "RTT ms", "mode", "tok/s"] and head[-1] == "fwd/tok"
    assert [r[2] for r in body] == ["cloud-only", "pipeline"]
    pipe = dict(zip(head, body[1], strict=True))
    assert pipe["tok/s"] == "20.0 ± 1.5" and pipe["x cloud-only"] == "0.50x"
    assert pipe["T_draft ms"] == "76.0" and pipe["accept len"] == "3.02"
    assert dict(zip(head, body[0], strict=True))["T_draft ms"] == "-"


def test_model_and_sweep_tables_put_predictions_beside_the_measurement():
    head, body = header_and_rows(tables.model_table([row()]))
    cells = dict(zip(head, body[0], strict=True))
    assert cells["measured/model"] == "0.95" and cells["simulated/measured - 1"] == "+2.5%"
    head, body = header_and_rows(tables.sweep_table([row(depth=2), row(depth=1)], "depth"))
    assert head == ["depth", "mode", "tok/s", "x sync", "accept len", "model tok/s", "sim tok/s"]
    assert [r[0] for r in body] == ["1", "2"]


def test_scheme_table_marks_an_inexact_scheme():
    head, body = header_and_rows(tables.scheme_table([row(scheme="split", exact=False)]))
    assert head[0] == "scheme" and head[-1] == "exact"
    assert body[0][0] == "split" and body[0][-1] == "NO"


def test_error_table_lists_all_first_then_the_modes():
    errs = {m: {"runs": 2, "mean": 0.025, "max": 0.05, "within_10pct": 1.0}
            for m in ("pipeline", "all", "sync")}  # fmt: skip
    table = tables.error_table(errs)
    header = r"| mode | runs | mean \|error\| | max \|error\| | runs within 10% |"
    assert table.splitlines()[0] == header
    _, body = header_and_rows(table)
    assert body[0] == ["all", "2", "2.5%", "5.0%", "100%"]
    assert [r[0] for r in body] == ["all", "sync", "pipeline"]


def test_markdown_composes_the_sections_the_data_has():
    res = result([cloud_run(), run(mode="sync", depth=1), run()])
    page = report.markdown(res, [row(), row(mode="sync", depth=1)], [])
    for heading in ("## Validation", "## Table 1", "## Time model and simulator", "## Schemes"):
        assert heading in page
    assert "## Exactness" not in page and "## Projection" not in page
    assert "(maths)" in page  # the prompt styles the runs had


def _miss(cell, mode, best, abandon, first):
    return {
        "cell": cell, "mode": mode, "best": {"tok_per_s": best},
        "abandon": {"tok_per_s": abandon, "gain": abandon / best - 1},
        "first_gamma": {"tok_per_s": first, "gain": first / best - 1},
    }  # fmt: skip


def test_misses_note_counts_only_gains_above_the_threshold_and_says_when_they_lose_anyway():
    rows = [_miss("q", "pipeline", 10.0, 10.0, 10.5), _miss("q", "cloud-led", 15.0, 15.1, 14.9)]
    text = narrative.misses_notes(rows)
    assert "Stopping the drafter step changes the best configuration by +0.0% to +0.7%" in text
    assert "more than 2% in 0 of 2 cases." in text
    assert "A shorter first block changes the best configuration by -0.7% to +5.0%" in text
    assert "more than 2% in 1 of 2 cases; in each of those the other mode" in text
    rows[1] = _miss("q", "cloud-led", 9.0, 9.0, 9.0)  # now the helped pipeline is fastest
    assert "the other mode" not in narrative.misses_notes(rows)


def test_auto_notes_count_explorations_and_switches_from_the_runs():
    rows = [{"mode": "auto", "vs_best_fixed": 0.99, "scheme": "greedy", "rtt_ms": 0.0,
             "rate_mbit": 1.0, "best_fixed": "cloud-only"}]  # fmt: skip
    base = {"mode": "auto", "scheme": "greedy", "rtt_ms": 0.0, "rate_mbit": 1.0}
    runs = [
        {**base, "plan": "auto: cloud-led (nothing measured yet: ...)",
         "parts": [{"mode": "cloud-led", "tokens": 64}]},
        {**base, "plan": "auto: cloud-only (acceptance under sparse-q not measured; even at",
         "parts": [{"mode": "cloud-only", "tokens": 64}]},
        {**base, "plan": "auto: pipeline gamma 4 | auto switched from pipeline",
         "parts": [{"mode": "pipeline", "tokens": 20}, {"mode": "cloud-only", "tokens": 44}]},
    ]  # fmt: skip
    text = narrative.adaptive_notes(rows, runs)
    assert "1 of its 3 generations explored" in text
    assert "greedy at RTT 0 ms, 1 Mbit/s, cloud-led)" in text
    assert "1 switched mode mid-generation: greedy at RTT 0 ms, 1 Mbit/s, pipeline (20) -> " \
           "cloud-only (44)." in text  # fmt: skip


def test_auto_notes_say_where_a_short_cell_ran_the_best_configuration_itself():
    cell = {"scheme": "greedy", "rate_mbit": 100.0}
    rows = [
        {**cell, "mode": "cloud-only", "rtt_ms": 20.0, "tok_per_s": 47.3, "tok_per_s_sd": 1.9},
        {**cell, "mode": "auto", "rtt_ms": 20.0, "tok_per_s": 45.7, "tok_per_s_sd": 2.2,
         "vs_best_fixed": 45.7 / 47.3, "best_fixed": "cloud-only", "chose": {"cloud-only": 4}},
        {**cell, "mode": "cloud-only", "rtt_ms": 0.0, "tok_per_s": 50.0, "tok_per_s_sd": 1.0},
        {**cell, "mode": "auto", "rtt_ms": 0.0, "tok_per_s": 45.0, "tok_per_s_sd": 6.0,
         "vs_best_fixed": 0.9, "best_fixed": "cloud-only",
         "chose": {"cloud-only": 3, "pipeline gamma 4 depth 3": 1}},
    ]  # fmt: skip
    text = narrative.adaptive_notes(rows)
    assert "in 0 of 2 cells" in text
    assert (
        "In 1 of the 2 cells below 0.97x auto ran the fastest fixed configuration itself, "
        "so the gap there is between runs of one configuration: greedy at RTT 20 ms, "
        "100 Mbit/s (cloud-only in all 4 of auto's generations; 45.7 ± 2.2 against "
        "47.3 ± 1.9 tok/s)." in text
    )
    rows[1]["chose"] = {"cloud-only": 3, "cloud-led gamma 1 depth 3": 1}
    assert "ran the fastest fixed configuration itself" not in narrative.adaptive_notes(rows)


def test_a_cloud_led_run_is_replayed_with_acceptance_by_offset_over_its_whole_chains():
    """A cloud-led chain runs past a block: one that matched 11 drafts and missed the
    12th is replayed with that miss (acceptance by offset up to the longest chain),
    not as a chain that never misses (acceptance cut at gamma, 1.0 throughout)."""
    from picospec.lab.bench import analysis

    base = dict(
        mode="cloud-led", rtt_ms=0.0, gamma=2, depth=6, n_tokens=64, drafted=12, rounds=0,
        blocks=[], draft_ms=5.0, forward_ms={"30": [60.0], "1": [20.0] * 50, "2": [21.0] * 6},
        accept_per_position=[1.0, 1.0],
    )  # fmt: skip
    sweep = {"1": 20.0, "2": 21.0, "3": 22.0, "5": 24.0}
    missed = analysis.simulate_run(run(**base, chains=[[11, 12]] * 3), sweep)
    held = analysis.simulate_run(run(**base, chains=[[12, 12]] * 3), sweep)
    assert missed < held


def _led_runs(draft_ms: float, led_step: float, alone_step: float) -> list[dict[str, Any]]:
    led = {"mode": "cloud-led", "draft_ms": draft_ms, "prefill_tokens": 30, "prefill_ms": 90.0,
           "forward_ms": {"1": [led_step] * 3, "4": [3.0 * led_step], "30": [90.0]}}  # fmt: skip
    only = {"mode": "cloud-only", "draft_ms": 0.0, "forward_ms": {"1": [alone_step] * 3}}
    return [led, only]


def test_cloud_led_notes_say_what_its_runs_measured():
    rows = [
        {"mode": "auto", "vs_best_fixed": 1.0, "scheme": "greedy", "rtt_ms": 0.0,
         "rate_mbit": 1.0, "best_fixed": "cloud-only"},
        {"mode": "cloud-led", "vs_cloud_only": 0.9, "forwards_per_token": 0.8},
    ]  # fmt: skip
    slow = narrative.adaptive_notes(rows, _led_runs(draft_ms=20.0, led_step=20.0, alone_step=19.9))
    assert "cloud-led ran at 0.90x to 0.90x cloud-only: its forwards committed 1.25 tokens" in slow
    assert "drafter stepped in 20.0 ms, no faster than the target's decode step (20.0 ms)" in slow
    assert "a forward that took drafts cost 15.0 ms per token it evaluated against 20.0 ms" in slow
    assert "beside it" not in slow  # 20.0 against 19.9: not slowed
    fast = narrative.adaptive_notes(rows, _led_runs(draft_ms=7.0, led_step=13.0, alone_step=12.0))
    assert "drafter stepped in 7.0 ms against the target's 13.0 ms decode step, so drafts " \
           "did reach the cloud ahead of its frontier" in fast  # fmt: skip
    assert "the target's decode step took 13.0 ms against 12.0 ms in cloud-only's runs " \
           "(1.08x)" in fast  # fmt: skip
