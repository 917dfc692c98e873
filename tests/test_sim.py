"""The discrete-event simulator: where its answer is known, and what it replays."""

from __future__ import annotations

import numpy as np
import pytest

from picospec.codec.errors import ConfigError
from picospec.lab.profiles import CloudProfile, EdgeProfile, LinkProfile
from picospec.lab.sim import IidAcceptance, Scenario, TraceAcceptance, simulate
from picospec.runtime.timemodel import Costs, predict

EDGE = EdgeProfile("e", draft_ms=6.0)
CLOUD = CloudProfile("c", verify_ms=(10, 14, 18, 22, 26, 30, 34, 38, 42), prefill_ms=20)
QUIET = {"start_bytes": 0, "block_bytes": 0, "block_bytes_per_token": 0, "verdict_bytes": 0}


def link(rtt_ms: float, rate_mbit: float = 0.0) -> LinkProfile:
    return LinkProfile("l", rtt_ms=rtt_ms, rate_mbit=rate_mbit, packet_overhead_bytes=0)


def costs(rtt_ms: float) -> Costs:
    return Costs(draft=0.006, verify=tuple(v / 1e3 for v in CLOUD.verify_ms), rtt=rtt_ms / 1e3,
                 prefill=0.020)  # fmt: skip


@pytest.mark.parametrize("rtt", [0.0, 20.0, 100.0])
@pytest.mark.parametrize("mode", ["sync", "pipeline", "cloud-only"])
def test_full_acceptance_matches_the_closed_form(mode, rtt):
    sc = Scenario(mode, 2000, gamma=4, depth=3, **QUIET)
    got = simulate(sc, EDGE, link(rtt), CLOUD, IidAcceptance([1.0] * 4)).tok_per_s
    want = predict(mode, [1.0] * 4, costs(rtt), depth=3, n_tokens=2000).tok_per_s
    assert got == pytest.approx(want, rel=0.01)


def test_edge_only_is_the_drafter_alone():
    r = simulate(Scenario("edge-only", 100), EdgeProfile("e", draft_ms=5, prefill_ms=30),
                 link(50), CLOUD)  # fmt: skip
    assert r.seconds == pytest.approx((30 + 100 * 5) / 1e3)


@pytest.mark.parametrize("mode", ["sync", "pipeline"])
def test_replaying_a_trace_meets_the_same_blocks(mode):
    first = simulate(Scenario(mode, 120, **QUIET), EDGE, link(30), CLOUD,
                     IidAcceptance([0.8, 0.7, 0.9, 0.6], seed=3))  # fmt: skip
    again = simulate(Scenario(mode, 120, **QUIET), EDGE, link(30), CLOUD,
                     TraceAcceptance(first.blocks))  # fmt: skip
    assert again.blocks == first.blocks and again.seconds == pytest.approx(first.seconds)
    assert any(a < n for a, n in first.blocks)  # the trace has rejections to replay


def test_a_rejection_voids_the_blocks_drafted_behind_it():
    fast_edge = EdgeProfile("e", draft_ms=1.0)
    r = simulate(Scenario("pipeline", 60, depth=3, **QUIET), fast_edge, link(100), CLOUD,
                 IidAcceptance([0.0, 1.0, 1.0, 1.0]))  # fmt: skip
    assert r.discarded > 0
    # every block is rejected at its first draft: one token per round, a serial round each
    assert all(a == 0 for a, _ in r.blocks) and r.rounds == 59


def test_split_corrections_cannot_be_precomputed():
    """Under split the cloud evaluates the edge's correction with the next block."""
    sc = dict(gamma=4, depth=1, **QUIET)
    reject = IidAcceptance([0.0])
    fast = simulate(Scenario("pipeline", 40, **sc), EDGE, link(0), CLOUD, reject)
    slow = simulate(Scenario("pipeline", 40, scheme="split", **sc), EDGE, link(0),
                    CLOUD, IidAcceptance([0.0]))  # fmt: skip
    # precompute overlaps the verdict's trip with a 1-token forward; split adds it to the round
    assert slow.seconds > fast.seconds


def test_a_slow_link_adds_serialisation():
    sizes = {"start_bytes": 100, "block_bytes": 100, "block_bytes_per_token": 40,
             "verdict_bytes": 30}  # fmt: skip
    fast = simulate(Scenario("sync", 64, **sizes), EDGE, link(20, 0.0), CLOUD)
    slow = simulate(Scenario("sync", 64, **sizes), EDGE, link(20, 0.1), CLOUD)
    # at 0.1 Mbit/s (12.5 bytes per ms) a block of n drafts takes (100 + 40 n) / 12.5 ms
    # and a verdict 2.4 ms to send, every round; the start 8 ms and the first verdict 2.4 ms
    extra = sum((100 + 40 * n) / 12.5e3 + 0.0024 for _, n in slow.blocks) + 0.0080 + 0.0024
    assert slow.seconds - fast.seconds == pytest.approx(extra, rel=0.01)


def test_trace_that_runs_out_is_an_error_without_a_fallback():
    with pytest.raises(ConfigError, match="ran out"):
        simulate(Scenario("sync", 100, **QUIET), EDGE, link(0), CLOUD, TraceAcceptance([(4, 4)]))


def test_bad_scenarios_are_refused():
    with pytest.raises(ConfigError, match="unknown mode"):
        Scenario("teleport", 10)
    with pytest.raises(ConfigError):
        Scenario("sync", 0)
    with pytest.raises(ConfigError, match="probabilities"):
        IidAcceptance([1.5])


def test_abandoning_the_step_in_progress_only_matters_after_a_rejection():
    sc = dict(gamma=4, depth=3, **QUIET)
    slow_edge = EdgeProfile("e", draft_ms=15.0)

    def rate(accept, abandon):
        scenario = Scenario("pipeline", 200, abandon_on_rejection=abandon, **sc)
        return simulate(scenario, slow_edge, link(10), CLOUD, IidAcceptance(accept, seed=2))

    assert rate([1.0], False).seconds == rate([1.0], True).seconds
    waits, abandons = rate([0.7], False), rate([0.7], True)
    assert abandons.blocks == waits.blocks  # the same decisions, made sooner
    assert abandons.seconds < waits.seconds


@pytest.mark.parametrize(
    ("mode", "scheme", "t", "seed"),
    [("pipeline", "sparse-q", 1.0, 3), ("pipeline", "split", 1.0, 4), ("sync", "gumbel", 0.8, 5)],
)
def test_a_recorded_trace_replays_every_block_and_verdict(mode, scheme, t, seed):
    """The simulator drives the same sessions: a real generation's verdicts (Markov
    models, real maths) replayed in the simulator meet the same blocks, at the
    same positions and epochs, with the same verdicts, whatever the timing."""
    from markov import MarkovBackend, MarkovDrafter, sampling

    from picospec.lab.inprocess import generate

    drafts = np.random.default_rng(seed).normal(size=(6, 6)).astype(np.float32)
    prompt = [0, 1, 2]
    real = generate(
        MarkovDrafter(drafts), MarkovBackend(), prompt, mode=mode, sampling=sampling(scheme, t),
        max_new_tokens=40, seed=seed, gamma=3, depth=3,
    )  # fmt: skip
    blocks = list(zip(real.accepted_at, real.gamma_at, strict=True))
    assert any(a < n for a, n in blocks) and real.n_tokens == 40  # rejections, rollbacks
    for rtt in (0.0, 50.0):
        sc = Scenario(mode, 40, gamma=3, depth=3, scheme=scheme, prompt_tokens=len(prompt))
        sim = simulate(sc, EDGE, link(rtt), CLOUD, TraceAcceptance(blocks))
        assert sim.verdicts == real.verdicts
        assert sim.blocks == blocks and sim.n_tokens == 40


# --- cloud-led -----------------------------------------------------------------------


@pytest.mark.parametrize("rtt", [0.0, 50.0, 200.0])
def test_cloud_led_is_never_slower_than_cloud_only_when_drafts_cost_little(rtt):
    flat = CloudProfile("flat", verify_ms=(50.0,) * 9, prefill_ms=20)  # a GPU: verify ~ decode
    edge = EdgeProfile("e", draft_ms=20.0)
    only = simulate(Scenario("cloud-only", 300, **QUIET), edge, link(rtt), flat)
    for accept in (0.0, 0.5, 0.9):
        led = simulate(Scenario("cloud-led", 300, gamma=2, depth=3, **QUIET), edge, link(rtt),
                       flat, IidAcceptance([accept], seed=1))  # fmt: skip
        assert led.n_tokens == 300 and led.tok_per_s >= only.tok_per_s * 0.999
        if accept == 0.0:  # no draft ever matches: one forward per token, as cloud-only
            assert led.target_forwards == only.target_forwards
    best = simulate(Scenario("cloud-led", 300, gamma=2, depth=3, **QUIET), edge, link(rtt), flat,
                    IidAcceptance([0.9], seed=1))  # fmt: skip
    # the lead (gamma x depth = 6 drafts) limits what a long round trip lets through
    assert best.tok_per_s > (1.5 if rtt == 0 else 1.05) * only.tok_per_s
    assert best.target_forwards < 300


def test_cloud_led_with_a_drafter_slower_than_the_cloud_is_cloud_only():
    slow = EdgeProfile("e", draft_ms=15.0)  # the cloud decodes a token in 10 ms
    only = simulate(Scenario("cloud-only", 200, **QUIET), slow, link(20), CLOUD)
    led = simulate(Scenario("cloud-led", 200, **QUIET), slow, link(20), CLOUD,
                   IidAcceptance([1.0]))  # fmt: skip
    assert led.tok_per_s == pytest.approx(only.tok_per_s, rel=0.01)
    model = predict("cloud-led", [1.0] * 4, Costs(draft=0.015, verify=(0.01,), rtt=0.02))
    assert model.steady_tok_per_s == pytest.approx(100.0)


def test_the_simulated_cloud_learns_forward_costs_as_the_server_does():
    """The server's cloud does not know what a forward over n tokens costs until it
    has run one (a size never run is tried once); nor does the simulated cloud, so a
    replay of a run pays for those tries as the run did."""
    fast = EdgeProfile("e", draft_ms=2.0)  # drafts wait at the frontier of every forward
    dear = CloudProfile("dear", verify_ms=(10.0, *(200.0,) * 8), prefill_ms=20)
    only = simulate(Scenario("cloud-only", 60, **QUIET), fast, link(0), dear)
    led = simulate(Scenario("cloud-led", 60, gamma=4, depth=2, **QUIET), fast, link(0), dear,
                   IidAcceptance([0.5], seed=1))  # fmt: skip
    # every multi-token size it reached was tried once, at 200 ms each, then never again
    tried = led.seconds - only.seconds
    assert led.n_tokens == 60 and 0.2 <= tried <= 8 * 0.2


@pytest.mark.parametrize("rtt", [0.0, 20.0, 100.0])
def test_cloud_led_time_model_tracks_the_simulator(rtt):
    edge = EdgeProfile("e", draft_ms=24.0)
    cloud = CloudProfile("c", verify_ms=(72.0, 76.0, 80.0, 84.0, 88.0), prefill_ms=20)
    sc = Scenario("cloud-led", 400, gamma=4, depth=3, **QUIET)
    sims = [simulate(sc, edge, link(rtt), cloud, IidAcceptance([0.7], seed=s)).tok_per_s
            for s in range(4)]  # fmt: skip
    c = Costs(draft=0.024, verify=tuple(v / 1e3 for v in cloud.verify_ms), rtt=rtt / 1e3,
              prefill=0.02)  # fmt: skip
    model = predict("cloud-led", [0.7] * 4, c, depth=3, n_tokens=400).tok_per_s
    assert model == pytest.approx(float(np.mean(sims)), rel=0.15)


def test_sim_json_lists_cloud_led_and_auto_with_their_cost(capsys):
    import json

    from picospec.cli import main

    assert main(["sim", "--json", "--seeds", "2", "--tokens", "64"]) == 0
    modes = json.loads(capsys.readouterr().out)["modes"]
    for name in ("cloud-led", "auto", "pipeline", "cloud-only"):
        assert modes[name]["tok_per_s"] > 0 and "forwards_per_token" in modes[name]
    assert modes["cloud-only"]["forwards_per_token"] == pytest.approx(1.0, abs=0.02)
    assert modes["auto"]["plan"].startswith("auto: " + modes["auto"]["chose"])


def test_paper_regime_reports_every_mode_and_its_checks():
    from picospec.lab import paper

    row = paper.run_cell(paper.CELLS[2], 20.0, tokens=64, seeds=1)  # llama GSM8K
    assert set(row["modes"]) == {"cloud-only", "sync", "pipeline", "cloud-led", "auto"}
    assert row["accept_per_position"] == pytest.approx(0.92, abs=0.01)
    assert set(row["checks"]) == {"beats_cloud_only", "beats_paper", "beats_paper_cycle"}
    assert row["paper_cycle_tok_per_s"] == pytest.approx(1e3 * 4.29 / 272.89)
    best = max(row["modes"]["cloud-led"]["tok_per_s"], row["modes"]["auto"]["tok_per_s"])
    assert row["checks"]["beats_cloud_only"] == (best >= row["modes"]["cloud-only"]["tok_per_s"])
    assert row["best_ours_vs_bound"] <= 1.0 + 1e-9


def test_cheaper_misses_compare_each_option_with_the_best_grid_point():
    from picospec.lab import paper

    rows = paper.misses(rtt_ms=20.0, tokens=48, seeds=1)
    assert len(rows) == len(paper.CELLS) * len(paper.MISS_MODES)
    for r in rows:
        b, a, f = r["best"], r["abandon"], r["first_gamma"]
        assert a["gain"] == pytest.approx(a["tok_per_s"] / b["tok_per_s"] - 1)
        assert f["gain"] == pytest.approx(f["tok_per_s"] / b["tok_per_s"] - 1)
        assert 1 <= f["first_gamma"] < f["gamma"]
    # the best is the grid's best: no grid point of the first cell beats it
    edge, cloud = paper.CELLS[0].profiles()
    link = LinkProfile("x", rtt_ms=20.0, rate_mbit=100.0)
    sc = Scenario("pipeline", 48, gamma=4, depth=3, scheme="gumbel")
    one = simulate(sc, edge, link, cloud, IidAcceptance([paper.CELLS[0].accept] * 64, seed=0))
    assert rows[0]["mode"] == "pipeline" and rows[0]["best"]["tok_per_s"] >= one.tok_per_s - 1e-9
    assert "shorter first block" in paper.render_misses(rows)


def test_first_gamma_in_the_simulator_sends_a_short_block_after_each_rejection():
    from picospec.lab import paper

    edge, cloud = paper.CELLS[2].profiles()
    link = LinkProfile("x", rtt_ms=50.0, rate_mbit=100.0)
    acc = IidAcceptance([0.6] * 8, seed=3)
    short = simulate(Scenario("pipeline", 64, gamma=4, depth=2, first_gamma=1), edge, link,
                     cloud, acc)  # fmt: skip
    whole = simulate(Scenario("pipeline", 64, gamma=4, depth=2), edge, link, cloud,
                     IidAcceptance([0.6] * 8, seed=3))  # fmt: skip
    assert short.n_tokens == whole.n_tokens == 64
    assert short.rounds > whole.rounds  # more, smaller blocks
