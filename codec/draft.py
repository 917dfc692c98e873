"""A drafted token, as both sides and every driver of the sessions see it."""

from __future__ import annotations

from dataclasses import dataclass

from .sparse import SparseDist


@dataclass(frozen=True)
class DraftToken:
    """One token the drafter proposed, with the exact object it was sampled from."""

    token: int
    q: SparseDist | None
    """The quantised top-K q the token was sampled from; None under ``gumbel``
    (whose draft is the Gumbel-max with the noise the target shares)."""
