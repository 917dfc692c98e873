"""``picospec bench abuse``: what misbehaving clients cost a well-behaved edge.

A real ``picospec cloud serve`` process (the llama.cpp backend, the real
target) on loopback; in this process, a well-behaved edge (the real drafter)
runs the same greedy generation again and again, first alone, then while one
kind of abuse runs against the same server:

* ``preauth-flood``: connections that send a 1 MiB Start before any Hello;
* ``junk-after-hello``: authenticated connections that stream frames for
  generations that do not exist, and mutated frames;
* ``non-reader``: a cloud-only generation of 1,024 tokens whose link goes dark
  downstream right after it starts (the peer acknowledges nothing);
* ``idle-200``: 200 connections opened, then left idle while the edge is
  measured (half never say Hello, so the server closes those at its Hello
  deadline, 5 s here);
* ``long-prompts``: another edge whose prompts are 1,500 tokens long.

Each run is validated first (its tokens must equal the baseline's, token for
token), then timed. The report gives, per scenario, the well-behaved edge's
median time per generation and time to first token, both as ratios to the
baseline measured in the same run, and the server's resident memory before,
after and at its peak (VmHWM), read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.framing import encode_frame
from picospec.codec.messages import Bye, DraftBlock, Hello, Start
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode, Scheme
from picospec.edge.client import EdgeClient
from picospec.edge.drafter import Drafter
from picospec.lab.link import LinkConfig, LinkRelay
from picospec.runtime.models import prepare
from picospec.runtime.quic import Channel, ClientTLS, TransportError, connect

from .cloudproc import CloudProcess

SCENARIOS = (
    "baseline",
    "preauth-flood",
    "junk-after-hello",
    "non-reader",
    "idle-200",
    "long-prompts",
)
PROMPT = "List the checks a delivery robot makes before it crosses a road."
GREEDY = Sampling.of(SamplingParams(temperature=0.0))


@dataclass(frozen=True)
class Plan:
    repeats: int = 5
    """Timed generations of the well-behaved edge per scenario."""
    max_tokens: int = 32
    flood_connections: int = 8
    """Connections at a time in the flood scenarios."""
    idle: int = 200

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.max_tokens < 2 or self.flood_connections < 1 or self.idle < 2:
            raise ConfigError("bench abuse needs repeats >= 1, max_tokens >= 2, connections >= 1")


QUICK = Plan(repeats=2, max_tokens=12, flood_connections=3, idle=20)


@dataclass(frozen=True)
class _Target:
    """Where the attacks aim: the server's address, how to verify it, its token."""

    address: tuple[str, int]
    tls: ClientTLS
    token: str


async def _quiet(ch: Channel) -> None:
    """Read and drop whatever the server sends, until the channel ends (bounded)."""
    with contextlib.suppress(TransportError, TimeoutError, PicospecError):
        while await asyncio.wait_for(ch.read(), 30):
            pass


def _hello(token: str, vocab: Any) -> bytes:
    return encode_frame(
        Hello(session=0, epoch=0, start=0, vocab_fingerprint=vocab, auth_token=token.encode())
    )


async def _preauth_flood(srv: _Target, plan: Plan, stop: asyncio.Event, drafter: Drafter) -> None:
    frame = encode_frame(_start(1, [1] * 250_000, 8, Mode.PIPELINE), None)

    async def one() -> None:
        while not stop.is_set():
            try:
                ch = await connect(*srv.address, srv.tls)
                ch.write(frame)
                await _quiet(ch)
                await ch.close()
            except (TransportError, PicospecError):
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(plan.flood_connections)))


async def _junk(srv: _Target, plan: Plan, stop: asyncio.Event, drafter: Drafter) -> None:
    vocab = drafter.fingerprint()
    hello = _hello(srv.token, vocab)
    block = DraftBlock(session=9, epoch=0, start=5, scheme=Scheme.GREEDY, bonus=False, tokens=(1,))
    unknown = encode_frame(block, vocab.size) + encode_frame(Bye(session=8, epoch=0, start=0))
    mutated = bytearray(encode_frame(_start(7, [1, 2, 3], 4, Mode.PIPELINE), vocab.size))
    mutated[4] = 99  # an unknown protocol version: the server must close the connection

    async def one() -> None:
        while not stop.is_set():
            try:
                ch = await connect(*srv.address, srv.tls)
                ch.write(hello)
                reader = asyncio.create_task(_quiet(ch))
                for _ in range(200):
                    if stop.is_set() or ch.closed:
                        break
                    ch.write(unknown * 20)
                    await asyncio.sleep(0.01)
                if not ch.closed:
                    ch.write(bytes(mutated))
                try:
                    await asyncio.wait_for(reader, 10)
                except TimeoutError:
                    ch.abort("bench: no close")
            except (TransportError, PicospecError):
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(plan.flood_connections)))


async def _non_reader(srv: _Target, plan: Plan, stop: asyncio.Event, drafter: Drafter) -> None:
    vocab = drafter.fingerprint()
    fast = LinkConfig(delay_ms=1)
    async with LinkRelay(listen=("127.0.0.1", 0), upstream=srv.address, up=fast, down=fast) as link:
        ch = await connect(*link.address, srv.tls)
        ch.write(_hello(srv.token, vocab))
        await asyncio.sleep(0.2)
        ch.write(encode_frame(_start(1, [1, 2, 3, 4], 1024, Mode.CLOUD_ONLY), vocab.size))
        await asyncio.sleep(0.3)
        link.cut(up=False, down=True)
        await stop.wait()
        ch.abort("bench over")


async def _idle(srv: _Target, plan: Plan, stop: asyncio.Event, drafter: Drafter) -> None:
    hello = _hello(srv.token, drafter.fingerprint())
    chans = []
    for i in range(plan.idle):
        with contextlib.suppress(TransportError):
            ch = await connect(*srv.address, srv.tls)
            if i % 2:
                ch.write(hello)
            chans.append(ch)
    print("attacking", flush=True)  # measured once every connection is open and idle
    await stop.wait()
    for ch in chans:
        ch.abort("bench over")


async def _long_prompts(srv: _Target, plan: Plan, stop: asyncio.Event, drafter: Drafter) -> None:
    w = drafter.ctx.weights
    long = (w.tokenize(PROMPT) * 100)[:1500]
    client = EdgeClient(drafter)
    await client.connect(*srv.address, srv.tls, token=srv.token.encode())
    while not stop.is_set():
        await client.generate(long, sampling=GREEDY, max_new_tokens=2, mode=Mode.CLOUD_ONLY)
    await client.close()


ATTACKS: dict[str, Callable[[_Target, Plan, asyncio.Event, Drafter], Coroutine[Any, Any, None]]] = {
    "preauth-flood": _preauth_flood,
    "junk-after-hello": _junk,
    "non-reader": _non_reader,
    "idle-200": _idle,
    "long-prompts": _long_prompts,
}


def _start(session: int, prompt: list[int], max_new: int, mode: Mode) -> Start:
    return Start(
        session=session, epoch=0, start=len(prompt), seed=0, max_new_tokens=max_new, mode=mode,
        scheme=Scheme.GREEDY, params=GREEDY.params, k=8, prompt=tuple(prompt),
    )  # fmt: skip


class _Attacker:
    """One attack in a child process of its own (its CPU is not the edge's)."""

    def __init__(self, name: str, srv: CloudProcess, drafter: Path, plan: Plan) -> None:
        host, port = srv.address
        cmd = [
            sys.executable, "-m", "picospec.lab.bench.abuse", name, host, str(port), srv.pin,
            str(drafter), str(plan.flood_connections), str(plan.idle),
        ]  # fmt: skip
        env = dict(os.environ, PICOSPEC_TOKEN=srv.token)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "attacking":
            raise PicospecError(f"the {name} attacker did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def _measure(
    srv: CloudProcess, tls: ClientTLS, drafter: Drafter, prompt: list[int], plan: Plan
) -> list[dict[str, Any]]:
    client = EdgeClient(drafter)
    await client.connect(*srv.address, tls, token=srv.token.encode())
    runs = []
    for i in range(plan.repeats + 1):  # the first is a warm-up, not kept
        res = await asyncio.wait_for(
            client.generate(prompt, sampling=GREEDY, seed=0, max_new_tokens=plan.max_tokens), 120
        )
        if i:
            runs.append({"tokens": res.token_ids, "seconds": res.seconds, "ttft_ms": res.ttft_ms})
    await client.close()
    return runs


def run(plan: Plan = Plan(), pair: str = "smollm2") -> dict[str, Any]:
    """Every scenario against one server process; the measurements, validated."""
    paths = prepare(pair)
    drafter = Drafter.open(paths["drafter"], n_ctx=2048, threads=1)
    w = drafter.ctx.weights
    prompt = w.tokenize(w.chat_prompt(PROMPT))
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        srv = CloudProcess(paths["target"], Path(tmp))
        tls = ClientTLS(pin_sha256=srv.pin)
        try:
            reference: list[int] | None = None
            for name in SCENARIOS:
                attacker = _Attacker(name, srv, paths["drafter"], plan) if name in ATTACKS else None
                try:
                    time.sleep(1.0 if attacker else 0.0)  # let the attack get going
                    before = srv.memory()
                    runs = asyncio.run(_measure(srv, tls, drafter, prompt, plan))
                    after = srv.memory()
                finally:
                    if attacker is not None:
                        attacker.stop()
                reference = reference or runs[0]["tokens"]
                rows.append(
                    {
                        "scenario": name,
                        "same_tokens": all(r["tokens"] == reference for r in runs),
                        "seconds": statistics.median(r["seconds"] for r in runs),
                        "ttft_ms": statistics.median(r["ttft_ms"] for r in runs),
                        "rss_before_mb": before["VmRSS"] / 2**20,
                        "rss_after_mb": after["VmRSS"] / 2**20,
                        "rss_peak_mb": after["VmHWM"] / 2**20,
                    }
                )
        finally:
            srv.stop()
    base = rows[0]
    for row in rows:
        row["seconds_vs_baseline"] = row["seconds"] / base["seconds"]
        row["ttft_vs_baseline"] = row["ttft_ms"] / base["ttft_ms"]
    return {
        "kind": "picospec bench abuse",
        "pair": pair,
        "plan": asdict(plan),
        "tokens": plan.max_tokens,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "violations": [r["scenario"] for r in rows if not r["same_tokens"]],
    }


def render(r: dict[str, Any]) -> str:
    lines = [
        f"a well-behaved edge ({r['pair']}, greedy pipeline, {r['tokens']} tokens, median of "
        f"{r['plan']['repeats']}) while misbehaving clients hit the same `picospec cloud serve`",
        f"{'scenario':18} {'same tokens':>11} {'s/gen':>7} {'x base':>7} {'TTFT ms':>8} "
        f"{'x base':>7} {'RSS MB before':>13} {'after':>7} {'peak':>7}",
    ]
    for x in r["rows"]:
        lines.append(
            f"{x['scenario']:18} {'yes' if x['same_tokens'] else 'NO':>11} {x['seconds']:7.2f} "
            f"{x['seconds_vs_baseline']:6.2f}x {x['ttft_ms']:8.0f} {x['ttft_vs_baseline']:6.2f}x "
            f"{x['rss_before_mb']:13.0f} {x['rss_after_mb']:7.0f} {x['rss_peak_mb']:7.0f}"
        )
    return "\n".join(lines)


def _attack_main(argv: list[str]) -> None:
    """The child process of one attack: it runs until SIGTERM."""
    name, host, port, pin, drafter_path, connections, idle = argv
    plan = Plan(repeats=1, flood_connections=int(connections), idle=int(idle))
    drafter = Drafter.open(drafter_path, n_ctx=2048, threads=1)
    target = _Target((host, int(port)), ClientTLS(pin_sha256=pin), os.environ["PICOSPEC_TOKEN"])

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if name != "idle-200":  # that one says so when its connections are open
            print("attacking", flush=True)
        task = asyncio.create_task(ATTACKS[name](target, plan, stop, drafter))
        await stop.wait()
        try:
            await asyncio.wait_for(task, 30)
        except TimeoutError:
            task.cancel()

    asyncio.run(main())


if __name__ == "__main__":
    _attack_main(sys.argv[1:])
