"""The verifier service: asyncio glue between QUIC channels and CloudSessions.

One CloudSession per connection, one model thread for the whole server: every
call into a session after its handshake (and so every use of the backend) runs
on that thread, so the backend is never entered twice at once and the event
loop stays free for network traffic. A scheduler gives the model thread to the
connections that have used it least (start-time fair queueing by measured
seconds): each turn runs one unit of work of up to ``max_batch`` runnable
connections, and their forward requests (blocks to verify, prefill chunks,
cloud-only tokens) are answered together by one ``Backend.forward_many``, a
single batched forward on a backend that batches (llama.cpp with a KV sequence
per session). The batch's time is charged to its connections by the tokens each
evaluated, and a connection more than ``prefill_unit_s`` of model time ahead of
the least-served runnable one sits a turn out: without that, a long prompt's
chunk would ride along in every turn, and every verify would wait for it. A
long prompt is many units, so it cannot hold back everyone else's verifies for
longer than one chunk. Chunks are sized from the measured cost
per token to make a turn take about ``prefill_unit_s`` while another
connection has generations open, and are ``prefill_chunk`` long when the
connection is alone (nobody waits on it then).

A connection is served only once it earns it: until its Welcome it may send
nothing but one Hello, in a frame no larger than a Hello can be, within
``hello_timeout_s``; the Hello is checked on the event loop and never reaches
the model thread. Afterwards every limit of ``Limits`` holds: a peer that sends
more than ``max_queued_bytes`` ahead of the model is closed with a LIMIT Error,
and a peer that does not read (``max_send_buffer`` bytes unacknowledged) gets
no model time until it does, so a cloud-only generation pauses instead of
decoding into a buffer. A frame that breaks the protocol gets an Error and
closes that connection alone; an exception in model work ends that generation
alone (the session says so to its edge, the server logs the traceback), and the
server keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from picospec.codec.errors import ConfigError, PicospecError, ProtocolError
from picospec.codec.framing import FrameParser, encode_frame
from picospec.codec.messages import DraftBlock, Error, ErrorCode, Message, Start, Verdict
from picospec.runtime.quic import Channel, Server, ServerTLS, TransportError, serve

from .backend import Backend, Forward
from .led import ForwardCosts
from .limits import MIN_PREFILL_CHUNK, GenerationBudget, Limits
from .session import CloudSession
from .target import Work

log = logging.getLogger("picospec.cloud")


@dataclass
class ServiceStats:
    """What the service has done since it started (counters only grow, but ``*_open``)."""

    connections_total: int = 0
    connections_open: int = 0
    refusals: Counter[ErrorCode] = field(default_factory=Counter)
    """Every Error sent, by code (handshakes, limits, model failures)."""
    model_failures: int = 0
    """Unexpected exceptions in model work (each ended one generation)."""
    paused: int = 0
    """Times a connection was paused because its peer did not read."""
    busy_seconds: float = 0.0
    """Wall time the model thread spent on sessions' work (model and verification)."""
    work_units: int = 0
    """Units of sessions' work run on the model thread (each at most one step)."""
    batches: int = 0
    """Turns of the model thread (each runs one unit of up to max_batch connections)."""
    batched_units: int = 0
    """Units that shared their turn with another connection's."""
    generations_total: int = 0
    """Start messages received (each asks for one generation; refused ones included)."""
    drafted_tokens: int = 0
    """Tokens received in draft blocks, to verify."""
    accepted_tokens: int = 0
    """Drafted tokens the verdicts accepted."""
    committed_tokens: int = 0
    """Tokens committed: accepted drafts, the cloud's own tokens (corrections,
    bonuses, cloud-only decoding) and the corrections edges sampled (split)."""
    prefix_tokens: int = 0
    """Prompt tokens not evaluated because the backend reused a shared prefix's KV."""
    bytes_in: int = 0
    """Stream bytes received from edges (after QUIC's decryption)."""
    bytes_out: int = 0
    """Stream bytes sent to edges."""


@dataclass(eq=False)
class _Conn:
    ch: Channel
    session: CloudSession
    parser: FrameParser
    inbox: list[Message] = field(default_factory=list)
    queued: int = 0
    """Bytes received and not yet handed to the model thread."""
    vtime: float = 0.0
    """Model seconds this connection has used (its place in the fair queue)."""
    paused: bool = False
    closing: bool = False

    @property
    def runnable(self) -> bool:
        return not (self.paused or self.closing) and bool(self.inbox or self.session.has_work)


class VerifierService:
    """Serves one backend to any number of edge connections."""

    def __init__(
        self,
        backend: Backend,
        *,
        token: bytes,
        name: str = "picospec",
        limits: Limits | None = None,
        max_batch: int | None = None,
    ) -> None:
        """max_batch: connections whose work shares one turn of the model thread,
        their forwards batched into one (default: the backend's session limit when
        it batches, else 1: one connection at a time)."""
        self.backend = backend
        self.token = token
        self.name = name
        self.limits = limits or Limits()
        self.stats = ServiceStats()
        if max_batch is None:
            max_batch = self.limits.max_generations if backend.batches else 1
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.budget = GenerationBudget(self.limits.max_generations)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="picospec-model")
        self._backend_ids = itertools.count(1)  # one id space for every connection
        self._conns: set[_Conn] = set()
        self._clock = 0.0  # the fair queue's virtual time: vtime of the last served
        self._wake: asyncio.Event | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_token = 0.0  # measured seconds per prefill token (EWMA)
        self.costs = ForwardCosts()
        """Measured seconds of a forward by size, from which cloud-led generations
        choose how many drafts a forward takes (a batch's time is shared among its
        requests in proportion to their tokens)."""
        self.draining = False
        """True once drain() began: new connections and generations are refused."""
        self.prefill_chunk = min(self.limits.prefill_chunk, MIN_PREFILL_CHUNK)
        """Prompt tokens per prefill unit now, fitted to prefill_unit_s (from a small
        first chunk, so the first measurement costs little)."""
        backend.fingerprint()  # computed once here, never on the event loop later

    @property
    def busy_seconds(self) -> float:
        return self.stats.busy_seconds

    @property
    def work_units(self) -> int:
        return self.stats.work_units

    async def serve(
        self, host: str, port: int, tls: ServerTLS, *, idle_timeout: float = 60.0
    ) -> Server:
        self._wake = asyncio.Event()
        self._scheduler = asyncio.create_task(self._schedule())
        return await serve(host, port, tls, self.handle, idle_timeout=idle_timeout)

    # ------------------------------------------------------------------ one connection
    async def handle(self, ch: Channel) -> None:
        """Run one connection until it closes."""
        self.stats.connections_total += 1
        full = self.stats.connections_open >= self.limits.max_connections
        if full or self.draining:
            why = self.budget.closed or (
                f"the server has {self.stats.connections_open} connections, its limit"
            )
            self._refuse(ch, ErrorCode.BUSY, why)
            log.warning(event("refused", ch.peer, code="BUSY", reason=why))
            await ch.close(f"busy: {why}")
            return
        self.stats.connections_open += 1
        session = CloudSession(
            self.backend,
            token=self.token,
            server_name=self.name,
            limits=self.limits,
            budget=self.budget,
            backend_ids=self._backend_ids,
            refusals=self.stats.refusals,
            forward_cost=self.costs,
        )
        conn = _Conn(ch, session, FrameParser.hello_only())
        try:
            if await self._handshake(conn):
                name = session.hello.client_name if session.hello else ""
                log.info(event("joined", ch.peer, name=name))
                self._conns.add(conn)
                await self._read(conn)
        except PicospecError as e:
            log.warning(event("failed", ch.peer, reason=str(e)))
        finally:
            conn.closing = True
            self._conns.discard(conn)
            self.stats.connections_open -= 1
            await asyncio.get_running_loop().run_in_executor(self._pool, session.close)
            if not ch.closed:
                await ch.close("bye")
            log.info(event("closed", ch.peer, reason=ch.close_reason, generations=session.started))

    async def _handshake(self, conn: _Conn) -> bool:
        """Read exactly one Hello within the deadline; True once Welcomed."""
        ch, loop = conn.ch, asyncio.get_running_loop()
        deadline = loop.time() + self.limits.hello_timeout_s
        while True:
            left = deadline - loop.time()
            try:
                data = await asyncio.wait_for(ch.read(), max(left, 0.0))
            except TimeoutError:
                why = f"no Hello within {self.limits.hello_timeout_s:g} s"
                self._refuse(ch, ErrorCode.TIMEOUT, why)
                log.warning(event("refused", ch.peer, code="TIMEOUT", reason=why))
                await ch.close(why)
                return False
            if not data:
                return False
            self.stats.bytes_in += len(data)
            try:
                msgs = conn.parser.feed(data)
            except ProtocolError as e:
                self._refuse(ch, ErrorCode.PROTOCOL, str(e))
                log.warning(event("refused", ch.peer, code="PROTOCOL", reason=str(e)))
                await ch.close("protocol error")
                return False
            if not msgs:
                continue
            replies = conn.session.receive(msgs[0])
            if len(msgs) > 1 and conn.session.hello is not None:
                replies = conn.session.receive(msgs[1])  # a second Hello: refused, closes
            self._send(conn, replies)
            if conn.session.closed or conn.session.hello is None:
                code, why = _first_error(replies)
                log.warning(event("refused", ch.peer, code=code, reason=why))
                await ch.close("refused")
                return False
            conn.parser.accept = None
            conn.parser.vocab = conn.session.hello.vocab_size
            conn.parser.max_frame = self.limits.max_frame(conn.session.context_size)
            return True

    async def _read(self, conn: _Conn) -> None:
        ch = conn.ch
        while not conn.session.closed:
            data = await ch.read()
            if not data:
                return
            try:
                msgs = conn.parser.feed(data)
            except ProtocolError as e:
                self._refuse(ch, ErrorCode.PROTOCOL, str(e))
                log.warning(event("protocol_error", ch.peer, code="PROTOCOL", reason=str(e)))
                await ch.close("protocol error")
                return
            conn.queued += len(data)
            self._count_in(len(data), msgs)
            if conn.queued > self.limits.max_queued_bytes:
                why = (
                    f"{conn.queued} bytes sent ahead of the verifier, over max_queued_bytes "
                    f"({self.limits.max_queued_bytes})"
                )
                self._refuse(ch, ErrorCode.LIMIT, why)
                log.warning(event("limit", ch.peer, code="LIMIT", reason=why))
                await ch.close("limit")
                return
            conn.inbox += msgs
            self._poke(conn)

    # ------------------------------------------------------------------ the model thread
    def _poke(self, conn: _Conn) -> None:
        """conn may have become runnable: it joins the fair queue at the present."""
        if conn.runnable and conn.vtime < self._clock:
            conn.vtime = self._clock
        if self._wake is not None:
            self._wake.set()

    async def _schedule(self) -> None:
        """Give the model thread to the runnable connections that have used it least:
        up to max_batch of them, whose units of work share each backend forward."""
        assert self._wake is not None
        while True:
            ready = sorted((c for c in self._conns if c.runnable), key=lambda c: c.vtime)
            if not ready:
                self._wake.clear()
                await self._wake.wait()
                continue
            # a connection that is a whole quantum ahead of the least-served one sits this
            # turn out, so a long prompt cannot ride along in every batch
            quantum = ready[0].vtime + self.limits.prefill_unit_s
            turn = [c for c in ready if c.vtime <= quantum][: self.max_batch]
            try:
                await self._serve(turn)
            except Exception:  # the scheduler must outlive any one connection
                log.exception("the scheduler failed on a batch")

    async def _serve(self, conns: list[_Conn]) -> None:
        """One unit of each connection's work on the model thread (their forwards
        batched), then their output. Each is charged the batch's time in
        proportion to the tokens its forwards evaluated."""
        inboxes = []
        for conn in conns:
            inboxes.append(conn.inbox)
            conn.inbox, conn.queued = [], 0
            # short prefill units only help when another connection has work to interleave
            alone = self.budget.open == conn.session.generations
            conn.session.prefill_chunk = self.limits.prefill_chunk if alone else self.prefill_chunk
        t0 = time.perf_counter()
        outs, tokens = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._process, conns, inboxes
        )
        cost = time.perf_counter() - t0
        prefilled = sum(c.session.last_prefill for c in conns)
        if prefilled:
            self._fit_prefill_chunk(max(sum(tokens), prefilled), cost)
        st = self.stats
        st.busy_seconds += cost
        st.work_units += len(conns)
        st.batches += 1
        st.batched_units += len(conns) if len(conns) > 1 else 0
        total = sum(tokens)
        for conn, out, n in zip(conns, outs, tokens, strict=True):
            share = cost * (n / total if total else 1 / len(conns))
            conn.vtime += share
            self._clock = max(self._clock, conn.vtime - share)
            if not conn.closing:
                self._after(conn, out)

    def _after(self, conn: _Conn, out: list[Message]) -> None:
        """Send a unit's output; close or pause the connection if it must be."""
        self._send(conn, out)
        if conn.session.closed:
            conn.closing = True
            why = conn.session.close_reason
            if why:
                self._refuse(conn.ch, ErrorCode.LIMIT, why)
                log.warning(event("limit", conn.ch.peer, code="LIMIT", reason=why))
            self._background(conn.ch.close(why or "protocol error"))
        elif conn.ch.pending > self.limits.max_send_buffer:
            conn.paused = True
            self.stats.paused += 1
            log.info(event("paused", conn.ch.peer, reason="its peer does not read"))
            self._background(self._resume_when_read(conn))

    def _fit_prefill_chunk(self, tokens: int, seconds: float) -> None:
        """Size prefill chunks so a unit takes about prefill_unit_s on this model."""
        per_token = seconds / tokens
        self._per_token = (
            per_token if not self._per_token else 0.8 * self._per_token + 0.2 * per_token
        )
        lim = self.limits
        self.prefill_chunk = max(
            MIN_PREFILL_CHUNK, min(lim.prefill_chunk, int(lim.prefill_unit_s / self._per_token))
        )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _process(
        self, conns: list[_Conn], inboxes: list[list[Message]]
    ) -> tuple[list[list[Message]], list[int]]:
        """On the model thread: apply what arrived to each session, then run one unit
        of work of each, answering their forward requests together (one
        ``forward_many`` per round). Returns each one's messages and the tokens
        its forwards evaluated."""
        outs: list[list[Message]] = [[] for _ in conns]
        tokens = [0] * len(conns)
        running: dict[int, tuple[Work[list[Message]], Forward]] = {}
        for i, (conn, inbox) in enumerate(zip(conns, inboxes, strict=True)):
            session = conn.session
            try:
                for m in inbox:
                    outs[i] += session.receive(m)
                if session.has_work:
                    work = session.work()
                    self._advance(i, work, None, running, outs)
            except Exception as e:
                self._broken(conn, e, outs[i])
        while running:
            order = sorted(running)
            reqs = [running[i][1] for i in order]
            t0 = time.perf_counter()
            try:
                results: list[np.ndarray | BaseException] = list(self.backend.forward_many(reqs))
            except Exception as e:  # the whole batch failed: each generation in it says so
                results = [e] * len(reqs)
            else:
                seconds, total = time.perf_counter() - t0, sum(len(r.tokens) for r in reqs)
                for r in reqs:
                    self.costs.observe(len(r.tokens), seconds * len(r.tokens) / max(total, 1))
            for i, req, result in zip(order, reqs, results, strict=True):
                tokens[i] += len(req.tokens)
                work = running.pop(i)[0]
                try:
                    self._advance(i, work, result, running, outs)
                except Exception as e:
                    self._broken(conns[i], e, outs[i])
        for conn in conns:
            self._log_failures(conn)
            self.stats.prefix_tokens += conn.session.reused_tokens
            conn.session.reused_tokens = 0
        return outs, tokens

    @staticmethod
    def _advance(
        i: int,
        work: Work[list[Message]],
        result: np.ndarray | BaseException | None,
        running: dict[int, tuple[Work[list[Message]], Forward]],
        outs: list[list[Message]],
    ) -> None:
        """Give work its forward's result (None: start it); it asks for its next
        forward (kept in running) or finishes with its messages."""
        try:
            if result is None:
                req = next(work)
            elif isinstance(result, BaseException):
                req = work.throw(result)
            else:
                req = work.send(result)
        except StopIteration as done:
            outs[i] += done.value
        else:
            running[i] = (work, req)

    @staticmethod
    def _broken(conn: _Conn, e: Exception, out: list[Message]) -> None:
        """A bug in a session must not stop the server: that connection ends."""
        log.exception("connection %s: the session failed", conn.ch.peer, exc_info=e)
        conn.session.close()
        why = f"the verifier failed: {type(e).__name__}: {e}"
        out.append(Error(session=0, epoch=0, start=0, code=ErrorCode.INTERNAL, message=why))
        conn.session.refusals[ErrorCode.INTERNAL] += 1

    def _log_failures(self, conn: _Conn) -> None:
        session = conn.session
        for gen, exc in session.failures:
            self.stats.model_failures += 1
            log.error(
                "connection %s, generation %d: model work failed",
                conn.ch.peer,
                gen,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        session.failures.clear()

    async def _resume_when_read(self, conn: _Conn) -> None:
        try:
            await conn.ch.drain(self.limits.max_send_buffer // 2)
        except TransportError:
            return  # the connection ended; its reader cleans up
        conn.paused = False
        self._poke(conn)

    # ------------------------------------------------------------------ output
    def _send(self, conn: _Conn, msgs: list[Message]) -> None:
        vocab, st = conn.parser.vocab, self.stats
        for m in msgs:
            if isinstance(m, Verdict):
                st.accepted_tokens += m.accepted
                st.committed_tokens += m.accepted + (m.token is not None)
            frame = encode_frame(m, vocab)
            try:
                conn.ch.write(frame)
            except TransportError:
                return  # the peer is gone; its reader ends the connection
            st.bytes_out += len(frame)

    def _count_in(self, nbytes: int, msgs: list[Message]) -> None:
        st = self.stats
        st.bytes_in += nbytes
        for m in msgs:
            if isinstance(m, DraftBlock):
                st.drafted_tokens += len(m.tokens)
                st.committed_tokens += m.correction is not None
            elif isinstance(m, Start):
                st.generations_total += 1

    @property
    def queue_depth(self) -> int:
        """Connections with work waiting for the model thread."""
        return sum(c.runnable for c in self._conns)

    def _refuse(self, ch: Channel, code: ErrorCode, why: str) -> None:
        """An Error that is not a session's: before or instead of a handshake. A peer
        that never opened its stream cannot be written to; the reason then travels
        in the connection's close (the caller closes with it)."""
        self.stats.refusals[code] += 1
        err = Error(session=0, epoch=0, start=0, code=code, message=why[:1000])
        try:
            ch.write(encode_frame(err))
        except TransportError:
            pass

    async def drain(self, timeout_s: float) -> int:
        """Stop taking work and let what runs finish: new connections and generations
        are refused (BUSY), open generations get up to timeout_s; the rest are ended
        with a Bye (their edges carry on alone or elsewhere). Returns how many."""
        why = "the server is shutting down"
        self.draining = True
        self.budget.close(why)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while self.budget.open and loop.time() < end:
            await asyncio.sleep(0.05)
        ended = 0
        for conn in list(self._conns):
            byes = await loop.run_in_executor(self._pool, conn.session.shutdown, why)
            ended += len(byes)
            if not conn.closing:
                self._send(conn, byes)
        return ended

    async def close(self) -> None:
        """Stop the scheduler and the model thread (the server closes the connections)."""
        for task in [self._scheduler, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._scheduler, *self._tasks] if t is not None), return_exceptions=True
        )
        self._pool.shutdown(wait=True)


def _first_error(msgs: list[Message]) -> tuple[str, str]:
    err = next((m for m in msgs if isinstance(m, Error)), None)
    return ("NONE", "no reply") if err is None else (err.code.name, err.message)


def event(kind: str, peer: object, **fields: object) -> str:
    """One log line per connection event, as key=value pairs (values with spaces or
    quotes in JSON quotes), so a log pipeline can parse it; never the token."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        peer = f"{peer[0]}:{peer[1]}"
    parts = [f"event={kind}", f"peer={_value(peer)}"]
    parts += [f"{k}={_value(v)}" for k, v in fields.items()]
    return " ".join(parts)


def _value(v: object) -> str:
    text = str(v)
    return json.dumps(text) if not text or any(c in text for c in ' ="\n\\') else text
