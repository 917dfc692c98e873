"""Verification schemes: what travels per drafted token and per round.

=========  =============================  ===================================  ===================
scheme     uplink per drafted token       downlink per round                   exact?
=========  =============================  ===================================  ===================
sparse-q   id + quantised sparse q (q16)  accepted count + one token           always
split      id + q(id) (a q16 count)       count + token; on rejection top-K p  if p's support <= K
gumbel     id                             accepted count + one token           always
greedy     id                             accepted count + one token           temperature 0
=========  =============================  ===================================  ===================
"""

from __future__ import annotations

from enum import StrEnum

from .errors import ConfigError


class Scheme(StrEnum):
    SPARSE_Q = "sparse-q"
    SPLIT = "split"
    GUMBEL = "gumbel"
    GREEDY = "greedy"

    @property
    def code(self) -> int:
        """The scheme's one-byte wire code."""
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> Scheme:
        for scheme, c in _CODES.items():
            if c == code:
                return scheme
        raise ConfigError(f"unknown scheme code {code}")

    @classmethod
    def parse(cls, name: str) -> Scheme:
        try:
            return cls(name)
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ConfigError(f"unknown scheme {name!r}; choose one of {names}") from None


_CODES = {Scheme.SPARSE_Q: 1, Scheme.SPLIT: 2, Scheme.GUMBEL: 3, Scheme.GREEDY: 4}
