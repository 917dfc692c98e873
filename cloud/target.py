"""One generation on the target: committed tokens, KV cache, next distribution.

``TargetSequence`` is the verifier's per-generation state. The context is
evaluated in chunks (``prefill_step``), so a long prompt is many small units of
model work instead of one long one. It keeps the target distribution at the
next position when it already has it (after a fully accepted block, the last
row of the verify pass), so the next block's first token is checked without
recomputing anything. After a rejection it truncates the KV cache to the
accepted prefix; the correction token is evaluated with the next block, in the
same forward, or alone ahead of it (``precompute``).

Every method that needs the model exists twice: as *work* (``prefill_work``,
``decode_work``, ``precompute_work``, ``verify_work``), a generator that yields
one ``Forward`` request at a time and is sent its logits back, and as the
blocking call of the same name, which runs that generator on its backend
(``drive``). A batching scheduler runs the work of many sequences and answers
all their requests with one ``Backend.forward_many``; the maths is the same
code either way.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from picospec.codec.errors import ConfigError
from picospec.codec.rng import KeyedRandom
from picospec.codec.sampling import Sampling
from picospec.codec.sparse import SparseDist
from picospec.codec.verify import Outcome, target_token, verify_block

from .backend import Backend, Forward

R = TypeVar("R")
Work = Generator[Forward, np.ndarray, R]
"""Model work: yields forward requests, is sent each one's logits, returns R."""


def drive(backend: Backend, work: Work[R]) -> R:
    """Run work to its end, answering each request with one ``backend.forward``
    (a forward that raises raises inside the work, where the request was made)."""
    try:
        req = next(work)
        while True:
            try:
                logits = backend.forward(req.session, req.start, list(req.tokens), req.n_out)
            except Exception as e:
                req = work.throw(e)
            else:
                req = work.send(logits)
    except StopIteration as done:
        return done.value


Verify = Callable[..., Outcome]
"""The verification maths (``codec.verify.verify_block``'s signature); the
simulator passes an oracle with the same signature."""


@dataclass
class TargetStats:
    forwards: int = 0
    """Target forward passes (prefill chunks, verify rounds, cloud-only tokens)."""
    positions: int = 0
    """Token positions evaluated by those forwards (prompt included)."""
    rounds: int = 0
    accepted: int = 0
    drafted: int = 0
    reused: int = 0
    """Prompt tokens whose KV came from another sequence (a shared prefix)."""


@dataclass
class TargetSequence:
    backend: Backend
    session: int
    sampling: Sampling
    seed: int
    verify_fn: Verify = verify_block
    tokens: list[int] = field(default_factory=list)
    stats: TargetStats = field(default_factory=TargetStats)
    _n_kv: int = 0
    _next: np.ndarray | None = None  # p at position len(tokens), when known

    def __post_init__(self) -> None:
        self.rand = KeyedRandom(self.seed)

    def _forward(self, tokens: list[int], n_out: int, *, rows: bool = True) -> Work[np.ndarray]:
        logits = yield Forward(self.session, self._n_kv, tuple(tokens), n_out)
        self.stats.forwards += 1
        self.stats.positions += len(tokens)
        self._n_kv += len(tokens)
        return self.backend.distributions(logits, self.sampling.params) if rows else logits

    # ------------------------------------------------------------------ the context
    def start(self, context: Sequence[int]) -> None:
        """Take a context whose tokens are all decided; ``prefill_step`` evaluates
        what the backend does not already hold of it (a shared prefix it reused)."""
        if not context:
            raise ConfigError("the prompt must hold at least one token")
        if self.tokens:
            raise ConfigError("this generation has begun already")
        self.tokens = [int(t) for t in context]
        # the last context token is always evaluated: its row is the next token's p
        n = self.backend.reuse_prefix(self.session, self.tokens[:-1])
        if not 0 <= n < len(self.tokens):
            why = f"the backend reused {n} tokens of a {len(self.tokens)}-token context"
            raise ConfigError(why)
        self._n_kv = self.stats.reused = n

    @property
    def pending(self) -> int:
        """Decided tokens not yet evaluated."""
        return len(self.tokens) - self._n_kv

    def prefill_step(self, chunk: int) -> bool:
        """Evaluate up to chunk more decided tokens; True once they are all in the KV
        and the target distribution at the next position is known."""
        return drive(self.backend, self.prefill_work(chunk))

    def prefill_work(self, chunk: int) -> Work[bool]:
        """``prefill_step`` as work."""
        pending = self.tokens[self._n_kv :]
        if not pending:
            return self._next is not None
        take = pending[:chunk]
        last = len(take) == len(pending)
        out = yield from self._forward(take, 1, rows=last)
        if last:
            self._next = out[0]
        return last

    def begin(self, context: Sequence[int], chunk: int = 1 << 30) -> None:
        """Take and evaluate a context (the next token is drafted)."""
        self.start(context)
        while not self.prefill_step(chunk):
            pass

    def prefill(self, prompt: Sequence[int]) -> int:
        """Evaluate the prompt and commit the target's first token."""
        self.begin(prompt)
        return self.decode_one()

    # ------------------------------------------------------------------ decoding
    def commit(self, token: int) -> int:
        """Append a decided token (not yet evaluated: the next forward does it)."""
        if not 0 <= token < self.backend.vocab_size:
            raise ConfigError(f"token {token} is outside the vocabulary")
        self.tokens.append(token)
        self._next = None
        return token

    def precompute(self) -> None:
        """Evaluate decided tokens not yet in the KV (a correction), so the next
        block's first position is checked from a kept row (fast verify)."""
        drive(self.backend, self.precompute_work())

    def precompute_work(self) -> Work[None]:
        """``precompute`` as work."""
        pending = self.tokens[self._n_kv :]
        if pending and self._next is None:
            self._next = (yield from self._forward(pending, 1))[0]

    def decode_one(self) -> int:
        """Cloud-only decoding: sample and commit one token from p alone."""
        return drive(self.backend, self.decode_work())

    def decode_work(self) -> Work[int]:
        """``decode_one`` as work (no forward when the next row is kept)."""
        p = self._next
        if p is None:
            p = (yield from self._forward(self.tokens[self._n_kv :], 1))[0]
        scheme = self.sampling.scheme
        return self.commit(target_token(scheme, p, self.rand, len(self.tokens)))

    def verify(
        self,
        start: int,
        drafted: Sequence[int],
        *,
        q: Sequence[SparseDist] | None = None,
        q_x: Sequence[float] | None = None,
        bonus: bool = True,
    ) -> Outcome:
        """Verify a block drafted at positions start.. and commit what it decides."""
        return drive(self.backend, self.verify_work(start, drafted, q=q, q_x=q_x, bonus=bonus))

    def verify_work(
        self,
        start: int,
        drafted: Sequence[int],
        *,
        q: Sequence[SparseDist] | None = None,
        q_x: Sequence[float] | None = None,
        bonus: bool = True,
    ) -> Work[Outcome]:
        """``verify`` as work."""
        if start != len(self.tokens):
            raise ConfigError(f"a block must start at position {len(self.tokens)}, not {start}")
        if not drafted:
            raise ConfigError("a draft block holds at least one token")
        pending = self.tokens[self._n_kv :]  # decided but not yet evaluated (a correction)
        n = len(drafted)
        n_out = n + (0 if self._next is not None else 1)
        rows = yield from self._forward(pending + list(drafted), n_out)
        p = rows if self._next is None else np.concatenate([self._next[None, :], rows])
        out = self.verify_fn(
            self.sampling.scheme,
            drafted,
            p,
            rand=self.rand,
            start=start,
            q=q,
            q_x=q_x,
            bonus=bonus,
            k=self.sampling.k,
        )
        a = out.accepted
        self.stats.rounds += 1
        self.stats.drafted += n
        self.stats.accepted += a
        self.tokens.extend(int(t) for t in drafted[:a])
        if a < n:
            self.backend.truncate(self.session, start + a)
            self._n_kv = start + a
        self._next = p[n] if a == n else None
        if out.token is not None:
            self.commit(out.token)
        return out
