"""The cloud session: one edge connection's protocol state (sans-I/O).

``receive(msg)`` takes a decoded message and returns the messages to send back
at once (a Welcome, an Error, a Bye); it never runs the model and never
touches the backend. Model work is queued, and ``step()`` runs exactly one unit
of it: opening a generation and evaluating one chunk of its prompt, a block's
verification, the fast-verify precompute after a rejection, or one cloud-only
token. The transport calls ``step()`` off its event loop while ``has_work``;
no socket, clock or thread in here. ``work()`` is the same unit as a generator
of forward requests (``cloud/target.py``), so a batching server can answer the
units of many sessions with one backend forward.

Each generation brings its own sampling parameters, scheme and K (in its
Start) and is checked against the announced limits before it costs anything.
Blocks of one generation are verified strictly in order. After a rejection the
verdict's epoch is dead: every later block of that epoch (drafted on the
rejected tail) is dropped unverified, and the edge's next block comes with the
next epoch. While that verdict travels, the session evaluates the correction
token (fast verify), so the next block's first position needs no recomputation.

Failures stay inside the generation that caused them: a bad request is refused
with an Error naming the limit or the field, and an exception in model work
(a bug, a CUDA out-of-memory) ends that generation with an INTERNAL Error that
names it, kept in ``failures`` for the server to log. Only a message that
breaks the protocol itself (no Hello first, a wrong token, a second Hello) ends
the connection.
"""

from __future__ import annotations

import hmac
import itertools
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from picospec.codec.errors import ConfigError, PicospecError, ProtocolError
from picospec.codec.messages import (
    Bye,
    Cancel,
    DraftBlock,
    Error,
    ErrorCode,
    Hello,
    Message,
    Progress,
    Start,
    Verdict,
    Welcome,
)
from picospec.codec.sampling import Sampling
from picospec.codec.scheme import LED_SCHEMES, Mode
from picospec.codec.sparse import Q_ONE
from picospec.codec.verify import verify_block

from .backend import Backend
from .led import DraftLimit, DraftStore, ForwardCost, LedPolicy
from .limits import GenerationBudget, Limits
from .target import TargetSequence, Verify, Work, drive

_PROCESS_IDS = itertools.count(1)
"""Backend session ids for sessions built without an allocator of their own."""
RECENTLY_ENDED = 64
"""Ended generations remembered, so their late blocks are dropped without an Error."""


@dataclass
class _Generation:
    start: Start
    sampling: Sampling
    backend_id: int
    seq: TargetSequence | None = None
    """Created when the backend opens the generation (its first unit of work)."""
    epoch: int = 0
    """Blocks of an older epoch are dead."""
    blocks: deque[DraftBlock] = field(default_factory=deque)
    precompute: bool = False
    prefilled: bool = False
    drafts: DraftStore | None = None
    """``cloud-led``: the drafts that arrived for the positions after the committed ones."""
    policy: LedPolicy | None = None
    """``cloud-led``: how many of them a forward takes."""

    @property
    def cloud_only(self) -> bool:
        return self.start.mode is Mode.CLOUD_ONLY

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.start.prompt


class CloudSession:
    """Protocol state of one connection: handshake, generations, block queues."""

    def __init__(
        self,
        backend: Backend,
        *,
        token: bytes = b"",
        server_name: str = "picospec",
        limits: Limits | None = None,
        budget: GenerationBudget | None = None,
        backend_ids: Iterator[int] | None = None,
        refusals: Counter[ErrorCode] | None = None,
        verify_fn: Verify = verify_block,
        forward_cost: ForwardCost | None = None,
    ) -> None:
        """budget: generations open on the whole server (shared by every
        connection; default: this session's own). backend_ids: where backend
        session ids come from. Edges number their own generations, so two
        connections may both say "generation 1"; the backend sees ids from this
        iterator instead (share one per backend; default: a counter shared by the
        whole process). refusals: counts every Error sent, by code (share one to
        count a whole server). verify_fn: the verification maths (the simulator
        passes an oracle). forward_cost: measured seconds of a forward by size, from
        which a ``cloud-led`` generation chooses how many drafts a forward takes
        (None: every draft waiting)."""
        self.backend = backend
        self.limits = limits or Limits()
        self.budget = budget or GenerationBudget(self.limits.max_generations)
        self._backend_ids = _PROCESS_IDS if backend_ids is None else backend_ids
        self.token = token
        self.server_name = server_name
        self.refusals: Counter[ErrorCode] = Counter() if refusals is None else refusals
        self.verify_fn = verify_fn
        self.forward_cost = forward_cost
        self.hello: Hello | None = None
        self.closed = False
        self.refused = 0
        self.started = 0
        """Generations this connection started."""
        """Errors this connection has been sent (the connection closes past max_refusals)."""
        self.close_reason = ""
        """Why the session closed the connection itself, when a limit did."""
        self.failures: list[tuple[int, BaseException]] = []
        """(generation, exception) of every unexpected failure in model work, for the
        server to log with its traceback; the driver clears it."""
        self.prefill_chunk = self.limits.prefill_chunk
        """Prompt tokens per prefill unit now (the server may shrink it to keep units short)."""
        self.last_prefill = 0
        """Prompt tokens the last ``step`` evaluated (0: it was not a prefill chunk)."""
        self.reused_tokens = 0
        """Prompt tokens whose KV the backend reused from a shared prefix (the driver
        takes and resets it)."""
        self.context_size = backend.max_context
        self.prompt_limit = self.limits.prompt_limit(self.context_size)
        self._gens: dict[int, _Generation] = {}
        self._ended: deque[int] = deque(maxlen=RECENTLY_ENDED)
        self._ready: deque[int] = deque()  # generations with work, in arrival order

    # ------------------------------------------------------------------ input
    def receive(self, msg: Message) -> list[Message]:
        """Take one message from the edge; returns what to send back right away."""
        if self.closed:
            return []
        if self.hello is None:
            return self._handshake(msg)
        if isinstance(msg, Hello):
            return self._fail(msg, ErrorCode.PROTOCOL, "a second Hello on one connection")
        if isinstance(msg, Start):
            return self._start(msg)
        gen = self._gens.get(msg.session)
        if isinstance(msg, Bye):
            self._end(msg.session)
            return []
        if gen is None:
            if msg.session in self._ended or isinstance(msg, Cancel):
                return []  # it ended while this message travelled
            return [self._error(msg, ErrorCode.UNKNOWN_SESSION, f"no generation {msg.session}")]
        if isinstance(msg, Cancel):
            self._end(msg.session)
            return [Bye(session=msg.session, epoch=gen.epoch, start=msg.start, reason="cancelled")]
        if isinstance(msg, DraftBlock):
            return self._block(gen, msg)
        return self._fail(msg, ErrorCode.PROTOCOL, f"unexpected {type(msg).__name__}")

    def welcome(self, session: int = 0) -> Welcome:
        """The limits this session announces."""
        lim = self.limits
        return Welcome(
            session=session,
            epoch=0,
            start=0,
            server_name=self.server_name,
            max_block=lim.max_block,
            max_depth=lim.max_depth,
            max_k=lim.max_k,
            max_prompt_tokens=self.prompt_limit,
            max_new_tokens=lim.max_new_tokens,
            context_size=self.context_size,
            max_generations=lim.max_generations_per_connection,
        )

    def _handshake(self, msg: Message) -> list[Message]:
        if not isinstance(msg, Hello):
            return self._fail(msg, ErrorCode.PROTOCOL, "the first message must be a Hello")
        if not hmac.compare_digest(msg.auth_token, self.token):
            return self._fail(msg, ErrorCode.AUTH, "the auth token was refused")
        differs = msg.vocab_fingerprint.difference(self.backend.fingerprint())
        if differs:
            why = f"the edge's vocabulary differs from the target's: {differs}"
            return self._fail(msg, ErrorCode.VOCAB_MISMATCH, why)
        self.hello = msg
        return [self.welcome(msg.session)]

    def _start(self, msg: Start) -> list[Message]:
        lim = self.limits
        refuse = self._refusal(msg)
        if refuse is not None:
            return [self._error(msg, *refuse)]
        try:
            sampling = Sampling(msg.params, msg.scheme, msg.k, msg.allow_inexact)
        except ConfigError as e:
            return [self._error(msg, ErrorCode.PARAMS, str(e))]
        if len(self._gens) >= lim.max_generations_per_connection:
            why = f"{len(self._gens)} generations are open on this connection, the limit"
            return [self._error(msg, ErrorCode.BUSY, why)]
        if not self.budget.acquire():
            why = self.budget.closed or f"the server runs {self.budget.open} generations, its limit"
            return [self._error(msg, ErrorCode.BUSY, why)]
        self.started += 1
        gen = _Generation(msg, sampling, next(self._backend_ids))
        if msg.mode is Mode.CLOUD_LED:
            gen.drafts = DraftStore(lim.max_depth * lim.max_block)
            gen.policy = LedPolicy(self.forward_cost, horizon=lim.max_block)
        self._gens[msg.session] = gen
        self._ready.append(msg.session)
        return []

    def _refusal(self, msg: Start) -> tuple[ErrorCode, str] | None:
        """Why a Start cannot be served, before it costs anything (None: it can)."""
        lim = self.limits
        n, new = len(msg.prompt), msg.max_new_tokens
        if msg.session in self._gens:
            return ErrorCode.PROTOCOL, f"generation {msg.session} is already running"
        if not (msg.mode.speculative or msg.mode is Mode.CLOUD_ONLY):
            return ErrorCode.PARAMS, f"mode {msg.mode.value} needs no cloud"
        if n > self.prompt_limit:
            return (
                ErrorCode.LIMIT,
                f"a prompt of {n} tokens is over max_prompt_tokens ({self.prompt_limit})",
            )
        if not 1 <= new <= lim.max_new_tokens:
            return ErrorCode.LIMIT, f"max_new_tokens {new} is outside 1..{lim.max_new_tokens}"
        if n + new > self.context_size:
            return ErrorCode.LIMIT, (
                f"{n} prompt tokens + {new} new tokens do not fit the context of "
                f"{self.context_size}"
            )
        if msg.k > lim.max_k:
            return ErrorCode.LIMIT, f"k {msg.k} is over max_k ({lim.max_k})"
        if msg.mode is Mode.CLOUD_LED and msg.scheme not in LED_SCHEMES:
            return ErrorCode.PARAMS, (
                f"mode cloud-led runs under the {' or '.join(s.value for s in LED_SCHEMES)} "
                f"scheme, not {msg.scheme.value}"
            )
        return None

    def _block(self, gen: _Generation, msg: DraftBlock) -> list[Message]:
        lim = self.limits
        if gen.cloud_only:
            return self._end_with(
                gen, msg, ErrorCode.PROTOCOL, "a draft block in a cloud-only generation"
            )
        if msg.epoch < gen.epoch:
            return []  # drafted on a tail a verdict already rejected
        if msg.scheme is not gen.sampling.scheme:
            why = f"a {msg.scheme.value} block in a {gen.sampling.scheme.value} generation"
            return self._end_with(gen, msg, ErrorCode.PARAMS, why)
        if len(msg.tokens) > lim.max_block:
            why = f"a block of {len(msg.tokens)} drafts is over max_block ({lim.max_block})"
            return self._end_with(gen, msg, ErrorCode.LIMIT, why)
        if gen.drafts is not None:
            assert gen.policy is not None
            committed = gen.seq.tokens if gen.seq is not None else gen.prompt
            try:
                gen.policy.record_checks(gen.drafts.add(msg, committed))
            except ProtocolError as e:
                return self._end_with(gen, msg, ErrorCode.PROTOCOL, str(e))
            except DraftLimit as e:
                return self._end_with(gen, msg, ErrorCode.LIMIT, str(e))
            return []  # the generation is queued already: it decodes continuously
        if len(gen.blocks) >= lim.max_depth:
            why = f"more than max_depth ({lim.max_depth}) blocks queued"
            return self._end_with(gen, msg, ErrorCode.LIMIT, why)
        gen.blocks.append(msg)
        self._ready.append(msg.session)
        return []

    # ------------------------------------------------------------------ work
    @property
    def has_work(self) -> bool:
        return bool(self._ready)

    @property
    def generations(self) -> int:
        """Generations open on this connection."""
        return len(self._gens)

    def step(self) -> list[Message]:
        """Run one unit of model work; returns the messages it produced."""
        return drive(self.backend, self.work())

    def work(self) -> Work[list[Message]]:
        """One unit of model work (``step``) as a generator of forward requests;
        an exception thrown into it at a request (a failed batch) ends that
        generation as a failure in model work."""
        self.last_prefill = 0
        while self._ready:
            sid = self._ready.popleft()
            gen = self._gens.get(sid)
            if gen is None:
                continue
            if gen.seq is None:
                try:
                    self.backend.open(gen.backend_id)
                except PicospecError as e:  # the backend is full: the edge may retry later
                    self._gens.pop(sid)
                    self.budget.release()
                    self._count(ErrorCode.BUSY)
                    return [
                        Error(session=sid, epoch=0, start=0, code=ErrorCode.BUSY, message=str(e))
                    ]
                gen.seq = TargetSequence(
                    self.backend, gen.backend_id, gen.sampling, gen.start.seed, self.verify_fn
                )
                gen.seq.start(gen.prompt)
                self.reused_tokens += gen.seq.stats.reused
            try:
                out = yield from self._step(sid, gen)
            except (ProtocolError, ConfigError) as e:  # the edge asked for something impossible
                return self._end_with(gen, None, ErrorCode.PROTOCOL, str(e), sid=sid)
            except Exception as e:  # model work must never take the server down
                self.failures.append((sid, e))
                why = f"the verifier failed: {type(e).__name__}: {e}"
                if isinstance(e, PicospecError):
                    why = f"the verifier failed: {e}"
                return self._end_with(gen, None, ErrorCode.INTERNAL, why, sid=sid)
            if out is not None:
                return out
        return []

    def _step(self, sid: int, gen: _Generation) -> Work[list[Message] | None]:
        seq = gen.seq
        assert seq is not None
        if not gen.prefilled:
            self.last_prefill = min(seq.pending, self.prefill_chunk)
            if not (yield from seq.prefill_work(self.prefill_chunk)):
                self._ready.append(sid)  # more of the prompt; others get the model meanwhile
                done = len(seq.tokens) - seq.pending
                return [Progress(session=sid, epoch=gen.epoch, start=done)]
            gen.prefilled = True
            first = yield from seq.decode_work()
            if gen.start.mode.cloud_decodes or gen.blocks:
                self._ready.append(sid)
            out: list[Message] = [
                self._verdict(sid, gen, len(gen.prompt), first, seq.stats.forwards)
            ]
            return out + self._maybe_done(sid, gen)
        if gen.cloud_only:
            pos = len(seq.tokens)
            token = yield from seq.decode_work()
            self._ready.append(sid)
            return [self._verdict(sid, gen, pos, token, 1), *self._maybe_done(sid, gen)]
        if gen.drafts is not None:
            return (yield from self._led_step(sid, gen, seq))
        if gen.precompute:
            gen.precompute = False
            yield from seq.precompute_work()
            return None if not gen.blocks else (yield from self._step(sid, gen))
        while gen.blocks and gen.blocks[0].epoch < gen.epoch:
            gen.blocks.popleft()
        if not gen.blocks:
            return None
        block = gen.blocks.popleft()
        if block.correction is not None:
            seq.commit(block.correction)
        if block.start != len(seq.tokens):
            raise ProtocolError(f"a block starts at {block.start}, expected {len(seq.tokens)}")
        before = seq.stats.forwards
        out_ = yield from seq.verify_work(
            block.start,
            list(block.tokens),
            q=block.q or None,
            q_x=[c / Q_ONE for c in block.q_counts] or None,
            bonus=block.bonus,
        )
        n = len(block.tokens)
        if out_.accepted < n:  # the rest of this epoch was drafted on a rejected tail
            gen.epoch = block.epoch + 1
            gen.blocks.clear()
            gen.precompute = out_.token is not None
            if gen.precompute:
                self._ready.append(sid)
        if gen.blocks:
            self._ready.append(sid)
        verdict = Verdict(
            session=sid,
            epoch=block.epoch,
            start=block.start,
            accepted=out_.accepted,
            token=out_.token,
            target_forwards=seq.stats.forwards - before,
            p=out_.p_topk,
            p_exact=out_.p_exact,
        )
        return [verdict, *self._maybe_done(sid, gen, since=block.start)]

    def _led_step(self, sid: int, gen: _Generation, seq: TargetSequence) -> Work[list[Message]]:
        """One ``cloud-led`` forward: the cloud's next token, with as many of the
        waiting drafts before it as the policy takes."""
        store, policy = gen.drafts, gen.policy
        assert store is not None and policy is not None
        at = len(seq.tokens)
        room = gen.start.max_new_tokens - (at - len(gen.prompt)) - 1
        drafts = store.ready(at)[: max(0, room)]
        m = policy.choose(len(drafts))
        epoch, before = store.epoch, seq.stats.forwards
        if m:
            out = yield from seq.verify_work(at, drafts[:m], bonus=True)
            accepted, token = out.accepted, out.token
            policy.record(m, accepted)
            if token is None:
                raise ProtocolError("a cloud-led forward decided no token of its own")
        else:
            accepted, token = 0, (yield from seq.decode_work())
        # The taken drafts (recorded above), then the first waiting draft past them,
        # checked against this forward's own token: a disagreement kills the chain.
        policy.record_checks(store.advance(seq.tokens)[m:], offset=m)
        self._ready.append(sid)
        verdict = Verdict(
            session=sid,
            epoch=max(epoch, 0),
            start=at,
            accepted=accepted,
            token=token,
            target_forwards=seq.stats.forwards - before,
        )
        return [verdict, *self._maybe_done(sid, gen, since=at)]

    def _maybe_done(self, sid: int, gen: _Generation, since: int | None = None) -> list[Message]:
        """End a generation the cloud knows is complete (max tokens, or an end token
        committed at or after position since), so its slot is free at once."""
        assert gen.seq is not None
        tokens, n = gen.seq.tokens, len(gen.prompt)
        lo = len(tokens) - 1 if since is None else since
        if len(tokens) - n < gen.start.max_new_tokens and not any(
            self.backend.is_end(t) for t in tokens[max(lo, n) :]
        ):
            return []
        self._end(sid)
        return [Bye(session=sid, epoch=gen.epoch, start=len(tokens), reason="done")]

    # ------------------------------------------------------------------ helpers
    def _verdict(
        self, sid: int, gen: _Generation, start: int, token: int, forwards: int
    ) -> Verdict:
        return Verdict(
            session=sid,
            epoch=gen.epoch,
            start=start,
            accepted=0,
            token=token,
            target_forwards=forwards,
        )

    def _end(self, sid: int) -> None:
        gen = self._gens.pop(sid, None)
        if gen is None:
            return
        self._ended.append(sid)
        self.budget.release()
        if gen.seq is not None:
            self.backend.close(gen.backend_id)

    def shutdown(self, reason: str) -> list[Message]:
        """End every open generation with a Bye (the server is stopping); the
        connection stays open for the edge to close."""
        byes: list[Message] = []
        for sid, gen in list(self._gens.items()):
            self._end(sid)
            byes.append(Bye(session=sid, epoch=gen.epoch, start=0, reason=reason[:256]))
        return byes

    def close(self) -> None:
        """Free every generation (the connection is gone)."""
        for sid in list(self._gens):
            self._end(sid)
        self.closed = True

    def _error(self, msg: Message, code: ErrorCode, text: str) -> Error:
        self._count(code)
        return Error(
            session=msg.session, epoch=msg.epoch, start=msg.start, code=code, message=text[:1000]
        )

    def _count(self, code: ErrorCode) -> None:
        """Count a refusal; past max_refusals on this connection, it is closed."""
        self.refusals[code] += 1
        self.refused += 1
        if self.refused > self.limits.max_refusals and not self.closed:
            limit = self.limits.max_refusals
            self.close_reason = f"{self.refused} requests refused, over max_refusals ({limit})"
            self.close()

    def _end_with(
        self,
        gen: _Generation,
        msg: Message | None,
        code: ErrorCode,
        text: str,
        *,
        sid: int | None = None,
    ) -> list[Message]:
        """An error that ends one generation; the connection goes on."""
        sid = msg.session if msg is not None else sid
        assert sid is not None
        self._end(sid)
        self._count(code)
        return [Error(session=sid, epoch=gen.epoch, start=0, code=code, message=text[:1000])]

    def _fail(self, msg: Message, code: ErrorCode, text: str) -> list[Message]:
        """An error that ends the connection: reply, then refuse everything."""
        self.close()
        return [self._error(msg, code, text)]
