"""``picospec bench serve``: one verifier, many edges, batched against unbatched.

A real ``picospec cloud serve`` process (the llama.cpp backend, the pair's
target, all cores) on loopback, started twice in the same run: with batching
(``--batch``: one llama.cpp context, each turn's forwards of many sessions in
one decode; its prefix cache off, so only batching differs) and without
(``--no-batch``: one session per forward). Against each,
N edges at a time (N from ``--edges``) run greedy generations through the real
client and session code over QUIC, in each mode of ``--modes``: by default
``pipeline`` (every edge's blocks verified, the workload batching was built
for) and ``cloud-only`` (every edge's tokens decoded by the verifier, the mode
``auto`` settles on where speculation does not pay, as on this CPU).

Real drafters cannot run sixteen at a time on two cores, so each edge replays
a recording of the real drafter: before anything is timed, the drafter is run
on every context an edge can reach (each prefix of the target's own output,
followed by up to ``lead`` of its own tokens) and its tokens and q are kept.
An edge then drafts by looking its context up, sleeping the drafter's measured
step time per token. A context that is not in the recording (the target's
output changed) is a *miss*: it is drafted as a token the target will reject,
counted and reported, and every generation's tokens are checked against the
target's recorded output, so a run that does not decode exactly as the target
says so.

Reported per (mode, edges, scheduling): aggregate committed tok/s over the
run's wall time, mean per-edge tok/s, p50/p99 milliseconds from a block sent to
its verdict (``cloud-only`` sends no blocks: there it is the time between one
verdict and the next, each a token, as the edge saw them), the verifier's
backend forwards per committed token and the fraction of wall time its model
thread was busy (both from its /metrics), and the speed-up of batched over
unbatched at the same mode and number of edges.

Before the servers start, the target's own forward is timed in this process
by shape (sessions x tokens, median of a few repeats; one session in a context
of its own, as ``--no-batch`` runs it, many in one batched context): what one
evaluated token costs alone and in a batch of many sessions is what batching
saves in the forward itself (the server saves per-unit overhead too: fewer
turns of its model thread, each with its Python work).

Then the shared prefix: one edge sends ``prefix_questions`` cloud-only requests
that share a long system prompt (a robot app's), to a batched verifier with
its prefix cache and to one without (``--no-prefix-cache``). Reported: median
time to first token of the requests after the first, and the prompt tokens the
verifier reused.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from picospec.codec.draft import DraftToken
from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode
from picospec.codec.sparse import Q_ONE, SparseDist
from picospec.codec.vocab import VocabFingerprint
from picospec.edge.client import EdgeClient, GenerationResult
from picospec.runtime.models import prepare
from picospec.runtime.quic import ClientTLS

from .cloudproc import CloudProcess
from .prompts import prompt_set

GREEDY = Sampling.of(SamplingParams(temperature=0.0))
MODES = (Mode.PIPELINE, Mode.SYNC, Mode.CLOUD_LED, Mode.CLOUD_ONLY)
"""The modes an edge can run here (the others need no verifier)."""


@dataclass(frozen=True)
class Plan:
    edges: tuple[int, ...] = (1, 2, 4, 8, 16)
    modes: tuple[Mode, ...] = (Mode.PIPELINE, Mode.CLOUD_ONLY)
    max_tokens: int = 48
    """Tokens per generation."""
    generations: int = 2
    """Generations each edge runs per point (prompts taken in turn)."""
    prompts: int = 4
    gamma: int = 4
    depth: int = 2
    threads: int = 2
    """The verifier's llama.cpp threads."""
    prefix_questions: int = 6
    """Requests sharing one system prompt, for the prefix cache's TTFT (0: skip)."""

    def __post_init__(self) -> None:
        if not self.edges or min(self.edges) < 1 or max(self.edges) > 16:
            raise ConfigError(f"--edges must be numbers in 1..16, got {self.edges}")
        if not self.modes or any(m not in MODES for m in self.modes):
            names = ", ".join(m.value for m in MODES)
            raise ConfigError(f"--modes takes modes from {names}")
        if self.max_tokens < 4 or self.generations < 1 or self.prompts < 1:
            raise ConfigError("bench serve needs max_tokens >= 4, generations >= 1, prompts >= 1")

    @property
    def lead(self) -> int:
        """Tokens an edge may draft past what the cloud committed (its pipeline)."""
        return self.gamma * (self.depth + 1)


QUICK = Plan(edges=(1, 4), max_tokens=16, generations=1, prompts=2, prefix_questions=3)

SYSTEM_PROMPT = (
    "You are the voice of a mobile warehouse robot. You answer the people who work "
    "next to you in one or two short sentences. Never invent sensor readings: when a "
    "question needs a reading you do not have, say so and name the sensor. Safety comes "
    "first: if a request could hurt someone or damage goods, refuse and say why. You can "
    "drive to a bay, lift a pallet of up to 800 kg, scan barcodes, open and close the "
    "cage doors, and report your battery level. You cannot climb stairs, leave the "
    "warehouse, or lift people. Speak plainly, without lists or markdown."
)
QUESTIONS = (
    "Where is bay 14?",
    "Can you lift a 950 kg pallet?",
    "What is your battery level?",
    "Please open the cage door.",
    "Is aisle 3 clear?",
    "Can you carry me to the office?",
    "Scan the pallet in front of you.",
    "How long until you reach bay 2?",
)


# ---------------------------------------------------------------------------- recording
@dataclass
class Recording:
    """The real drafter's output at every context a replaying edge can reach."""

    prompts: list[list[int]]
    outputs: list[list[int]]
    """The target's greedy output after each prompt (what every edge must get)."""
    drafts: dict[tuple[int, ...], tuple[int, np.ndarray, np.ndarray]] = field(default_factory=dict)
    """context -> (token, q ids, q counts) as the drafter drafted them."""
    step_s: float = 0.0
    """The drafter's measured mean seconds per drafted token."""
    drafter_steps: int = 0


def record(paths: dict[str, Path], plan: Plan, threads: int) -> Recording:
    """Run the target (greedy, for each prompt's output) and the real drafter on
    every context a replay can reach (see the module)."""
    from picospec.cloud.llama_backend import LlamaBackend
    from picospec.cloud.target import TargetSequence
    from picospec.edge.drafter import Drafter

    drafter = Drafter.open(paths["drafter"], n_ctx=1024, threads=threads)
    w = drafter.ctx.weights
    texts = [t for _, t in prompt_set((plan.prompts + 1) // 2)][: plan.prompts]
    prompts = [w.tokenize(w.chat_prompt(t)) for t in texts]
    target = LlamaBackend(paths["target"], n_ctx=1024, threads=threads, batched=False)
    outputs = []
    for i, p in enumerate(prompts):
        target.open(i)
        seq = TargetSequence(target, i, GREEDY, seed=0)
        out = [seq.prefill(p)]
        while len(out) < plan.max_tokens and not target.is_end(out[-1]):
            out.append(seq.decode_one())
        target.close(i)
        outputs.append(out)
    rec = Recording(prompts, outputs)
    for p, out in zip(prompts, outputs, strict=True):
        full = p + out
        for m in range(len(p) + 1, len(full) + 1):
            ctx = tuple(full[:m])
            known: list[int] = []
            while len(known) < plan.lead and (ctx + tuple(known)) in rec.drafts:
                known.append(rec.drafts[ctx + tuple(known)][0])
            if len(known) == plan.lead:
                continue
            drafter.begin(list(ctx) + known, 0, GREEDY)
            for _ in range(plan.lead - len(known)):
                key = tuple(drafter.tokens)
                (d,) = drafter.draft(1)
                assert d.q is not None
                rec.drafts[key] = (d.token, d.q.ids.copy(), d.q.counts.copy())
    rec.step_s = drafter.stats.draft_seconds / max(drafter.stats.drafted, 1)
    rec.drafter_steps = drafter.stats.drafted
    drafter.close()
    return rec


class ReplayDrafter:
    """A drafter that replays a Recording (``edge/model.py``'s DraftModel)."""

    def __init__(
        self,
        rec: Recording,
        fingerprint: VocabFingerprint,
        vocab_size: int,
        is_end: Callable[[int], bool],
    ) -> None:
        self.rec = rec
        self._is_end = is_end
        self._fingerprint = fingerprint
        self.vocab_size = vocab_size
        self.n_ctx = 1024
        self.tokens: list[int] = []
        self.misses = 0
        self.drafted = 0
        self._miss_q = SparseDist.from_counts(np.array([0]), np.array([Q_ONE]))

    def fingerprint(self) -> VocabFingerprint:
        return self._fingerprint

    def is_end(self, token: int) -> bool:
        return self._is_end(token)

    def piece(self, token: int) -> bytes:
        return b""

    def prefill(self, prompt: list[int]) -> None:
        self.tokens = list(prompt)

    def begin(self, tokens: list[int], seed: int, sampling: Sampling) -> None:
        self.tokens = list(tokens)

    def draft(self, n: int) -> list[DraftToken]:
        out = []
        for _ in range(n):
            time.sleep(self.rec.step_s)
            hit = self.rec.drafts.get(tuple(self.tokens))
            if hit is None:
                self.misses += 1
                d = DraftToken(0, self._miss_q)
            else:
                d = DraftToken(hit[0], SparseDist.from_counts(hit[1], hit[2]))
            self.tokens.append(d.token)
            out.append(d)
        self.drafted += n
        return out

    def sample_own(self) -> int:
        raise PicospecError("a replaying edge cannot decode on its own")

    def rollback(self, position: int) -> None:
        del self.tokens[position:]

    def push(self, token: int) -> None:
        self.tokens.append(token)


# ---------------------------------------------------------------------------- one point
@dataclass
class Point:
    mode: str
    edges: int
    batched: bool
    aggregate_tok_s: float
    per_edge_tok_s: float
    p50_verdict_ms: float
    p99_verdict_ms: float
    forwards_per_token: float
    busy_fraction: float
    wall_s: float
    tokens: int
    generations: int
    wrong_generations: int
    misses: int
    mean_batch: float
    """Connections' units of work per turn of the model thread (from its metrics)."""
    latency: str
    """What p50/p99_verdict_ms measure: "block to verdict", or "between verdicts"
    (cloud-only)."""


async def _edge(
    srv: CloudProcess,
    tls: ClientTLS,
    rec: Recording,
    drafter: ReplayDrafter,
    plan: Plan,
    mode: Mode,
    first: int,
) -> list[tuple[GenerationResult, list[float]]]:
    """Each generation's result, with the loop times its committed runs arrived."""
    client = EdgeClient(drafter)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(client.connect(*srv.address, tls, token=srv.token.encode()), 60)
        out = []
        for g in range(plan.generations):
            k = (first + g) % len(rec.prompts)
            arrived: list[float] = []

            def note(_tokens: list[int], arrived: list[float] = arrived) -> None:
                arrived.append(loop.time())

            res = await asyncio.wait_for(
                client.generate(
                    rec.prompts[k],
                    sampling=GREEDY,
                    seed=0,
                    max_new_tokens=len(rec.outputs[k]),
                    mode=mode,
                    gamma=plan.gamma,
                    depth=plan.depth,
                    on_tokens=note,
                ),
                600,
            )
            out.append((res, arrived))
        return out
    finally:
        await client.close()


def _point(
    srv: CloudProcess,
    rec: Recording,
    plan: Plan,
    mode: Mode,
    n: int,
    batched: bool,
    weights: Any,
) -> Point:
    tls = ClientTLS(pin_sha256=srv.pin)
    drafters = [
        ReplayDrafter(rec, weights.vocab_fingerprint, weights.vocab_size, weights.is_end)
        for _ in range(n)
    ]
    before = srv.metrics()
    t0 = time.perf_counter()

    async def all_edges() -> list[list[tuple[GenerationResult, list[float]]]]:
        return await asyncio.gather(
            *(_edge(srv, tls, rec, d, plan, mode, i) for i, d in enumerate(drafters))
        )

    timed = asyncio.run(all_edges())
    results = [[r for r, _ in rs] for rs in timed]
    wall = time.perf_counter() - t0
    after = srv.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    flat = [(i, g, r) for i, rs in enumerate(results) for g, r in enumerate(rs)]
    wrong = sum(r.token_ids != rec.outputs[(i + g) % len(rec.prompts)] for i, g, r in flat)
    tokens = sum(r.n_tokens for _, _, r in flat)
    if mode is Mode.CLOUD_ONLY:  # no blocks: the time from one token's verdict to the next
        lat = [1e3 * (b - a) for rs in timed for _, t in rs for a, b in itertools.pairwise(t)]
    else:
        lat = [x for _, _, r in flat for x in r.verdict_ms]
    per_edge = [sum(r.n_tokens for r in rs) / sum(r.seconds for r in rs) for rs in results]
    forwards = delta("picospec_cloud_forward_seconds_count")
    units = delta("picospec_cloud_model_units_total")
    turns = delta("picospec_cloud_model_turns_total")
    return Point(
        mode=mode.value,
        edges=n,
        batched=batched,
        aggregate_tok_s=tokens / wall,
        per_edge_tok_s=statistics.fmean(per_edge),
        p50_verdict_ms=float(np.percentile(lat, 50)) if lat else 0.0,
        p99_verdict_ms=float(np.percentile(lat, 99)) if lat else 0.0,
        forwards_per_token=forwards / tokens if tokens else 0.0,
        busy_fraction=delta("picospec_cloud_model_busy_seconds_total") / wall,
        wall_s=wall,
        tokens=tokens,
        generations=len(flat),
        wrong_generations=wrong,
        misses=sum(d.misses for d in drafters),
        mean_batch=units / turns if turns else 0.0,
        latency="between verdicts" if mode is Mode.CLOUD_ONLY else "block to verdict",
    )


SHAPES = ((1, 1), (8, 1), (16, 1), (1, 5), (8, 5))
"""(sessions, tokens each) of the forwards timed by ``forward_shapes``."""


def forward_shapes(target: Path, threads: int, repeats: int = 9) -> list[dict[str, Any]]:
    """Median milliseconds of one forward of each shape in SHAPES after a
    160-token prompt per session, and per token evaluated: one session in the
    layout ``--no-batch`` serves (a context of its own), many in the batched one."""
    from picospec.cloud.backend import Forward
    from picospec.cloud.llama_backend import LlamaBackend

    prompt = [100 + i for i in range(160)]
    out = []
    for batched in (False, True):
        n_max = max(n for n, _ in SHAPES if (n > 1) == batched)
        backend = LlamaBackend(target, n_ctx=1024, threads=threads, max_sessions=n_max,
                               batched=batched, share_prefixes=False)  # fmt: skip
        at = {}
        for s in range(n_max):
            backend.open(s)
            backend.forward(s, 0, prompt, 1)
            at[s] = len(prompt)
        for n, k in SHAPES:
            if (n > 1) != batched:
                continue
            times = []
            for r in range(repeats + 1):  # the first of each shape is a warm-up
                reqs = [Forward(s, at[s], (300 + r,) * k, k) for s in range(n)]
                t0 = time.perf_counter()
                backend.forward_many(reqs)
                times.append(time.perf_counter() - t0)
                for s in range(n):
                    at[s] += k
            ms = 1e3 * statistics.median(times[1:])
            out.append({"sessions": n, "tokens": k, "batched": batched, "ms": ms,
                        "ms_per_token": ms / (n * k)})  # fmt: skip
        for s in range(n_max):
            backend.close(s)
    return out


def _prefix_ttft(srv: CloudProcess, weights: Any, plan: Plan) -> dict[str, Any]:
    """TTFT of cloud-only requests sharing the system prompt, one after another."""
    rec = Recording(prompts=[], outputs=[])
    drafter = ReplayDrafter(rec, weights.vocab_fingerprint, weights.vocab_size, weights.is_end)
    prompts = [
        weights.tokenize(
            weights.chat(
                [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}]
            )
        )
        for q in (QUESTIONS * 2)[: plan.prefix_questions]
    ]
    before = srv.metrics()

    async def ask() -> list[float]:
        client = EdgeClient(drafter)
        try:
            await asyncio.wait_for(client.connect(*srv.address, ClientTLS(pin_sha256=srv.pin),
                                                  token=srv.token.encode()), 60)  # fmt: skip
            out = []
            for p in prompts:
                res = await asyncio.wait_for(
                    client.generate(
                        p, sampling=GREEDY, seed=0, max_new_tokens=4, mode="cloud-only"
                    ),
                    120,
                )
                out.append(res.ttft_ms)
            return out
        finally:
            await client.close()

    ttft = asyncio.run(ask())
    reused = srv.metrics().get("picospec_cloud_prefix_reused_tokens_total", 0.0) - before.get(
        "picospec_cloud_prefix_reused_tokens_total", 0.0
    )
    return {
        "prompt_tokens": statistics.fmean(len(p) for p in prompts),
        "first_ttft_ms": ttft[0],
        "ttft_ms": statistics.median(ttft[1:]) if len(ttft) > 1 else ttft[0],
        "reused_tokens": reused,
    }


def run(plan: Plan, pair: str = "smollm2") -> dict[str, Any]:
    from picospec.runtime.llamacpp import LlamaWeights

    paths = prepare(pair)
    t0 = time.perf_counter()
    rec = record(paths, plan, threads=plan.threads)
    record_s = time.perf_counter() - t0
    shapes = forward_shapes(paths["target"], plan.threads)
    weights = LlamaWeights(paths["drafter"])
    points: list[Point] = []
    with tempfile.TemporaryDirectory() as tmp:
        for batched in (False, True):
            # the prefix cache is measured on its own below; here it would favour the
            # batched layout (the prompts share the chat template's system prompt)
            flags = ["--batch", "--no-prefix-cache"] if batched else ["--no-batch"]
            srv = CloudProcess(
                paths["target"], Path(tmp), threads=plan.threads, args=flags, metrics=True
            )
            try:
                for mode in plan.modes:
                    _point(srv, rec, plan, mode, 1, batched, weights)  # warm-up, not reported
                    for n in plan.edges:
                        points.append(_point(srv, rec, plan, mode, n, batched, weights))
            finally:
                srv.stop()
        prefix = {}
        if plan.prefix_questions:
            for cache in (True, False):
                flag = "--prefix-cache" if cache else "--no-prefix-cache"
                srv = CloudProcess(
                    paths["target"], Path(tmp), threads=plan.threads, args=[flag], metrics=True
                )
                try:
                    prefix["with" if cache else "without"] = _prefix_ttft(srv, weights, plan)
                finally:
                    srv.stop()
    rows = [vars(p) for p in points]
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for mode in plan.modes:
        for n in plan.edges:
            b, u = (
                next(p for p in points if (p.mode, p.edges, p.batched) == (mode.value, n, on))
                for on in (True, False)
            )
            ratios.setdefault(mode.value, {})[str(n)] = {
                "throughput": b.aggregate_tok_s / u.aggregate_tok_s,
                "p99": b.p99_verdict_ms / u.p99_verdict_ms if u.p99_verdict_ms else 0.0,
            }
    return {
        "pair": pair,
        "plan": {**vars(plan), "edges": list(plan.edges), "modes": [m.value for m in plan.modes]},
        "drafter_step_ms": 1e3 * rec.step_s,
        "recorded_contexts": len(rec.drafts),
        "record_s": record_s,
        "forward_shapes": shapes,
        "points": rows,
        "ratios": ratios,
        "prefix": prefix,
        "violations": [
            f"{p.mode}, {p.edges} edges {'batched' if p.batched else 'unbatched'}: "
            f"{p.wrong_generations} generations differ from the target's output"
            for p in points
            if p.wrong_generations
        ],
    }


def json_lines(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One object per (mode, edges, scheduling), for ``--json``."""
    return [dict(r) for r in result["points"]]


def render(result: dict[str, Any]) -> str:
    plan = result["plan"]
    lines = [
        f"bench serve: {result['pair']} target on one verifier ({plan['threads']} threads), "
        f"greedy, gamma={plan['gamma']} depth={plan['depth']}, "
        f"{plan['max_tokens']} tokens x {plan['generations']} generations per edge",
        f"replayed drafter: {result['drafter_step_ms']:.1f} ms/token, "
        f"{result['recorded_contexts']} contexts recorded in {result['record_s']:.0f} s",
        "p50/p99: block sent to verdict; cloud-only: between one verdict and the next",
        "",
        "the target's forward, by sessions x tokens (in this process): "
        + ", ".join(
            f"{f['sessions']}x{f['tokens']} {f['ms']:.1f} ms ({f['ms_per_token']:.1f}/token)"
            for f in result.get("forward_shapes", [])
        ),
        "",
        f"{'mode':>10} {'edges':>5} {'sched':>9} {'agg tok/s':>9} {'edge tok/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'fwd/tok':>7} {'busy':>5} {'batch':>5} {'miss':>4} "
        f"{'wrong':>5}",
    ]
    for r in result["points"]:
        lines.append(
            f"{r['mode']:>10} {r['edges']:>5} {'batched' if r['batched'] else 'unbatched':>9} "
            f"{r['aggregate_tok_s']:>9.1f} {r['per_edge_tok_s']:>10.1f} "
            f"{r['p50_verdict_ms']:>7.0f} {r['p99_verdict_ms']:>7.0f} "
            f"{r['forwards_per_token']:>7.2f} {r['busy_fraction']:>5.2f} "
            f"{r['mean_batch']:>5.1f} {r['misses']:>4} {r['wrong_generations']:>5}"
        )
    lines.append("")
    for mode, by_edges in result["ratios"].items():
        for n, v in by_edges.items():
            lines.append(
                f"{mode:>10} {n:>3} edges: batched/unbatched aggregate {v['throughput']:.2f}x, "
                f"p99 {v['p99']:.2f}x"
            )
        if "8" in by_edges:
            v = by_edges["8"]
            met = v["throughput"] >= 2.0 and v["p99"] <= 0.5
            lines.append(
                f"{mode:>10} goal at 8 edges (aggregate >= 2x, p99 <= 0.5x): "
                f"{'met' if met else 'not met'}"
            )
    shapes = result.get("forward_shapes", [])
    shape = {(f["sessions"], f["tokens"]): f["ms_per_token"] for f in shapes}
    for k in (1, 5):
        if (1, k) in shape and (8, k) in shape:
            lines.append(
                f"a {k}-token forward's cost per token, one session alone over 8 in one "
                f"forward: {shape[(1, k)] / shape[(8, k)]:.2f}x"
            )
    pre = result.get("prefix") or {}
    if pre:
        w, wo = pre["with"], pre["without"]
        lines.append(
            f"shared system prompt ({w['prompt_tokens']:.0f}-token prompts, cloud-only): TTFT "
            f"{w['ttft_ms']:.0f} ms with the prefix cache ({w['reused_tokens']:.0f} tokens "
            f"reused), {wo['ttft_ms']:.0f} ms without: {wo['ttft_ms'] / w['ttft_ms']:.2f}x"
        )
    for v in result["violations"]:
        lines.append(f"VIOLATION: {v}")
    return "\n".join(lines)


def plot(result: dict[str, Any], out: Path) -> None:
    """Aggregate tok/s and p99 latency against edges, each mode and scheduling."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("the plot needs matplotlib: pip install -e .[bench]") from e
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    modes = list(dict.fromkeys(r["mode"] for r in result["points"]))
    for c, mode in enumerate(modes):
        for batched, style in ((False, "o--"), (True, "s-")):
            rows = sorted(
                (r for r in result["points"] if r["mode"] == mode and r["batched"] is batched),
                key=_edges,
            )
            xs = [r["edges"] for r in rows]
            label = f"{mode}, {'batched' if batched else 'unbatched'}"
            a.plot(xs, [r["aggregate_tok_s"] for r in rows], style, color=f"C{c}", label=label)
            b.plot(xs, [r["p99_verdict_ms"] for r in rows], style, color=f"C{c}", label=label)
    edges = sorted({int(r["edges"]) for r in result["points"]})
    for ax, title in (
        (a, "aggregate committed tok/s"),
        (b, "p99 ms (block to verdict; cloud-only: between verdicts)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(edges, [str(e) for e in edges])
        ax.set_xlabel("concurrent edges")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"bench serve: one verifier ({result['pair']}), replayed drafters")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _edges(r: dict[str, Any]) -> int:
    return int(r["edges"])


def parse_modes(text: str) -> tuple[Mode, ...]:
    try:
        return tuple(Mode.parse(x.strip()) for x in text.split(","))
    except (ConfigError, ValueError):
        names = ", ".join(m.value for m in MODES)
        raise ConfigError(f"--modes takes modes from {names}, separated by commas") from None


def parse_edges(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--edges takes numbers separated by commas, got {text!r}") from None


__all__: Sequence[str] = (
    "QUICK",
    "Plan",
    "ReplayDrafter",
    "parse_edges",
    "parse_modes",
    "plot",
    "record",
    "render",
    "run",
)
