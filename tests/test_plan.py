"""auto: the plan from measured estimates (edge/plan.py)."""

from __future__ import annotations

import pytest

from picospec.codec.scheme import Mode, Scheme
from picospec.edge.plan import (
    SWITCH_GAIN,
    Estimates,
    choose,
    label,
    model_rate,
    parse_mode,
    revise,
)


def measured(draft: float, decode: float, verify: dict[int, float], rtt: float) -> Estimates:
    est = Estimates()
    est.add_rtt(rtt)
    est.add_draft(draft)
    est.add_decode(decode)
    for n, s in verify.items():
        est.add_verify(n, s + rtt)
    return est


def test_nothing_measured_explores_with_the_mode_that_measures_most():
    led = choose(Scheme.GREEDY, Estimates(), gamma=4, depth=3)
    assert led.mode is Mode.CLOUD_LED and "nothing measured yet" in led.reason
    pipe = choose(Scheme.SPARSE_Q, Estimates(), gamma=4, depth=3)
    assert pipe.mode is Mode.PIPELINE and (pipe.gamma, pipe.depth) == (4, 3)


def test_a_pipeline_measured_all_but_the_decode_step_explores_cloud_only_next():
    est = Estimates()
    est.add_rtt(0.02)
    est.add_draft(0.01)
    est.add_verify(5, 0.1)
    est.add_blocks(Scheme.SPARSE_Q, [(2, 4)] * 8)
    plan = choose(Scheme.SPARSE_Q, est, gamma=4, depth=3)
    assert plan.mode is Mode.CLOUD_ONLY and "decode step not measured" in plan.reason
    est.add_decode(0.02)
    assert "not measured" not in choose(Scheme.SPARSE_Q, est, gamma=4, depth=3).reason


def test_this_cpu_settles_on_cloud_only():
    # the drafter as slow as the target, a 5-token verify ~2.8x a decode step
    est = measured(0.018, 0.020, {5: 0.056, 3: 0.040}, rtt=0.05)
    est.add_blocks(Scheme.GREEDY, [(2, 4), (4, 4), (0, 4), (1, 4)] * 4)
    plan = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert plan.mode is Mode.CLOUD_ONLY, plan.reason
    assert plan.reason.startswith("auto: cloud-only (predicted")
    # sparse-q's acceptance was never measured: greedy's stands in, and cannot pay either
    other = choose(Scheme.SPARSE_Q, est, gamma=4, depth=3)
    assert other.mode is Mode.CLOUD_ONLY and "not measured" in other.reason


def test_a_gpu_cloud_and_a_fast_drafter_choose_a_speculative_mode():
    est = measured(0.024, 0.072, {5: 0.087, 9: 0.095}, rtt=0.02)
    est.add_blocks(Scheme.GREEDY, [(4, 4), (3, 4), (4, 4), (2, 4)] * 4)
    plan = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert plan.mode in (Mode.CLOUD_LED, Mode.PIPELINE), plan.reason
    best = plan.predicted[label(plan.mode, plan.gamma, plan.depth)]
    assert best == max(plan.predicted.values())
    assert max(plan.predicted.values()) > 1.3 * plan.predicted["cloud-only"]


def test_unknown_acceptance_that_could_pay_is_measured_by_a_pipeline_run():
    est = measured(0.005, 0.072, {5: 0.080}, rtt=0.02)
    plan = choose(Scheme.SPARSE_Q, est, gamma=4, depth=3)
    assert plan.mode is Mode.PIPELINE and "not measured yet" in plan.reason


def test_verify_cost_is_never_below_a_decode_step():
    est = measured(0.01, 0.02, {}, rtt=0.2)
    est.add_verify(5, 0.1)  # a verdict quicker than the (over-estimated) round trip
    assert est.verify[5] == pytest.approx(0.02)


def test_cloud_led_is_also_planned_with_a_long_lead():
    est = measured(0.024, 0.072, {5: 0.087, 9: 0.095}, rtt=0.02)
    est.add_blocks(Scheme.GREEDY, [(1, 4), (3, 4), (0, 4), (2, 4)] * 4)
    plan = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert {k for k in plan.predicted if k.startswith("cloud-led gamma 2")} == {
        "cloud-led gamma 2 depth 3", "cloud-led gamma 2 depth 6"
    }  # fmt: skip


def test_a_mode_measured_slower_than_predicted_is_planned_at_what_it_measured():
    est = measured(0.018, 0.020, {5: 0.056, 3: 0.040}, rtt=0.002)
    est.add_blocks(Scheme.GREEDY, [(4, 4)] * 16)  # blocks that all pass: drafts look good
    first = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert first.mode is Mode.CLOUD_LED, first.reason
    predicted = first.predicted[label(first.mode, first.gamma, first.depth)]
    for _ in range(5):  # it ran at 0.65x its prediction, every time (drafts arrived late)
        est.add_outcome(Mode.CLOUD_LED, 0.65 * predicted, predicted)
    assert est.error[Mode.CLOUD_LED] == pytest.approx(0.65)
    again = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    name = label(first.mode, first.gamma, first.depth)
    assert again.predicted[name] == pytest.approx(0.65 * predicted)
    assert again.mode is not Mode.CLOUD_LED, again.reason  # another plan is faster now


def test_gumbel_and_greedy_explore_cloud_led_then_the_decode_step():
    est = Estimates()
    est.add_rtt(0.02)
    est.add_draft(0.018)  # what a cloud-led generation measured (it measures no decode step)
    plan = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert plan.mode is Mode.CLOUD_ONLY and "decode step not measured" in plan.reason


def test_parse_mode():
    assert parse_mode("auto") is None and parse_mode(None) is None
    assert parse_mode("cloud-led") is Mode.CLOUD_LED
    with pytest.raises(Exception, match="unknown mode"):
        parse_mode("warp")


def test_revise_switches_only_to_a_plan_predicted_clearly_faster():
    # a pipeline planned on cheap verifies and full acceptance, measured at neither
    est = measured(0.001, 0.010, {5: 0.050, 9: 0.090}, rtt=0.001)
    est.add_blocks(Scheme.GREEDY, [(0, 8)] * 30)
    plan = revise(Scheme.GREEDY, est, (Mode.PIPELINE, 8, 3), depth=3, n_tokens=200)
    assert plan is not None and plan.mode is Mode.CLOUD_ONLY, plan
    assert plan.reason.startswith("auto switched from pipeline gamma 8 depth 3 (")
    assert revise(Scheme.GREEDY, est, (Mode.CLOUD_ONLY, 1, 1), depth=3, n_tokens=200) is None
    # too few tokens left to pay for a switch, or nothing measured: go on
    assert revise(Scheme.GREEDY, est, (Mode.PIPELINE, 8, 3), depth=3, n_tokens=8) is None
    assert revise(Scheme.GREEDY, Estimates(), (Mode.PIPELINE, 4, 3), depth=3, n_tokens=200) is None


def test_revise_weighs_the_running_plan_by_what_it_ran_at_so_far():
    est = measured(0.018, 0.020, {5: 0.056, 3: 0.040}, rtt=0.002)
    est.add_blocks(Scheme.GREEDY, [(2, 4), (4, 4), (0, 4), (1, 4)] * 4)
    only = choose(Scheme.GREEDY, est, gamma=4, depth=3).predicted["cloud-only"]
    running = (Mode.CLOUD_LED, 4, 3)
    slow = revise(Scheme.GREEDY, est, running, depth=3, n_tokens=48, observed=0.7 * only)
    assert slow is not None and slow.mode is Mode.CLOUD_ONLY
    assert f"from cloud-led gamma 4 depth 3 ({0.7 * only:.1f})" in slow.reason
    assert revise(Scheme.GREEDY, est, running, depth=3, n_tokens=48, observed=0.95 * only) is None


def test_revise_keeps_a_plan_within_the_switch_margin():
    est = measured(0.018, 0.020, {5: 0.056, 3: 0.040}, rtt=0.05)
    est.add_blocks(Scheme.GREEDY, [(2, 4), (4, 4), (0, 4), (1, 4)] * 4)
    best = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert best.mode is Mode.CLOUD_ONLY
    runner_up = max((r, k) for k, r in best.predicted.items() if k != "cloud-only")
    assert runner_up[0] * (1 + SWITCH_GAIN) > best.predicted["cloud-only"]  # a near tie
    words = runner_up[1].split()  # "<mode> gamma <g>[ depth <d>]"
    mode, gamma = Mode.parse(words[0]), int(words[2])
    running = (mode, gamma, int(words[4]) if len(words) > 3 else 1)
    assert revise(Scheme.GREEDY, est, running, depth=3, n_tokens=200) is None


def test_revise_cuts_an_exploration_short_when_it_runs_slower_than_the_cloud_alone():
    """Acceptance not measured yet (a pipeline exploring it): no speculative plan can
    be predicted, but cloud-only can, and an exploration observed to run clearly
    slower than that prediction switches to it; one that keeps up goes on."""
    est = measured(0.018, 0.020, {5: 0.056}, rtt=0.002)
    est.add_blocks(Scheme.GREEDY, [(1, 4)] * 3)  # under MIN_ACCEPT_SAMPLES
    assert est.accept(Scheme.GREEDY, 4) is None
    running = (Mode.PIPELINE, 4, 3)
    plan = revise(Scheme.GREEDY, est, running, depth=3, n_tokens=48, observed=25.0)
    assert plan is not None and plan.mode is Mode.CLOUD_ONLY
    assert plan.reason.startswith(
        "auto switched from pipeline gamma 4 depth 3 (25.0) to cloud-only"
    )
    assert "acceptance under greedy not measured yet" in plan.reason
    only = plan.predicted["cloud-only"]
    assert revise(Scheme.GREEDY, est, running, depth=3, n_tokens=48, observed=only) is None
    assert revise(Scheme.GREEDY, est, running, depth=3, n_tokens=48) is None  # nothing observed
    cloud_only = (Mode.CLOUD_ONLY, 1, 1)
    assert revise(Scheme.GREEDY, est, cloud_only, depth=3, n_tokens=48, observed=1.0) is None


def test_an_exploration_cut_short_counts_its_drafts_and_hopes_only_for_the_missing_ones():
    """Acceptance not measured: auto explores the plan that hope makes best (the
    samples still missing counted as accepted). Cut short for running slower than
    cloud-only, it leaves the drafts it measured and the model's error for its
    mode (its observed rate over what the model gives it), and the next
    generation plans from both instead of exploring the same plan again."""
    est = measured(0.018, 0.019, {2: 0.028, 3: 0.036, 5: 0.057, 9: 0.084}, rtt=0.002)
    first = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert first.mode is not Mode.CLOUD_ONLY and not first.predicted
    assert "not measured yet: hoping for 1.00 at the first position" in first.reason
    name = label(first.mode, first.gamma, first.depth)
    assert first.model[name] > first.model["cloud-only"]
    blocks = [(0, 4), (3, 4), (4, 4), (4, 4), (1, 4)]  # the drafts it measured
    if first.mode is Mode.CLOUD_LED:
        blocks = [(1, 2), (0, 2), (2, 2), (2, 2), (1, 2)]
    est.add_blocks(Scheme.GREEDY, blocks)
    assert est.accept(Scheme.GREEDY, 4) is None
    hope = est.hopeful(Scheme.GREEDY, [1.0] * 2)
    kept = sum(a > 0 for a, _ in blocks)
    assert hope[0] == pytest.approx((kept + 3) / 8)
    running = (first.mode, first.gamma, first.depth)
    cut = revise(Scheme.GREEDY, est, running, depth=3, n_tokens=48, observed=29.0)
    assert cut is not None and cut.mode is Mode.CLOUD_ONLY
    assert cut.reason.startswith(f"auto switched from {name} (29.0) to cloud-only")
    ran = model_rate(Scheme.GREEDY, est, running) or 0.0  # what the client sets it against
    est.add_outcome(first.mode, 29.0, ran)
    assert est.error[first.mode] < 0.7
    again = choose(Scheme.GREEDY, est, gamma=4, depth=3)
    assert (again.mode, again.gamma, again.depth) != running, again.reason


def test_the_error_is_learned_against_the_model_before_scaling():
    """A mode that always delivers 0.8x the model's prediction settles at an error
    of 0.8: each outcome is set against the unscaled prediction (Plan.model), not
    against one the error already scaled (that would settle at sqrt(0.8))."""
    est = measured(0.024, 0.072, {5: 0.087, 9: 0.095}, rtt=0.02)
    est.add_blocks(Scheme.GREEDY, [(4, 4), (3, 4), (4, 4), (2, 4)] * 4)
    for _ in range(30):
        plan = choose(Scheme.GREEDY, est, gamma=4, depth=3)
        name = label(plan.mode, plan.gamma, plan.depth)
        assert plan.predicted[name] == pytest.approx(
            plan.model[name] * est.error.get(plan.mode, 1.0)
        )
        est.add_outcome(plan.mode, 0.8 * plan.model[name], plan.model[name])
    assert all(e == pytest.approx(0.8) for e in est.error.values()), est.error
