"""Sampling parameters: the one description of the sampling transform.

Both models pass their logits through the same transform (temperature, then
top-k, top-p and min-p, as defined in kernels/picospec_kernels.h), so the draft
distribution q and the target distribution p are comparable token by token.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError
from .scheme import Scheme

MAX_TEMPERATURE = 100.0
MAX_K = 256
"""Most entries of a sparse record (PICO_MAX_K)."""


@dataclass(frozen=True)
class SamplingParams:
    """How a logits row becomes a distribution."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy (argmax, lowest id on ties)."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 turns it off."""
    top_p: float = 1.0
    """Keep the smallest prefix whose mass reaches top_p; 1 turns it off."""
    min_p: float = 0.0
    """Drop tokens below min_p times the most likely one's probability; 0 turns it off."""

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ConfigError(f"temperature must be a finite number, got {t!r}")
        if not 0.0 <= t <= MAX_TEMPERATURE:
            raise ConfigError(f"temperature must be in [0, {MAX_TEMPERATURE}], got {t}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if self.top_k > 2**31 - 1:
            raise ConfigError(f"top_k is too large: {self.top_k}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not isinstance(self.min_p, (int, float)) or not 0.0 <= self.min_p <= 1.0:
            raise ConfigError(f"min_p must be in [0, 1] (0 = off), got {self.min_p!r}")
        object.__setattr__(self, "temperature", float(t))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "min_p", float(self.min_p))

    @property
    def greedy(self) -> bool:
        """True when the transform is a plain argmax."""
        return self.temperature == 0.0 or self.top_k == 1

    def support_fits(self, k: int) -> bool:
        """True when every transformed distribution has at most k tokens."""
        return self.greedy or 0 < self.top_k <= k

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingParams:
        unknown = set(d) - {"temperature", "top_k", "top_p", "min_p"}
        if unknown:
            raise ConfigError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class Sampling:
    """How one generation samples: the transform, the verification scheme and K.

    It travels in the generation's Start, so one connection can serve a greedy
    command and a T = 0.8 chat turn back to back.
    """

    params: SamplingParams
    scheme: Scheme
    k: int = 8
    """Entries of every sparse record (q16 uplink, float64 top-K downlink)."""
    allow_inexact: bool = False
    """``split`` only: accept corrections sampled from a truncated p."""

    def __post_init__(self) -> None:
        if not isinstance(self.params, SamplingParams):
            raise ConfigError(f"params must be SamplingParams, got {self.params!r}")
        object.__setattr__(self, "scheme", Scheme.parse(self.scheme))
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K:
            raise ConfigError(f"k must be an integer in 1..{MAX_K}, got {self.k!r}")
        if self.scheme is Scheme.GREEDY and not self.params.greedy:
            raise ConfigError("the greedy scheme needs temperature 0 (or top_k 1)")
        if not self.exact and not self.allow_inexact:
            raise ConfigError(
                f"split is exact only when p's support fits in k={self.k} (temperature 0, "
                f"or 1 <= top_k <= {self.k}); got temperature {self.params.temperature:g}, "
                f"top_k {self.params.top_k}. Use another scheme, a top_k <= k, or allow "
                "inexact corrections explicitly"
            )

    @property
    def exact(self) -> bool:
        """True when the scheme keeps the output distribution exactly p."""
        return self.scheme is not Scheme.SPLIT or self.params.support_fits(self.k)

    @classmethod
    def of(
        cls,
        params: SamplingParams,
        scheme: Scheme | str | None = None,
        k: int = 8,
        *,
        allow_inexact: bool = False,
    ) -> Sampling:
        """Sampling with the default scheme for params when none is named:
        ``greedy`` at temperature 0, else ``sparse-q`` (always exact)."""
        if scheme is None:
            scheme = Scheme.GREEDY if params.greedy else Scheme.SPARSE_Q
        return cls(params, Scheme.parse(scheme), k, allow_inexact)
