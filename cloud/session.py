"""The cloud session: one edge connection's protocol state (sans-I/O).

``receive(msg)`` takes a decoded message and returns the messages to send back
at once (a Welcome, an Error); it never runs the model. Model work is queued,
and ``step()`` runs exactly one unit of it (a prefill, a block's verification,
the fast-verify precompute after a rejection, one cloud-only token) and returns
the messages it produced. The transport calls ``step()`` off its event loop
while ``has_work``; no socket, clock or thread in here.

Blocks of one generation are verified strictly in order. After a rejection the
verdict's epoch is dead: every later block of that epoch (drafted on the
rejected tail) is dropped unverified, and the edge's next block comes with the
next epoch. While that verdict travels, the session evaluates the correction
token (fast verify), so the next block's first position needs no recomputation.
"""

from __future__ import annotations

import hmac
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from picospec.codec.errors import PicospecError
from picospec.codec.messages import (
    MAX_BLOCK,
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
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import Q_ONE

from .backend import Backend
from .target import TargetSequence

_PROCESS_IDS = itertools.count(1)
"""Backend session ids for sessions built without an allocator of their own."""


@dataclass
class _Generation:
    seq: TargetSequence
    backend_id: int
    """The backend's session id: unique over every connection sharing the backend."""
    max_new: int
    prompt: tuple[int, ...]
    cloud_only: bool
    epoch: int = 0
    """Blocks of an older epoch are dead."""
    blocks: deque[DraftBlock] = field(default_factory=deque)
    precompute: bool = False
    started: bool = False


class CloudSession:
    """Protocol state of one connection: handshake, generations, block queues."""

    def __init__(
        self,
        backend: Backend,
        *,
        token: bytes = b"",
        server_name: str = "picospec",
        max_depth: int = 8,
        max_generations: int = 4,
        backend_ids: Iterator[int] | None = None,
    ) -> None:
        """backend_ids: where backend session ids come from. Edges number their own
        generations, so two connections may both say "session 1"; the backend sees
        ids from this iterator instead (share one per backend; default: a counter
        shared by the whole process)."""
        self.backend = backend
        self._backend_ids = _PROCESS_IDS if backend_ids is None else backend_ids
        self.token = token
        self.server_name = server_name
        self.max_depth = max_depth
        self.max_generations = max_generations
        self.hello: Hello | None = None
        self.closed = False
        self._gens: dict[int, _Generation] = {}
        self._ready: deque[int] = deque()  # sessions with work, in arrival order

    # ------------------------------------------------------------------ input
    def receive(self, msg: Message) -> list[Message]:
        """Take one message from the edge; returns what to send back right away."""
        if self.closed:
            return []
        if self.hello is None:
            return self._handshake(msg)
        if isinstance(msg, Start):
            return self._start(msg)
        if isinstance(msg, Bye):
            self._end(msg.session)
            return []
        gen = self._gens.get(msg.session)
        if gen is None:
            return [self._error(msg, ErrorCode.UNKNOWN_SESSION, f"no generation {msg.session}")]
        if isinstance(msg, Cancel):
            gen.epoch = max(gen.epoch, msg.epoch)
            gen.blocks = deque(b for b in gen.blocks if b.epoch >= gen.epoch)
            return []
        if isinstance(msg, DraftBlock):
            return self._block(gen, msg)
        return self._fail(msg, ErrorCode.PROTOCOL, f"unexpected {type(msg).__name__}")

    def _handshake(self, msg: Message) -> list[Message]:
        if not isinstance(msg, Hello):
            return self._fail(msg, ErrorCode.PROTOCOL, "the first message must be a Hello")
        if not hmac.compare_digest(msg.auth_token, self.token):
            return self._fail(msg, ErrorCode.AUTH, "the auth token was refused")
        differs = msg.vocab_fingerprint.difference(self.backend.fingerprint())
        if differs:
            why = f"the edge's vocabulary differs from the target's: {differs}"
            return self._fail(msg, ErrorCode.VOCAB_MISMATCH, why)
        if msg.scheme is Scheme.GREEDY and not msg.params.greedy:
            return self._fail(msg, ErrorCode.PARAMS, "the greedy scheme needs temperature 0")
        self.hello = msg
        return [
            Welcome(
                session=msg.session,
                epoch=0,
                start=0,
                server_name=self.server_name,
                max_block=MAX_BLOCK,
                max_depth=self.max_depth,
            )
        ]

    def _start(self, msg: Start) -> list[Message]:
        assert self.hello is not None
        if msg.session in self._gens:
            return [self._error(msg, ErrorCode.PROTOCOL, f"generation {msg.session} is running")]
        if len(self._gens) >= self.max_generations:
            return [self._error(msg, ErrorCode.BUSY, "too many generations on this connection")]
        if max(msg.prompt) >= self.backend.vocab_size:
            return [
                self._error(msg, ErrorCode.PROTOCOL, "a prompt token is outside the vocabulary")
            ]
        backend_id = next(self._backend_ids)
        try:
            self.backend.open(backend_id)
        except PicospecError as e:
            return [self._error(msg, ErrorCode.BUSY, str(e))]
        params: SamplingParams = self.hello.params
        seq = TargetSequence(
            self.backend, backend_id, params, self.hello.scheme, msg.seed, k=self.hello.k
        )
        self._gens[msg.session] = _Generation(
            seq, backend_id, msg.max_new_tokens, msg.prompt, msg.cloud_only
        )
        self._ready.append(msg.session)
        return []

    def _block(self, gen: _Generation, msg: DraftBlock) -> list[Message]:
        assert self.hello is not None
        if gen.cloud_only:
            return self._fail(msg, ErrorCode.PROTOCOL, "a draft block in a cloud-only generation")
        if msg.epoch < gen.epoch:
            return []  # drafted on a tail a verdict already rejected
        if msg.scheme is not self.hello.scheme:
            return self._fail(msg, ErrorCode.PARAMS, "the block's scheme is not the session's")
        if len(gen.blocks) >= self.max_depth:
            return self._fail(msg, ErrorCode.PROTOCOL, f"more than {self.max_depth} blocks queued")
        gen.blocks.append(msg)
        self._ready.append(msg.session)
        return []

    # ------------------------------------------------------------------ work
    @property
    def has_work(self) -> bool:
        return bool(self._ready)

    def step(self) -> list[Message]:
        """Run one unit of model work; returns the messages it produced."""
        while self._ready:
            sid = self._ready.popleft()
            gen = self._gens.get(sid)
            if gen is None:
                continue
            try:
                out = self._step(sid, gen)
            except PicospecError as e:
                self._end(sid)
                return [
                    Error(
                        session=sid,
                        epoch=gen.epoch,
                        start=0,
                        code=ErrorCode.PROTOCOL,
                        message=str(e)[:1000],
                    )
                ]
            if out is not None:
                return out
        return []

    def _step(self, sid: int, gen: _Generation) -> list[Message] | None:
        seq = gen.seq
        if not gen.started:
            gen.started = True
            first = seq.prefill(gen.prompt)
            if gen.cloud_only:
                self._ready.append(sid)
            return [self._verdict(sid, gen, len(gen.prompt), 0, first, seq.stats.forwards)]
        if gen.cloud_only:
            pos = len(seq.tokens)
            if pos - len(gen.prompt) >= gen.max_new or self.backend.is_end(seq.tokens[-1]):
                return [Bye(session=sid, epoch=gen.epoch, start=pos, reason="done")]
            token = seq.decode_one()
            self._ready.append(sid)
            return [self._verdict(sid, gen, pos, 0, token, 1)]
        if gen.precompute:
            gen.precompute = False
            seq.precompute()
            return None if not gen.blocks else self._step(sid, gen)
        while gen.blocks and gen.blocks[0].epoch < gen.epoch:
            gen.blocks.popleft()
        if not gen.blocks:
            return None
        block = gen.blocks.popleft()
        if block.correction is not None:
            seq.commit(block.correction)
        if block.start != len(seq.tokens):
            raise PicospecError(f"a block starts at {block.start}, expected {len(seq.tokens)}")
        before = seq.stats.forwards
        out = seq.verify(
            block.start,
            list(block.tokens),
            q=block.q or None,
            q_x=[c / Q_ONE for c in block.q_counts] or None,
            bonus=block.bonus,
        )
        n = len(block.tokens)
        if out.accepted < n:  # the rest of this epoch was drafted on a rejected tail
            gen.epoch = block.epoch + 1
            gen.blocks.clear()
            gen.precompute = out.token is not None
            if gen.precompute:
                self._ready.append(sid)
        if gen.blocks:
            self._ready.append(sid)
        return [
            Verdict(
                session=sid,
                epoch=block.epoch,
                start=block.start,
                accepted=out.accepted,
                token=out.token,
                target_forwards=seq.stats.forwards - before,
                p=out.p_topk,
                p_exact=out.p_exact,
            )
        ]

    # ------------------------------------------------------------------ helpers
    def _verdict(
        self, sid: int, gen: _Generation, start: int, accepted: int, token: int, forwards: int
    ) -> Verdict:
        return Verdict(
            session=sid,
            epoch=gen.epoch,
            start=start,
            accepted=accepted,
            token=token,
            target_forwards=forwards,
        )

    def _end(self, sid: int) -> None:
        gen = self._gens.pop(sid, None)
        if gen is not None:
            self.backend.close(gen.backend_id)

    def close(self) -> None:
        """Free every generation (the connection is gone)."""
        for sid in list(self._gens):
            self._end(sid)
        self.closed = True

    def _error(self, msg: Message, code: ErrorCode, text: str) -> Error:
        return Error(
            session=msg.session, epoch=msg.epoch, start=msg.start, code=code, message=text[:1000]
        )

    def _fail(self, msg: Message, code: ErrorCode, text: str) -> list[Message]:
        """An error that ends the connection: reply, then refuse everything."""
        self.close()
        return [self._error(msg, code, text)]
