"""Offline fallback with real processes: the link goes dark mid-generation, the cloud
is SIGKILLed mid-generation and restarted, the cloud is unreachable at the start.

Greedy throughout, so what the cloud alone would say is known: the tokens
verified before an outage must be the cloud-only tokens, nothing committed may
be lost or repeated (the reply's tokens are exactly the streamed tokens, in
order), and once the cloud is back later generations are verified again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from picospec.edge.api import AsyncEdge, Chunk, Edge, ReplyError
from picospec.edge.config import EdgeConfig
from picospec.lab.bench.cloudproc import CloudProcess
from picospec.lab.link import LinkConfig, LinkRelay
from picospec.runtime.netargs import host_port

pytestmark = [pytest.mark.models, pytest.mark.slow]

PROMPT = [{"role": "user", "content": "Write a long list of the parts of a mobile robot."}]
FAST = dict(offline_after_s=1.0, reconnect_max_s=0.5, n_ctx=1024, threads=1)


@pytest.fixture
def cloud(smollm2, tmp_path):
    proc = CloudProcess(smollm2["target"], tmp_path, n_ctx=1024, args=())
    yield proc
    proc.stop()


def config(cloud: CloudProcess, address: str | None = None, **kw) -> EdgeConfig:
    fields = dict(FAST, cloud=address or cloud.endpoint, pin=cloud.pin, pair="smollm2")
    return EdgeConfig(**(fields | kw))  # type: ignore[arg-type]


def reference(cloud: CloudProcess, n: int) -> list[int]:
    """The cloud-only greedy tokens of PROMPT."""
    with Edge(config(cloud), token=cloud.token) as edge:
        return edge.chat(PROMPT, max_tokens=n, mode="cloud-only", seed=0).tokens


def check_stream(chunks: list[Chunk], reply_tokens: list[int]) -> list[bool]:
    """Nothing lost or repeated: the streamed tokens are the reply's; their flags."""
    streamed = [t for c in chunks for t in c.tokens]
    assert streamed == reply_tokens
    return [c.verified for c in chunks for _ in c.tokens]


def test_the_link_going_dark_mid_generation_continues_locally_then_verified(cloud):
    want = reference(cloud, 48)

    async def scenario():
        fast = LinkConfig(delay_ms=2)
        up = host_port(cloud.endpoint)
        async with LinkRelay(listen=("127.0.0.1", 0), upstream=up, up=fast, down=fast) as link:
            addr = f"{link.address[0]}:{link.address[1]}"
            async with AsyncEdge(config(cloud, addr), token=cloud.token) as edge:
                chunks: list[Chunk] = []
                stream = edge.stream(PROMPT, max_tokens=400, seed=0, mode="pipeline")
                outage = None
                async for chunk in stream:
                    chunks.append(chunk)
                    if outage is None and sum(len(c.tokens) for c in chunks) >= 8:
                        link.cut()  # the robot drives out of Wi-Fi range for 2 s
                        outage = asyncio.get_running_loop().call_later(2.0, link.restore)
                after = await edge.generate(PROMPT, max_tokens=16, seed=0, mode="pipeline")
                return chunks, stream.reply, after, link.up.cut_drops + link.down.cut_drops

    chunks, reply, after, dropped = asyncio.run(scenario())
    flags = check_stream(chunks, reply.tokens)
    assert dropped > 0 and reply.finish_reason in ("length", "stop")
    first_local = flags.index(False)
    assert reply.tokens[:first_local] == want[:first_local]  # verified prefix: cloud-only's
    assert first_local >= 8 and reply.local_tokens > 0
    resumed = any(flags[first_local:])  # verified again once the link is back
    assert resumed, "the generation ended before it was verified again"
    assert reply.verified_tokens + reply.local_tokens == len(reply.tokens)
    assert after.local_tokens == 0 and after.tokens == want[:16]


def test_a_cloud_killed_mid_generation_and_restarted(cloud):
    want = reference(cloud, 40)
    with Edge(config(cloud), token=cloud.token) as edge:
        chunks: list[Chunk] = []
        for chunk in edge.stream(PROMPT, max_tokens=40, seed=0, mode="pipeline"):
            chunks.append(chunk)
            if sum(len(c.tokens) for c in chunks) >= 6 and cloud.running:
                cloud.kill()  # SIGKILL: no Bye, no close
        tokens = [t for c in chunks for t in c.tokens]
        flags = check_stream(chunks, tokens)
        first_local = flags.index(False)
        assert tokens[:first_local] == want[:first_local] and first_local >= 6
        assert "offline" in edge.health()["status"]
        cloud.start()  # the same address, a new process
        for _ in range(100):
            if edge.health()["cloud"] == "connected":
                break
            time.sleep(0.1)
        later = edge.chat(PROMPT, max_tokens=12, seed=0)
    assert len(tokens) == 40 or not flags[-1]
    assert later.local_tokens == 0 and later.tokens == want[:12]


def test_an_unreachable_cloud_at_start_generates_locally_and_is_used_once_up(smollm2, tmp_path):
    cloud = CloudProcess(
        smollm2["target"], tmp_path, n_ctx=1024, args=(), start=False
    )  # not started: nothing listens
    try:
        with Edge(config(cloud), token=cloud.token) as edge:
            assert edge.health()["status"].startswith("degraded: offline since")
            alone = edge.chat(PROMPT, max_tokens=12, seed=0)
            assert alone.local_tokens == 12 and alone.verified_tokens == 0
            with pytest.raises(ReplyError, match="unreachable") as failed:
                edge.chat(PROMPT, max_tokens=4, fallback="fail")
            assert failed.value.reply.tokens == []
            waited = edge.chat(PROMPT, max_tokens=4, fallback="wait", deadline_s=0.5)
            assert waited.finish_reason == "deadline" and waited.tokens == []
            cloud.start()
            for _ in range(100):
                if edge.health()["cloud"] == "connected":
                    break
                time.sleep(0.1)
            verified = edge.chat(PROMPT, max_tokens=12, seed=0)
        assert verified.verified_tokens == 12 and verified.local_tokens == 0
    finally:
        cloud.stop()
