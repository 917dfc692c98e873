"""The time model's closed forms, on costs where the answer is known by hand."""

from __future__ import annotations

import pytest

from picospec.codec.errors import ConfigError
from picospec.runtime.timemodel import Costs, per_position, predict, reach

COSTS = Costs(draft=0.006, verify=(0.010, 0.014, 0.018, 0.022, 0.026), rtt=0.050)


def test_per_position_counts_only_positions_reached():
    # (accepted, drafted): reached/kept per position
    blocks = [(4, 4), (0, 4), (2, 4), (1, 2)]
    # position 0: reached 4 times, kept 3; 1: reached 3 (a>=1), kept 2; 2: reached 2, kept 1
    # position 3: reached 1 (only the (4,4) block), kept 1
    assert per_position(blocks, 4) == [3 / 4, 2 / 3, 1 / 2, 1.0]
    assert per_position([], 3) == [0.0, 0.0, 0.0]


def test_reach_is_the_running_product():
    assert reach([0.5, 0.5]) == [1.0, 0.5, 0.25]


def test_sync_with_every_draft_accepted_emits_gamma_plus_one_per_serial_round():
    got = predict("sync", [1.0] * 4, COSTS).tok_per_s
    assert got == pytest.approx(5 / (4 * 0.006 + 0.050 + 0.026))


def test_pipeline_full_acceptance_is_bound_by_the_slowest_stage():
    drafter_bound = Costs(draft=0.010, verify=(0.001,) * 5, rtt=0.0)
    assert predict("pipeline", [1.0] * 4, drafter_bound).tok_per_s == pytest.approx(100)
    rtt_bound = Costs(draft=0.001, verify=(0.001,) * 5, rtt=0.100)
    serial = 4 * 0.001 + 0.100 + 0.001
    assert predict("pipeline", [1.0] * 4, rtt_bound, depth=3).tok_per_s == pytest.approx(
        4 / (serial / 3)
    )


def test_pipeline_depth_one_has_no_overlap_and_no_bonus():
    serial = 4 * 0.006 + 0.050 + 0.022
    assert predict("pipeline", [1.0] * 4, COSTS, depth=1).tok_per_s == pytest.approx(4 / serial)


def test_a_miss_costs_a_serial_round():
    accept = [0.5, 1.0, 1.0, 1.0]  # half the blocks miss at position 0 (1 token emitted)
    serial = 4 * 0.006 + 0.050 + 0.022
    block = max(4 * 0.006, 0.022, serial / 3)
    want = (0.5 * 4 + 0.5 * 1) / (0.5 * block + 0.5 * serial)
    assert predict("pipeline", accept, COSTS, depth=3).tok_per_s == pytest.approx(want)


def test_baselines_and_start_up():
    assert predict("cloud-only", [], COSTS).tok_per_s == pytest.approx(100)
    assert predict("edge-only", [], COSTS).tok_per_s == pytest.approx(1 / 0.006)
    slow_start = Costs(draft=0.006, verify=(0.010,), rtt=0.1, prefill=0.2)
    short = predict("cloud-only", [], slow_start, n_tokens=10).tok_per_s
    long = predict("cloud-only", [], slow_start, n_tokens=100_000).tok_per_s
    assert short == pytest.approx(10 / (0.3 + 9 * 0.010)) and long == pytest.approx(100, rel=1e-3)


def test_forward_extrapolates_past_the_table():
    assert COSTS.forward(7) == pytest.approx(0.034)


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="unknown mode"):
        predict("warp", [1.0], COSTS)
    with pytest.raises(ConfigError, match="verify"):
        Costs(draft=0.1, verify=(), rtt=0.0)
    with pytest.raises(ConfigError, match="rtt"):
        Costs(draft=0.1, verify=(0.1,), rtt=-1)


def test_a_pipelined_generation_pays_one_filling_round():
    serial = 4 * 0.006 + 0.050 + 0.022
    block = max(4 * 0.006, 0.022, serial / 3)
    steady = 4 / block
    got = predict("pipeline", [1.0] * 4, COSTS, depth=3, n_tokens=41).tok_per_s
    startup = 0.050 + (serial - block)  # first token, then the first block's serial round
    assert got == pytest.approx(41 / (startup + 40 / steady))
