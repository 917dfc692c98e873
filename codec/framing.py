"""Framing: messages as a byte stream, and back.

    frame = u32 body length | body                      (little-endian)
    body  = u8 protocol version | u8 message type | u32 session | u32 epoch
            | u32 start | payload (codec/messages.py)

``FrameParser`` is sans-I/O: it takes bytes in whatever chunks the transport
delivers and returns whole messages; it holds at most one partial frame. The
stream cannot be resynchronised after a broken frame, so the first error closes
the parser for good. A parser can be told which message types it accepts
(``accept``): any other type is refused from its header, before a byte of its
payload is decoded, which is how a server reads nothing but a Hello until the
handshake is done.
"""

from __future__ import annotations

import struct

from .errors import ConfigError, ProtocolError
from .messages import MAX_HELLO_PAYLOAD, MAX_VOCAB, MESSAGE_TYPES, Hello, Message

PROTOCOL_VERSION = 2
"""The protocol version this code speaks; a frame with another is refused."""
MAX_FRAME = 1 << 20
"""Default limit on a frame body, in bytes."""

_LENGTH = struct.Struct("<I")
_HEADER = struct.Struct("<BBIII")
HEADER_BYTES = _HEADER.size
"""Bytes of a frame body before its payload."""
HELLO_MAX_FRAME = _HEADER.size + MAX_HELLO_PAYLOAD
"""The largest frame a Hello needs: the limit while a server waits for one."""


def encode_frame(msg: Message, vocab: int | None = None, max_frame: int = MAX_FRAME) -> bytes:
    """The frame of msg; ``vocab`` is the handshake's vocabulary size (DraftBlock needs it)."""
    payload = msg.payload(vocab)
    size = _HEADER.size + len(payload)
    if size > max_frame:
        raise ProtocolError(
            f"{type(msg).__name__}: a {size}-byte frame is over the limit of {max_frame} bytes"
        )
    header = _HEADER.pack(PROTOCOL_VERSION, msg.TYPE, msg.session, msg.epoch, msg.start)
    return _LENGTH.pack(size) + header + payload


def _decode_body(
    body: bytes | memoryview, vocab: int | None, accept: frozenset[type[Message]] | None
) -> Message:
    version, kind, session, epoch, start = _HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version} received; this side speaks version {PROTOCOL_VERSION}"
        )
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type {kind}")
    if accept is not None and cls not in accept:
        wanted = " or ".join(sorted(c.__name__ for c in accept))
        raise ProtocolError(f"a {cls.__name__} where only {wanted} is accepted")
    payload = memoryview(body)[_HEADER.size :]
    return cls.from_payload(payload, session=session, epoch=epoch, start=start, vocab=vocab)


class FrameParser:
    """Whole messages out of a byte stream, however it is split (sans-I/O).

    Never holds more than ``max_frame + 4`` bytes: a frame's length is checked
    as soon as its 4 bytes arrive, before any of its body is buffered. Any
    ProtocolError closes the parser (messages decoded earlier in the same
    ``feed`` are dropped with it); every later ``feed`` raises again.
    """

    def __init__(
        self,
        max_frame: int = MAX_FRAME,
        vocab: int | None = None,
        accept: frozenset[type[Message]] | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.vocab = vocab
        self.accept = accept
        """The message types this parser decodes (None: every type)."""
        self._buf = bytearray()
        self._body_size: int | None = None  # None while reading a length prefix
        self._error: ProtocolError | None = None

    @classmethod
    def hello_only(cls) -> FrameParser:
        """A parser for a server awaiting a Hello: nothing else, nothing bigger."""
        return cls(HELLO_MAX_FRAME, accept=frozenset({Hello}))

    @property
    def max_frame(self) -> int:
        """Largest frame body accepted, in bytes."""
        return self._max_frame

    @max_frame.setter
    def max_frame(self, max_frame: int) -> None:
        if not _HEADER.size <= max_frame <= 0xFFFFFFFF:
            raise ConfigError(f"max_frame must be in [{_HEADER.size}, 2**32 - 1], got {max_frame}")
        self._max_frame = max_frame

    @property
    def vocab(self) -> int | None:
        """The vocabulary size fixed by the handshake; None before it."""
        return self._vocab

    @vocab.setter
    def vocab(self, vocab: int | None) -> None:
        if vocab is not None and not (isinstance(vocab, int) and 1 <= vocab <= MAX_VOCAB):
            raise ConfigError(f"vocabulary size must be an integer in [1, 2**31], got {vocab!r}")
        self._vocab = vocab

    @property
    def buffered(self) -> int:
        """Bytes held from a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """The messages completed by data, in order; raises ProtocolError on a broken frame."""
        if self._error is not None:
            raise ProtocolError(f"the stream is closed after an earlier error: {self._error}")
        try:
            return self._parse(memoryview(data).cast("B"))
        except ProtocolError as exc:
            self._error = exc
            raise

    def _parse(self, data: memoryview) -> list[Message]:
        messages = []
        while data:
            need = _LENGTH.size if self._body_size is None else self._body_size
            if not self._buf and len(data) >= need:
                chunk, data = data[:need], data[need:]
            else:
                take = min(need - len(self._buf), len(data))
                self._buf += data[:take]
                data = data[take:]
                if len(self._buf) < need:
                    break
                chunk = memoryview(bytes(self._buf))
                self._buf.clear()
            if self._body_size is None:
                self._body_size = self._check_length(_LENGTH.unpack(chunk)[0])
            else:
                self._body_size = None
                messages.append(_decode_body(chunk, self._vocab, self.accept))
        return messages

    def _check_length(self, size: int) -> int:
        if size < _HEADER.size:
            raise ProtocolError(
                f"a frame of length {size} is shorter than its {_HEADER.size}-byte header"
            )
        if size > self.max_frame:
            raise ProtocolError(
                f"a frame of length {size} is over the limit of {self.max_frame} bytes"
            )
        return size
