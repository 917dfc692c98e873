"""What a generation runs as: its verification scheme and its mode.

Verification schemes: what travels per drafted token and per round.

=========  =============================  ===================================  ===================
scheme     uplink per drafted token       downlink per round                   exact?
=========  =============================  ===================================  ===================
sparse-q   id + quantised sparse q (q16)  accepted count + one token           always
split      id + q(id) (a q16 count)       count + token; on rejection top-K p  if p's support <= K
gumbel     id                             accepted count + one token           always
greedy     id                             accepted count + one token           temperature 0
=========  =============================  ===================================  ===================

Modes: ``pipeline`` (PicoSpec: several draft blocks in flight), ``sync``
(stop-and-wait speculative decoding), ``cloud-only`` (the target decodes alone
and streams), ``edge-only`` (the drafter alone, no cloud) and ``cloud-led``
(the target decodes continuously, as in cloud-only, and every forward also
takes the drafts that have arrived for the positions right after what it has
committed; the edge drafts ahead of the cloud's frontier; ``gumbel`` and
``greedy`` only, where a draft counts exactly when it equals the cloud's own
token, so the output is the cloud-only output for the seed). Both travel in a
generation's Start as one byte each.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from .errors import ConfigError


class _WireEnum(StrEnum):
    """A named choice that travels as one byte: its position in declaration order,
    from 1 (so members are only ever appended)."""

    @property
    def code(self) -> int:
        """The member's one-byte wire code."""
        return list(type(self)).index(self) + 1

    @classmethod
    def from_code(cls, code: int) -> Self:
        members = list(cls)
        if not 1 <= code <= len(members):
            raise ConfigError(f"unknown {cls._what()} code {code}")
        return members[code - 1]

    @classmethod
    def parse(cls, name: str) -> Self:
        """The member named name; a clear error listing the choices otherwise."""
        try:
            return cls(name)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown {cls._what()} {name!r}; choose one of {names}") from None

    @classmethod
    def _what(cls) -> str:
        return cls.__name__.lower()


class Scheme(_WireEnum):
    SPARSE_Q = "sparse-q"
    SPLIT = "split"
    GUMBEL = "gumbel"
    GREEDY = "greedy"


class Mode(_WireEnum):
    PIPELINE = "pipeline"
    SYNC = "sync"
    CLOUD_ONLY = "cloud-only"
    EDGE_ONLY = "edge-only"
    CLOUD_LED = "cloud-led"

    @property
    def speculative(self) -> bool:
        """The edge drafts and the cloud verifies."""
        return self in (Mode.PIPELINE, Mode.SYNC, Mode.CLOUD_LED)

    @property
    def cloud_decodes(self) -> bool:
        """The cloud decodes on its own, without waiting for drafts."""
        return self in (Mode.CLOUD_ONLY, Mode.CLOUD_LED)


LED_SCHEMES = (Scheme.GUMBEL, Scheme.GREEDY)
"""The schemes ``cloud-led`` runs under: a draft is accepted exactly when it
equals the cloud's own token, whatever the timing."""
