"""The verifier service against clients that misbehave, over real QUIC on loopback.

Each test aims one kind of abuse at a running server (a fuzzer before and after
the handshake, a flood of pre-auth frames, a flood after it, a peer that stops
reading, hundreds of idle connections, a backend that raises) and then checks
that a well-behaved edge on the same server still finishes its generation with
the right tokens, and that the server held its bounds. The figures (latency of
the well-behaved edge with and without the abuse, peak memory) come from
``picospec bench abuse``, not from here: nothing below is timed.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markov import MarkovBackend, V, markov_fingerprint
from servers import GREEDY, PROMPT, TOKEN, ServerThread, good_tokens, rss_bytes, well_behaved

from picospec.cloud.limits import Limits
from picospec.codec.errors import ProtocolError
from picospec.codec.framing import FrameParser, encode_frame
from picospec.codec.messages import (
    Bye,
    Cancel,
    DraftBlock,
    Error,
    ErrorCode,
    Hello,
    Message,
    Start,
    Verdict,
    Welcome,
)
from picospec.codec.scheme import Mode, Scheme
from picospec.edge.client import EdgeClient, GenerationError
from picospec.lab.link import LinkConfig, LinkRelay
from picospec.runtime.quic import Channel, TransportError, connect

pytestmark = pytest.mark.slow

HELLO = Hello(session=0, epoch=0, start=0, vocab_fingerprint=markov_fingerprint(), auth_token=TOKEN)


def start_msg(session: int = 1, max_new: int = 8, mode: Mode = Mode.PIPELINE, prompt=PROMPT):
    return Start(
        session=session, epoch=0, start=len(prompt), seed=0, max_new_tokens=max_new, mode=mode,
        scheme=Scheme.GREEDY, params=GREEDY.params, k=4, prompt=tuple(prompt),
    )  # fmt: skip


VALID = [
    start_msg(),
    DraftBlock(session=1, epoch=0, start=4, scheme=Scheme.GREEDY, bonus=False, tokens=(1, 2)),
    Cancel(session=1, epoch=0, start=4),
    Bye(session=1, epoch=0, start=4),
    Verdict(session=1, epoch=0, start=4, accepted=0, token=1, target_forwards=1),
    Welcome(
        session=0,
        epoch=0,
        start=0,
        max_block=4,
        max_depth=2,
        max_prompt_tokens=8,
        max_new_tokens=8,
        context_size=16,
    ),
    Error(session=1, epoch=0, start=0, code=ErrorCode.PROTOCOL, message="x"),
    HELLO,
]
FRAMES = [encode_frame(m, V) for m in VALID]


async def open_peer(srv: ServerThread, *, hello: bool) -> tuple[Channel, FrameParser]:
    ch = await connect(*srv.address, srv.tls)
    parser = FrameParser(vocab=V)
    if hello:
        ch.write(encode_frame(HELLO))
        reply = await read_messages(ch, parser, until=1)
        assert isinstance(reply[0], Welcome), reply
    return ch, parser


async def read_messages(
    ch: Channel, parser: FrameParser, *, until: int | None = None, seconds: float = 5.0
) -> list[Message]:
    """What the server sends, until the stream ends, `until` messages, or seconds."""
    out: list[Message] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while until is None or len(out) < until:
        try:
            data = await asyncio.wait_for(ch.read(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            break
        if not data:
            break
        out += parser.feed(data)
    return out


def mutate(frame: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "type", "length", "random"]))
    b = bytearray(frame)
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    elif how == "extend":
        b += data.draw(st.binary(min_size=1, max_size=64))
    elif how == "type":
        b[5] = data.draw(st.integers(0, 255))
    elif how == "length":
        b[:4] = data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
    else:
        b = bytearray(data.draw(st.binary(max_size=300)))
    return bytes(b)


@pytest.fixture(scope="module")
def fuzz_server():
    limits = Limits(hello_timeout_s=0.5, max_generations_per_connection=2)
    with ServerThread(MarkovBackend(), limits=limits) as srv:
        yield srv


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.data())
def test_fuzzed_frames_before_the_handshake_get_an_error_and_the_connection_alone_ends(
    fuzz_server, data
):
    frame = mutate(data.draw(st.sampled_from(FRAMES)), data)

    async def peer() -> list[Message]:
        ch, parser = await open_peer(fuzz_server, hello=False)
        ch.write(frame)
        try:
            return await read_messages(ch, parser, seconds=3.0)
        except ProtocolError:  # the server answered in a frame this parser refuses: never
            raise
        finally:
            await ch.close()

    msgs = asyncio.run(peer())
    # a frame that happens to be a valid Hello is welcomed; anything else is refused
    assert all(isinstance(m, Error | Welcome) for m in msgs), msgs


@FUZZ
@given(st.data())
def test_fuzzed_frames_after_the_handshake_never_take_the_server_down(fuzz_server, data):
    frames = [
        mutate(data.draw(st.sampled_from(FRAMES)), data)
        for _ in range(data.draw(st.integers(1, 3)))
    ]

    async def peer() -> list[Message]:
        ch, parser = await open_peer(fuzz_server, hello=True)
        for f in frames:
            ch.write(f)
        try:
            return await read_messages(ch, parser, seconds=1.0)
        finally:
            await ch.close()

    msgs = asyncio.run(peer())
    assert all(isinstance(m, Error | Verdict | Bye) for m in msgs), msgs


def test_after_the_fuzzers_a_well_behaved_edge_gets_the_right_tokens(fuzz_server):
    tokens, _ = asyncio.run(well_behaved(fuzz_server))
    assert tokens == good_tokens()
    stats = fuzz_server.call(lambda: fuzz_server.service.stats)
    assert stats.model_failures == 0


def test_a_flood_of_pre_auth_start_frames_is_refused_at_their_length():
    """24 connections each send a 1 MiB Start before any Hello, while an edge
    generates: each is refused as soon as its 4-byte length arrives, nothing of
    it is decoded or queued, and memory does not grow with the flood."""
    big = start_msg(prompt=[1] * (250_000))
    frame = encode_frame(big, V)
    assert len(frame) > 1_000_000

    with ServerThread(MarkovBackend()) as srv:

        async def flood() -> list[list[Message]]:
            async def one() -> list[Message]:
                ch, parser = await open_peer(srv, hello=False)
                try:
                    ch.write(frame)
                except TransportError:
                    return []
                try:
                    return await read_messages(ch, parser, seconds=10)
                finally:
                    await ch.close()

            return await asyncio.gather(*(one() for _ in range(24)))

        async def both() -> tuple[list[list[Message]], list[int]]:
            good = asyncio.create_task(well_behaved(srv))
            replies = await flood()
            tokens, _ = await good
            return replies, tokens

        before = rss_bytes()
        replies, tokens = asyncio.run(both())
        grown = rss_bytes() - before
        stats = srv.call(lambda: srv.service.stats)
    assert tokens == good_tokens()
    for msgs in replies:
        (err,) = msgs
        assert err.code is ErrorCode.PROTOCOL and "over the limit" in err.message
    assert stats.refusals[ErrorCode.PROTOCOL] == 24 and stats.connections_open == 0
    assert grown < 64 * 2**20, f"the process grew {grown / 2**20:.0f} MiB during a 24 MiB flood"


class Gate(MarkovBackend):
    """A target whose forwards wait while the gate is closed (a busy model)."""

    def __init__(self) -> None:
        super().__init__()
        self.open_ = threading.Event()
        self.open_.set()
        self.waiting = threading.Event()

    def forward(self, session, start, tokens, n_out=None):
        if not self.open_.is_set():
            self.waiting.set()
            self.open_.wait(30)
        return super().forward(session, start, tokens, n_out)


def test_a_peer_that_sends_far_ahead_of_the_model_is_closed_at_the_queued_bytes_limit():
    backend = Gate()
    with ServerThread(backend, limits=Limits(max_queued_bytes=64 * 1024)) as srv:

        async def scenario() -> list[Message]:
            busy, _ = await open_peer(srv, hello=True)
            backend.open_.clear()
            busy.write(encode_frame(start_msg(), V))  # the model thread now waits in forward
            await asyncio.get_running_loop().run_in_executor(None, backend.waiting.wait, 10)
            flooder, parser = await open_peer(srv, hello=True)
            junk = encode_frame(Bye(session=99, epoch=0, start=0), V) * 20_000  # 460 kB
            flooder.write(junk)
            msgs = await read_messages(flooder, parser, seconds=10)
            backend.open_.set()
            await busy.close()
            await flooder.close()
            return msgs

        msgs = asyncio.run(scenario())
        tokens, _ = asyncio.run(well_behaved(srv))
    (err,) = [m for m in msgs if isinstance(m, Error)]
    assert err.code is ErrorCode.LIMIT and "max_queued_bytes (65536)" in err.message
    assert tokens == good_tokens()


def test_a_peer_that_stops_reading_pauses_its_cloud_only_generation():
    """The peer's link goes dark downstream (it acknowledges nothing): once its
    unacknowledged bytes pass max_send_buffer its generation gets no more model
    time, and an edge on another connection generates at full speed meanwhile."""
    backend = MarkovBackend(max_context=100_000)
    limits = Limits(max_send_buffer=2048, max_new_tokens=50_000)
    with ServerThread(backend, limits=limits, idle_timeout=30) as srv:

        async def scenario() -> tuple[int, int, list[int]]:
            cut = LinkConfig(delay_ms=1)
            async with LinkRelay(
                listen=("127.0.0.1", 0), upstream=srv.address, up=cut, down=cut
            ) as link:
                ch = await connect(*link.address, srv.tls)
                parser = FrameParser(vocab=V)
                ch.write(encode_frame(HELLO))
                assert isinstance((await read_messages(ch, parser, until=1))[0], Welcome)
                ch.write(encode_frame(start_msg(max_new=50_000, mode=Mode.CLOUD_ONLY), V))
                await read_messages(ch, parser, until=5)  # tokens flow
                link.cut(up=False, down=True)  # from here the peer receives (and acks) nothing
                for _ in range(200):
                    if srv.call(lambda: srv.service.stats.paused):
                        break
                    await asyncio.sleep(0.05)
                held = srv.call(lambda: max(len(v) for v in backend.kv.values()))
                tokens, _ = await well_behaved(srv)
                await asyncio.sleep(0.5)
                later = srv.call(lambda: max(len(v) for v in backend.kv.values()))
                ch.abort("test over")
                return held, later, tokens

        held, later, tokens = asyncio.run(scenario())
        paused = srv.call(lambda: srv.service.stats.paused)
    assert paused >= 1
    assert later == held  # no token decoded for the stalled peer while it does not read
    assert held < 5_000  # paused after about max_send_buffer bytes of verdicts, not 50k tokens
    assert tokens == good_tokens()


def test_two_hundred_idle_connections_and_the_connection_limit():
    # the Hello deadline outlasts opening 100 connections on a slow machine, so exactly the
    # 50 silent ones admitted time out, and the 50 over the limit are refused
    limits = Limits(max_connections=150, hello_timeout_s=10.0)
    with ServerThread(MarkovBackend(), limits=limits, idle_timeout=60) as srv:

        async def scenario() -> tuple[list[str], list[int]]:
            authed = [await open_peer(srv, hello=True) for _ in range(100)]
            silent = [await open_peer(srv, hello=False) for _ in range(100)]
            # 50 of the silent ones are over the limit, the other 50 miss the Hello deadline;
            # they never opened their stream, so the reason comes with the connection's close
            await asyncio.gather(*(read_messages(c, p, seconds=14) for c, p in silent))
            reasons = [ch.close_reason for ch, _ in silent]
            tokens, _ = await well_behaved(srv)  # 100 idle connections are still open
            for ch, _ in authed:
                ch.abort("test over")
            return reasons, tokens

        reasons, tokens = asyncio.run(scenario())
        stats = srv.call(lambda: srv.service.stats)
    busy = [r for r in reasons if "busy: the server has 150 connections, its limit" in r]
    late = [r for r in reasons if "no Hello within 10 s" in r]
    assert len(busy) == len(late) == 50, reasons
    assert stats.refusals[ErrorCode.BUSY] == 50 and stats.refusals[ErrorCode.TIMEOUT] == 50
    assert tokens == good_tokens()


class Poisoned(MarkovBackend):
    """A target that raises (as a bug or a CUDA out-of-memory would) on token 5."""

    def forward(self, session, start, tokens, n_out=None):
        if 5 in tokens:
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().forward(session, start, tokens, n_out)


def test_a_backend_that_raises_ends_only_that_generation_and_says_why():
    with ServerThread(Poisoned()) as srv:

        async def scenario() -> tuple[GenerationError, list[int], list[int]]:
            client = EdgeClient(__import__("markov").MarkovDrafter(MarkovBackend().table))
            await client.connect(*srv.address, srv.tls, token=TOKEN)
            with pytest.raises(GenerationError) as failed:
                await client.generate([5, 1], sampling=GREEDY, max_new_tokens=8, seed=0)
            again = await client.generate(PROMPT, sampling=GREEDY, max_new_tokens=16, seed=0)
            await client.close()
            other, _ = await well_behaved(srv)
            return failed.value, again.token_ids, other

        err, again, other = asyncio.run(scenario())
        stats = srv.call(lambda: srv.service.stats)
    assert "INTERNAL" in str(err) and "RuntimeError: CUDA out of memory" in str(err)
    assert err.result.token_ids == []
    assert again == other == good_tokens()  # the same connection and another both go on
    assert stats.model_failures == 1 and stats.refusals[ErrorCode.INTERNAL] == 1
