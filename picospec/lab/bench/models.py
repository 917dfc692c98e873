"""``picospec bench models``: the real pair's costs and acceptance, in process.

Measured for one pair on this machine: the drafter's time per token, the
target's forward time for 1..8 tokens (and its ratio to one token), the mean
acceptance length and per-position acceptance of stop-and-wait speculative
decoding at several temperatures, and the wire bytes per drafted token of each
scheme. Greedy and gumbel generations are also run cloud-only and compared token for
token (their contract); the report says how many matched and where the others
first diverged (llama.cpp's logits depend slightly on the batch shape, so a
near-tie between the two best tokens can flip).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from picospec.cloud.llama_backend import LlamaBackend
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Scheme
from picospec.edge.drafter import Drafter
from picospec.lab.inprocess import Generation, generate
from picospec.runtime.models import prepare

PROMPTS = (
    "A robot arm moves 3 boxes per minute. How many boxes does it move in 2 hours? "
    "Answer step by step.",
    "Write a Python function `clamp(x, lo, hi)` that limits x to the range [lo, hi].",
    "Explain in two sentences why a mobile robot needs a map.",
)


def _verify_costs(backend: LlamaBackend, prompt: list[int], repeats: int) -> dict[str, float]:
    """Median ms of a target forward over n = 1..8 tokens after the prompt."""
    backend.open(0)
    try:
        backend.forward(0, 0, prompt, n_out=1)
        out = {}
        for n in range(1, 9):
            times = []
            for r in range(repeats):
                tokens = [(17 * r + 31 * i) % 1000 + 10 for i in range(n)]
                t0 = time.perf_counter()
                backend.forward(0, len(prompt), tokens)
                times.append(time.perf_counter() - t0)
                backend.truncate(0, len(prompt))
            out[str(n)] = 1e3 * statistics.median(times)
        return out
    finally:
        backend.close(0)


def _first_difference(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _per_position(gens: list[Generation], gamma: int) -> list[float | None]:
    """P(draft j accepted | drafts 0..j-1 accepted), over full-length rounds."""
    reached, kept = np.zeros(gamma), np.zeros(gamma)
    for g in gens:
        for a, n in zip(g.accepted_at, g.gamma_at, strict=True):
            if n != gamma:
                continue
            reached[: min(a + 1, gamma)] += 1
            kept[:a] += 1
    return [round(float(k / r), 3) if r else None for k, r in zip(kept, reached, strict=True)]


def run(
    pair: str = "smollm2",
    *,
    gamma: int = 4,
    max_new_tokens: int = 64,
    seeds: int = 2,
    temperatures: tuple[float, ...] = (0.0, 0.7, 1.0),
    k: int = 8,
    threads: int | None = None,
    repeats: int = 7,
    drafter: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Measure a prepared pair, or any two GGUF files given as drafter and target."""
    paths = {"drafter": drafter, "target": target} if drafter and target else prepare(pair)
    if drafter or target:
        pair = f"{Path(str(paths['drafter'])).name} -> {Path(str(paths['target'])).name}"
    backend = LlamaBackend(paths["target"], n_ctx=1024, threads=threads)
    result: dict[str, Any] = {"pair": pair, "gamma": gamma, "k": k, "vocab": backend.vocab_size}
    base = Drafter.open(paths["drafter"], n_ctx=1024, threads=threads)
    prompts = [base.ctx.weights.tokenize(base.ctx.weights.chat_prompt(p)) for p in PROMPTS]

    verify = _verify_costs(backend, prompts[0], repeats)
    result["target_forward_ms"] = {n: round(v, 2) for n, v in verify.items()}
    result["target_forward_ratio"] = {n: round(v / verify["1"], 2) for n, v in verify.items()}

    runs = []
    for t in temperatures:
        for scheme in [Scheme.GREEDY] if t == 0 else [Scheme.SPARSE_Q, Scheme.SPLIT, Scheme.GUMBEL]:
            sampling = Sampling.of(SamplingParams(temperature=t), scheme, k, allow_inexact=True)
            gens, same, diverged_at = [], 0, []
            for prompt in prompts:
                for seed in range(seeds):
                    g = generate(
                        base,
                        backend,
                        prompt,
                        mode="sync",
                        sampling=sampling,
                        gamma=gamma,
                        max_new_tokens=max_new_tokens,
                        seed=seed,
                    )
                    if scheme in (Scheme.GREEDY, Scheme.GUMBEL):
                        ref = generate(
                            base,
                            backend,
                            prompt,
                            mode="cloud-only",
                            sampling=sampling,
                            max_new_tokens=max_new_tokens,
                            seed=seed,
                        )
                        if ref.token_ids == g.token_ids:
                            same += 1
                        else:
                            diverged_at.append(_first_difference(ref.token_ids, g.token_ids))
                    gens.append(g)
            rounds = sum(g.rounds for g in gens)
            drafted = sum(g.drafted for g in gens)
            runs.append(
                {
                    "temperature": t,
                    "scheme": scheme.value,
                    "generations": len(gens),
                    "tokens": sum(g.n_tokens for g in gens),
                    "mean_accept_len": round(sum(g.accepted + g.rounds for g in gens) / rounds, 3),
                    "accept_rate": round(sum(g.accepted for g in gens) / drafted, 3),
                    "per_position_accept": _per_position(gens, gamma),
                    "bytes_up_per_drafted": round(sum(g.bytes_up for g in gens) / drafted, 1),
                    "bytes_down_per_round": round(sum(g.bytes_down for g in gens) / rounds, 1),
                    "exact": all(g.exact for g in gens),
                    # greedy and gumbel promise the cloud-only text; llama.cpp's logits
                    # depend on batch shape, so a near-tie can still flip a token
                    "same_as_cloud_only": f"{same}/{len(gens)}"
                    if scheme in (Scheme.GREEDY, Scheme.GUMBEL)
                    else None,
                    "diverged_at": diverged_at,
                }
            )
    result["runs"] = runs

    base.stats = type(base.stats)()
    base.begin(prompts[0], 0, Sampling.of(SamplingParams(temperature=0.7), Scheme.SPARSE_Q, k))
    base.draft(max_new_tokens)
    result["drafter_ms_per_token"] = round(base.stats.ms_per_token, 2)
    result["verify5_over_draft4"] = round(verify["5"] / (4 * base.stats.ms_per_token), 2)
    base.close()
    return result


def render(r: dict[str, Any]) -> str:
    lines = [
        f"pair {r['pair']} (V={r['vocab']:,}, gamma={r['gamma']}, K={r['k']})",
        f"  drafter: {r['drafter_ms_per_token']:.1f} ms/token",
        "  target forward ms for n tokens: "
        + ", ".join(
            f"{n}: {v:.1f} ({r['target_forward_ratio'][n]:.1f}x)"
            for n, v in r["target_forward_ms"].items()
        ),
        f"  {'T':>4} {'scheme':9} {'accept len':>10} {'rate':>6} {'per position':28}"
        f" {'B up/draft':>10} {'B down/round':>12}",
    ]
    for x in r["runs"]:
        pos = " ".join("-" if v is None else f"{v:.2f}" for v in x["per_position_accept"])
        same = f"  same as cloud-only: {x['same_as_cloud_only']}" if x["same_as_cloud_only"] else ""
        lines.append(
            f"  {x['temperature']:4.1f} {x['scheme']:9} {x['mean_accept_len']:10.2f} "
            f"{x['accept_rate']:6.2f} {pos:28} {x['bytes_up_per_drafted']:10.1f} "
            f"{x['bytes_down_per_round']:12.1f}{same}"
        )
    return "\n".join(lines)
