"""Timing of a verifier backend: how long each forward took, by size.

``TimedBackend`` wraps any ``Backend`` and records every forward (tokens
evaluated, seconds) together with the sampling transform that follows it, so a
benchmark or an operator can see verify latency as the service experiences it,
under whatever else the machine is doing. Recording is bounded (``limit``
entries).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from picospec.codec.errors import PicospecError
from picospec.codec.sampling import SamplingParams
from picospec.codec.vocab import VocabFingerprint

from .backend import Backend, Forward


class TimedBackend(Backend):
    """A backend that times what it delegates to ``inner``."""

    def __init__(
        self,
        inner: Backend,
        *,
        limit: int = 100_000,
        on_forward: Callable[[int, float, int], None] | None = None,
    ) -> None:
        """limit: records kept (0: none); on_forward(tokens, seconds, sessions) is
        called after every forward (a batched one counts once, with the tokens of
        all its sessions), on the thread that ran it (the service's metrics)."""
        self.inner = inner
        self.on_forward = on_forward
        self.vocab_size = inner.vocab_size
        self.name = inner.name
        self.max_context = inner.max_context
        self.batches = inner.batches
        self.batch_note = inner.batch_note
        self.limit = limit
        self.records: list[tuple[int, float]] = []
        """(tokens evaluated, seconds) per forward, the transform of its rows included."""
        self._last = -1  # the record a following ``distributions`` call belongs to

    def fingerprint(self) -> VocabFingerprint:
        return self.inner.fingerprint()

    def is_end(self, token: int) -> bool:
        return self.inner.is_end(token)

    def open(self, session: int) -> None:
        self.inner.open(session)

    def close(self, session: int) -> None:
        self.inner.close(session)

    def reuse_prefix(self, session: int, tokens: Sequence[int]) -> int:
        return self.inner.reuse_prefix(session, tokens)

    def _truncate(self, session: int, position: int) -> None:
        self.inner.truncate(session, position)

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.inner.forward(session, start, tokens, n_out)
        seconds = time.perf_counter() - t0
        self._add(len(tokens), seconds)
        if self.on_forward is not None:
            self.on_forward(len(tokens), seconds, 1)
        return out

    def forward_many(self, requests: Sequence[Forward]) -> list[np.ndarray | PicospecError]:
        if len(requests) == 1:
            r = requests[0]
            try:
                return [self.forward(r.session, r.start, list(r.tokens), r.n_out)]
            except PicospecError as e:
                return [e]
        t0 = time.perf_counter()
        out = self.inner.forward_many(requests)
        seconds = time.perf_counter() - t0
        tokens = sum(
            len(r.tokens) for r, o in zip(requests, out, strict=True) if isinstance(o, np.ndarray)
        )
        self._add(tokens, seconds)
        if self.on_forward is not None:
            self.on_forward(tokens, seconds, len(requests))
        return out

    def distributions(self, logits: np.ndarray, params: SamplingParams) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.inner.distributions(logits, params)
        dt = time.perf_counter() - t0
        if self._last >= 0:
            n, s = self.records[self._last]
            self.records[self._last] = (n, s + dt)
        return out

    def _add(self, n: int, seconds: float) -> None:
        if len(self.records) < self.limit:
            self.records.append((n, seconds))
            self._last = len(self.records) - 1
        else:
            self._last = -1

    def mark(self) -> int:
        """A position in the records; ``by_size(since=mark)`` reads what came after."""
        return len(self.records)

    def by_size(self, since: int = 0) -> dict[int, float]:
        """Median seconds per forward, by tokens evaluated, over records[since:]."""
        groups: dict[int, list[float]] = defaultdict(list)
        for n, s in self.records[since:]:
            groups[n].append(s)
        return {n: statistics.median(v) for n, v in sorted(groups.items())}
