"""What the edge needs of a drafter, whatever runs it.

``edge/drafter.py`` implements it with llama.cpp; the tests implement it with a
small Markov chain, so the client, the in-process loop and the simulator never
depend on a particular model library.
"""

from __future__ import annotations

from typing import Protocol

from picospec.codec.draft import DraftToken
from picospec.codec.sampling import Sampling
from picospec.codec.vocab import VocabFingerprint


class DraftModel(Protocol):
    """A drafter: a begin / draft / rollback / push lifecycle over one sequence."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def n_ctx(self) -> int:
        """Most tokens the drafter holds (prompt and generated)."""
        ...

    def fingerprint(self) -> VocabFingerprint:
        """The vocabulary fingerprint sent in the Hello."""
        ...

    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens."""
        ...

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for."""
        ...

    def prefill(self, prompt: list[int]) -> None:
        """Evaluate a prompt ahead of ``begin(prompt + [first token])``."""
        ...

    def begin(self, tokens: list[int], seed: int, sampling: Sampling) -> None:
        """Start a generation whose decided context is tokens, sampling as given."""
        ...

    def draft(self, n: int) -> list[DraftToken]:
        """Draft n tokens after the current tail (assumed until a rollback)."""
        ...

    def sample_own(self) -> int:
        """Edge-only decoding: sample and append the next token from the drafter's
        own full distribution."""
        ...

    def rollback(self, position: int) -> None:
        """Keep only the first position tokens."""
        ...

    def push(self, token: int) -> None:
        """Append a token the verifier decided."""
        ...
