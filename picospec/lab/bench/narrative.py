"""The report's prose: each paragraph from the numbers printed beside it.

Where the data could support more than one conclusion (is contention slowing
the drafter? does the closed form account for a mode? where is the pipeline's
gap to the model largest?), the sentence is chosen by comparing measured or
simulated quantities, against the thresholds below where a comparison needs
one, and printed with the numbers it was decided by. Nothing here is printed
whatever the data says, except descriptions of how the numbers were obtained.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from picospec.lab.profiles import BUILTIN, CloudProfile, EdgeProfile, LinkProfile

from . import analysis

COMMAND = "picospec bench e2e --out docs"
PAPER_VS_CLOUD = 2.9
"""The paper's headline speedup over cloud autoregressive decoding."""
PAPER_VS_SYNC = (1.9, 2.6)
"""The paper's range of speedups over stop-and-wait speculative decoding."""
PAPER = (
    f"PicoSpec (arXiv 2603.19133) reports up to {PAPER_VS_CLOUD:g}x over cloud autoregressive "
    "decoding (Llama-3.2-1B drafting on a Jetson AGX for Llama-3.1-70B on 4 A100s, HumanEval) "
    f"and {PAPER_VS_SYNC[0]:g}-{PAPER_VS_SYNC[1]:g}x over stop-and-wait speculative decoding"
)

MODEL_CLOSE = 0.03
"""A mode whose mean measured/model ratio is within this of 1 counts as accounted for by the
closed form; further off, the report looks for what the closed form leaves out."""
CONTENTION = 0.10
"""The drafter's step, slower by more than this share while the verifier runs than alone,
counts as contention between the two threads."""
SAME_SPEED = 0.10
"""Two per-step costs within this share of each other count as the same speed (the drafter's
step against the target's decode step)."""
SLOWER = 0.03
"""A target decode step slower by more than this share in cloud-led's runs than in
cloud-only's counts as slowed by the drafter running beside it."""
FLAT_VERIFY = 1.5
"""A target forward over gamma + 1 tokens costing at most this many decode steps counts as
nearly flat in n, as on a datacentre GPU (about 1x), where verifying a block is nearly free."""
DRAFTER_BOUND = 0.90
"""A drafter busy at least this share of the time counts as the pipeline's bottleneck."""
RTT_SPREAD = 0.02
"""Gaps between the pipeline and the model (1 - measured/model) that differ by less than this
from one RTT to another count as the same at every RTT."""
ALPHA = 0.05
"""The exactness tests' significance per scheme, shared among its p-values (Bonferroni)."""
PROJECTION_GAMMA = 4
"""Drafts per block of the simulated pipeline in the projection's acceptance search."""
PROJECTION_DEPTH = 2
"""Blocks in flight of the simulated pipeline in the projection's acceptance search."""
PROJECTION_TARGET = 2.0
"""A speedup over cloud-only whose required acceptance the projection reports, beside the
paper's headline."""


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else float("nan")


def _ratio(result: dict[str, Any], n: int) -> float:
    t = result["forward_ms_by_size"]
    return t[str(n)] / t["1"] if str(n) in t and "1" in t else float("nan")


def _runs(result: dict[str, Any], *modes: str) -> list[dict[str, Any]]:
    return [r for r in result["runs"] if r["mode"] in modes]


def _step_ms(runs: Iterable[dict[str, Any]]) -> float:
    """The target's one-token forward in these runs (the mean of each run's median;
    nan without one)."""
    return _mean(statistics.median(r["forward_ms"]["1"]) for r in runs if r["forward_ms"].get("1"))


def decode_ms(result: dict[str, Any]) -> float:
    """The target's decode step (a forward over one token), measured in the cloud-only runs,
    else in the forward sweep."""
    step = _step_ms(_runs(result, "cloud-only"))
    return step if step == step else result["forward_ms_by_size"].get("1", float("nan"))


def draft_ms(result: dict[str, Any]) -> tuple[float, float]:
    """The drafter's step alone (edge-only) and while the verifier runs (sync, pipeline)."""
    alone = _mean(r["draft_ms"] for r in _runs(result, "edge-only"))
    busy = _mean(r["draft_ms"] for r in _runs(result, "sync", "pipeline"))
    return alone, busy


def drafter_busy_share(result: dict[str, Any]) -> float | None:
    """Share of the time after the first token that the drafter spends drafting, in the
    pipelined runs with two or more blocks in flight (None without such runs)."""
    shares = [
        r["drafted"] * r["draft_ms"] / (r["seconds"] * 1e3 - r["ttft_ms"])
        for r in _runs(result, "pipeline")
        if r["depth"] >= 2 and r["seconds"] * 1e3 > r["ttft_ms"]
    ]
    return _mean(shares) if shares else None


def _speed(step: float, decode: float) -> str:
    """How one drafter step compares with a target decode step, with both numbers."""
    both = f"({step:.1f} ms against {decode:.1f} ms)"
    if abs(step / decode - 1) <= SAME_SPEED:
        return f"costs about as much as a target decode step {both}"
    if step < decode:
        return f"is {decode / step:.1f}x faster than a target decode step {both}"
    return f"is {step / decode:.1f}x slower than a target decode step {both}"


def _model_name(x: dict[str, Any]) -> tuple[str, str | None]:
    """(network, quantisation) from a model file's name, e.g. ('SmolLM2-135M', 'Q2_K')."""
    stem = Path(str(x["path"])).name.removesuffix(".gguf")
    base, _, quant = stem.rpartition(".")
    if base and re.fullmatch(r"(I?Q\d\w*|B?F(16|32))", quant, flags=re.IGNORECASE):
        return base, quant
    return stem, None


def _bits(quant: str) -> int | None:
    m = re.search(r"(\d+)", quant)
    return int(m.group(1)) if m else None


def _pair(result: dict[str, Any]) -> dict[str, Any] | None:
    """The drafter and target names, and whether they are one network at two precisions."""
    by = {x["role"]: x for x in result.get("models", [])}
    if "drafter" not in by or "target" not in by:
        return None
    (dn, dq), (tn, tq) = _model_name(by["drafter"]), _model_name(by["target"])
    return {"drafter": dn, "draft_quant": dq, "target": tn, "target_quant": tq, "same": dn == tn}


def pair_label(result: dict[str, Any]) -> str:
    """The measured pair in a few words: 'SmolLM2-135M Q2_K vs Q4_1' or 'A vs B'."""
    p = _pair(result)
    if p is None:
        return f"pair {result['pair']}"
    if p["same"] and p["draft_quant"] and p["target_quant"]:
        return f"{p['drafter']} {p['draft_quant']} vs {p['target_quant']}"
    return f"{p['drafter']} vs {p['target']}"


def intro(result: dict[str, Any]) -> list[str]:
    """The page's opening paragraphs: how to regenerate it, the machine, the models."""
    m = result["machine"]
    gpu = ""
    if "gpu" in m:
        gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    return [
        f"Regenerate with `{COMMAND}` ({result['seconds'] / 60:.1f} minutes here); "
        "`picospec bench e2e --quick` is the smoke version (under three minutes). Every number "
        "below was measured by that command in one run, except the columns labelled *model* or "
        "*simulated*, and the projection section, whose inputs are labelled.",
        f"**Machine:** {m['cpu']}, {m['cores']} cores{gpu}; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; measured {m['date']}.",
        f"**Models:** pair `{result['pair']}`: "
        + "; ".join(
            f"{x['role']} {Path(str(x['path'])).name} (sha256 {str(x['sha256'])[:16]}...)"
            for x in result["models"]
        )
        + ". Drafter and target each run on one thread, the edge client, the QUIC server and "
        "the link emulator on loopback in one process (the demo's set-up).",
    ]


def regime(result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """What this machine's costs allow: the verify forward's growth with n, the drafter's
    step against the target's, and whether speculative decoding beat cloud-only here."""
    n = result["plan"]["base_gamma"] + 1
    growth = _ratio(result, n)
    out = ["**The regime.**"]
    if growth == growth:  # measured
        if growth > FLAT_VERIFY:
            out.append(
                f"On this CPU a target forward over {n} tokens costs {growth:.1f}x one decode "
                "step (on a datacentre GPU it is about 1x), so verifying a block costs well "
                "over a decode step."
            )
        else:
            out.append(
                f"On this CPU a target forward over {n} tokens costs only {growth:.1f}x one "
                "decode step, close to a datacentre GPU's (about 1x), so verifying a block "
                "costs little more than a decode step."
            )
    alone, busy = draft_ms(result)
    step, where = (alone, "alone, edge-only") if alone == alone else (busy, "beside the verifier")
    decode = decode_ms(result)
    if step == step and decode == decode:
        out.append(f"The drafter's step ({where}) {_speed(step, decode)}.")
    spec = [r for r in rows if r["mode"] in ("sync", "pipeline") and r.get("vs_cloud_only")]
    if spec:
        best = max(spec, key=lambda r: r["vs_cloud_only"])
        at = (
            f"{best['scheme']} {best['mode']} at RTT {best['rtt_ms']:g} ms, "
            f"{best['rate_mbit']:g} Mbit/s, gamma {best['gamma']}"
        )
        wins = [r for r in spec if r["vs_cloud_only"] > 1]
        if wins:
            out.append(
                f"Speculative decoding beats the target decoding alone in {len(wins)} of "
                f"{len(spec)} configurations here, by up to {best['vs_cloud_only']:.2f}x "
                f"({at})."
            )
        else:
            out.append(
                "Speculative decoding does not beat the target decoding alone here: the "
                f"fastest speculative configuration reaches {best['vs_cloud_only']:.2f}x "
                f"cloud-only ({at})."
            )
    out.append(
        "What these runs show is pipelining against stop-and-wait on the same pair, the wire "
        "cost of each scheme, and how well the time model and the simulator account for both."
    )
    if "projection" in result:
        out.append(
            "The projection section asks what the same protocol gives with the paper's timings."
        )
    return " ".join(out)


def plan(result: dict[str, Any]) -> str:
    """What the sweep covered."""
    p = result["plan"]
    styles = ", ".join(dict.fromkeys(r["style"] for r in result["runs"] if "style" in r))
    return (
        f"**Plan:** RTT {', '.join(f'{x:g}' for x in p['rtts'])} ms x rate "
        f"{', '.join(f'{x:g}' for x in p['rates'])} Mbit/s (greedy, gamma {p['base_gamma']}, "
        f"depth {p['base_depth']}); schemes {', '.join(p['schemes'])} at T = "
        f"{p['temperature']:g}; gamma {', '.join(map(str, p['gammas']))} and depth "
        f"{', '.join(map(str, p['depths']))} at RTT {p['base_rtt']:g} ms, "
        f"{p['base_rate']:g} Mbit/s; {p['prompts_per_style']} prompt(s) per style"
        + (f" ({styles})" if styles else "")
        + f" x {p['repeats']} repeat(s), {p['max_tokens']} tokens each, "
        f"modes interleaved; {len(result['runs'])} generations in all."
    )


def validation(result: dict[str, Any]) -> str:
    """The contract checks, stated as holding only when no run broke them."""
    v = result["violations"]
    n = len(result["runs"])
    if not v:
        return (
            f"{n} generations checked before any timing was kept: each finished "
            "cleanly; greedy output (pipeline, sync) equals the cloud-only output of the same "
            "prompt token for token; with a sampling scheme, one seed gives the same tokens at "
            "every RTT, rate, depth and repeat. **No violations.**"
        )
    return (
        f"{n} generations checked before any timing was kept, for three things: that each "
        "finishes cleanly; that greedy output (pipeline, sync) equals the cloud-only output of "
        "the same prompt token for token; that with a sampling scheme, one seed gives the same "
        f"tokens at every RTT, rate, depth and repeat. **{len(v)} violation(s):**\n\n"
        + "\n".join(f"- {x}" for x in v)
    )


def table1_notes() -> str:
    """What Table 1's columns mean."""
    return (
        "Means over prompts and repeats (± one standard deviation of tok/s). *accept len*: "
        "tokens a verify round emits (accepted drafts + the correction or bonus); *ms/round*: "
        "wall time per verify round after the first token; *T_draft*: gamma drafter steps as "
        "the edge loop waited for them; *T_verify*: one target forward over gamma or gamma+1 "
        "tokens, measured inside the service; bytes are framed messages per generated token "
        f"(QUIC adds about {analysis.PACKET_OVERHEAD} bytes per datagram); *fwd/tok*: target "
        "forward passes per generated token."
    )


def _rtt_gaps(result: dict[str, Any]) -> dict[float, tuple[float, float]]:
    """Per RTT, over the grid's pipeline runs: (1 - measured/model, the abandon what-if's
    gain over the simulator)."""
    grid = [
        r
        for r in _runs(result, "pipeline")
        if "grid" in r["groups"] and r.get("model_tok_per_s") and r.get("sim_tok_per_s")
    ]
    out = {}
    for rtt in sorted({r["rtt_ms"] for r in grid}):
        rs = [r for r in grid if r["rtt_ms"] == rtt]
        gap = 1 - _mean(r["tok_per_s"] / r["model_tok_per_s"] for r in rs)
        what_if = _mean(
            r["sim_abandon_tok_per_s"] / r["sim_tok_per_s"] - 1
            for r in rs
            if r.get("sim_abandon_tok_per_s")
        )
        out[rtt] = (gap, what_if)
    return out


def _rtt_sentence(result: dict[str, Any], explained: bool) -> str | None:
    gaps = _rtt_gaps(result)
    if len(gaps) < 2:
        return None
    g = {rtt: v[0] for rtt, v in gaps.items()}
    worst, best = max(g, key=lambda k: g[k]), min(g, key=lambda k: g[k])
    if g[worst] - g[best] < RTT_SPREAD:
        return (
            f"The gap is about the same at every RTT ({g[best]:.1%} to {g[worst]:.1%} in the grid)."
        )
    rtts = sorted(g)
    label = (
        "the lowest RTT"
        if worst == rtts[0]
        else "the highest RTT"
        if worst == rtts[-1]
        else "an intermediate RTT"
    )
    what_if = {rtt: v[1] for rtt, v in gaps.items() if v[1] == v[1]}
    why = ""
    if (
        explained
        and worst == rtts[0]
        and what_if
        and max(what_if, key=lambda k: what_if[k]) == worst
    ):
        why = ", where a serial round is short and the wait is a larger share of it"
    return (
        f"The gap is largest at {label} ({g[worst]:.1%} at {worst:g} ms, against "
        f"{g[best]:.1%} at {best:g} ms){why}."
    )


def _cores(result: dict[str, Any]) -> str:
    cores = result["machine"].get("cores")
    if cores == 1:
        return "on the same core"
    return "on the other core" if cores == 2 else "on another core"


def why(result: dict[str, Any]) -> str:
    """Where the closed form and the measurements part, and why, from this run's data."""
    runs = result["runs"]

    def ratio(mode: str, field: str) -> float:
        return _mean(r["tok_per_s"] / r[field] for r in runs if r["mode"] == mode and r.get(field))

    lines = ["### Why the model and the measurements differ"]
    share = drafter_busy_share(result)
    if _runs(result, "sync"):
        s = ratio("sync", "model_tok_per_s")
        if abs(s - 1) <= MODEL_CLOSE:
            tail = ": every round is serial, so the closed form is the protocol."
        else:
            missed = (
                "its rounds cost something the closed form's inputs (drafter steps, round "
                "trip, verify forward) leave out"
                if s < 1
                else "the closed form's inputs (drafter steps, round trip, verify forward) "
                "overstate what its rounds cost"
            )
            tail = (
                f", {abs(s - 1):.0%} off although every round is serial: {missed}; the "
                f"simulator, given the same inputs, is at {ratio('sync', 'sim_tok_per_s'):.2f}x."
            )
        lines.append(f"- **sync** is measured at {s:.2f}x the model on average{tail}")
    pipe = [r for r in runs if r["mode"] == "pipeline" and r.get("model_tok_per_s")]
    if pipe:
        p, ps = ratio("pipeline", "model_tok_per_s"), ratio("pipeline", "sim_tok_per_s")
        worst = sorted(pipe, key=lambda r: r["tok_per_s"] / r["model_tok_per_s"])[:3]
        worst_text = ", ".join(
            f"{r['tok_per_s'] / r['model_tok_per_s']:.2f} at RTT {r['rtt_ms']:g} ms, "
            f"depth {r['depth']}"
            for r in worst
        )
        abandon = _mean(
            r["model_tok_per_s"] / r["sim_abandon_tok_per_s"]
            for r in pipe
            if r.get("sim_abandon_tok_per_s")
        )
        text = (
            f"- **pipeline** is measured at {p:.2f}x the model (worst: {worst_text}). "
            "The simulator, which follows the edge loop token by token, is at "
            f"{ps:.2f}x."
        )
        explained = False
        if abs(p - 1) <= MODEL_CLOSE:
            text += " The closed form accounts for the pipeline too."
        elif abs(ps - 1) >= abs(p - 1):
            text += (
                " The simulator is no closer to the measurements than the closed form, so the "
                "difference lies in something neither of them is given."
            )
        elif p > 1:
            text += (
                " The measurements beat the closed form, so the wait for the drafter step in "
                "progress, which can only slow the pipeline, does not explain the difference."
            )
        elif not abs(abandon - 1) <= MODEL_CLOSE:
            text += (
                " The simulator is closer, but with its wait for the drafter step in progress "
                "removed (`abandon_on_rejection`, a what-if) it is still "
                f"{abs(abandon - 1):.1%} from the closed form on average, so that wait is not "
                "the whole difference."
            )
        else:
            explained = True
            bound = share is not None and share >= DRAFTER_BOUND
            busy = "nearly always busy" if bound else "busy"
            busy += f" ({share:.0%} of the time after the first token)" if share is not None else ""
            waits = "every rejection waits" if bound else "a rejection that comes mid-step waits"
            text += (
                " The difference is one thing the closed form leaves out: the edge applies a "
                "verdict only between drafter steps (a llama.cpp decode cannot be interrupted), "
                f"so with depth >= 2 the drafter is {busy} and {waits} for the step "
                "in progress before the drafter rolls back. Simulating the same traces with "
                "that wait removed (`abandon_on_rejection`, a what-if) gives tok/s within "
                f"{abs(abandon - 1):.1%} of the closed form on average."
            )
        rtt = _rtt_sentence(result, explained)
        if rtt and abs(p - 1) > MODEL_CLOSE:
            text += " " + rtt
        lines.append(text)
    cloud = [r for r in _runs(result, "cloud-only") if r["forward_ms"].get("1")]
    if cloud:
        wall = _mean((r["seconds"] * 1e3 - r["ttft_ms"]) / max(r["n_tokens"] - 1, 1) for r in cloud)
        fwd1 = decode_ms(result)
        thread = _mean(
            (r["cloud_busy_ms"] - sum(sum(v) for s, v in r["forward_ms"].items() if s != "1"))
            / len(r["forward_ms"]["1"])
            for r in cloud
        )
        rest = wall - fwd1
        text = (
            f"- **cloud-only** is measured at {ratio('cloud-only', 'model_tok_per_s'):.2f}x the "
            f"model: a token takes {wall:.1f} ms of wall time against {fwd1:.1f} ms for the "
            "forward and its transform"
        )
        if round(rest, 1) <= 0:
            text += ": the forward is all of it."
        else:
            inside = min(max(thread - fwd1, 0.0), rest)
            text += (
                f"; of the other {rest:.1f} ms, {inside:.1f} ms is on the model thread (its "
                f"other work, and forwards slower than the median) and {rest - inside:.1f} ms "
                "outside it: the hop from the model thread to the event loop and back for every "
                "token (the verdict is framed and sent between steps)."
            )
        lines.append(text)
    alone, busy_step = draft_ms(result)
    if alone == alone and busy_step == busy_step:
        lines.append(_drafter(result, alone, busy_step, share))
    return "\n".join(lines)


def _drafter(result: dict[str, Any], alone: float, busy: float, share: float | None) -> str:
    """The drafter bullet: contention, whether the drafter limits the pipeline, and its step
    against the target's."""
    slower = busy / alone - 1
    text = (
        f"- The drafter step costs {alone:.1f} ms alone (edge-only, whose step also "
        f"transforms the whole vocabulary) and {busy:.1f} ms while the verifier runs "
        f"{_cores(result)} (sync, pipeline): "
    )
    bound = share is not None and share >= DRAFTER_BOUND
    at = f"{share or 0:.0%} of the time after the first token in the pipelined runs at depth >= 2"
    if slower > CONTENTION:
        text += (
            f"running beside the verifier slows the drafter's step by {slower:.0%}, so "
            "contention costs the pipeline that share of its drafting speed"
        )
        if share is not None:
            text += (
                f"; and the drafter is the limit (it is busy {at})."
                if bound
                else f"; the drafter is not the limit (it is busy only {at})."
            )
        else:
            text += "."
    else:
        text += (
            f"the two threads do not slow each other much ({slower:+.0%}), so contention is not "
            "what limits the pipeline here"
        )
        if share is not None:
            text += (
                f"; the drafter's speed is (it is busy {at})."
                if bound
                else f", nor is the drafter's speed (it is busy only {at})."
            )
        else:
            text += "."
    decode = decode_ms(result)
    if decode != decode:  # no decode step measured: nothing to compare the drafter with
        return text
    pair = _pair(result)
    same_speed = abs(alone / decode - 1) <= SAME_SPEED
    if pair and pair["same"] and pair["draft_quant"] and pair["target_quant"]:
        db, tb = _bits(pair["draft_quant"]), _bits(pair["target_quant"])
        precision = (
            "at another precision"
            if db is None or tb is None
            else "at lower precision"
            if db < tb
            else "at higher precision"
            if db > tb
            else "at the same precision"
        )
        text += (
            f" The {pair['draft_quant']} drafter is the target's own weights {precision}, the "
            "same network, " + ("so" if same_speed else "and") + " one of its steps "
        )
    elif pair:
        text += f" The drafter ({pair['drafter']}) is not the target's network; one of its steps "
    else:
        text += " One drafter step "
    text += _speed(alone, decode) + ": pipelined throughput cannot exceed the drafter's own rate "
    text += (
        "(DESIGN.md section 3), and that rate is the target's."
        if same_speed
        else f"(DESIGN.md section 3), {1e3 / busy:.1f} tok/s while the verifier runs, against "
        f"the target's {1e3 / decode:.1f} tok/s."
    )
    return text


def exactness_intro(ex: dict[str, Any]) -> str:
    """How the exactness rows were obtained."""
    return (
        f"{ex['rows'][0]['n']} seeded generations of {ex['length']} tokens per row "
        f'(prompt: "{ex["prompt"]}", stop-and-wait in process, gamma {ex["length"] - 1}, '
        f"K = {ex['k']}). "
        "Chi-square p-values compare a token position's marginal with target-only "
        "sampling (the cloud-only row, other seeds); TV is the distance between the two "
        "empirical marginals, with in brackets the mean TV of random re-splits of the "
        "pooled samples (the noise floor). The PIT p-values test each sample against the "
        "target's exact distribution given the sample's own prefix. Small p-values flag "
        "a distribution that is not p."
    )


def exactness_notes(ex: dict[str, Any], schemes: list[dict[str, Any]] | None = None) -> str:
    """Which schemes the tests flag, at a threshold corrected for the tests per scheme;
    schemes: the scheme table's rows, whose ``exact`` column the split note cites."""
    by: dict[str, list[float]] = {}
    for r in ex["rows"]:
        for p in r["positions"]:
            for key in ("p_value", "pit_p_value"):
                if key in p:
                    by.setdefault(r["scheme"], []).append(p[key])
    if not by:
        return ""
    tests = max(len(v) for v in by.values())
    threshold = ALPHA / tests
    lines = [
        f"Each scheme gets up to {tests} p-values; one below "
        f"{threshold:.4f} ({ALPHA:g} shared among them) flags it:"
    ]
    for scheme, ps in by.items():
        verdict = "flagged: not distributed as p" if min(ps) < threshold else "consistent with p"
        lines.append(f"- `{scheme}`: lowest p-value {min(ps):.4f}, {verdict}.")
    split = [r for r in ex["rows"] if r["scheme"] == "split"]
    if split:
        mass = ", ".join(f"{r['truncated_mass_mean']:.2f} at T {r['temperature']:g}" for r in split)
        inexact = sum(r["inexact_rejections"] for r in split)
        rejections = sum(r["rejections"] for r in split)
        which = (
            "every residual" if inexact == rejections else f"{inexact} of {rejections} residuals"
        )
        marked = [r["exact"] for r in schemes or [] if r["scheme"] == "split"]
        table = (
            ""
            if not marked
            else " (`exact` is NO in the scheme table)"
            if not all(marked)
            else " (`exact` is yes in the scheme table: none of its verdicts was truncated)"
        )
        lines.append(
            "`split` sends p's top-K at a rejection and the edge samples the residual from "
            "it. Without top-k sampling, p's support is the whole vocabulary, so "
            f"{which} here came from a truncated p (mean mass left out per rejection: {mass}); "
            f"the runtime marks each such verdict inexact{table}."
        )
    exact = [s for s in ("sparse-q", "gumbel") if s in by]
    if exact:
        agree = all(min(by[s]) >= threshold for s in exact)
        lines.append(
            f"{' and '.join(f'`{s}`' for s in exact)} are exact by construction; "
            + ("these tests agree." if agree else "**these tests disagree: investigate.**")
        )
    return "\n".join(lines)


def projection_intro(result: dict[str, Any]) -> str:
    """Where the projection's inputs come from."""
    measured = any(r["acceptance"].startswith("measured here") for r in result["projection"])
    source = (
        "comes from this run's greedy pipeline traces "
        f"({pair_label(result)}) or is set to a fixed rate"
        if measured
        else "is set to a fixed rate"
    )
    return (
        "The simulator with timing profiles as inputs, not measurements: "
        + "; ".join(
            f"`{n}`: {BUILTIN[n].source}"
            for n in dict.fromkeys(x for v in analysis.REGIMES.values() for x in v)
        )
        + f". Acceptance per position {source}; the paper's model pairs "
        "were not run here. For reference, not as a measured column: " + PAPER + "."
    )


def _profiles(regime: str) -> tuple[EdgeProfile, LinkProfile, CloudProfile]:
    e, lk, c = analysis.REGIMES[regime]
    edge, link, cloud = BUILTIN[e], BUILTIN[lk], BUILTIN[c]
    assert isinstance(edge, EdgeProfile) and isinstance(link, LinkProfile)
    assert isinstance(cloud, CloudProfile)
    return edge, link, cloud


def round_costs(regime: str, gamma: int, depth: int) -> dict[str, float]:
    """A regime's round costs in ms, as the time model composes them (transfers aside):
    the stop-and-wait round, the pipeline's serial round (a rejection's cost), its
    steady-state block at depth, and the drafter's gamma steps."""
    edge, link, cloud = _profiles(regime)
    drafting = gamma * edge.draft_ms
    verify = cloud.forward_ms(gamma) + cloud.round_ms
    serial = drafting + link.rtt_ms + verify
    return {
        "sync": drafting + link.rtt_ms + cloud.forward_ms(gamma + 1) + cloud.round_ms,
        "serial": serial,
        "block": max(drafting, verify, serial / max(depth, 1)),
        "drafting": drafting,
    }


def _span(xs: list[float], fmt: str) -> str:
    lo, hi = format(min(xs), fmt), format(max(xs), fmt)
    return lo if lo == hi else f"{lo} to {hi}"


def _sync_bytes(result: dict[str, Any]) -> float | None:
    sync = [r for r in _runs(result, "sync") if r["scheme"] == "greedy"]
    n = sum(r["n_tokens"] for r in sync)
    return sum(r["bytes_up"] + r["bytes_down"] for r in sync) / n if n else None


def projection_notes(result: dict[str, Any]) -> str:
    """What the projection says, with the acceptance the paper's headline would need."""
    gamma, depth = PROJECTION_GAMMA, PROJECTION_DEPTH
    lines = ["What the simulator predicts, and why:"]
    for regime in analysis.REGIMES:
        edge, _link, cloud = _profiles(regime)
        ceiling = 1e3 / edge.draft_ms
        decode = 1e3 / cloud.verify_ms[0]
        serial = round_costs(regime, gamma, depth)["serial"]
        need = analysis.acceptance_for(PAPER_VS_CLOUD, regime, gamma=gamma, depth=depth)
        need2 = analysis.acceptance_for(PROJECTION_TARGET, regime, gamma=gamma, depth=depth)
        reach = (
            f"reaches {PROJECTION_TARGET:.1f}x cloud-only at {need2:.2f} acceptance per position"
            if need2 is not None
            else f"cannot reach {PROJECTION_TARGET:.1f}x cloud-only at any acceptance"
        )
        headline = f"{PAPER_VS_CLOUD:g}x (the paper's headline)"
        reach += (
            f" and {headline} at {need:.3f}."
            if need is not None
            else f" and cannot reach {headline} at any acceptance."
        )
        lines.append(
            f"- **{regime}**: cloud-only decodes {decode:.1f} tok/s and the drafter drafts "
            f"{ceiling:.1f} tok/s, so no pipeline can exceed {ceiling / decode:.1f}x cloud-only. "
            "Each rejection costs a serial round (drafting a block, the round trip and a "
            f"verify: {serial:.0f} ms). The simulated pipeline (gamma {gamma}, depth {depth}) "
            + reach
        )
    proj = result["projection"]
    full = analysis.project({"every draft accepted": [1.0] * gamma}, gamma=gamma, seeds=1)
    costs = {regime: round_costs(regime, gamma, 2) for regime in analysis.REGIMES}
    lines.append(
        stop_and_wait_note(
            [r["pipeline_d2_vs_sync"] for r in proj],
            max(r["pipeline_d2_vs_sync"] for r in full),
            costs,
            _sync_bytes(result),
        )
    )
    if all("pipeline_d3" in r for r in proj):
        lines.append(depth_note(proj, costs))
    return "\n".join(lines)


def stop_and_wait_note(
    vs_sync: list[float],
    best: float,
    costs: dict[str, dict[str, float]],
    wire: float | None,
) -> str:
    """The depth-2 pipeline against stop-and-wait: vs_sync, its speedups in the projection's
    rows; best, its speedup at full acceptance; costs, each regime's ``round_costs`` at
    depth 2; wire, the measured stop-and-wait bytes per token (None if not measured)."""
    times = [c["sync"] / c["block"] for c in costs.values()]
    below = best < PAPER_VS_SYNC[0]
    paper = f"{PAPER_VS_SYNC[0]:g}-{PAPER_VS_SYNC[1]:g}x over stop-and-wait"
    text = (
        "- Against stop-and-wait the simulated pipeline "
        + ("gains " if min(vs_sync) >= 1 else "ranges from ")
        + f"{min(vs_sync):.2f}x to {max(vs_sync):.2f}x in these rows, and at most {best:.2f}x "
        "even when every draft is accepted: with these timings a stop-and-wait round (draft, "
        f"round trip, verify) is {'only ' if below else ''}{_span(times, '.1f')}x a pipelined "
        "block at depth 2 ("
        + "; ".join(
            f"{regime}: {c['sync']:.0f} ms against {c['block']:.0f} ms"
            for regime, c in costs.items()
        )
        + "), and stop-and-wait also earns a bonus token per round."
    )
    if below:
        text += (
            f" The paper's {paper} therefore needs other timings or a slower stop-and-wait "
            "baseline than this one"
            + (
                f", whose messages are {wire:.0f} bytes per generated token (greedy sync, "
                "measured here)."
                if wire is not None
                else "."
            )
        )
    elif max(vs_sync) >= PAPER_VS_SYNC[0]:
        text += f" These rows reach the paper's {paper}."
    else:
        text += f" The paper's {paper} is within these timings' reach, at higher acceptance."
    return text


def depth_note(proj: list[dict[str, Any]], costs: dict[str, dict[str, float]]) -> str:
    """Depth 3 against depth 2 in the projection's rows, and whether two blocks in flight
    already keep the drafter busy (costs: each regime's ``round_costs`` at depth 2)."""
    deeper = sum(r["pipeline_d3"] <= r["pipeline_d2"] for r in proj)
    busy = [c["drafting"] / c["block"] for c in costs.values()]
    share = f"{_span(busy, '.0%')} of the time"
    bound = min(busy) >= DRAFTER_BOUND
    if 2 * deeper >= len(proj):
        head = f"- Depth 3 is no faster than depth 2 in {deeper} of {len(proj)} rows: "
        if bound:
            return head + (
                f"the drafter is the bottleneck (two blocks in flight keep it busy {share}), "
                "so more blocks in flight add only drafts that a rejection throws away, and the "
                "rejection waits for the drafter step in progress."
            )
        return head + (
            f"two blocks in flight keep the drafter busy only {share}, but a third adds drafts "
            "that a rejection throws away, and the rejection waits for the drafter step in "
            "progress."
        )
    head = f"- Depth 3 is faster than depth 2 in {len(proj) - deeper} of {len(proj)} rows: "
    if bound:
        return head + (
            f"two blocks in flight already keep the drafter busy {share}, so a third gains "
            "only the little idle time left."
        )
    return (
        head + f"two blocks in flight keep the drafter busy only {share}, and a third fills more."
    )


def adaptive_notes(rows: list[dict[str, Any]], runs: list[dict[str, Any]] | None = None) -> str:
    """What the auto and cloud-led rows show, decided by the numbers (runs: the
    raw runs, for auto's explorations and switches and cloud-led's costs)."""
    autos = [r for r in rows if r["mode"] == "auto" and r.get("vs_best_fixed")]
    leds = [r for r in rows if r["mode"] == "cloud-led" and r.get("vs_cloud_only")]
    if not autos:
        return "No auto runs in this result."
    ok = [r for r in autos if r["vs_best_fixed"] >= 0.97]
    worst = min(autos, key=lambda r: r["vs_best_fixed"])
    text = (
        f"auto reached at least 0.97x the fastest fixed configuration of its cell in "
        f"{len(ok)} of {len(autos)} cells; its worst cell is {worst['scheme']} at RTT "
        f"{worst['rtt_ms']:g} ms, {worst['rate_mbit']:g} Mbit/s, "
        f"{worst['vs_best_fixed']:.2f}x of {worst['best_fixed']}."
        + _same_choice([r for r in autos if r["vs_best_fixed"] < 0.97], rows)
        + _explorations([r for r in runs or [] if r["mode"] == "auto"])
    )
    if leds:
        lo = min(r["vs_cloud_only"] for r in leds)
        hi = max(r["vs_cloud_only"] for r in leds)
        text += f" cloud-led ran at {lo:.2f}x to {hi:.2f}x cloud-only" + _led_why(leds, runs)
    return text


def _draft_forwards(run: dict[str, Any]) -> list[tuple[int, float]]:
    """(tokens, ms) of a cloud-led run's forwards over more than one token, less
    its prompt's (a prompt the prefix cache does not hold is one of them)."""
    out = [(int(n), ms) for n, v in run["forward_ms"].items() if int(n) > 1 for ms in v]
    prefill = (run.get("prefill_tokens"), run.get("prefill_ms"))
    if prefill in out:
        out.remove(prefill)
    return out


def _led_why(leds: list[dict[str, Any]], runs: list[dict[str, Any]] | None) -> str:
    """What cloud-led's runs measured that sets it against cloud-only: the drafter's
    step beside the target's decode step, what a forward that took drafts cost per
    token, and the decode step itself with and without the drafter running."""
    fwd = _mean(r["forwards_per_token"] for r in leds)
    text = (
        f": its forwards committed {1 / fwd:.2f} tokens each ({fwd:.2f} target forwards per token)"
    )
    led = [r for r in runs or [] if r["mode"] == "cloud-led"]
    only = [r for r in runs or [] if r["mode"] == "cloud-only"]
    if not led or not only:
        return text + "."
    step, alone = _step_ms(led), _step_ms(only)
    draft = _mean(r["draft_ms"] for r in led)
    if draft >= step * (1 - SAME_SPEED):
        text += (
            f"; its drafter stepped in {draft:.1f} ms, no faster than the target's decode "
            f"step ({step:.1f} ms), so its drafts mostly reached the cloud after it had "
            "passed their positions"
        )
    else:
        text += (
            f"; its drafter stepped in {draft:.1f} ms against the target's {step:.1f} ms "
            "decode step, so drafts did reach the cloud ahead of its frontier"
        )
    many = [f for r in led for f in _draft_forwards(r)]
    if many:
        per = sum(ms for _, ms in many) / sum(n for n, _ in many)
        text += (
            f"; a forward that took drafts cost {per:.1f} ms per token it evaluated against "
            f"{step:.1f} ms for one token alone"
            + (", so a draft saved little of a decode step" if per > step / 2 else "")
        )
    if step > alone * (1 + SLOWER):
        text += (
            f"; and with the drafter running beside it the target's decode step took "
            f"{step:.1f} ms against {alone:.1f} ms in cloud-only's runs ({step / alone:.2f}x)"
        )
    return text + "."


def _same_choice(short: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """The cells below 0.97x where auto ran the fastest fixed configuration itself
    in every generation: there the gap is between runs of one configuration."""
    same = [r for r in short if set(r.get("chose") or ()) == {r["best_fixed"]}]
    if not same:
        return ""
    parts = []
    for r in same:
        best = analysis.best_fixed(rows, r)
        assert best is not None
        parts.append(
            f"{r['scheme']} at RTT {r['rtt_ms']:g} ms, {r['rate_mbit']:g} Mbit/s "
            f"({r['best_fixed']} in all {sum(r['chose'].values())} of auto's generations; "
            f"{r['tok_per_s']:.1f} ± {r['tok_per_s_sd']:.1f} against "
            f"{best['tok_per_s']:.1f} ± {best['tok_per_s_sd']:.1f} tok/s)"
        )
    return (
        (
            " In each cell below 0.97x"
            if len(same) == len(short)
            else f" In {len(same)} of the {len(short)} cells below 0.97x"
        )
        + " auto ran the fastest fixed configuration itself, so the gap there is between "
        "runs of one configuration: " + "; ".join(parts) + "."
    )


def _explorations(autos: list[dict[str, Any]]) -> str:
    """Where auto explored (a plan made while an input was not measured) and where it
    switched mid-generation; its edge keeps what it measured across connections."""
    if not autos:
        return ""

    def where(r: dict[str, Any]) -> str:
        return f"{r['scheme']} at RTT {r['rtt_ms']:g} ms, {r['rate_mbit']:g} Mbit/s"

    explored = [r for r in autos if "measured yet" in (r.get("plan") or "").split(" | ")[0]]
    switched = [r for r in autos if len(r.get("parts") or ()) > 1]
    text = (
        f" Its edge keeps what it measured across connections: {len(explored)} of its "
        f"{len(autos)} generations explored (planned while an input was not measured yet"
        + (": " + "; ".join(f"{where(r)}, {r['parts'][0]['mode']}" for r in explored)
           if explored and len(explored) <= 6 else "")
        + f"), and {len(switched)} switched mode mid-generation"
        + (": " + "; ".join(
            f"{where(r)}, " + " -> ".join(f"{p['mode']} ({p['tokens']})" for p in r["parts"])
            for r in switched) if switched and len(switched) <= 6 else "")
        + "."
    )  # fmt: skip
    return text


def misses_notes(rows: list[dict[str, Any]], keep: float = 0.02) -> str:
    """Whether either cheaper miss helps the best configuration by more than keep."""
    out = []
    for name, what in (("abandon", "stopping the drafter step"),
                       ("first_gamma", "a shorter first block")):  # fmt: skip
        gains = [r[name]["gain"] for r in rows]
        helped = [r for r in rows if r[name]["gain"] > keep]
        best = max(rows, key=lambda r: r[name]["gain"])
        out.append(
            f"{what.capitalize()} changes the best configuration by {min(gains):+.1%} to "
            f"{max(gains):+.1%} ({best['cell']} {best['mode']} at the top); more than "
            f"{keep:.0%} in {len(helped)} of {len(rows)} cases"
            + (
                "; in each of those the other mode of the same cell is faster still"
                if helped and all(_beaten(r, rows, name) for r in helped)
                else ""
            )
            + "."
        )
    return " ".join(out)


def _beaten(row: dict[str, Any], rows: list[dict[str, Any]], name: str) -> bool:
    """Another mode of row's cell is faster without the option than row is with it."""
    return any(
        r["cell"] == row["cell"] and r["mode"] != row["mode"]
        and r["best"]["tok_per_s"] > row[name]["tok_per_s"]
        for r in rows
    )  # fmt: skip


def _cycles(rows: list[dict[str, Any]]) -> str:
    seen = {r["cell"]: (r["paper_cycle_tok_per_s"], r["paper_tok_per_s"]) for r in rows}
    return ", ".join(f"{c} {a:.1f} against {b:.2f} reported" for c, (a, b) in seen.items())


def paper_notes(rows: list[dict[str, Any]]) -> str:
    """The paper-regime checks, counted."""
    low = [r for r in rows if "beats_paper" in r["checks"]]
    paper_ok = [r for r in low if r["checks"]["beats_paper"]]
    cloud_ok = [r for r in rows if r["checks"]["beats_cloud_only"]]
    missed = sorted({r["cell"] for r in low if not r["checks"]["beats_paper"]})
    cycle_ok = [r for r in low if r["checks"].get("beats_paper_cycle")]
    return (
        f"The best of cloud-led and auto reaches the paper's PicoSpec figure in "
        f"{len(paper_ok)} of {len(low)} (cell, RTT <= 20 ms) points"
        + (f" (short of it: {', '.join(missed)})" if missed else "")
        + f", and what the paper's own Table 2 gives per cycle (mean acceptance length / "
        f"TPOT, {_cycles(rows)}) in {len(cycle_ok)} of {len(low)}"
        + f"; it is at least the cloud alone in {len(cloud_ok)} of {len(rows)} points up to "
        "RTT 200 ms. Where acceptance is low (Qwen, a = 0.48-0.64) the chains of matching "
        "drafts are short, and each contradiction leaves the cloud decoding alone until "
        "the edge's new chain overtakes it: the gap to the bound is that catch-up."
    )
