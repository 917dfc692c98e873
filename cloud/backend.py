"""The verifier backend interface: run the target model for many sessions.

A backend owns the target model and one KV sequence per session; it knows
nothing about schemes or acceptance. Its three primitives are the verifier's
whole need:

* ``forward(session, start, tokens, n_out)``: evaluate tokens at positions
  start.. and return the logits after each of the last n_out of them (the
  target's view of the next token);
* ``truncate(session, position)``: forget the KV from position on (rollback);
* ``open`` / ``close`` a session.

``forward_many`` answers the forward requests of several sessions at once. The
default runs them one after another; a backend that can evaluate them as one
batch (``batches``) overrides it, and a scheduler that gathers ready work from
many sessions then pays for one forward instead of many.

``distributions`` turns those logits into target distributions with the shared
sampling transform (a GPU backend overrides it to do that on the device).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from picospec.codec import ops
from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.sampling import SamplingParams
from picospec.codec.vocab import VocabFingerprint

from .hf_vocab import LlamaVocab

T = TypeVar("T")


@dataclass(frozen=True)
class Forward:
    """One forward request: evaluate tokens at positions start.. of a session and
    return the logits after each of the last n_out of them."""

    session: int
    start: int
    tokens: tuple[int, ...]
    n_out: int


class Sessions(Generic[T]):
    """A backend's per-session state, with the checks every backend makes: a
    session opens once, there are at most ``limit`` at a time, an unknown one is
    refused by name, and closing twice is harmless."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"a backend serves at least one session, got max_sessions={limit}")
        self.limit = limit
        self._items: dict[int, T] = {}

    def open(self, session: int, make: Callable[[], T]) -> T:
        if session in self._items:
            raise ConfigError(f"session {session} is already open")
        if len(self._items) >= self.limit:
            raise ConfigError(f"the backend serves at most {self.limit} sessions at once")
        item = self._items[session] = make()
        return item

    def close(self, session: int) -> T | None:
        return self._items.pop(session, None)

    def __getitem__(self, session: int) -> T:
        try:
            return self._items[session]
        except KeyError:
            raise ConfigError(f"unknown session {session}") from None

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())


def check_forward(
    session: int,
    start: int,
    length: int,
    tokens: list[int],
    n_out: int | None,
    *,
    vocab_size: int,
    capacity: int,
    most: int | None = None,
) -> int:
    """The checks of ``Backend.forward`` every backend makes; returns n_out resolved
    (None: every token). length: the tokens the session holds; capacity: the most it
    may hold; most: a backend's own bound on n_out."""
    if not tokens:
        raise ConfigError("a forward needs at least one token")
    n = len(tokens) if n_out is None else n_out
    top = len(tokens) if most is None else min(len(tokens), most)
    if not 1 <= n <= top:
        bound = f"{len(tokens)}" if most is None else f"min({len(tokens)}, {most})"
        raise ConfigError(f"n_out must be in 1..{bound}, got {n}")
    if start != length:
        raise ConfigError(
            f"session {session} holds {length} tokens; a forward must start there, not at {start}"
        )
    if start + len(tokens) > capacity:
        raise ConfigError(
            f"context full: {start + len(tokens)} tokens > {capacity}, the most a session holds"
        )
    bad = [t for t in tokens if not 0 <= t < vocab_size]
    if bad:
        raise ConfigError(f"token id(s) {bad[:4]} outside the vocabulary of {vocab_size}")
    return n


class Backend(ABC):
    """A target model serving several sessions."""

    vocab_size: int
    name: str
    max_context: int
    """Most tokens one session holds (prompt and generated)."""

    @abstractmethod
    def fingerprint(self) -> VocabFingerprint:
        """The target's vocabulary fingerprint."""

    @abstractmethod
    def is_end(self, token: int) -> bool:
        """True for the target's end-of-generation tokens."""

    @abstractmethod
    def open(self, session: int) -> None:
        """Create an empty KV sequence for a session."""

    @abstractmethod
    def close(self, session: int) -> None:
        """Free a session's KV sequence."""

    @abstractmethod
    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        """float32[n_out, V]: logits after each of the last n_out tokens (default:
        all of them), the tokens being evaluated at positions start.."""

    batches: bool = False
    """True when ``forward_many`` evaluates several sessions in one batch."""
    batch_note: str = "this backend evaluates one session per forward"
    """Why it batches or not (the service logs it at start)."""

    def forward_many(self, requests: Sequence[Forward]) -> list[np.ndarray | PicospecError]:
        """Each request's logits, in order, or the error that refused it (a bad
        request fails alone). The default runs them one at a time."""
        out: list[np.ndarray | PicospecError] = []
        for r in requests:
            try:
                out.append(self.forward(r.session, r.start, list(r.tokens), r.n_out))
            except PicospecError as e:
                out.append(e)
        return out

    def reuse_prefix(self, session: int, tokens: Sequence[int]) -> int:
        """Before a new session's first forward: put the KV of the longest prefix of
        tokens that another sequence holds into this session's, where the backend
        can; returns how many tokens it holds now (its next forward starts there).
        The default reuses nothing."""
        return 0

    def truncate(self, session: int, position: int) -> None:
        """Forget the session's KV from position on."""
        if position < 0:
            raise ConfigError(f"cannot truncate to a negative position ({position})")
        self._truncate(session, position)

    @abstractmethod
    def _truncate(self, session: int, position: int) -> None:
        """``truncate`` for a position >= 0 (checked)."""

    def distributions(self, logits: np.ndarray, params: SamplingParams) -> np.ndarray:
        """float64[n, V] target distributions from float32[n, V] logits."""
        return np.stack([ops.transform_dense(row, params) for row in logits])


class VocabBackend(Backend):
    """A backend whose vocabulary comes from a Hugging Face or GGUF source as
    llama.cpp sees it (``cloud/hf_vocab.py``): its fingerprint and end ids."""

    vocab: LlamaVocab

    def fingerprint(self) -> VocabFingerprint:
        return self.vocab.fingerprint

    def is_end(self, token: int) -> bool:
        return token in self.vocab.end_ids
