"""``picospec bench e2e``: the real pair through the real client and server, over the link emulator.

The sweep, in groups that share one base point (RTT ``base_rtt``, rate
``base_rate``, gamma ``base_gamma``, depth ``base_depth``):

* ``grid``: greedy decoding in ``cloud-only``, ``sync`` and ``pipeline`` at every
  RTT x rate (and ``edge-only`` once, which needs no network);
* ``schemes``: each sampling scheme (``sparse-q``, ``split`` at ``temperature``)
  in the three networked modes at the base point (greedy is the grid's);
* ``gamma`` and ``depth``: ``sync``/``pipeline`` at other gammas, ``pipeline``
  at other depths, at the base point.

Every point is run for every prompt of the set (``prompts.py``, both styles)
and ``repeats`` times, the modes of a point back to back in an order rotated
from one run to the next, so machine drift hits every mode alike. Each run
records what it generated and what it cost, measured in the run itself: the
drafter's step (as the edge loop waits for it), every target forward by size
(``cloud.timed.TimedBackend``), the model thread's busy time and the bytes of
both directions.

Validation comes first: a run that did not finish cleanly, or whose tokens
break its mode's contract, is a violation, and the command fails after writing
its results. Greedy output must equal the cloud-only output of the same prompt
token for token; with a sampling scheme, the same (prompt, seed, scheme, mode,
gamma) must give the same tokens at every RTT, rate, depth and repeat. Then
``analysis.py`` sets the time model and the simulator beside each run, and
``report.py`` writes the tables and plots.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from typing import Any

from picospec.cloud.llama_backend import LlamaBackend
from picospec.cloud.timed import TimedBackend
from picospec.codec.errors import ConfigError
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import LED_SCHEMES, Scheme
from picospec.edge.client import EdgeClient, GenerationError
from picospec.edge.drafter import Drafter
from picospec.edge.plan import Estimates
from picospec.lab.loopback import LoopbackCloud, loopback_cloud
from picospec.runtime.models import listing, prepare
from picospec.runtime.timemodel import per_position

from .progress import Progress
from .prompts import prompt_set

NETWORK_MODES = ("cloud-only", "sync", "pipeline")
ADAPTIVE_MODES = ("cloud-led", "auto")
"""Added to the grid and the schemes (cloud-led only where its scheme allows it)."""


def modes_for(scheme: str) -> tuple[str, ...]:
    """The network modes measured for a scheme: the fixed ones, cloud-led where the
    scheme allows it, and auto."""
    led = ("cloud-led",) if Scheme.parse(scheme) in LED_SCHEMES else ()
    return NETWORK_MODES + led + ("auto",)


SAMPLING_SCHEMES = ("sparse-q", "split", "gumbel")


@dataclass(frozen=True)
class Plan:
    """What the sweep covers (every field has a command-line option)."""

    rtts: tuple[float, ...] = (0.0, 20.0, 50.0, 100.0)
    """Round-trip times in ms (half each way)."""
    rates: tuple[float, ...] = (1.0, 10.0, 100.0)
    """Link rates in Mbit/s, each direction."""
    schemes: tuple[str, ...] = ("sparse-q", "split", "greedy")
    gammas: tuple[int, ...] = (2, 4, 6, 8)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    base_rtt: float = 50.0
    base_rate: float = 10.0
    base_gamma: int = 4
    base_depth: int = 3
    temperature: float = 0.7
    """For the sampling schemes (greedy runs at 0)."""
    k: int = 8
    """Entries of the sparse q (and of split's p)."""
    prompts_per_style: int = 1
    repeats: int = 2
    max_tokens: int = 64
    exactness_n: int = 200
    """Generations per (scheme, temperature) in the exactness report; 0 skips it."""
    exactness_temperatures: tuple[float, ...] = (0.7, 1.0)

    def __post_init__(self) -> None:
        for s in self.schemes:
            Scheme.parse(s)  # raises ConfigError naming the scheme
        if self.base_rtt not in self.rtts or self.base_rate not in self.rates:
            raise ConfigError(
                f"the base RTT {self.base_rtt:g} ms and rate {self.base_rate:g} Mbit/s must be "
                "among the swept ones (set --base-rtt and --base-rate)"
            )
        if self.repeats < 1 or self.max_tokens < 2:
            raise ConfigError("a sweep needs repeats >= 1 and max_tokens >= 2")
        if not all(1 <= g <= 16 for g in (*self.gammas, self.base_gamma)):
            raise ConfigError("gamma must be in 1..16")
        if not all(1 <= d <= 8 for d in (*self.depths, self.base_depth)):
            raise ConfigError("depth must be in 1..8")

    def points(self) -> list[Point]:
        """Every distinct configuration with its modes (groups sharing a point merge)."""
        out: dict[tuple[Any, ...], Point] = {}

        def add(p: Point) -> None:
            key = (p.scheme, p.rtt, p.rate, p.gamma, p.depth)
            have = out.get(key)
            if have is None:
                out[key] = p
            else:
                modes = have.modes + tuple(m for m in p.modes if m not in have.modes)
                out[key] = replace(have, modes=modes, groups=have.groups + p.groups)

        rtt, rate, gamma, depth = self.base_rtt, self.base_rate, self.base_gamma, self.base_depth
        for i, r in enumerate(self.rtts):
            for j, mbit in enumerate(self.rates):
                modes = modes_for("greedy") + (("edge-only",) if i == j == 0 else ())
                add(Point(("grid",), "greedy", r, mbit, gamma, depth, modes))
        for s in self.schemes:
            if s != "greedy":
                add(Point(("schemes",), s, rtt, rate, gamma, depth, modes_for(s)))
        for g in self.gammas:
            add(Point(("gamma",), "greedy", rtt, rate, g, depth, ("sync", "pipeline")))
        for d in self.depths:
            add(Point(("depth",), "greedy", rtt, rate, gamma, d, ("pipeline",)))
        return list(out.values())


@dataclass(frozen=True)
class Point:
    groups: tuple[str, ...]
    scheme: str
    rtt: float
    rate: float
    gamma: int
    depth: int
    modes: tuple[str, ...] = field(default=NETWORK_MODES)


QUICK = Plan(
    rtts=(0.0, 50.0),
    rates=(10.0,),
    schemes=("sparse-q", "greedy"),
    gammas=(4,),
    depths=(3,),
    repeats=1,
    max_tokens=24,
    exactness_n=40,
    exactness_temperatures=(1.0,),
)
"""About two minutes here: a smoke test of every part, too small to measure much."""


def params_for(scheme: str, temperature: float) -> SamplingParams:
    return SamplingParams(temperature=0.0 if scheme == "greedy" else temperature)


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in ("picospec", "llama_cpp_python", "numpy", "aioquic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


async def _sweep(plan: Plan, pair: str) -> tuple[list[dict[str, Any]], dict[int, float]]:
    paths = prepare(pair)
    timed = TimedBackend(LlamaBackend(paths["target"], n_ctx=1024, threads=1))
    points = plan.points()
    drafter = Drafter.open(paths["drafter"], n_ctx=1024, threads=1)
    w = drafter.ctx.weights
    prompts = [
        (style, w.tokenize(w.chat_prompt(text)))
        for style, text in prompt_set(plan.prompts_per_style)
    ]
    total = plan.repeats * len(prompts) * sum(len(p.modes) for p in points)
    bar = Progress(total, label="bench e2e")
    # auto's edge keeps what it measured of its drafter and the cloud across connections
    # (as a robot does across reconnects); each connection measures its own round trip
    learned = Estimates()
    runs: list[dict[str, Any]] = []
    order = 0
    for repeat in range(plan.repeats):
        for point in points:
            async with loopback_cloud(timed, rtt_ms=point.rtt, rate_mbit=point.rate) as cloud:
                # auto plans from what its own client measured, never from the fixed runs
                client, auto = EdgeClient(drafter), EdgeClient(drafter)
                auto.estimates = learned
                for c in (client, auto):
                    await asyncio.wait_for(
                        c.connect(*cloud.address, cloud.tls, token=cloud.token), 30
                    )
                for pi, (style, tokens) in enumerate(prompts):
                    shift = order % len(point.modes)
                    order += 1
                    for mode in point.modes[shift:] + point.modes[:shift]:
                        who = auto if mode == "auto" else client
                        run = await _one(who, cloud, timed, point, mode, tokens, 1 + pi, plan)
                        run.update(prompt=pi, style=style, repeat=repeat, groups=list(point.groups))
                        runs.append(run)
                        bar.step(f"{point.scheme} {mode} RTT {point.rtt:g} {point.rate:g} Mbit/s")
                await client.close()
                await auto.close()
    table = timed.by_size()
    return runs, table


async def _one(
    client: EdgeClient,
    cloud: LoopbackCloud,
    timed: TimedBackend,
    point: Point,
    mode: str,
    prompt: list[int],
    seed: int,
    plan: Plan,
) -> dict[str, Any]:
    """One generation and what it cost; seed is the prompt's (repeats and points must agree)."""
    mark, busy0, units0 = timed.mark(), cloud.service.busy_seconds, cloud.service.work_units
    wire0 = (cloud.link.up.bytes, cloud.link.down.bytes) if cloud.link else (0, 0)
    sampling = Sampling.of(
        params_for(point.scheme, plan.temperature), point.scheme, plan.k, allow_inexact=True
    )
    try:
        res = await asyncio.wait_for(
            client.generate(
                prompt,
                sampling=sampling,
                seed=seed,
                mode=mode,
                gamma=point.gamma,
                depth=point.depth,
                max_new_tokens=plan.max_tokens,
            ),
            300,
        )
    except GenerationError as e:  # kept, and reported as a violation
        res = e.result
    records = timed.records[mark:]
    forwards: dict[int, list[float]] = {}
    for n, s in records:
        forwards.setdefault(n, []).append(1e3 * s)
    wire = (
        (cloud.link.up.bytes - wire0[0], cloud.link.down.bytes - wire0[1]) if cloud.link else (0, 0)
    )
    return {
        "mode": mode,
        "scheme": point.scheme,
        "temperature": 0.0 if point.scheme == "greedy" else plan.temperature,
        "rtt_ms": point.rtt,
        "rate_mbit": point.rate,
        "gamma": point.gamma,
        "depth": 1 if mode == "sync" else point.depth,
        "seed": seed,
        "prompt_tokens": len(prompt),
        "n_tokens": res.n_tokens,
        "finished": res.finished,
        "token_ids": res.token_ids,
        "seconds": res.seconds,
        "tok_per_s": res.tok_per_s,
        "ttft_ms": res.ttft_ms,
        "rounds": res.rounds,
        "blocks": [list(b) for b in res.blocks],
        "mean_accept_len": res.mean_accept_len,
        "accept_per_position": per_position(
            res.chains if res.mode == "cloud-led" else res.blocks, point.gamma
        ),
        "chose": {"mode": res.mode, "gamma": res.gamma, "depth": res.depth},
        "parts": res.parts,
        "plan": res.plan,
        "chains": [list(c) for c in res.chains],
        "exact": res.exact,
        "bytes_up": res.bytes_up,
        "bytes_down": res.bytes_down,
        "wire_up": wire[0],
        "wire_down": wire[1],
        "target_forwards": len(records),
        "drafted": res.drafted,
        "draft_ms": res.draft_ms,
        "drafter_prefill_ms": res.drafter_prefill_ms,
        "forward_ms": {str(n): v for n, v in sorted(forwards.items())},
        "prefill_tokens": records[0][0] if records else None,
        "prefill_ms": 1e3 * records[0][1] if records else None,
        "cloud_busy_ms": 1e3 * (cloud.service.busy_seconds - busy0),
        "cloud_work_units": cloud.service.work_units - units0,
    }


def violations(runs: list[dict[str, Any]]) -> list[str]:
    """Every run that broke its mode's contract, in words."""
    out = []
    for r in runs:
        if r["finished"] not in ("max tokens", "end of text"):
            out.append(f"{_name(r)} did not finish: {r['finished']}")
    reference: dict[tuple[Any, ...], list[int]] = {}
    for r in runs:  # greedy: every mode equals cloud-only, token for token
        if r["scheme"] == "greedy" and r["mode"] == "cloud-only":
            reference.setdefault((r["prompt"],), r["token_ids"])
    for r in runs:
        if r["scheme"] == "greedy" and r["mode"] != "edge-only":
            ref = reference.get((r["prompt"],))
            if ref is not None and r["token_ids"] != ref:
                out.append(f"{_name(r)}: greedy output differs from cloud-only")
    same: dict[tuple[Any, ...], list[int]] = {}
    for r in runs:  # sampling: the same seed gives the same tokens at any RTT, rate, depth
        if r["scheme"] != "greedy":
            chose = r.get("chose") or {"mode": r["mode"], "gamma": r["gamma"]}
            # a run auto switched is its own configuration: where it switched counts too
            parts = tuple((p["mode"], p["gamma"], p["tokens"]) for p in r.get("parts") or ())
            how = parts if len(parts) > 1 else (chose["mode"], chose["gamma"])
            key = (r["scheme"], r["prompt"], r["seed"], how)
            first = same.setdefault(key, r["token_ids"])
            if r["token_ids"] != first:
                out.append(f"{_name(r)}: tokens differ from the same seed's other runs")
    return out


def _name(r: dict[str, Any]) -> str:
    return (
        f"{r['scheme']} {r['mode']} (RTT {r['rtt_ms']:g} ms, {r['rate_mbit']:g} Mbit/s, "
        f"gamma {r['gamma']}, depth {r['depth']}, prompt {r['prompt']}, repeat {r['repeat']})"
    )


def run(plan: Plan = Plan(), pair: str = "smollm2") -> dict[str, Any]:
    """Run the sweep (and the exactness report); returns everything measured."""
    t0 = time.perf_counter()
    runs, table = asyncio.run(_sweep(plan, pair))
    result: dict[str, Any] = {
        "kind": "picospec bench e2e",
        "pair": pair,
        "plan": asdict(plan),
        "machine": machine(),
        "models": [m for m in listing() if m["pair"] == pair],
        "forward_ms_by_size": {str(n): 1e3 * s for n, s in table.items()},
        "runs": runs,
        "violations": violations(runs),
    }
    if plan.exactness_n:
        from .exactness import run as exactness

        result["exactness"] = exactness(
            pair, n=plan.exactness_n, temperatures=plan.exactness_temperatures, k=plan.k
        )
    result["seconds"] = time.perf_counter() - t0
    return result
