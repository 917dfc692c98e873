"""Wire messages: what edge and cloud say to each other, and their payload bytes.

Every message carries (session, epoch, start): the session it belongs to, the
rollback epoch it was sent in (anything from an older epoch is stale and
dropped), and the absolute token position it refers to. Those three travel in
the frame header (codec/framing.py); this module owns the payload after it.

A message is a frozen dataclass whose payload fields are declared in wire order
as ``field(metadata=_wire(kind))``; the kind checks the value, writes it and
reads it back, so a message's code is its field list. Integers are
little-endian. A message that cannot be built, written or read raises
ProtocolError naming the message and the field. Token ids and distributions
need the vocabulary size fixed by the handshake: ``payload`` and
``from_payload`` take it as ``vocab`` (None before it).
"""

from __future__ import annotations

import struct
from dataclasses import MISSING, dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar, Self

import numpy as np

from .errors import CodecError, ConfigError, ProtocolError
from .sampling import MAX_K, SamplingParams
from .scheme import Mode, Scheme, _WireEnum
from .sparse import Q_ONE, SparseDist
from .vocab import VocabFingerprint

MAX_BLOCK = 64
"""Most drafted tokens in one DraftBlock."""
MAX_VOCAB = 2**31
"""Largest vocabulary: token ids are int32."""
MAX_TOKEN_BYTES = 256
"""Longest auth token."""


class ErrorCode(IntEnum):
    """Why a peer sent an Error."""

    PROTOCOL = 1  # a frame or message broke the protocol
    AUTH = 2  # the auth token was refused
    VOCAB_MISMATCH = 3  # the vocabularies differ (size or fingerprint)
    PARAMS = 4  # sampling parameters, scheme or k are not acceptable
    BUSY = 5  # the server has no room for another session
    INTERNAL = 6  # the sender failed; not the receiver's fault
    UNKNOWN_SESSION = 7  # the session id is not open
    LIMIT = 8  # a request is over a limit the cloud announced (or a peer sent too much)
    TIMEOUT = 9  # the peer took too long (no Hello in time)


class _Invalid(Exception):
    """A field value that breaks the protocol; the message adds its own name."""

    def __init__(self, why: str, index: int | None = None) -> None:
        super().__init__(why)
        self.index = index


def _error(cls: type, name: str, exc: _Invalid) -> ProtocolError:
    at = "" if exc.index is None else f"[{exc.index}]"
    return ProtocolError(f"{cls.__name__}.{name}{at}: {exc}")


def _int_in(value: Any, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _Invalid(f"must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise _Invalid(f"{int(value)} is outside [{lo}, {hi}]")
    return int(value)


def _check_ids(ids: tuple[int, ...] | np.ndarray, vocab: int | None) -> None:
    if vocab is None or not len(ids):
        return
    arr = np.asarray(ids)
    if int(arr.max()) >= vocab:
        i = int(np.argmax(arr >= vocab))
        raise _Invalid(f"token id {int(arr[i])} is outside a vocabulary of {vocab}", i)


class _Reader:
    """Bounds-checked reads from the front of a payload."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._view = memoryview(data)
        self._pos = 0

    @property
    def left(self) -> int:
        return len(self._view) - self._pos

    def take(self, n: int) -> memoryview:
        if n > self.left:
            raise _Invalid(f"truncated: needs {n} bytes, {self.left} left")
        self._pos += n
        return self._view[self._pos - n : self._pos]

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def rest(self) -> memoryview:
        return self._view[self._pos :]


class _Kind:
    """How one field is checked, written and read."""

    def check(self, value: Any) -> Any:
        """The value in its canonical type; raises _Invalid."""
        raise NotImplementedError

    def write(self, out: bytearray, value: Any, vocab: int | None) -> None:
        raise NotImplementedError

    def read(self, r: _Reader, vocab: int | None) -> Any:
        raise NotImplementedError


class _Int(_Kind):
    """An integer in struct format ``fmt``, optionally narrowed to [lo, hi]."""

    def __init__(self, fmt: str, lo: int | None = None, hi: int | None = None) -> None:
        self.layout = struct.Struct("<" + fmt)
        signed = fmt.islower()
        bits = 8 * self.layout.size - (1 if signed else 0)  # magnitude bits
        self.lo = (-(1 << bits) if signed else 0) if lo is None else lo
        self.hi = (1 << bits) - 1 if hi is None else hi

    def check(self, value: Any) -> int:
        return _int_in(value, self.lo, self.hi)

    def write(self, out: bytearray, value: int, vocab: int | None) -> None:
        out += self.layout.pack(value)

    def read(self, r: _Reader, vocab: int | None) -> int:
        return self.check(r.unpack(self.layout)[0])


_U8, _U16, _U32, _U64, _I32 = _Int("B"), _Int("H"), _Int("I"), _Int("Q"), _Int("i")


class _Bool(_Kind):
    """A flag: one byte, 0 or 1."""

    def check(self, value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise _Invalid(f"must be a bool, got {value!r}")
        return bool(value)

    def write(self, out: bytearray, value: bool, vocab: int | None) -> None:
        out.append(value)

    def read(self, r: _Reader, vocab: int | None) -> bool:
        byte = _U8.read(r, vocab)
        if byte > 1:
            raise _Invalid(f"a flag must be 0 or 1, got {byte}")
        return bool(byte)


_BOOL = _Bool()


class _Tokens(_Kind):
    """Token ids: a count in struct format ``count`` (lo..hi), then u32 each.

    Checked as one array (no per-token Python work), so a prompt of many
    thousand ids costs microseconds to validate, not milliseconds.
    """

    def __init__(self, count: str, lo: int, hi: int) -> None:
        self.count = _Int(count, lo, hi)

    def check(self, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise _Invalid(f"must be a sequence of token ids, got {value!r}")
        self.count.check(len(value))
        if not len(value):
            return ()
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError, OverflowError):
            raise _Invalid(f"must be a sequence of token ids, got {value!r}") from None
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            bad = next((i for i, t in enumerate(value) if not _is_int(t)), 0)
            raise _Invalid(f"must be an integer, got {value[bad]!r}", bad)
        if int(arr.min()) < 0 or int(arr.max()) >= MAX_VOCAB:
            i = int(np.argmax((arr < 0) | (arr >= MAX_VOCAB)))
            raise _Invalid(f"{int(arr[i])} is outside [0, {MAX_VOCAB - 1}]", i)
        return tuple(arr.tolist())

    def write(self, out: bytearray, value: tuple[int, ...], vocab: int | None) -> None:
        _check_ids(value, vocab)
        self.count.write(out, len(value), vocab)
        out += np.asarray(value, dtype="<u4").tobytes()

    def read(self, r: _Reader, vocab: int | None) -> tuple[int, ...]:
        n = self.count.read(r, vocab)
        ids = np.frombuffer(r.take(4 * n), dtype="<u4")
        if n and int(ids.max()) >= MAX_VOCAB:
            i = int(np.argmax(ids >= MAX_VOCAB))
            raise _Invalid(f"{int(ids[i])} is outside [0, {MAX_VOCAB - 1}]", i)
        _check_ids(ids, vocab)
        return tuple(ids.tolist())


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class _OptionalToken(_Kind):
    """One token id or None: an i32, -1 for None."""

    def check(self, value: Any) -> int | None:
        return None if value is None else _int_in(value, 0, MAX_VOCAB - 1)

    def write(self, out: bytearray, value: int | None, vocab: int | None) -> None:
        if value is not None:
            _check_ids((value,), vocab)
        _I32.write(out, -1 if value is None else value, vocab)

    def read(self, r: _Reader, vocab: int | None) -> int | None:
        token = _I32.read(r, vocab)
        if token < -1:
            raise _Invalid(f"a token is an id >= 0 or -1 for none, got {token}")
        value = self.check(None if token == -1 else token)
        if value is not None:
            _check_ids((value,), vocab)
        return value


class _Blob(_Kind):
    """Opaque bytes, at most ``limit``: u16 length, then the bytes."""

    def __init__(self, limit: int) -> None:
        self.length = _Int("H", 0, limit)

    def check(self, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise _Invalid(f"must be bytes, got {type(value).__name__}")
        self.length.check(len(value))
        return bytes(value)

    def write(self, out: bytearray, value: bytes, vocab: int | None) -> None:
        out += struct.pack("<H", len(value)) + value

    def read(self, r: _Reader, vocab: int | None) -> bytes:
        return bytes(r.take(self.length.read(r, vocab)))


class _Text(_Kind):
    """UTF-8 text of at most ``limit`` bytes: u16 length, then the bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.blob = _Blob(limit)

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"must be a str, got {value!r}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _Invalid(f"is not encodable as UTF-8 ({exc.reason})") from None
        if size > self.limit:
            raise _Invalid(f"is {size} bytes of UTF-8, over the limit of {self.limit}")
        return value

    def write(self, out: bytearray, value: str, vocab: int | None) -> None:
        self.blob.write(out, value.encode("utf-8"), vocab)

    def read(self, r: _Reader, vocab: int | None) -> str:
        data = self.blob.read(r, vocab)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid(f"is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


class _Fingerprint(_Kind):
    """A VocabFingerprint: u16 length, then its bytes (codec/vocab.py)."""

    blob = _Blob(0xFFFF)

    def check(self, value: Any) -> VocabFingerprint:
        if not isinstance(value, VocabFingerprint):
            raise _Invalid(f"must be a VocabFingerprint, got {type(value).__name__}")
        if not 1 <= value.size <= MAX_VOCAB:
            raise _Invalid(f"vocabulary size {value.size} is outside [1, {MAX_VOCAB}]")
        self.blob.check(value.to_bytes())
        return value

    def write(self, out: bytearray, value: VocabFingerprint, vocab: int | None) -> None:
        self.blob.write(out, value.to_bytes(), vocab)

    def read(self, r: _Reader, vocab: int | None) -> VocabFingerprint:
        try:
            return self.check(VocabFingerprint.from_bytes(self.blob.read(r, vocab)))
        except CodecError as exc:
            raise _Invalid(str(exc)) from None


class _Params(_Kind):
    """SamplingParams: temperature f64, top_k u32, top_p f64, min_p f64."""

    layout = struct.Struct("<dIdd")

    def check(self, value: Any) -> SamplingParams:
        if not isinstance(value, SamplingParams):
            raise _Invalid(f"must be SamplingParams, got {value!r}")
        return value

    def write(self, out: bytearray, value: SamplingParams, vocab: int | None) -> None:
        out += self.layout.pack(value.temperature, value.top_k, value.top_p, value.min_p)

    def read(self, r: _Reader, vocab: int | None) -> SamplingParams:
        temperature, top_k, top_p, min_p = r.unpack(self.layout)
        try:
            return SamplingParams(temperature, top_k, top_p, min_p)
        except ConfigError as exc:
            raise _Invalid(str(exc)) from None


class _Coded(_Kind):
    """A member of a one-byte coded enum (Scheme, Mode): its u8 code."""

    def __init__(self, enum: type[_WireEnum]) -> None:
        self.enum = enum

    def check(self, value: Any) -> _WireEnum:
        try:
            return self.enum(value)
        except ValueError:
            raise _Invalid(f"must be a {self.enum.__name__}, got {value!r}") from None

    def write(self, out: bytearray, value: _WireEnum, vocab: int | None) -> None:
        out.append(value.code)

    def read(self, r: _Reader, vocab: int | None) -> _WireEnum:
        code = _U8.read(r, vocab)
        try:
            return self.enum.from_code(code)
        except ConfigError as exc:
            raise _Invalid(str(exc)) from None


class _ErrorCodeKind(_Kind):
    """An ErrorCode as u16."""

    def check(self, value: Any) -> ErrorCode:
        try:
            return ErrorCode(value)
        except ValueError:
            raise _Invalid(f"unknown error code {value!r}") from None

    def write(self, out: bytearray, value: ErrorCode, vocab: int | None) -> None:
        _U16.write(out, value, vocab)

    def read(self, r: _Reader, vocab: int | None) -> ErrorCode:
        return self.check(_U16.read(r, vocab))


class _OptionalSparseF64(_Kind):
    """None or a float64 sparse record: u8 present; then u16 n (1..MAX_K),
    n u32 ids, n f64 probabilities (exact, not quantised)."""

    count = _Int("H", 1, MAX_K)

    def check(self, value: Any) -> SparseDist | None:
        if value is None:
            return None
        if not isinstance(value, SparseDist):
            raise _Invalid(f"must be a SparseDist or None, got {value!r}")
        self.count.check(len(value))
        if value.ids.min() < 0:
            raise _Invalid(f"token id {int(value.ids.min())} is negative")
        return value

    def write(self, out: bytearray, value: SparseDist | None, vocab: int | None) -> None:
        out.append(value is not None)
        if value is not None:
            _check_ids(value.ids, vocab)
            self.count.write(out, len(value), vocab)
            out += value.ids.astype("<u4").tobytes() + value.probs.astype("<f8").tobytes()

    def read(self, r: _Reader, vocab: int | None) -> SparseDist | None:
        if not _BOOL.read(r, vocab):
            return None
        n = self.count.read(r, vocab)
        ids = np.frombuffer(r.take(4 * n), dtype="<u4").astype(np.int64)
        probs = np.frombuffer(r.take(8 * n), dtype="<f8").astype(np.float64)
        if ids.max() >= MAX_VOCAB:
            raise _Invalid(f"token id {int(ids.max())} does not fit in int32")
        _check_ids(ids, vocab)
        try:
            return SparseDist(ids, probs)
        except CodecError as exc:
            raise _Invalid(str(exc)) from None


_PARAMS, _ERROR_CODE = _Params(), _ErrorCodeKind()
_SCHEME, _MODE = _Coded(Scheme), _Coded(Mode)
_OPTIONAL_TOKEN, _OPTIONAL_P = _OptionalToken(), _OptionalSparseF64()


def _wire(kind: _Kind) -> dict[str, _Kind]:
    """Field metadata: the field is in the payload, as ``kind``, in declaration order."""
    return {"wire": kind}


def _wire_fields(cls: type) -> tuple[tuple[str, _Kind], ...]:
    return tuple((f.name, f.metadata["wire"]) for f in fields(cls) if "wire" in f.metadata)


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base of every message: where it belongs, and how its payload travels."""

    TYPE: ClassVar[int]
    """The one-byte message type in the frame header."""

    session: int
    """The session this message belongs to (u32)."""
    epoch: int
    """The rollback epoch it was sent in (u32); every rollback bumps it."""
    start: int
    """The absolute token position it refers to (u32)."""

    def __post_init__(self) -> None:
        for name in ("session", "epoch", "start"):
            self._normalise(name, _U32)
        for name, kind in _wire_fields(type(self)):
            self._normalise(name, kind)
        self._validate()

    def _normalise(self, name: str, kind: _Kind) -> None:
        try:
            object.__setattr__(self, name, kind.check(getattr(self, name)))
        except _Invalid as exc:
            raise _error(type(self), name, exc) from None

    def _validate(self) -> None:
        """Checks across fields (run for built and for decoded messages alike)."""

    def payload(self, vocab: int | None = None) -> bytes:
        """The payload bytes (what follows the frame header)."""
        out = bytearray()
        self._write(out, vocab)
        return bytes(out)

    @classmethod
    def from_payload(
        cls,
        data: bytes | memoryview,
        *,
        session: int,
        epoch: int,
        start: int,
        vocab: int | None = None,
    ) -> Self:
        """The message whose header held (session, epoch, start) and whose payload is data.

        Every field is checked once, as it is read (the header's u32s need no
        check); only the checks across fields run again.
        """
        r = _Reader(data)
        values = cls._read(r, vocab)
        if r.left:
            raise ProtocolError(f"{cls.__name__}: {r.left} trailing byte(s) after the payload")
        msg = cls.__new__(cls)
        for name, value in (("session", session), ("epoch", epoch), ("start", start)):
            object.__setattr__(msg, name, value)
        for f in fields(cls):
            if f.name in values:
                object.__setattr__(msg, f.name, values[f.name])
            elif f.name not in ("session", "epoch", "start"):
                default = f.default_factory() if f.default_factory is not MISSING else f.default
                object.__setattr__(msg, f.name, default)
        msg._validate()
        return msg

    def _write(self, out: bytearray, vocab: int | None) -> None:
        for name, kind in _wire_fields(type(self)):
            try:
                kind.write(out, getattr(self, name), vocab)
            except _Invalid as exc:
                raise _error(type(self), name, exc) from None

    @classmethod
    def _read(cls, r: _Reader, vocab: int | None) -> dict[str, Any]:
        values = {}
        for name, kind in _wire_fields(cls):
            try:
                values[name] = kind.read(r, vocab)
            except _Invalid as exc:
                raise _error(cls, name, exc) from None
        return values


@dataclass(frozen=True, kw_only=True)
class Hello(Message):
    """Edge -> cloud, first: who the edge is and which vocabulary it speaks.

    The cloud checks the auth token and compares the vocabulary fingerprint
    with its model's (a mismatch is refused with a message naming the
    difference), then answers with a Welcome or an Error. Sampling, scheme and
    K are per generation (Start), not per connection.
    """

    TYPE: ClassVar[int] = 1
    vocab_fingerprint: VocabFingerprint = field(metadata=_wire(_Fingerprint()))
    auth_token: bytes = field(default=b"", metadata=_wire(_Blob(MAX_TOKEN_BYTES)))
    client_name: str = field(default="", metadata=_wire(_Text(64)))

    @property
    def vocab_size(self) -> int:
        return self.vocab_fingerprint.size


@dataclass(frozen=True, kw_only=True)
class Welcome(Message):
    """Cloud -> edge: the handshake succeeded; the limits the edge must respect.

    Every limit the cloud enforces is here, so the edge can refuse a request
    that cannot be served before sending it (and clamp what it may clamp).
    """

    TYPE: ClassVar[int] = 2
    server_name: str = field(default="", metadata=_wire(_Text(64)))
    max_block: int = field(metadata=_wire(_Int("H", 1, MAX_BLOCK)))
    """Most drafted tokens the cloud takes in one DraftBlock."""
    max_depth: int = field(metadata=_wire(_Int("H", 1)))
    """Most DraftBlocks the cloud keeps queued per generation (the pipeline depth)."""
    max_k: int = field(default=MAX_K, metadata=_wire(_Int("H", 1, MAX_K)))
    """Most entries of a generation's sparse records (its ``k``)."""
    max_prompt_tokens: int = field(metadata=_wire(_U32))
    """Longest prompt a Start may carry."""
    max_new_tokens: int = field(metadata=_wire(_U32))
    """Most tokens one generation may ask for."""
    context_size: int = field(metadata=_wire(_U32))
    """Most tokens a generation holds: prompt plus generated tokens."""
    max_generations: int = field(default=1, metadata=_wire(_Int("H", 1)))
    """Most generations open at once on this connection."""


@dataclass(frozen=True, kw_only=True)
class Start(Message):
    """Edge -> cloud: start generation ``session`` and prefill its prompt.

    ``start`` is the position of the first token to generate (the prompt's
    length). The generation's whole description travels here: ``seed`` keys
    all of its randomness; ``params``, ``scheme`` and ``k`` fix the sampling
    transform and what its messages carry; ``mode`` says whether the edge
    drafts (``pipeline``, ``sync``) or the cloud decodes alone (``cloud-only``:
    one Verdict per token, accepted 0, then a Bye). ``allow_inexact`` accepts
    ``split`` corrections from a truncated p (its support wider than ``k``);
    without it such a ``split`` generation is refused.
    """

    TYPE: ClassVar[int] = 3
    seed: int = field(metadata=_wire(_U64))
    max_new_tokens: int = field(metadata=_wire(_U32))
    mode: Mode = field(metadata=_wire(_MODE))
    scheme: Scheme = field(metadata=_wire(_SCHEME))
    params: SamplingParams = field(metadata=_wire(_PARAMS))
    k: int = field(default=8, metadata=_wire(_Int("H", 1, MAX_K)))
    allow_inexact: bool = field(default=False, metadata=_wire(_BOOL))
    prompt: tuple[int, ...] = field(metadata=_wire(_Tokens("I", 1, _U32.hi)))

    def _validate(self) -> None:
        if self.start != len(self.prompt):
            raise ProtocolError(
                f"Start.start: the first generated position is the prompt's length "
                f"{len(self.prompt)}, got {self.start}"
            )


@dataclass(frozen=True, kw_only=True)
class DraftBlock(Message):
    """Edge -> cloud: drafted tokens at positions start..start+n-1, to verify.

    What travels besides the ids depends on the scheme (DESIGN.md section 2):
    ``sparse-q`` the quantised q each token was drafted from (``q``, q16
    records), ``split`` q(x) of each token as a count out of 65536
    (``q_counts``, u16 count - 1 each), ``gumbel`` and ``greedy`` nothing.
    ``bonus`` asks for a bonus token when every drafted token is accepted
    (``sync`` sets it on every block that leaves room for one; the pipeline
    never does: the next block verifies that position). ``correction`` is the
    token at start - 1 when the edge decided it itself (the ``split`` scheme's
    correction, sampled on the edge); the cloud commits it before verifying.
    """

    TYPE: ClassVar[int] = 4
    scheme: Scheme = field(metadata=_wire(_SCHEME))
    bonus: bool = field(metadata=_wire(_BOOL))
    correction: int | None = field(default=None, metadata=_wire(_OPTIONAL_TOKEN))
    tokens: tuple[int, ...] = field(metadata=_wire(_Tokens("B", 1, MAX_BLOCK)))
    q: tuple[SparseDist, ...] = ()
    """``sparse-q`` only: the draft distribution of each token (quantised)."""
    q_counts: tuple[int, ...] = ()
    """``split`` only: q(x) * 65536 of each drafted token, in 1..65536."""

    def _validate(self) -> None:
        n = len(self.tokens)
        wants = {
            "q": n if self.scheme is Scheme.SPARSE_Q else 0,
            "q_counts": n if self.scheme is Scheme.SPLIT else 0,
        }
        for name, want in wants.items():
            value = tuple(getattr(self, name))
            if len(value) != want:
                raise ProtocolError(
                    f"DraftBlock.{name}: the {self.scheme.value} scheme sends {want} "
                    f"for {n} drafted tokens, got {len(value)}"
                )
            object.__setattr__(self, name, value)
        counts = []
        for j, count in enumerate(self.q_counts):
            try:
                counts.append(_int_in(count, 1, Q_ONE))
            except _Invalid as exc:
                raise _error(DraftBlock, "q_counts", _Invalid(str(exc), j)) from None
        object.__setattr__(self, "q_counts", tuple(counts))
        for j, q in enumerate(self.q):
            self._check_q(j, self.tokens[j], q)

    def _check_q(self, j: int, token: int, q: Any) -> None:
        where = f"DraftBlock.q[{j}] (position {self.start + j})"
        if not isinstance(q, SparseDist):
            raise ProtocolError(f"{where}: must be a SparseDist, got {q!r}")
        if len(q) > MAX_K:
            raise ProtocolError(f"{where}: {len(q)} entries, over the limit of {MAX_K}")
        try:
            _ = q.counts  # raises unless quantised to 1/65536
        except CodecError as exc:
            raise ProtocolError(f"{where}: {exc}") from None
        if q.prob(token) == 0.0:
            raise ProtocolError(f"{where}: drafted token {token} is not in its own q record")

    def _write(self, out: bytearray, vocab: int | None) -> None:
        vocab = _handshake_vocab(vocab)
        super()._write(out, vocab)
        for j, q in enumerate(self.q):
            try:
                out += q.to_q16(vocab)
            except (CodecError, ConfigError) as exc:
                raise ProtocolError(f"DraftBlock.q[{j}]: {exc}") from None
        for count in self.q_counts:
            _U16.write(out, count - 1, vocab)

    @classmethod
    def _read(cls, r: _Reader, vocab: int | None) -> dict[str, Any]:
        vocab = _handshake_vocab(vocab)
        values = super()._read(r, vocab)
        n = len(values["tokens"])
        if values["scheme"] is Scheme.SPARSE_Q:
            values["q"] = tuple(cls._read_q16(r, vocab, j) for j in range(n))
        elif values["scheme"] is Scheme.SPLIT:
            try:
                values["q_counts"] = tuple(_U16.read(r, vocab) + 1 for _ in range(n))
            except _Invalid as exc:
                raise _error(cls, "q_counts", exc) from None
        return values

    @staticmethod
    def _read_q16(r: _Reader, vocab: int, j: int) -> SparseDist:
        try:
            q, used = SparseDist.from_q16(r.rest(), vocab)
        except (CodecError, ConfigError) as exc:
            raise ProtocolError(f"DraftBlock.q[{j}]: {exc}") from None
        r.take(used)
        return q


def _handshake_vocab(vocab: int | None) -> int:
    if vocab is None:
        raise ProtocolError(
            "DraftBlock: the vocabulary size is not known yet (no handshake), "
            "so token ids and q16 records cannot be encoded or decoded"
        )
    return vocab


@dataclass(frozen=True, kw_only=True)
class Verdict(Message):
    """Cloud -> edge: the outcome of the DraftBlock sent at (epoch, start).

    ``accepted`` drafted tokens were kept (a prefix). ``token`` is the token at
    start + accepted: the correction at the first rejection, or the bonus when
    every token was accepted and the block asked for one; None when there is
    none (all accepted without a bonus, or a ``split`` rejection, whose
    correction the edge samples from ``p``).
    """

    TYPE: ClassVar[int] = 5
    accepted: int = field(metadata=_wire(_Int("H", 0, MAX_BLOCK)))
    token: int | None = field(metadata=_wire(_OPTIONAL_TOKEN))
    target_forwards: int = field(metadata=_wire(_U32))
    """Target forward passes this round cost (statistics)."""
    p: SparseDist | None = field(default=None, metadata=_wire(_OPTIONAL_P))
    """``split`` only, on a rejection: the target's top-K p at the rejected
    position, p's own float64 values (they sum to 1 minus the truncated mass)."""
    p_exact: bool = field(default=True, metadata=_wire(_BOOL))
    """False when p's support did not fit in the record, so the edge's
    correction is an approximation (DESIGN.md section 2)."""

    def _validate(self) -> None:
        if self.p is not None and self.token is not None:
            raise ProtocolError("Verdict.p: a verdict with p leaves the token to the edge")
        if self.p is None and not self.p_exact:
            raise ProtocolError("Verdict.p_exact: can be False only with p")


@dataclass(frozen=True, kw_only=True)
class Cancel(Message):
    """Edge -> cloud: stop generation ``session`` now (the edge gave up on it:
    an error, a deadline, its caller cancelled). The cloud drops its queued work,
    frees it and answers with a Bye."""

    TYPE: ClassVar[int] = 6
    reason: str = field(default="", metadata=_wire(_Text(256)))


@dataclass(frozen=True, kw_only=True)
class Error(Message):
    """Either way: the sender refuses something; ``message`` says what, for people."""

    TYPE: ClassVar[int] = 7
    code: ErrorCode = field(metadata=_wire(_ERROR_CODE))
    message: str = field(default="", metadata=_wire(_Text(1024)))


@dataclass(frozen=True, kw_only=True)
class Bye(Message):
    """Either way: the sender closes ``session``; nothing more will follow in it."""

    TYPE: ClassVar[int] = 8
    reason: str = field(default="", metadata=_wire(_Text(256)))


@dataclass(frozen=True, kw_only=True)
class Progress(Message):
    """Cloud -> edge: still working on generation ``session``: its context is
    evaluated up to position ``start``. Sent after each prompt chunk but the
    last, so an edge waiting for the first token of a long prompt hears from the
    cloud and its deadline measures silence, not prompt length."""

    TYPE: ClassVar[int] = 9


MESSAGE_TYPES: dict[int, type[Message]] = {
    m.TYPE: m for m in (Hello, Welcome, Start, DraftBlock, Verdict, Cancel, Error, Bye, Progress)
}
"""Every message class by its type code."""

MAX_HELLO_PAYLOAD = 2 + 0xFFFF + 2 + MAX_TOKEN_BYTES + 2 + 64
"""The largest payload a Hello can have (fingerprint, token and name at their limits):
a server reading nothing but a Hello needs no bigger frame."""
