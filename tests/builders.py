"""Small builders shared by several test files."""

from __future__ import annotations

from picospec.codec.vocab import VocabFingerprint, fingerprint


def fingerprint_of(vocab: int) -> VocabFingerprint:
    """The fingerprint of a made-up vocabulary of this size."""
    return fingerprint(((b"t%d" % i, 0) for i in range(vocab)), {"bos": 1, "eos": 2})
