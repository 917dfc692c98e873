"""The edge client: asyncio glue between a QUIC channel, EdgeSession and the drafter.

One connection serves many generations (one at a time), each with its own
sampling, scheme, K and seed. Messages are applied to the session only between
drafted tokens, so the drafter is never rolled back while it is drafting; every
call into the drafter runs on one worker thread, in order, so verdicts are read
while the drafter works and a cancelled generation can never race the next
one. ``edge-only`` generation needs no cloud at all.

``generate`` never loses what it committed and never leaves the cloud holding
a generation: it ends with a Bye, or a Cancel when it fails, times out or is
cancelled, and either returns the result or raises ``GenerationError``
carrying it. Every wait for the cloud has a deadline (``reply_timeout``).
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from picospec.codec.draft import DraftToken
from picospec.codec.errors import PicospecError
from picospec.codec.framing import FrameParser, encode_frame
from picospec.codec.messages import Error, ErrorCode, Hello, Message, Welcome
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode
from picospec.runtime.quic import Channel, ClientTLS, TransportError, connect

from .local import LocalRun, generate_local
from .model import DraftModel
from .plan import REVISE_AT, Estimates, Plan, choose, label, model_rate, parse_mode, revise
from .session import (
    Committed,
    EdgeSession,
    Event,
    Failed,
    Finished,
    LimitError,
    Resume,
    fit,
    surviving,
)
from .text import detokenize

T = TypeVar("T")

REPLY_TIMEOUT_S = 30.0
"""Default longest wait for the cloud during a generation."""
MIN_OUTCOME = 16
"""Tokens a generation needs for its tok/s to correct the time model's error."""


class EdgeError(PicospecError):
    """The cloud refused the edge, or the connection failed."""


@dataclass
class GenerationResult:
    """One generation, as ``picospec edge generate --json`` prints it."""

    text: str
    token_ids: list[int]
    n_tokens: int
    mode: str
    scheme: str
    seed: int
    """The seed every random number of the generation was keyed by (a fresh
    random one when the caller gave none): passing it again repeats the sample,
    in any mode under ``gumbel`` and ``greedy``, in the same mode (and, with
    auto, the same switches) under ``sparse-q`` and ``split``."""
    exact: bool
    tok_per_s: float
    ttft_ms: float
    tpot_ms: float
    mean_accept_len: float
    """Tokens emitted per verified block (accepted drafts + correction or bonus)."""
    accept_rate: float
    rounds: int
    rollbacks: int
    bytes_up: int
    bytes_down: int
    target_forwards: int
    blocks: list[tuple[int, int]]
    """(accepted, drafted) per verified block."""
    verdict_ms: list[float]
    """Milliseconds from sending each verified block to its verdict."""
    finished: str
    """Why it stopped: "max tokens", "end of text", "deadline", or what failed."""
    seconds: float = 0.0
    """From the request to the last committed token."""
    drafted: int = 0
    """Tokens drafted, those discarded unverified by a rollback included."""
    draft_ms: float = 0.0
    """Mean wall time of one drafter step as the edge loop waits for it."""
    drafter_prefill_ms: float = 0.0
    """The drafter's forward over the prompt (run while the cloud computes the first
    token, so it costs time only when it takes longer than that round trip)."""
    plan: str = ""
    """With ``mode="auto"``: the mode chosen and why, in one line."""
    gamma: int = 0
    depth: int = 0
    """The block size and depth the generation ran with (after auto and the cloud's limits)."""
    chains: list[tuple[int, int]] = field(default_factory=list)
    """cloud-led: (matched, checked) of each chain of drafts (``EdgeStats.chains``)."""
    parts: list[dict[str, Any]] = field(default_factory=list)
    """The mode, gamma, depth and tokens of each part of the generation: one,
    unless auto switched mid-generation (then mode, gamma and depth above are
    the last part's)."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class GenerationError(EdgeError):
    """A generation that could not finish; ``result`` holds what it committed, and
    ``code`` the cloud's error code when the cloud refused or failed it (None when
    the connection or the wait failed)."""

    def __init__(
        self, message: str, result: GenerationResult, code: ErrorCode | None = None
    ) -> None:
        super().__init__(message)
        self.result = result
        self.code = code


@dataclass
class _Run:
    """What one generation measures as it goes."""

    t0: float
    up0: int
    down0: int
    ttft: float = 0.0
    finished: str = ""
    failed: str = ""
    steps: list[float] = field(default_factory=list)
    prefill_s: float = 0.0
    prefill: asyncio.Future[float] | None = None
    ended: float = 0.0
    """When this part of the generation ended (auto switched away from it); 0: not yet."""


OnTokens = Callable[[list[int]], bool | None]
"""Called with each run of committed tokens; returning True stops the generation
there (a stop string matched): it finishes as "stopped" and the cloud's is cancelled."""


class EdgeClient:
    def __init__(
        self,
        drafter: DraftModel,
        *,
        executor: ThreadPoolExecutor | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        """executor: the one thread every drafter call runs on; share it between the
        clients of one drafter (reconnects), or let the client make its own.
        on_lost: called once, with the reason, when the connection ends."""
        self.drafter = drafter
        self._ch: Channel | None = None
        self._parser = FrameParser(vocab=drafter.vocab_size)
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._own_pool = executor is None
        self._pool = executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="picospec-drafter"
        )
        self._on_lost = on_lost
        self._next_session = 1
        self.bytes_up = self.bytes_down = 0
        self.welcome: Welcome | None = None
        self.estimates = Estimates()
        """What auto plans from: this client's measurements of its drafter, link and cloud."""
        self.lost = ""

    async def connect(
        self,
        host: str,
        port: int,
        tls: ClientTLS,
        *,
        token: bytes,
        name: str = "picospec-edge",
        timeout: float = 30.0,
    ) -> Welcome:
        """Open the connection and do the handshake (vocabulary, token) within timeout
        seconds; the Welcome says the cloud's limits, which every later generation
        respects."""
        self._ch = await connect(host, port, tls, handshake_timeout=timeout)
        self._reader = asyncio.create_task(self._read())
        sent = time.perf_counter()
        self._send(
            Hello(
                session=0,
                epoch=0,
                start=0,
                vocab_fingerprint=self.drafter.fingerprint(),
                auth_token=token,
                client_name=name,
            )
        )
        try:
            reply = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            raise EdgeError(
                f"no handshake: the cloud did not answer within {timeout:g} s"
            ) from None
        if isinstance(reply, Welcome):
            self.welcome = reply
            # a new connection may take another path: its round trip replaces the last
            self.estimates.rtt = None
            self.estimates.add_rtt(self._ch.min_rtt or time.perf_counter() - sent)
            return reply
        if isinstance(reply, Error):
            raise EdgeError(f"the cloud refused the handshake: {reply.message}")
        raise EdgeError(f"no handshake: {self.lost or 'unexpected reply'}")

    def _send(self, msg: Message) -> None:
        if self._ch is None:
            raise EdgeError("not connected")
        frame = encode_frame(msg, self.drafter.vocab_size)
        self.bytes_up += len(frame)
        self._ch.write(frame)

    async def _read(self) -> None:
        assert self._ch is not None
        try:
            while data := await self._ch.read():
                self.bytes_down += len(data)
                for msg in self._parser.feed(data):
                    self._inbox.put_nowait(msg)
            self.lost = self._ch.close_reason or "the cloud closed the connection"
        except PicospecError as e:
            self.lost = str(e)
        finally:
            self.lost = self.lost or "the connection ended"
            self._inbox.put_nowait(None)  # wakes a waiting generation
            if self._on_lost is not None:
                self._on_lost(self.lost)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a drafter call on the drafter's thread (in order with every other)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ------------------------------------------------------------------ generation
    async def generate(
        self,
        prompt: list[int],
        *,
        sampling: Sampling | None = None,
        seed: int | None = None,
        max_new_tokens: int = 64,
        mode: Mode | str | None = Mode.PIPELINE,
        gamma: int = 4,
        depth: int = 3,
        early_send: bool = False,
        on_tokens: OnTokens | None = None,
        reply_timeout: float = REPLY_TIMEOUT_S,
        deadline: float | None = None,
    ) -> GenerationResult:
        """Generate after prompt; committed tokens go to on_tokens as they are final
        (on_tokens returning True stops the generation there).

        sampling: parameters, scheme and K (default: greedy). seed: None draws a
        fresh one (reported in the result). gamma and depth are clamped to the
        cloud's announced max_block and max_depth; a prompt or max_new_tokens the
        cloud cannot take is refused before anything is sent. reply_timeout: the
        longest wait for the cloud. deadline: a time on the event loop's clock
        when the generation stops with what it has (finished "deadline").
        mode ``"auto"`` (or None): the mode, gamma and depth ``edge/plan.py``
        chooses from what this client measured so far (``result.plan`` says why).
        Raises GenerationError (with the committed tokens) when it cannot finish.
        """
        sampling = sampling or Sampling.of(SamplingParams(temperature=0.0))
        plan: Plan | None = None
        fixed = parse_mode(mode)
        if fixed is None:
            if self.welcome is None:
                raise EdgeError("not connected: call connect() first")
            if self._ch is not None and self._ch.min_rtt is not None:
                self.estimates.rtt = self._ch.min_rtt  # QUIC's, refined by every ack
            plan = choose(
                sampling.scheme,
                self.estimates,
                gamma=gamma,
                depth=depth,
                max_block=self.welcome.max_block,
                n_tokens=max_new_tokens,
            )
            fixed, gamma, depth = plan.mode, plan.gamma, plan.depth
        mode = fixed
        seed = secrets.randbits(64) if seed is None else seed
        d = self.drafter
        if len(prompt) + max_new_tokens > d.n_ctx and mode is not Mode.CLOUD_ONLY:
            raise EdgeError(
                f"{len(prompt)} prompt tokens + {max_new_tokens} new tokens do not fit the "
                f"drafter's context of {d.n_ctx} tokens"
            )
        if mode is Mode.EDGE_ONLY:
            local = await generate_local(
                d, self._call, prompt, seed, sampling, max_new_tokens, on_tokens, deadline=deadline
            )
            return self._local_result(local)
        if self._ch is None or self.welcome is None:
            raise EdgeError("not connected: call connect() first")
        if self.lost:
            raise EdgeError(f"the connection to the cloud is lost: {self.lost}")
        parts: list[tuple[EdgeSession, _Run]] = []
        reasons = [] if plan is None else [plan.reason]
        context, left, t0 = list(prompt), max_new_tokens, time.perf_counter()
        revise_at = [n for n in REVISE_AT if n < max_new_tokens] if plan is not None else []
        while True:
            gamma, depth = fit(
                self.welcome,
                prompt_tokens=len(context),
                max_new=left,
                gamma=gamma,
                depth=depth,
                k=sampling.k,
            )
            sess = self._open(context, seed, left, sampling, mode, gamma, depth, early_send)
            run = _Run(t0, self.bytes_up, self.bytes_down)
            if mode.speculative:  # the drafter evaluates the context while the cloud does
                run.prefill = asyncio.ensure_future(self._call(_timed, d.prefill, list(context)))
            parts.append((sess, run))
            done = max_new_tokens - left  # committed by the parts before
            switch: Plan | None = None
            try:
                while True:
                    stop = next((n - done for n in revise_at if n > done + len(sess.generated)), 0)
                    await self._drive(sess, run, on_tokens, reply_timeout, deadline, stop)
                    if sess.done or run.finished or run.failed or not stop:
                        break
                    exploring = len(parts) == 1 and plan is not None and not plan.predicted
                    switch = self._revise(parts, depth, left, exploring)
                    if switch is not None:
                        break
            except asyncio.CancelledError:
                self._end(sess, "the edge's caller cancelled the generation")
                raise
            except Exception as e:
                why = str(e) or type(e).__name__
                self._end(sess, why)
                result = self._result(parts, reasons)
                result.finished = why
                raise GenerationError(why, result) from e
            if run.failed:
                self._end(sess, run.failed)
                result = self._result(parts, reasons)
                raise GenerationError(run.failed, result, sess.error_code)
            if switch is None:
                break
            # a new generation from what is committed: nothing lost or repeated, and
            # (keyed by position and seed) the same tokens under gumbel and greedy
            run.ended = time.perf_counter()
            self._end(sess, f"auto switches to {switch.mode.value}")
            context += sess.generated
            left -= len(sess.generated)
            mode, gamma, depth = switch.mode, switch.gamma, switch.depth
            reasons.append(switch.reason)
        early = run.finished in ("deadline", "stopped")
        self._end(sess, run.finished if early else "")
        result = self._result(parts, reasons)
        if plan is not None and len(parts) == 1 and not early and result.n_tokens >= MIN_OUTCOME:
            # how far off the model was: for a plan it made, its prediction; for an
            # exploration, what it gives now from what the generation measured
            running = (plan.mode, plan.gamma, plan.depth)
            predicted = (
                plan.model.get(label(*running))
                if plan.predicted
                else model_rate(sess.scheme, self.estimates, running, result.n_tokens)
            )
            if predicted:
                self.estimates.add_outcome(plan.mode, result.tok_per_s, predicted)
        return result

    def _open(
        self,
        context: list[int],
        seed: int,
        max_new: int,
        sampling: Sampling,
        mode: Mode,
        gamma: int,
        depth: int,
        early_send: bool,
    ) -> EdgeSession:
        """Start a generation after context: its session, its Start sent."""
        d = self.drafter
        sess = EdgeSession(
            self._next_session,
            tuple(context),
            seed=seed,
            max_new=max_new,
            sampling=sampling,
            is_end=d.is_end,
            mode=mode,
            gamma=gamma,
            depth=depth,
            early_send=early_send,
        )
        self._next_session += 1
        self._drop_stale()
        self._send(sess.start_message())
        return sess

    def _revise(
        self, parts: list[tuple[EdgeSession, _Run]], depth: int, left: int, exploring: bool
    ) -> Plan | None:
        """auto, mid-generation: the plan to switch to for the running part (the
        last of parts), from the estimates with what this generation measured so
        far, or None to go on. An exploration cut short (exploring: the running
        part was planned without a prediction) teaches its mode's error: the
        tok/s it ran at over what the model gives it now."""
        assert self.welcome is not None
        sess, run = parts[-1]
        est = copy.deepcopy(self.estimates)
        now = time.perf_counter()
        for part, r in parts:
            self._learn(est, part, r, (r.ended or now) - r.t0)
        if self._ch is not None and self._ch.min_rtt is not None:
            est.rtt = self._ch.min_rtt
        rest, context = left - len(sess.generated), len(sess.prompt) + len(sess.generated)
        first = run.t0 + run.ttft  # this part's first token
        observed = (len(sess.generated) - 1) / (now - first) if run.ttft and now > first else None
        plan = revise(
            sess.scheme,
            est,
            (sess.mode, sess.gamma, sess.depth),
            depth=depth,
            max_block=self.welcome.max_block,
            n_tokens=rest,
            observed=observed,
        )
        if plan is None:
            return None
        if exploring and observed:  # cut short: the model's steady rate, from est
            ran = model_rate(sess.scheme, est, (sess.mode, sess.gamma, sess.depth))
            if ran:
                self.estimates.add_outcome(sess.mode, observed, ran)
        if plan.mode.speculative and context + rest > self.drafter.n_ctx:
            return None  # the drafter could not hold it
        try:
            fit(self.welcome, prompt_tokens=context, max_new=rest, gamma=plan.gamma,
                depth=plan.depth, k=sess.sampling.k)  # fmt: skip
        except LimitError:
            return None  # the cloud would refuse the new generation's Start
        return plan

    def _drop_stale(self) -> None:
        """Forget verdicts of earlier generations still in the inbox (keep a loss)."""
        keep = [m for m in _drain(self._inbox) if m is None]
        for m in keep:
            self._inbox.put_nowait(m)

    async def _drive(
        self,
        sess: EdgeSession,
        run: _Run,
        on_tokens: OnTokens | None,
        reply_timeout: float,
        deadline: float | None,
        stop: int = 0,
    ) -> None:
        """Drive the session until it is done (or, with stop > 0, until it has
        committed stop tokens and holds no unsent drafts: a point where the plan
        may change)."""
        d, loop = self.drafter, asyncio.get_running_loop()
        partial: list[DraftToken] = []
        partial_at = 0  # the position of partial[0]

        def at_stop() -> bool:
            return bool(stop) and len(sess.generated) >= stop and not partial

        drafting_since = 0.0
        while not sess.done:
            while not sess.done and (sess.want() == 0 or not self._inbox.empty()):
                try:
                    msg = await self._next_message(reply_timeout, deadline)
                except _DeadlineReached:
                    run.finished = "deadline"
                    return
                if msg is None:
                    self._inbox.put_nowait(None)  # keep later waits from hanging
                    events = sess.connection_lost(self.lost)
                elif msg.session != sess.session:
                    continue  # a late message of an earlier generation on this connection
                else:
                    events = sess.receive(msg, time.perf_counter())
                partial, partial_at = await self._apply(
                    sess, run, events, on_tokens, partial, partial_at
                )
                if run.finished == "stopped" or at_stop():
                    return
            if sess.done:
                break
            if at_stop():
                return
            if deadline is not None and loop.time() >= deadline:
                run.finished = "deadline"
                break
            n = sess.want()
            if not partial:
                drafting_since = time.perf_counter()
                partial_at = sess.tail
            t_step = time.perf_counter()
            partial += await self._call(d.draft, 1)
            run.steps.append(time.perf_counter() - t_step)
            elapsed = time.perf_counter() - drafting_since
            if len(partial) >= n or sess.send_early(len(partial), elapsed):
                try:
                    self._send(sess.block(partial, time.perf_counter()))
                except TransportError as e:  # the same loss the reader reports, seen first here
                    self.lost = self.lost or str(e)
                    await self._apply(sess, run, sess.connection_lost(self.lost), on_tokens, [], 0)
                    return
                partial = []

    async def _next_message(self, reply_timeout: float, deadline: float | None) -> Message | None:
        loop = asyncio.get_running_loop()
        wait = reply_timeout if deadline is None else min(reply_timeout, deadline - loop.time())
        try:
            return await asyncio.wait_for(self._inbox.get(), max(wait, 0.0))
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                raise _DeadlineReached from None
            raise EdgeError(f"the cloud sent nothing for {reply_timeout:g} s") from None

    async def _apply(
        self,
        sess: EdgeSession,
        run: _Run,
        events: list[Event],
        on_tokens: OnTokens | None,
        partial: list[DraftToken],
        partial_at: int,
    ) -> tuple[list[DraftToken], int]:
        """Carry out the session's events; returns the drafts not yet sent that are
        still valid, and the position of the first (none after a rollback)."""
        d = self.drafter
        for ev in events:
            if isinstance(ev, Committed):
                if not run.ttft:
                    run.ttft = time.perf_counter() - run.t0
                    if run.prefill is not None:
                        run.prefill_s = await run.prefill
                        ctx = list(sess.prompt) + list(ev.tokens)
                        await self._call(d.begin, ctx, sess.seed, sess.sampling)
                if on_tokens and on_tokens(list(ev.tokens)):
                    run.finished = "stopped"
                    return partial, partial_at
            elif isinstance(ev, Resume):
                kept = surviving(ev, partial_at, partial)
                if kept is None:
                    await self._call(_resume, d, ev.position, ev.token)
                    partial = []
                else:
                    partial, partial_at = kept, partial_at + 1
            elif isinstance(ev, Finished):
                run.finished = ev.reason
            elif isinstance(ev, Failed):
                run.failed = run.finished = ev.message
        return partial, partial_at

    def _end(self, sess: EdgeSession, why: str) -> None:
        """Tell the cloud the generation is over (Bye), or abandoned (Cancel)."""
        if sess.closed_by_cloud or self.lost or self._ch is None or self._ch.closed:
            return
        msg = sess.bye() if not why and sess.done else sess.cancel(why or "the edge stopped")
        try:
            self._send(msg)
        except TransportError:
            pass

    @staticmethod
    def _learn(est: Estimates, sess: EdgeSession, run: _Run, secs: float) -> None:
        """Feed what a generation measured (secs since run.t0) into estimates."""
        st, n = sess.stats, len(sess.generated)
        if run.steps:
            est.add_draft(statistics.median(run.steps))
        if sess.mode is Mode.CLOUD_ONLY and n > 1 and run.ttft:  # decoding alone
            forwards = max(1, st.target_forwards - 1)  # the prefill's forward made token one
            est.add_decode((secs - run.ttft) / min(forwards, n - 1))
        if sess.mode in (Mode.PIPELINE, Mode.SYNC):
            for (_, drafted), latency in zip(st.blocks, st.latencies, strict=True):
                est.add_verify(drafted + 1, latency)
            est.add_blocks(sess.scheme, st.blocks)
        elif sess.mode is Mode.CLOUD_LED:
            est.add_blocks(sess.scheme, st.chains)

    def _result(
        self, parts: list[tuple[EdgeSession, _Run]], reasons: list[str]
    ) -> GenerationResult:
        """The generation's result from its parts (more than one when auto switched
        mid-generation), each learned from once."""
        end = time.perf_counter()
        r0, last = parts[0][1], parts[-1][0]
        secs = end - r0.t0
        for sess, run in parts:
            self._learn(self.estimates, sess, run, (run.ended or end) - run.t0)
        tokens = [t for sess, _ in parts for t in sess.generated]
        n = len(tokens)
        stats = [sess.stats for sess, _ in parts]
        steps = [x for _, run in parts for x in run.steps]
        rounds, drafted = sum(st.rounds for st in stats), sum(st.drafted for st in stats)
        return GenerationResult(
            text=self.text(tokens),
            token_ids=tokens,
            n_tokens=n,
            mode=last.mode.value,
            scheme=last.scheme.value,
            seed=last.seed,
            exact=all(sess.exact for sess, _ in parts),
            tok_per_s=n / secs if secs else 0.0,
            ttft_ms=1e3 * r0.ttft,
            tpot_ms=1e3 * (secs - r0.ttft) / (n - 1) if n > 1 else 0.0,
            mean_accept_len=sum(st.emitted for st in stats) / rounds if rounds else 0.0,
            accept_rate=sum(st.accepted for st in stats) / drafted if drafted else 0.0,
            rounds=rounds,
            rollbacks=sum(st.rollbacks for st in stats),
            bytes_up=self.bytes_up - r0.up0,
            bytes_down=self.bytes_down - r0.down0,
            target_forwards=sum(st.target_forwards for st in stats),
            blocks=[b for st in stats for b in st.blocks],
            verdict_ms=[round(1e3 * x, 3) for st in stats for x in st.latencies],
            finished=parts[-1][1].finished,
            seconds=secs,
            drafted=len(steps),
            draft_ms=1e3 * statistics.fmean(steps) if steps else 0.0,
            drafter_prefill_ms=1e3 * r0.prefill_s,
            plan=" | ".join(reasons),
            gamma=last.gamma,
            depth=last.depth,
            chains=[c for st in stats for c in st.chains],
            parts=[
                {
                    "mode": s.mode.value,
                    "gamma": s.gamma,
                    "depth": s.depth,
                    "tokens": len(s.generated),
                }
                for s, _ in parts
            ],
        )

    def text(self, tokens: list[int]) -> str:
        """The text of tokens (end-of-generation tokens left out)."""
        return detokenize(self.drafter.piece, self.drafter.is_end, tokens)

    def _local_result(self, local: LocalRun) -> GenerationResult:
        secs = local.seconds
        n = len(local.tokens)
        return GenerationResult(
            text=self.text(local.tokens),
            token_ids=list(local.tokens),
            n_tokens=n,
            mode=Mode.EDGE_ONLY.value,
            scheme=local.scheme,
            seed=local.seed,
            exact=True,
            tok_per_s=n / secs if secs else 0.0,
            ttft_ms=1e3 * local.ttft,
            tpot_ms=1e3 * (secs - local.ttft) / (n - 1) if n > 1 else 0.0,
            mean_accept_len=0.0,
            accept_rate=0.0,
            rounds=0,
            rollbacks=0,
            bytes_up=0,
            bytes_down=0,
            target_forwards=0,
            blocks=[],
            verdict_ms=[],
            finished=local.finished,
            seconds=secs,
            drafted=n,
            draft_ms=1e3 * statistics.fmean(local.steps) if local.steps else 0.0,
            drafter_prefill_ms=1e3 * local.prefill_s,
        )

    @property
    def connected(self) -> bool:
        """The handshake succeeded and the connection has not ended."""
        return self.welcome is not None and not self.lost and self._ch is not None

    async def close(self) -> None:
        if self._ch is not None and not self._ch.closed:
            await self._ch.close("bye")
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_pool:
            self._pool.shutdown(wait=False)

    def abort(self, reason: str) -> None:
        """Drop the connection now (a link judged dead); nothing is awaited."""
        if self._ch is not None and not self._ch.closed:
            self._ch.abort(reason)


class _DeadlineReached(Exception):
    """The caller's deadline passed while waiting for the cloud."""


def _timed(fn: Callable[..., object], *args: object) -> float:
    """Run fn(*args); the seconds it took."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _resume(d: DraftModel, position: int, token: int) -> None:
    d.rollback(position)
    d.push(token)


def _drain(q: asyncio.Queue[Message | None]) -> list[Message | None]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out
