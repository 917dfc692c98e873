"""``picospec sim``: what the protocol gives with other edges, links and clouds.

Runs the discrete-event simulator (``picospec.lab.sim``) for every mode with three
timing profiles (built-in names or JSON files, ``picospec.lab.profiles``) and an
acceptance model: a fixed rate per position (``--accept``), or the recorded
accept/reject traces of a ``picospec bench e2e`` results file (``--trace``),
replayed block by block. The time model's closed form is printed beside each
simulated rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError
from picospec.codec.messages import MAX_BLOCK
from picospec.codec.scheme import LED_SCHEMES, Mode, Scheme
from picospec.edge.plan import best_plan, candidates
from picospec.lab.profiles import BUILTIN, CloudProfile, EdgeProfile, LinkProfile, costs_of, load
from picospec.lab.sim import IidAcceptance, Scenario, SimResult, TraceAcceptance, simulate
from picospec.runtime.timemodel import Costs, per_position, predict


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sim", help="simulate the modes with other timing profiles")
    s.add_argument("--edge", default="jetson-agx-orin-llama3.2-1b", help="edge profile")
    s.add_argument("--cloud", default="4xa100-llama3.1-70b", help="cloud profile")
    s.add_argument("--link", default="wan-20ms-100mbit", help="link profile")
    s.add_argument("--rtt", type=float, help="override the link's RTT (ms)")
    s.add_argument("--rate", type=float, help="override the link's rate (Mbit/s, 0 = unlimited)")
    s.add_argument("--accept", default="0.8", help="acceptance per position, e.g. 0.8 or 0.9,0.8")
    s.add_argument("--trace", help="a bench e2e e2e.json: replay its recorded traces instead")
    s.add_argument("--scheme", default="greedy",
                   help="the scheme simulated (and which runs of --trace to replay)")  # fmt: skip
    s.add_argument("--gamma", type=int, default=4)
    s.add_argument("--depth", type=int, default=3)
    s.add_argument("--tokens", type=int, default=256, help="tokens per generation")
    s.add_argument("--seeds", type=int, default=8, help="generations averaged (with --accept)")
    s.add_argument("--list", action="store_true", help="list the built-in profiles")
    s.add_argument(
        "--paper",
        action="store_true",
        help="every mode at the paper's published costs, 4 cells x RTT 0-200 ms",
    )
    s.add_argument("--plot", help="with --paper: write tok/s against RTT to this PNG")  # fmt: skip
    s.add_argument(
        "--misses",
        action="store_true",
        help="with --paper: what stopping the drafter on a rejection and a shorter first "
        "block after one gain, at --rtt (default 20 ms)",
    )
    s.add_argument("--json", action="store_true")


def _profiles(args: argparse.Namespace) -> tuple[EdgeProfile, LinkProfile, CloudProfile]:
    edge, link, cloud = load(args.edge, "edge"), load(args.link, "link"), load(args.cloud, "cloud")
    assert isinstance(edge, EdgeProfile) and isinstance(link, LinkProfile)
    assert isinstance(cloud, CloudProfile)
    if args.rtt is not None or args.rate is not None:
        link = LinkProfile(
            f"{link.name} (overridden)",
            rtt_ms=link.rtt_ms if args.rtt is None else args.rtt,
            rate_mbit=link.rate_mbit if args.rate is None else args.rate,
            packet_overhead_bytes=link.packet_overhead_bytes,
            source=link.source,
        )
    return edge, link, cloud


def _traces(
    path: str, scheme: str, gamma: int
) -> dict[str, list[tuple[list[tuple[int, int]], int]]]:
    from picospec.lab.bench.results import load as load_result

    result = load_result(path)
    out: dict[str, list[tuple[list[tuple[int, int]], int]]] = {}
    for r in result["runs"]:
        if r["scheme"] == scheme and r["gamma"] == gamma and r["mode"] in ("sync", "pipeline"):
            out.setdefault(r["mode"], []).append(([tuple(b) for b in r["blocks"]], r["n_tokens"]))
    if not out:
        raise ConfigError(f"{path} has no {scheme} sync or pipeline runs at gamma {gamma}")
    return out


def _row(results: list[SimResult], predicted: float, costs: Costs, gamma: int) -> dict[str, Any]:
    n = sum(r.n_tokens for r in results)
    return {
        "tok_per_s": statistics.fmean(r.tok_per_s for r in results),
        "model_tok_per_s": predicted,
        "ttft_ms": 1e3 * statistics.fmean(r.ttft for r in results),
        "forwards_per_token": sum(r.target_forwards for r in results) / n if n else 0.0,
        "bound_tok_per_s": bound(costs, gamma),
        "generations": len(results),
    }


def bound(costs: Costs, gamma: int) -> float:
    """The physical bound of a speculative mode: the drafter's rate, or gamma + 1
    tokens per verify forward over gamma + 1 tokens, whichever is lower."""
    verify = costs.forward(gamma + 1) + costs.round_overhead
    return min(1 / costs.draft, (gamma + 1) / verify)


def simulate_modes(args: argparse.Namespace) -> dict[str, Any]:
    edge, link, cloud = _profiles(args)
    traces = _traces(args.trace, args.scheme, args.gamma) if args.trace else {}
    if traces:
        blocks = [b for runs in traces.values() for t, _ in runs for b in t]
        accept = per_position(blocks, args.gamma)
    else:
        try:
            values = [float(x) for x in args.accept.split(",")]
        except ValueError:
            raise ConfigError(f"--accept takes probabilities, got {args.accept!r}") from None
        accept = (values + [values[-1]] * args.gamma)[: args.gamma]
    scheme = Scheme.parse(args.scheme)
    cands = candidates(scheme, MAX_BLOCK, args.depth)
    sizes = max(g * d for _, g, d in cands) + 2
    costs = costs_of(edge, link, cloud, sizes)

    def run_mode(mode: str, gamma: int, depth: int) -> list[SimResult]:
        results: list[SimResult] = []
        if mode in traces and gamma == args.gamma:
            for blocks_, n in traces[mode]:
                sc = Scenario(mode, n, gamma=gamma, depth=depth, scheme=args.scheme)
                oracle = TraceAcceptance(blocks_, fallback=IidAcceptance(accept))
                results.append(simulate(sc, edge, link, cloud, oracle))
        else:
            acc = [*accept, *[accept[-1]] * gamma][: max(gamma, len(accept))]
            sc = Scenario(mode, args.tokens, gamma=gamma, depth=depth, scheme=args.scheme)
            for seed in range(args.seeds):
                results.append(simulate(sc, edge, link, cloud, IidAcceptance(acc, seed=seed)))
        return results

    rows: dict[str, dict[str, Any]] = {}
    for mode in Mode:
        if mode is Mode.CLOUD_LED and scheme not in LED_SCHEMES:
            continue
        results = run_mode(mode.value, args.gamma, args.depth)
        n = round(statistics.fmean(r.n_tokens for r in results))
        model = predict(mode.value, accept, costs, depth=args.depth, n_tokens=int(n)).tok_per_s
        rows[mode.value] = _row(results, model, costs, args.gamma)
    plan = best_plan(scheme, costs, accept, cands, n_tokens=args.tokens)
    results = run_mode(plan.mode.value, plan.gamma, plan.depth)
    rows["auto"] = _row(results, max(plan.predicted.values()), costs, plan.gamma)
    rows["auto"].update(chose=plan.mode.value, gamma=plan.gamma, depth=plan.depth, plan=plan.reason)
    for row in rows.values():
        row["vs_cloud_only"] = row["tok_per_s"] / rows["cloud-only"]["tok_per_s"]
        row["vs_sync"] = row["tok_per_s"] / rows["sync"]["tok_per_s"]
        row["vs_bound"] = row["tok_per_s"] / row["bound_tok_per_s"]
    return {
        "edge": edge.name,
        "link": f"{link.name}: RTT {link.rtt_ms:g} ms, {link.rate_mbit:g} Mbit/s",
        "cloud": cloud.name,
        "gamma": args.gamma,
        "depth": args.depth,
        "scheme": scheme.value,
        "accept_per_position": accept,
        "acceptance": f"traces of {args.trace}" if traces else "fixed per position",
        "modes": rows,
    }


def render(r: dict[str, Any]) -> str:
    lines = [
        f"edge {r['edge']} | link {r['link']} | cloud {r['cloud']}",
        f"gamma {r['gamma']}, depth {r['depth']}, acceptance per position "
        + "/".join(f"{a:.2f}" for a in r["accept_per_position"])
        + f" ({r['acceptance']})",
        f"{'mode':11} {'sim tok/s':>10} {'model tok/s':>12} {'x cloud-only':>13} {'x sync':>7} "
        f"{'TTFT ms':>8} {'fwd/token':>9} {'x bound':>8}",
    ]
    for mode, x in r["modes"].items():
        lines.append(
            f"{mode:11} {x['tok_per_s']:10.1f} {x['model_tok_per_s']:12.1f} "
            f"{x['vs_cloud_only']:12.2f}x {x['vs_sync']:6.2f}x {x['ttft_ms']:8.0f} "
            f"{x['forwards_per_token']:9.2f} {x['vs_bound']:7.2f}x"
        )
    lines.append(r["modes"]["auto"]["plan"])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, p in BUILTIN.items():
            print(f"{p.kind:5} {name:30} {p.source}")
        return 0
    if args.paper:
        from picospec.lab import paper

        seeds = min(args.seeds, 4)
        if args.misses:
            rtt = 20.0 if args.rtt is None else args.rtt
            found = paper.misses(rtt_ms=rtt, tokens=args.tokens, seeds=seeds)
            return _lines(found, args.json, paper.render_misses)
        rows = paper.paper_regime(tokens=args.tokens, seeds=seeds)
        if args.plot:
            paper.plot(rows, Path(args.plot))
        return _lines(rows, args.json, paper.render)
    result = simulate_modes(args)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


def _lines(rows: list[dict[str, Any]], as_json: bool, render: Callable[[Any], str]) -> int:
    """Print rows as one JSON object per line, or rendered."""
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(render(rows))
    return 0
