"""Vocabulary fingerprints: do the drafter and the target speak the same ids?

Token ids travel instead of text, so both sides must map ids to the same
tokens. A fingerprint covers the vocabulary size, the special ids and every
entry's text and attribute bits; it travels in the handshake, and a mismatch is
refused with a message naming what differs: the size, the special tokens, or
the first range of ids whose entries differ (entries are hashed in chunks of
``CHUNK`` ids, so the range is that narrow).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import CodecError

CHUNK = 64
"""Token entries per chunk digest."""
DIGEST = 4
"""Bytes per chunk digest."""
SPECIALS = ("bos", "eos", "eot", "pad")
_HEAD = struct.Struct("<I4i")


@dataclass(frozen=True)
class VocabFingerprint:
    size: int
    specials: tuple[int, int, int, int]
    """bos, eos, eot, pad ids (-1 where the model has none)."""
    chunks: bytes
    """A DIGEST-byte hash of each run of CHUNK entries, in id order."""

    @property
    def digest(self) -> bytes:
        """32 bytes that summarise the whole fingerprint."""
        return hashlib.sha256(self.to_bytes()).digest()

    def to_bytes(self) -> bytes:
        return _HEAD.pack(self.size, *self.specials) + self.chunks

    @classmethod
    def from_bytes(cls, data: bytes) -> VocabFingerprint:
        if len(data) < _HEAD.size:
            raise CodecError(f"a vocabulary fingerprint needs {_HEAD.size} bytes, got {len(data)}")
        size, *specials = _HEAD.unpack_from(data)
        chunks = bytes(data[_HEAD.size :])
        want = -(-size // CHUNK) * DIGEST
        if len(chunks) != want:
            raise CodecError(
                f"a fingerprint of a {size}-token vocabulary needs {want} chunk bytes, "
                f"got {len(chunks)}"
            )
        return cls(size, (specials[0], specials[1], specials[2], specials[3]), chunks)

    def difference(self, other: VocabFingerprint) -> str | None:
        """None when the vocabularies match, else what differs, in words."""
        problems = []
        if self.size != other.size:
            problems.append(f"vocabulary size {self.size} vs {other.size}")
        for name, a, b in zip(SPECIALS, self.specials, other.specials, strict=True):
            if a != b:
                problems.append(f"{name} token id {a} vs {b}")
        n = min(len(self.chunks), len(other.chunks)) // DIGEST
        for c in range(n):
            lo = c * DIGEST
            if self.chunks[lo : lo + DIGEST] != other.chunks[lo : lo + DIGEST]:
                hi = min((c + 1) * CHUNK, self.size, other.size) - 1
                problems.append(f"token entries first differ within ids {c * CHUNK}..{hi}")
                break
        return "; ".join(problems) or None


def fingerprint(entries: Iterable[tuple[bytes, int]], specials: dict[str, int]) -> VocabFingerprint:
    """Fingerprint of a vocabulary given (text, attribute bits) for ids 0, 1, ..."""
    digests = []
    h = hashlib.blake2b(digest_size=DIGEST)
    size = 0
    for text, attr in entries:
        h.update(struct.pack("<Ii", len(text), attr))
        h.update(text)
        size += 1
        if size % CHUNK == 0:
            digests.append(h.digest())
            h = hashlib.blake2b(digest_size=DIGEST)
    if size % CHUNK:
        digests.append(h.digest())
    if size == 0:
        raise CodecError("cannot fingerprint an empty vocabulary")
    ids = tuple(int(specials.get(name, -1)) for name in SPECIALS)
    return VocabFingerprint(size, (ids[0], ids[1], ids[2], ids[3]), b"".join(digests))
