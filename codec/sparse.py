"""The sparse distribution: a few token ids with their probabilities.

Two kinds travel on the wire:

* quantised (``q16``): probabilities are counts / 65536 with counts summing to
  exactly 65536. The drafter samples from this object and the verifier sees the
  same object, so truncating and quantising q costs nothing in exactness.
* float64: a truncated target distribution p (the ``split`` scheme's downlink);
  its probabilities are p's own values and may sum to less than 1 (the
  truncated mass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops
from .errors import CodecError

Q_ONE = 65536
"""Fixed-point denominator of quantised probabilities."""


@dataclass(frozen=True, eq=False)
class SparseDist:
    """Token ids (int32[n], distinct) and their probabilities (float64[n], > 0)."""

    ids: np.ndarray
    probs: np.ndarray

    def __post_init__(self) -> None:
        ids = np.ascontiguousarray(self.ids, dtype=np.int32)
        probs = np.ascontiguousarray(self.probs, dtype=np.float64)
        if ids.ndim != 1 or ids.shape != probs.shape or ids.size == 0:
            raise CodecError(
                f"a sparse distribution needs equal-length non-empty ids and probs, "
                f"got shapes {self.ids.shape} and {self.probs.shape}"
            )
        if np.unique(ids).size != ids.size:
            raise CodecError("a sparse distribution has a repeated token id")
        if not np.all(np.isfinite(probs)) or np.any(probs <= 0.0) or probs.sum() > 1.0 + 1e-9:
            raise CodecError("sparse probabilities must be finite, > 0 and sum to at most 1")
        ids.flags.writeable = False
        probs.flags.writeable = False
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "probs", probs)

    @classmethod
    def from_counts(cls, ids: np.ndarray, counts: np.ndarray) -> SparseDist:
        """A quantised distribution from integer counts summing to 65536."""
        counts = np.asarray(counts)
        if counts.size and (counts.min() < 1 or int(counts.sum()) != Q_ONE):
            raise CodecError(f"quantised counts must be >= 1 and sum to {Q_ONE}")
        return cls(ids, counts.astype(np.float64) / Q_ONE)

    @property
    def counts(self) -> np.ndarray:
        """The integer counts of a quantised distribution (uint32[n])."""
        scaled = self.probs * Q_ONE
        counts = scaled.astype(np.uint32)
        if not np.array_equal(counts, scaled) or int(counts.sum()) != Q_ONE:
            raise CodecError("this sparse distribution is not quantised to 1/65536")
        return counts

    @property
    def mass(self) -> float:
        """Total probability held (1 for q; 1 minus the truncated mass for a top-K p)."""
        return float(self.probs.sum())

    def __len__(self) -> int:
        return int(self.ids.size)

    def prob(self, token: int) -> float:
        """q(token): its probability, 0 outside the kept set."""
        hit = np.flatnonzero(self.ids == token)
        return float(self.probs[hit[0]]) if hit.size else 0.0

    def sample(self, u: float) -> int:
        """The token at uniform u in [0, 1) by inverse CDF in stored order.

        For a quantised distribution every partial sum is exact in float64, so
        this is exactly the integer walk over counts.
        """
        cdf = np.cumsum(self.probs)
        i = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
        return int(self.ids[min(i, self.ids.size - 1)])

    def dense(self, vocab: int) -> np.ndarray:
        """The distribution as a float64[vocab] row (zeros outside the kept set)."""
        if int(self.ids.max()) >= vocab:
            raise CodecError(f"token id {int(self.ids.max())} is outside a vocabulary of {vocab}")
        row = np.zeros(vocab, dtype=np.float64)
        row[self.ids] = self.probs
        return row

    def to_q16(self, vocab: int) -> bytes:
        """The wire bytes of a quantised distribution (kernels' q16 format)."""
        return ops.sparse_encode(self.ids, self.counts, vocab)

    @classmethod
    def from_q16(cls, buf: bytes | memoryview, vocab: int) -> tuple[SparseDist, int]:
        """Decode one q16 record from the front of buf; returns it and its size."""
        ids, counts, used = ops.sparse_decode(buf, vocab)
        return cls.from_counts(ids, counts), used

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseDist):
            return NotImplemented
        return np.array_equal(self.ids, other.ids) and np.array_equal(self.probs, other.probs)

    def __repr__(self) -> str:
        pairs = ", ".join(
            f"{i}:{p:.4g}" for i, p in zip(self.ids[:6], self.probs[:6], strict=False)
        )
        more = ", ..." if self.ids.size > 6 else ""
        return f"SparseDist({pairs}{more})"
