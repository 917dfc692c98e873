"""Vocabulary fingerprints: equal vocabularies match, any difference is named."""

from __future__ import annotations

import pytest

from picospec.codec.errors import CodecError
from picospec.codec.vocab import CHUNK, VocabFingerprint, fingerprint

SPECIALS = {"bos": 1, "eos": 2, "eot": -1, "pad": 0}


def entries(n: int, changed: int | None = None) -> list[tuple[bytes, int]]:
    return [(f"tok{i}{'!' if i == changed else ''}".encode(), 1 if i < 3 else 0) for i in range(n)]


def test_same_vocabulary_matches():
    a, b = fingerprint(entries(300), SPECIALS), fingerprint(entries(300), SPECIALS)
    assert a.difference(b) is None and a.digest == b.digest


def test_size_difference_is_named():
    msg = fingerprint(entries(300), SPECIALS).difference(fingerprint(entries(301), SPECIALS))
    assert "vocabulary size 300 vs 301" in msg


def test_special_token_difference_is_named():
    other = dict(SPECIALS, eos=5)
    msg = fingerprint(entries(300), SPECIALS).difference(fingerprint(entries(300), other))
    assert msg == "eos token id 2 vs 5"


def test_first_differing_entry_range_is_named():
    changed = 3 * CHUNK + 7
    msg = fingerprint(entries(300), SPECIALS).difference(
        fingerprint(entries(300, changed), SPECIALS)
    )
    assert msg == f"token entries first differ within ids {3 * CHUNK}..{4 * CHUNK - 1}"


def test_attribute_bits_count():
    a = entries(10)
    b = [(t, 8) if i == 4 else (t, attr) for i, (t, attr) in enumerate(a)]
    assert fingerprint(a, SPECIALS).difference(fingerprint(b, SPECIALS)) is not None


def test_bytes_round_trip_and_bad_length():
    fp = fingerprint(entries(1000), SPECIALS)
    assert VocabFingerprint.from_bytes(fp.to_bytes()) == fp
    with pytest.raises(CodecError, match="chunk bytes"):
        VocabFingerprint.from_bytes(fp.to_bytes()[:-1])
    with pytest.raises(CodecError, match="needs 20 bytes"):
        VocabFingerprint.from_bytes(b"\x00" * 3)
