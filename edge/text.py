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


class StopMatcher:
    """Stop strings over streamed text: ``feed`` returns the text that is safe to
    show and whether a stop string has appeared. Text that could be the start of a
    stop string is held back until the next piece says which; the text up to (not
    including) the first stop string is all that is ever shown."""

    def __init__(self, stops: tuple[str, ...] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.matched = False

    def feed(self, text: str) -> str:
        if self.matched:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.matched = True
            self._held = ""
            return buf[:cut]
        keep = max((_overlap(buf, s) for s in self.stops), default=0)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """What was held back, once the stream ends without a stop string."""
        held, self._held = ("", self._held) if self.matched else (self._held, "")
        return held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
