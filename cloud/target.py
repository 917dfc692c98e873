"""One generation on the target: committed tokens, KV cache, next distribution.

``TargetSequence`` is the verifier's per-generation state. The context is
evaluated in chunks (``prefill_step``), so a long prompt is many small units of
model work instead of one long one. It keeps the target distribution at the
next position when it already has it (after a fully accepted block, the last
row of the verify pass), so the next block's first token is checked without
recomputing anything. After a rejection it truncates the KV cache to the
accepted prefix; the correction token is evaluated with the next block, in the
same forward, or alone ahead of it (``precompute``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from picospec.codec.errors import ConfigError
from picospec.codec.rng import KeyedRandom
from picospec.codec.sampling import Sampling
from picospec.codec.sparse import SparseDist
from picospec.codec.verify import Outcome, target_token, verify_block

from .backend import Backend

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

    def _forward(self, tokens: list[int], n_out: int, *, rows: bool = True) -> np.ndarray:
        logits = self.backend.forward(self.session, self._n_kv, tokens, n_out)
        self.stats.forwards += 1
        self.stats.positions += len(tokens)
        self._n_kv += len(tokens)
        return self.backend.distributions(logits, self.sampling.params) if rows else logits

    # ------------------------------------------------------------------ the context
    def start(self, context: Sequence[int]) -> None:
        """Take a context whose tokens are all decided; ``prefill_step`` evaluates it."""
        if not context:
            raise ConfigError("the prompt must hold at least one token")
        if self.tokens:
            raise ConfigError("this generation has begun already")
        self.tokens = [int(t) for t in context]

    @property
    def pending(self) -> int:
        """Decided tokens not yet evaluated."""
        return len(self.tokens) - self._n_kv

    def prefill_step(self, chunk: int) -> bool:
        """Evaluate up to chunk more decided tokens; True once they are all in the KV
        and the target distribution at the next position is known."""
        pending = self.tokens[self._n_kv :]
        if not pending:
            return self._next is not None
        take = pending[:chunk]
        last = len(take) == len(pending)
        out = self._forward(take, 1, rows=last)
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
        pending = self.tokens[self._n_kv :]
        if pending and self._next is None:
            self._next = self._forward(pending, 1)[0]

    def decode_one(self) -> int:
        """Cloud-only decoding: sample and commit one token from p alone."""
        p = self._next
        if p is None:
            p = self._forward(self.tokens[self._n_kv :], 1)[0]
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
        if start != len(self.tokens):
            raise ConfigError(f"a block must start at position {len(self.tokens)}, not {start}")
        if not drafted:
            raise ConfigError("a draft block holds at least one token")
        pending = self.tokens[self._n_kv :]  # decided but not yet evaluated (a correction)
        n = len(drafted)
        rows = self._forward(pending + list(drafted), n + (0 if self._next is not None else 1))
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
