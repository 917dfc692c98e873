"""What the time model and the simulator say about each measured run, and the summaries.

Each run of ``bench e2e`` carries its own costs, measured while it ran: the
drafter's step, the target's forward by size, the model thread's busy time.
``costs_of`` turns them into the time model's ``Costs`` (a size the run never
evaluated comes from the whole sweep's median), ``predict_run`` and
``simulate_run`` put the closed-form model and the discrete-event simulator
(replaying the run's own acceptance trace) next to the measurement, and
``aggregate`` averages the repeats of one configuration. ``project`` runs the
simulator on the published regimes' timing profiles.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from picospec.lab.profiles import (
    BUILTIN,
    CloudProfile,
    EdgeProfile,
    LinkProfile,
    costs_of,
    extend,
)
from picospec.lab.sim import IidAcceptance, Scenario, TraceAcceptance, simulate
from picospec.runtime.timemodel import per_position, predict

MAX_N = 16
"""Forward sizes the cost tables cover."""
PACKET_OVERHEAD = 60
"""Bytes a message gains on the wire (UDP/IP, QUIC short header, AEAD tag)."""


def ran(run: dict[str, Any]) -> dict[str, Any]:
    """The run as it ran: an ``auto`` run with the mode, gamma and depth it chose."""
    chose = run.get("chose")
    if run["mode"] != "auto" or not chose:
        return run
    return {**run, **chose}


def _verdicts(run: dict[str, Any]) -> int:
    """Verdicts the cloud sent (the prefill's included)."""
    if run["mode"] == "cloud-only":
        return run["n_tokens"]
    if run["mode"] == "cloud-led":
        return max(run["target_forwards"], 1)  # one per forward
    return run["rounds"] + 1


def _own_forwards(run: dict[str, Any]) -> dict[int, float]:
    """The run's mean forward ms by size: its time is the sum of its forwards, and
    a few slow ones (the machine busy elsewhere) count in full, which a median
    would hide."""
    return {int(n): statistics.fmean(v) for n, v in run["forward_ms"].items()}


def verify_table_ms(run: dict[str, Any], sweep: dict[str, float]) -> tuple[float, ...]:
    """Forward ms for n = 1..MAX_N: the run's own means, else the sweep's medians."""
    own = _own_forwards(run)
    table = {int(n): v for n, v in sweep.items()}
    out: list[float] = []
    for n in range(1, MAX_N + 1):
        v = own.get(n, table.get(n))
        if v is None:  # never evaluated anywhere: extend what is known
            v = extend(out, n) if out else 1.0
        out.append(v)
    return tuple(out)


def _round_overhead_ms(run: dict[str, Any]) -> float:
    """Model-thread time per unit of work outside the forwards (verification, framing)."""
    forwards = sum(sum(v) for v in run["forward_ms"].values())
    units = run["rounds"] if run["mode"] in ("sync", "pipeline") else _verdicts(run)
    return max(0.0, run["cloud_busy_ms"] - forwards) / max(units, 1)


def _prefill_ms(run: dict[str, Any], table: tuple[float, ...]) -> float:
    """The cloud's first forward of the generation: as recorded, else (an older
    record) a forward over the whole prompt when the run evaluated one, else one
    token: a prompt the prefix cache holds evaluates only its last token."""
    if run.get("prefill_ms") is not None:
        return float(run["prefill_ms"])
    return _own_forwards(run).get(run["prompt_tokens"], table[0])


def predict_run(run: dict[str, Any], sweep: dict[str, float]) -> float:
    """The time model's tok/s for the run, from its own acceptance and costs (the
    same costs the simulator gets)."""
    run = ran(run)
    accept = run["accept_per_position"] or [0.0]
    costs = costs_of(*profiles_of(run, sweep), sizes=MAX_N)
    return predict(
        run["mode"], accept, costs, depth=run["depth"], n_tokens=run["n_tokens"]
    ).tok_per_s


def profiles_of(
    run: dict[str, Any], sweep: dict[str, float]
) -> tuple[EdgeProfile, LinkProfile, CloudProfile]:
    """The run's measured costs as simulator profiles."""
    table = verify_table_ms(run, sweep)
    edge = EdgeProfile(
        "this run", draft_ms=max(run["draft_ms"], 1e-3), prefill_ms=run["drafter_prefill_ms"]
    )
    link = LinkProfile(
        "this run",
        rtt_ms=run["rtt_ms"],
        rate_mbit=run["rate_mbit"],
        packet_overhead_bytes=PACKET_OVERHEAD,
    )
    cloud = CloudProfile(
        "this run",
        verify_ms=table,
        prefill_ms=_prefill_ms(run, table),
        round_ms=_round_overhead_ms(run),
    )
    return edge, link, cloud


def scenario_of(run: dict[str, Any]) -> Scenario:
    start = 40 + 4 * run["prompt_tokens"]
    drafted = max(run["drafted"], 1)
    per_token = max(0.0, run["bytes_up"] - start) / drafted
    run = ran(run)
    verdicts = _verdicts(run)
    return Scenario(
        run["mode"],
        max(run["n_tokens"], 1),
        gamma=run["gamma"],
        depth=run["depth"],
        scheme=run["scheme"],
        start_bytes=start,
        block_bytes=0.0,
        block_bytes_per_token=per_token,
        verdict_bytes=run["bytes_down"] / max(verdicts, 1),
    )


def simulate_run(run: dict[str, Any], sweep: dict[str, float], *, abandon: bool = False) -> float:
    """The simulator's tok/s for the run: its trace replayed with its own costs
    (abandon: the what-if where a rejection stops the drafter step in progress)."""
    run = ran(run)
    edge, link, cloud = profiles_of(run, sweep)
    fallback = IidAcceptance(run["accept_per_position"] or [0.0], seed=run["seed"])
    scenario = replace(scenario_of(run), abandon_on_rejection=abandon)
    if run["mode"] == "cloud-led":  # chains, not blocks: acceptance by offset, drawn
        # by offset over the chains as long as they ran (they outrun a block: cut at
        # gamma, a chain that matched for 11 drafts would be replayed as never missing)
        chains = [(a, n) for a, n in run.get("chains") or ()]
        if chains:
            longest = max(run["gamma"], *(n for _, n in chains))
            fallback = IidAcceptance(per_position(chains, longest), seed=run["seed"])
        return simulate(scenario, edge, link, cloud, fallback).tok_per_s
    trace = TraceAcceptance([tuple(b) for b in run["blocks"]], fallback=fallback)
    return simulate(scenario, edge, link, cloud, trace).tok_per_s


def annotate(result: dict[str, Any]) -> None:
    """Add model_tok_per_s and sim_tok_per_s to every run of a bench e2e result, and
    for pipeline runs sim_abandon_tok_per_s (the what-if of ``abandon_on_rejection``).
    An auto run that switched mode mid-generation gets None for both: the model
    and the simulator run one mode per generation."""
    sweep = result["forward_ms_by_size"]
    for run in result["runs"]:
        if len(run.get("parts") or ()) > 1:
            run["model_tok_per_s"] = run["sim_tok_per_s"] = None
            continue
        run["model_tok_per_s"] = predict_run(run, sweep)
        run["sim_tok_per_s"] = simulate_run(run, sweep)
        if run["mode"] == "pipeline":
            run["sim_abandon_tok_per_s"] = simulate_run(run, sweep, abandon=True)


KEY = ("scheme", "rtt_ms", "rate_mbit", "gamma", "depth", "mode")


def aggregate(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: means over prompts and repeats, with speedups
    (and for auto, the fastest fixed configuration of its cell)."""
    runs = list(runs)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[tuple(r[k] for k in KEY)].append(r)
    rows = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(KEY, key, strict=True))
        row["groups"] = sorted({g for r in rs for g in r["groups"]})
        row["runs"] = len(rs)
        tok = [r["tok_per_s"] for r in rs]
        row["tok_per_s"] = statistics.fmean(tok)
        row["tok_per_s_sd"] = statistics.stdev(tok) if len(tok) > 1 else 0.0
        n = sum(r["n_tokens"] for r in rs)
        rounds = sum(r["rounds"] for r in rs)
        row["mean_accept_len"] = (
            sum(r["mean_accept_len"] * r["rounds"] for r in rs) / rounds if rounds else None
        )
        row["ttft_ms"] = statistics.fmean(r["ttft_ms"] for r in rs)
        row["round_ms"] = (
            sum(r["seconds"] * 1e3 - r["ttft_ms"] for r in rs) / rounds if rounds else None
        )
        row["draft_ms"] = statistics.fmean(r["draft_ms"] for r in rs)
        row["t_draft_ms"] = row["draft_ms"] * key[3]  # gamma steps
        sizes = [
            statistics.median(v)
            for r in rs
            for s, v in r["forward_ms"].items()
            if int(s) in (key[3], key[3] + 1)
        ]
        row["t_verify_ms"] = statistics.median(sizes) if sizes else None
        row["up_bytes_per_token"] = sum(r["bytes_up"] for r in rs) / n
        row["down_bytes_per_token"] = sum(r["bytes_down"] for r in rs) / n
        row["forwards_per_token"] = sum(r["target_forwards"] for r in rs) / n
        row["exact"] = all(r["exact"] for r in rs)
        for name in ("model_tok_per_s", "sim_tok_per_s"):
            if all(r.get(name) is not None for r in rs):
                row[name] = statistics.fmean(r[name] for r in rs)
        rows.append(row)
    by = {tuple(r[k] for k in KEY): r for r in rows}
    for row in rows:
        cloud = _find(by, row, mode="cloud-only", any_gamma=True)
        sync = _find(by, row, mode="sync", depth=1)
        row["vs_cloud_only"] = row["tok_per_s"] / cloud["tok_per_s"] if cloud else None
        row["vs_sync"] = row["tok_per_s"] / sync["tok_per_s"] if sync else None
    for row in rows:
        if row["mode"] == "auto":
            best = best_fixed(rows, row)
            row["best_fixed"] = _label(best) if best else None
            row["vs_best_fixed"] = row["tok_per_s"] / best["tok_per_s"] if best else None
            auto = [r for r in runs if r["mode"] == "auto" and _same_cell(r, row)]
            row["chose"] = dict(Counter(_chose(r) for r in auto if r.get("chose")))
    return rows


def _same_cell(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("scheme", "rtt_ms", "rate_mbit"))


def _chose(run: dict[str, Any]) -> str:
    """What an auto run ran: its plan, or its plans in order when it switched."""
    parts = run.get("parts") or []
    if len(parts) > 1:
        return " -> ".join(f"{_label(p)} ({p['tokens']})" for p in parts)
    return _label(run["chose"])


def _label(r: dict[str, Any]) -> str:
    if r["mode"] in ("cloud-only", "edge-only"):
        return r["mode"]
    depth = "" if r["mode"] == "sync" else f" depth {r['depth']}"
    return f"{r['mode']} gamma {r['gamma']}{depth}"


def best_fixed(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest fixed configuration measured in row's cell (scheme, RTT, rate)."""
    fixed = [r for r in rows if r["mode"] not in ("auto", "edge-only") and _same_cell(r, row)]
    return max(fixed, key=lambda r: r["tok_per_s"], default=None)


def _find(
    by: dict[tuple[Any, ...], dict[str, Any]],
    row: dict[str, Any],
    *,
    mode: str,
    depth: int | None = None,
    any_gamma: bool = False,
) -> dict[str, Any] | None:
    for other in by.values():
        if (
            other["mode"] == mode
            and other["scheme"] == row["scheme"]
            and other["rtt_ms"] == row["rtt_ms"]
            and other["rate_mbit"] == row["rate_mbit"]
            and (any_gamma or other["gamma"] == row["gamma"])
            and (depth is None or other["depth"] == depth)
        ):
            return other
    return None


def errors(runs: Iterable[dict[str, Any]], field: str) -> dict[str, dict[str, float]]:
    """Per mode: mean and max of |field / measured - 1| over runs, and the count."""
    by_mode: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if r.get(field) and r["tok_per_s"]:
            by_mode[r["mode"]].append(abs(r[field] / r["tok_per_s"] - 1))
            by_mode["all"].append(abs(r[field] / r["tok_per_s"] - 1))
    return {
        m: {
            "mean": statistics.fmean(v),
            "max": max(v),
            "runs": len(v),
            "within_10pct": sum(x <= 0.10 for x in v) / len(v),
        }
        for m, v in by_mode.items()
    }


REGIMES = {
    "Llama-3.2-1B / Llama-3.1-70B": (
        "jetson-agx-orin-llama3.2-1b",
        "wan-20ms-100mbit",
        "4xa100-llama3.1-70b",
    ),
    "Qwen3-0.6B / Qwen3-32B": (
        "jetson-agx-orin-qwen3-0.6b",
        "wan-20ms-100mbit",
        "4xa100-qwen3-32b",
    ),
}


def _simulated_rate(
    edge: EdgeProfile,
    link: LinkProfile,
    cloud: CloudProfile,
    accept: list[float],
    gamma: int,
    n_tokens: int,
    seeds: int,
) -> Callable[[str, int], float]:
    """mode, depth -> mean simulated tok/s over seeds generations."""

    def rate(mode: str, depth: int) -> float:
        sc = Scenario(mode, n_tokens, gamma=gamma, depth=depth)
        return statistics.fmean(
            simulate(sc, edge, link, cloud, IidAcceptance(accept, seed=s)).tok_per_s
            for s in range(seeds)
        )

    return rate


def project(
    accepts: Mapping[str, Sequence[float]],
    *,
    gamma: int = 4,
    depths: Sequence[int] = (2, 3),
    n_tokens: int = 256,
    seeds: int = 8,
) -> list[dict[str, Any]]:
    """Simulated tok/s of each mode in each published regime, for each acceptance profile."""
    rows = []
    for regime, (e, lk, c) in REGIMES.items():
        edge, link, cloud = BUILTIN[e], BUILTIN[lk], BUILTIN[c]
        assert isinstance(edge, EdgeProfile) and isinstance(link, LinkProfile)
        assert isinstance(cloud, CloudProfile)
        for label, accept in accepts.items():
            acc = list(accept)[:gamma] + [list(accept)[-1]] * max(0, gamma - len(accept))
            rate = _simulated_rate(edge, link, cloud, acc, gamma, n_tokens, seeds)
            cloud_only, sync = rate("cloud-only", 1), rate("sync", 1)
            row: dict[str, Any] = {
                "regime": regime,
                "acceptance": label,
                "accept_per_position": acc,
                "cloud_only": cloud_only,
                "sync": sync,
                "edge_only": rate("edge-only", 1),
                "sync_vs_cloud_only": sync / cloud_only,
            }
            for d in depths:
                pipe = rate("pipeline", d)
                row[f"pipeline_d{d}"] = pipe
                row[f"pipeline_d{d}_vs_cloud_only"] = pipe / cloud_only
                row[f"pipeline_d{d}_vs_sync"] = pipe / sync
            rows.append(row)
    return rows


def acceptance_for(
    speedup: float, regime: str, *, gamma: int = 4, depth: int = 2, n_tokens: int = 256
) -> float | None:
    """The per-position acceptance at which the simulated pipeline reaches speedup x
    cloud-only in a regime (bisection; None when even full acceptance falls short)."""
    e, lk, c = REGIMES[regime]
    edge, link, cloud = BUILTIN[e], BUILTIN[lk], BUILTIN[c]
    assert isinstance(edge, EdgeProfile) and isinstance(link, LinkProfile)
    assert isinstance(cloud, CloudProfile)

    def ratio(alpha: float) -> float:
        rate = _simulated_rate(edge, link, cloud, [alpha] * gamma, gamma, n_tokens, 4)
        return rate("pipeline", depth) / rate("cloud-only", 1)

    lo, hi = 0.0, 1.0
    if ratio(hi) < speedup:
        return None
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) < speedup else (lo, mid)
    return hi
