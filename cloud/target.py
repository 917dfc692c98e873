"""One generation on the target: committed tokens, KV cache, next distribution.

``TargetSequence`` is the verifier's per-generation state. It keeps the target
distribution at the next position when it already has it (after a fully
accepted block, the last row of the verify pass), so the next block's first
token is checked without recomputing anything. After a rejection it truncates
the KV cache to the accepted prefix; the correction token is evaluated with the
next block, in the same forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from picospec.codec.errors import ConfigError
from picospec.codec.rng import KeyedRandom
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import SparseDist
from picospec.codec.verify import Outcome, target_token, verify_block

from .backend import Backend


@dataclass
class TargetStats:
    forwards: int = 0
    """Target forward passes (one per verify round, one per cloud-only token)."""
    positions: int = 0
    """Token positions evaluated by those forwards (prompt included)."""
    rounds: int = 0
    accepted: int = 0
    drafted: int = 0


@dataclass
class TargetSequence:
    backend: Backend
    session: int
    params: SamplingParams
    scheme: Scheme
    seed: int
    k: int = 8
    tokens: list[int] = field(default_factory=list)
    stats: TargetStats = field(default_factory=TargetStats)
    _n_kv: int = 0
    _next: np.ndarray | None = None  # p at position len(tokens), when known

    def __post_init__(self) -> None:
        self.rand = KeyedRandom(self.seed)
        if self.scheme is Scheme.GREEDY and not self.params.greedy:
            raise ConfigError("the greedy scheme needs temperature 0 (or top_k 1)")

    def _forward(self, tokens: list[int], n_out: int | None = None) -> np.ndarray:
        logits = self.backend.forward(self.session, self._n_kv, tokens, n_out)
        self.stats.forwards += 1
        self.stats.positions += len(tokens)
        self._n_kv += len(tokens)
        return self.backend.distributions(logits, self.params)

    def begin(self, context: Sequence[int]) -> None:
        """Evaluate a context whose tokens are all decided (the next token is drafted)."""
        if not context:
            raise ConfigError("the prompt must hold at least one token")
        if self.tokens:
            raise ConfigError("this generation has begun already")
        self.tokens = [int(t) for t in context]
        self._next = self._forward(self.tokens, n_out=1)[0]

    def prefill(self, prompt: Sequence[int]) -> int:
        """Evaluate the prompt and commit the target's first token."""
        self.begin(prompt)
        return self.decode_one()

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
            self._next = self._forward(pending, n_out=1)[0]

    def decode_one(self) -> int:
        """Cloud-only decoding: sample and commit one token from p alone."""
        p = self._next
        if p is None:
            p = self._forward(self.tokens[self._n_kv :], n_out=1)[0]
        return self.commit(target_token(self.scheme, p, self.rand, len(self.tokens)))

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
        rows = self._forward(
            pending + list(drafted), n_out=n + (0 if self._next is not None else 1)
        )
        p = rows if self._next is None else np.concatenate([self._next[None, :], rows])
        out = verify_block(
            self.scheme,
            drafted,
            p,
            rand=self.rand,
            start=start,
            q=q,
            q_x=q_x,
            bonus=bonus,
            k=self.k,
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
