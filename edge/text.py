"""Text of committed tokens, decoded as they stream.

A token stands for bytes, not characters: a multi-byte UTF-8 character (an
accent, a CJK character, an emoji) is often split across two or three tokens.
``TextStream`` decodes the pieces incrementally, so a chunk ends before an
unfinished character and the next chunk starts with it whole; the concatenated
chunks equal ``detokenize`` of all the tokens, byte for byte. End-of-generation
tokens carry no text.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable


class TextStream:
    """Incremental text of a token stream."""

    def __init__(self, piece: Callable[[int], bytes], is_end: Callable[[int], bool]) -> None:
        self._piece = piece
        self._is_end = is_end
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, tokens: Iterable[int]) -> str:
        """The text these tokens complete (a character they start waits for the rest)."""
        data = b"".join(self._piece(t) for t in tokens if not self._is_end(t))
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Whatever is left at the end (an unfinished character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


def detokenize(
    piece: Callable[[int], bytes], is_end: Callable[[int], bool], tokens: Iterable[int]
) -> str:
    """The whole text of tokens, as a TextStream would stream it."""
    stream = TextStream(piece, is_end)
    return stream.feed(tokens) + stream.flush()
