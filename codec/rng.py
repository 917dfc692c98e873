"""Keyed randomness: every random number is a function of (seed, position, purpose).

Nothing is drawn "next" from a stream, so a seeded generation gives the same
tokens whatever the network timing, the pipeline depth or the order in which
blocks happen to be verified. The generator (SplitMix64 finaliser over a
counter) is defined in kernels/picospec_kernels.h; the C kernel and the numpy
reference reproduce its uniforms bit for bit.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol

import numpy as np

from . import ops
from .errors import ConfigError

_U64 = 2**64


class Purpose(IntEnum):
    """What a random number is for; each purpose is an independent stream."""

    DRAFT = 1
    """The drafter's sample from q at a position."""
    ACCEPT = 2
    """The accept test u < p(x) / q(x) at a position."""
    RESIDUAL = 3
    """The correction sampled from norm(max(0, p - q)) after a rejection."""
    TARGET = 4
    """A sample from p itself: the bonus token, cloud-only decoding, prefill."""
    GUMBEL = 5
    """Per-token Gumbel noise shared by drafter and target (the gumbel scheme)."""


def _check(seed: int, position: int) -> None:
    if not 0 <= seed < _U64:
        raise ConfigError(f"seed must be in [0, 2**64), got {seed}")
    if not 0 <= position < _U64:
        raise ConfigError(f"position must be in [0, 2**64), got {position}")


def key(seed: int, position: int, purpose: Purpose) -> int:
    """The 64-bit key of one (seed, position, purpose) stream."""
    _check(seed, position)
    return ops.key(seed, position, int(purpose))


def uniform(seed: int, position: int, purpose: Purpose) -> float:
    """The first uniform in (0, 1) of a stream: one decision at one position."""
    return float(ops.uniforms(key(seed, position, purpose), 0, 1)[0])


def gumbel_noise(seed: int, position: int, vocab: int) -> np.ndarray:
    """Gumbel noise g[0..vocab-1] (float64) for the gumbel scheme at a position."""
    u = ops.uniforms(key(seed, position, Purpose.GUMBEL), 0, vocab)
    return -np.log(-np.log(u))


class Randomness(Protocol):
    """Where the verification maths reads its random numbers."""

    def uniform(self, position: int, purpose: Purpose) -> float:
        """A uniform in (0, 1) for one decision at one position."""
        ...

    def gumbel(self, position: int, vocab: int) -> np.ndarray:
        """Gumbel noise float64[vocab] at one position."""
        ...


class KeyedRandom:
    """The production ``Randomness``: keyed streams of one generation's seed."""

    def __init__(self, seed: int) -> None:
        _check(seed, 0)
        self.seed = seed

    def uniform(self, position: int, purpose: Purpose) -> float:
        return uniform(self.seed, position, purpose)

    def gumbel(self, position: int, vocab: int) -> np.ndarray:
        return gumbel_noise(self.seed, position, vocab)
