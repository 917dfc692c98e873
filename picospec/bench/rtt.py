"""``picospec bench rtt``: the four modes over real QUIC at several round-trip times.

For each RTT the verifier service and the link emulator run on loopback, and
one prompt is generated in every mode (greedy, so every mode must produce the
cloud-only tokens: checked before any number is kept). Next to each measured
throughput stands the time model's prediction from the same run's measured
per-position acceptance (no i.i.d. assumption), T_draft (gamma drafter steps),
T_verify (one target forward over gamma + 1 tokens) and T_decode (one step):

* sync:      E[tokens] / (T_draft + RTT + T_verify)
* pipeline:  a fully accepted block costs max(T_draft, RTT + T_verify) and yields
             gamma tokens; a miss costs a full serial round and yields the
             accepted prefix plus the correction
* cloud-only: 1 / T_decode (tokens stream; RTT only delays the first)
* edge-only: 1 / T_draft per token
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from picospec.cloud.llama_backend import LlamaBackend
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Scheme
from picospec.edge.client import EdgeClient, GenerationResult
from picospec.edge.drafter import Drafter
from picospec.loopback import loopback_cloud
from picospec.models import prepare

PROMPT = "Write a short Python function that returns the mean of a list, and explain it."
MODES = ("pipeline", "sync", "cloud-only", "edge-only")


def per_position(blocks: list[tuple[int, int]], gamma: int) -> list[float]:
    """P(draft j accepted | drafts before it accepted), over full-size blocks."""
    reached, kept = [0] * gamma, [0] * gamma
    for a, n in blocks:
        if n == gamma:
            for j in range(min(a + 1, gamma)):
                reached[j] += 1
            for j in range(a):
                kept[j] += 1
    return [k / r if r else 0.0 for k, r in zip(kept, reached, strict=True)]


def predict(
    mode: str, accept: list[float], t_draft: float, t_verify: float, t_decode: float, rtt: float
) -> float:
    """Tokens per second the time model expects (times in seconds), from the
    per-position acceptance probabilities of a block of gamma = len(accept)."""
    gamma = len(accept)
    if mode == "cloud-only":
        return 1.0 / t_decode
    if mode == "edge-only":
        return gamma / t_draft
    reach = [1.0]  # P(the first j drafts all accepted)
    for a in accept:
        reach.append(reach[-1] * a)
    serial = t_draft + rtt + t_verify
    if mode == "sync":
        return sum(reach) / serial  # accepted prefix + the correction or bonus
    full = reach[gamma]
    exactly = [reach[j] * (1 - accept[j]) for j in range(gamma)]
    tokens = full * gamma + sum((j + 1) * p for j, p in enumerate(exactly))
    seconds = full * max(t_draft, rtt + t_verify) + (1 - full) * serial
    return tokens / seconds


def _timings(
    backend: LlamaBackend, drafter: Drafter, prompt: list[int], gamma: int
) -> tuple[float, float, float]:
    """Median T_draft (gamma steps), T_verify (gamma + 1 tokens), T_decode (1 token)."""
    backend.open(0)
    try:
        backend.forward(0, 0, prompt, n_out=1)
        verify, decode = [], []
        for r in range(7):
            toks = [(13 * r + 7 * i) % 1000 + 10 for i in range(gamma + 1)]
            t0 = time.perf_counter()
            backend.forward(0, len(prompt), toks)
            verify.append(time.perf_counter() - t0)
            backend.truncate(0, len(prompt))
            t0 = time.perf_counter()
            backend.forward(0, len(prompt), toks[:1])
            decode.append(time.perf_counter() - t0)
            backend.truncate(0, len(prompt))
    finally:
        backend.close(0)
    drafter.begin(prompt, 0)
    drafts = []
    for _ in range(5):
        t0 = time.perf_counter()
        drafter.draft(gamma)
        drafts.append(time.perf_counter() - t0)
    return statistics.median(drafts), statistics.median(verify), statistics.median(decode)


async def _run(
    pair: str, rtts: tuple[float, ...], gamma: int, depth: int, max_tokens: int
) -> dict[str, Any]:
    paths = prepare(pair)
    backend = LlamaBackend(paths["target"], n_ctx=1024, threads=1)
    drafter = Drafter.open(
        paths["drafter"],
        SamplingParams(temperature=0.0),
        scheme=Scheme.GREEDY,
        n_ctx=1024,
        threads=1,
    )
    w = drafter.ctx.weights
    prompt = w.tokenize(w.chat_prompt(PROMPT))
    t_draft, t_verify, t_decode = _timings(backend, drafter, prompt, gamma)
    rows = []
    for rtt in rtts:
        async with loopback_cloud(backend, rtt_ms=rtt) as cloud:
            client = EdgeClient(drafter)
            await client.connect(*cloud.address, cloud.tls, token=cloud.token)
            results: dict[str, GenerationResult] = {}
            for mode in MODES:
                results[mode] = await client.generate(
                    prompt, mode=mode, gamma=gamma, depth=depth, max_new_tokens=max_tokens
                )
            await client.close()
        ref = results["cloud-only"].token_ids
        for mode in ("pipeline", "sync"):
            if results[mode].token_ids != ref:
                raise AssertionError(f"{mode} at RTT {rtt} ms differs from cloud-only")
        sync = results["sync"]
        for mode, r in results.items():
            # each speculative mode is fed its own acceptance: block
            # boundaries differ (sync restarts after every bonus token)
            accept = per_position(r.blocks or sync.blocks, gamma)
            model = predict(mode, accept, t_draft, t_verify, t_decode, rtt / 1e3)
            rows.append(
                {
                    "rtt_ms": rtt,
                    "mode": mode,
                    "tok_per_s": round(r.tok_per_s, 2),
                    "vs_sync": round(r.tok_per_s / sync.tok_per_s, 3),
                    "predicted_tok_per_s": round(model, 2),
                    "measured_over_predicted": round(r.tok_per_s / model, 3),
                    "mean_accept_len": round(r.mean_accept_len, 3),
                    "accept_per_position": [round(a, 3) for a in accept],
                    "n_tokens": r.n_tokens,
                    "ttft_ms": round(r.ttft_ms, 1),
                    "bytes_per_token": round((r.bytes_up + r.bytes_down) / max(r.n_tokens, 1), 1),
                }
            )
    return {
        "pair": pair,
        "gamma": gamma,
        "depth": depth,
        "max_tokens": max_tokens,
        "t_draft_ms": round(1e3 * t_draft, 2),
        "t_verify_ms": round(1e3 * t_verify, 2),
        "t_decode_ms": round(1e3 * t_decode, 2),
        "rows": rows,
    }


def run(
    pair: str = "smollm2",
    rtts: tuple[float, ...] = (0, 20, 50, 100),
    gamma: int = 4,
    depth: int = 3,
    max_tokens: int = 96,
) -> dict[str, Any]:
    return asyncio.run(_run(pair, rtts, gamma, depth, max_tokens))


def render(r: dict[str, Any]) -> str:
    lines = [
        f"pair {r['pair']}, gamma {r['gamma']}, depth {r['depth']}: T_draft {r['t_draft_ms']} ms "
        f"(gamma steps), T_verify {r['t_verify_ms']} ms (gamma+1 tokens), "
        f"T_decode {r['t_decode_ms']} ms",
        f"{'RTT':>5} {'mode':11} {'tok/s':>7} {'vs sync':>8} {'model':>7} {'meas/model':>10} "
        f"{'accept len':>10} {'B/token':>8}",
    ]
    for x in r["rows"]:
        lines.append(
            f"{x['rtt_ms']:5.0f} {x['mode']:11} {x['tok_per_s']:7.1f} {x['vs_sync']:7.2f}x "
            f"{x['predicted_tok_per_s']:7.1f} {x['measured_over_predicted']:10.2f} "
            f"{x['mean_accept_len']:10.2f} {x['bytes_per_token']:8.1f}"
        )
    return "\n".join(lines)
