"""``picospec demo``: the whole system on one machine, with no flags.

Prepares the default model pair, starts the cloud verifier (QUIC, TLS with a
fresh self-signed certificate, a random token) and a link emulator with 50 ms
of round-trip time on loopback, then runs one chat prompt through the edge
client: first in ``auto`` mode, which says in one line which mode it chose
and why, then ``pipeline`` (streaming the text as it is committed), ``sync``,
``cloud-only`` and ``cloud-led``, then ``auto`` again, now planning from what
the client measured in those runs, and prints a comparison table. Then the robot drives out of
Wi-Fi range: one more generation through the robot app's API (``AsyncEdge``),
during which the link goes dark for two seconds and comes back; the drafter
carries on alone and the text it made while offline is marked.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from picospec.cloud.llama_backend import LlamaBackend
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.edge.api import AsyncEdge, Reply
from picospec.edge.client import EdgeClient, GenerationResult
from picospec.edge.config import EdgeConfig
from picospec.edge.drafter import Drafter
from picospec.edge.text import TextStream
from picospec.lab.loopback import LoopbackCloud, loopback_cloud
from picospec.runtime.models import DEFAULT_PAIR, prepare

PROMPT = "A warehouse robot has to move 45 boxes, 6 per trip. How many trips does it need? Explain."
RTT_MS = 50.0
OUTAGE_S = 2.0
LOCAL = ("\u27e6", "\u27e7")  # ⟦ text the drafter made alone, while offline ⟧
GREEDY = Sampling.of(SamplingParams(temperature=0.0))


MODES = ("auto", "pipeline", "sync", "cloud-only", "cloud-led", "auto")
"""The demo's generations, in order (auto first, and again once it has measured)."""


def _label(asked: str, r: GenerationResult) -> str:
    return f"auto: {r.mode}" if asked == "auto" else r.mode


def _table(results: list[GenerationResult]) -> str:
    base = next((r for r in results if r.mode == "sync" and not r.plan), results[0])
    rows = [
        f"{'mode':17} {'tok/s':>7} {'vs sync':>8} {'accept len':>10} {'fwd/token':>9} "
        f"{'TTFT ms':>8} {'bytes/token up':>15} {'down':>6}"
    ]
    for asked, r in zip(MODES, results, strict=True):
        n = max(r.n_tokens, 1)
        accept = f"{r.mean_accept_len:.2f}" if r.rounds and r.mode != "cloud-led" else "-"
        rows.append(
            f"{_label(asked, r):17} {r.tok_per_s:7.1f} {r.tok_per_s / base.tok_per_s:7.2f}x "
            f"{accept:>10} {r.target_forwards / n:9.2f} {r.ttft_ms:8.0f} "
            f"{r.bytes_up / n:15.1f} {r.bytes_down / n:6.1f}"
        )
    return "\n".join(rows)


async def _outage(
    cloud: LoopbackCloud,
    drafter: Drafter,
    prompt: list[int],
    max_tokens: int,
    reference: list[int],
) -> Reply:
    """One generation during which the link is cut for OUTAGE_S seconds."""
    assert cloud.link is not None
    link = cloud.link
    cfg = EdgeConfig(
        cloud=f"{cloud.address[0]}:{cloud.address[1]}",
        pin=cloud.tls.pin_sha256 or "",
        offline_after_s=1.0,
        reconnect_max_s=0.5,
    )
    print(
        f"--- pipeline, the link down for {OUTAGE_S:.0f} s "
        f"({LOCAL[0]}text made locally{LOCAL[1]}) ---",
        flush=True,
    )
    # the marks in the text tell of the outage; the edge's warnings would split it
    logging.getLogger("picospec.edge").setLevel(logging.ERROR)
    async with AsyncEdge(cfg, drafter=drafter, token=cloud.token) as edge:
        stream = edge.stream(prompt, max_tokens=max_tokens, seed=0, mode="pipeline")
        flags: list[bool] = []  # per token: verified by the cloud
        cut = False
        async for chunk in stream:
            if chunk.verified != (flags[-1] if flags else True):
                sys.stdout.write(LOCAL[1] if chunk.verified else LOCAL[0])
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            flags += [chunk.verified] * len(chunk.tokens)
            if len(flags) >= 12 and not cut:
                cut = True
                link.cut()  # the robot drives out of Wi-Fi range
                asyncio.get_running_loop().call_later(OUTAGE_S, link.restore)
        if flags and not flags[-1]:
            sys.stdout.write(LOCAL[1])
        reply = stream.reply
        assert reply is not None
    first_local = flags.index(False) if False in flags else len(flags)
    same = reply.tokens[:first_local] == reference[:first_local]
    print(
        f"\n[{len(reply.tokens)} tokens: {reply.verified_tokens} verified by the cloud, "
        f"{reply.local_tokens} made locally in {reply.stats['fallback_s']:.1f} s offline; "
        f"{link.up.cut_drops + link.down.cut_drops} datagrams lost to the outage; the verified "
        f"prefix {'matches' if same else 'DOES NOT match'} cloud-only]\n",
        flush=True,
    )
    return reply


async def _run(pair: str, max_tokens: int) -> tuple[list[GenerationResult], Reply]:
    paths = prepare(pair)
    backend = LlamaBackend(paths["target"], n_ctx=1024, threads=1)
    drafter = Drafter.open(paths["drafter"], n_ctx=1024, threads=1)
    async with loopback_cloud(backend, rtt_ms=RTT_MS, name=f"demo {backend.name}") as cloud:
        host, port = cloud.server_address
        print(
            f"cloud verifier {backend.name} on {host}:{port}, "
            f"reached through a link emulator with {RTT_MS:.0f} ms RTT\n"
        )
        client = EdgeClient(drafter)
        await client.connect(*cloud.address, cloud.tls, token=cloud.token)
        w = drafter.ctx.weights
        prompt = w.tokenize(w.chat_prompt(PROMPT))
        print(f"prompt: {PROMPT}\n")
        results = []
        for mode in MODES:
            print(f"--- {mode} ---", flush=True)
            stream = TextStream(drafter.piece, drafter.is_end)

            def show(tokens: list[int], stream: TextStream = stream) -> None:
                sys.stdout.write(stream.feed(tokens))
                sys.stdout.flush()

            res = await client.generate(
                prompt,
                sampling=GREEDY,
                seed=0,
                mode=mode,
                max_new_tokens=max_tokens,
                on_tokens=show,
            )
            sys.stdout.write(stream.flush())
            print(f"\n[{res.n_tokens} tokens, {res.finished}]", flush=True)
            if res.plan:
                print(f"[{res.plan}]", flush=True)
            print(flush=True)
            results.append(res)
        await client.close()
        reference = results[MODES.index("cloud-only")].token_ids
        outage = await _outage(cloud, drafter, prompt, max_tokens, reference)
    return results, outage


def run(pair: str = DEFAULT_PAIR, max_tokens: int = 96) -> int:
    results, _ = asyncio.run(_run(pair, max_tokens))
    print(_table(results))
    reference = results[MODES.index("cloud-only")].token_ids
    same = all(r.token_ids == reference for r in results)
    print(
        f"\ngreedy decoding: every mode {'matches' if same else 'DOES NOT match'} "
        "cloud-only token for token" + ("" if same else " (see the README on batch numerics)")
    )
    return 0
