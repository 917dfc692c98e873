"""The verifier backend interface: run the target model for many sessions.

A backend owns the target model and one KV sequence per session; it knows
nothing about schemes or acceptance. Its three primitives are the verifier's
whole need:

* ``forward(session, start, tokens, n_out)``: evaluate tokens at positions
  start.. and return the logits after each of the last n_out of them (the
  target's view of the next token);
* ``truncate(session, position)``: forget the KV from position on (rollback);
* ``open`` / ``close`` a session.

``distributions`` turns those logits into target distributions with the shared
sampling transform (a GPU backend overrides it to do that on the device).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from picospec.codec import ops
from picospec.codec.sampling import SamplingParams
from picospec.codec.vocab import VocabFingerprint


class Backend(ABC):
    """A target model serving several sessions."""

    vocab_size: int
    name: str

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

    @abstractmethod
    def truncate(self, session: int, position: int) -> None:
        """Forget the session's KV from position on."""

    def distributions(self, logits: np.ndarray, params: SamplingParams) -> np.ndarray:
        """float64[n, V] target distributions from float32[n, V] logits."""
        return np.stack([ops.transform_dense(row, params) for row in logits])
