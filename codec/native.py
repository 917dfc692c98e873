"""The native backend: the one module that calls the C kernels through cffi.

It checks parameters in Python where that is cheap (raising ``ConfigError``),
hands numpy arrays to C without copying, keeps one scratch buffer per thread
(grown to the largest vocabulary seen, so the drafter's hot path allocates no
work memory), and turns a non-zero C status into ``KernelError`` with a message
that names the problem. Same functions and exceptions as codec/reference.py.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ._kernels import ffi, lib
from .errors import ConfigError, KernelError
from .sampling import SamplingParams

MAX_K = int(lib.PICO_MAX_K)
Q_ONE = int(lib.PICO_Q_ONE)
MAX_VOCAB = 2**31
_U64_MAX = 2**64 - 1


class _Scratch(threading.local):
    """Per-thread buffers reused across calls."""

    def __init__(self) -> None:
        self.work = np.empty(0, dtype=np.uint8)
        self.work_ptr: Any = ffi.from_buffer("uint8_t[]", self.work)
        self.params = ffi.new("pico_sampling *")
        self.ids = np.empty(MAX_K, dtype=np.int32)
        self.counts = np.empty(MAX_K, dtype=np.uint32)
        self.ids_ptr = ffi.from_buffer("int32_t[]", self.ids)
        self.counts_ptr = ffi.from_buffer("uint32_t[]", self.counts)
        self.n = ffi.new("uint32_t *")
        self.size = ffi.new("size_t *")
        self.token = ffi.new("int32_t *")

    def work_for(self, vocab: int) -> tuple[Any, int]:
        """The scratch pointer and size for this vocabulary (grown if needed)."""
        need = int(lib.pico_work_size(vocab))
        if need > self.work.size:
            self.work = np.empty(need, dtype=np.uint8)
            self.work_ptr = ffi.from_buffer("uint8_t[]", self.work)
        return self.work_ptr, int(self.work.size)


_scratch = _Scratch()


def _raise(status: int, what: str) -> None:
    """Raise KernelError for a non-zero status, naming the call's context."""
    name = ffi.string(lib.pico_strerror(status)).decode()
    raise KernelError(status, f"{name}: {what}")


def _logits(logits: Any) -> tuple[Any, int]:
    """A C float pointer to a 1-D C-contiguous float32 row, and its length."""
    z = np.asarray(logits)
    if z.dtype != np.float32 or z.ndim != 1:
        raise ConfigError(
            f"logits must be a 1-D float32 array, got dtype {z.dtype} and shape {z.shape}"
        )
    if not z.flags.c_contiguous:
        raise ConfigError("logits must be C-contiguous (a row view, not a column slice)")
    return ffi.from_buffer("float[]", z), int(z.size)


def _params(params: SamplingParams) -> Any:
    p = _scratch.params
    p.temperature = params.temperature
    p.top_k = params.top_k
    p.top_p = params.top_p
    p.min_p = params.min_p
    return p


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ConfigError(f"top-K size k must be an integer in [1, {MAX_K}], got {k!r}")


def _u64(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= _U64_MAX:
        raise ConfigError(f"{name} must be an integer in [0, 2**64), got {v!r}")
    return int(v)


def _vocab(vocab: int) -> int:
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
        raise ConfigError(f"vocabulary size must be an integer, got {vocab!r}")
    if not 1 <= vocab <= MAX_VOCAB:
        raise ConfigError(f"vocabulary size must be in [1, 2**31], got {vocab}")
    return int(vocab)


def _row_context(vocab: int, params: SamplingParams) -> str:
    return f"a logits row of vocabulary size {vocab} with {params}"


def transform_topk(
    logits: np.ndarray, params: SamplingParams, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The drafter's quantised top-K q: ids int32[n], counts uint32[n] (rank order)."""
    _check_k(k)
    z, vocab = _logits(logits)
    work, work_size = _scratch.work_for(vocab)
    s = _scratch
    status = lib.pico_transform_topk(
        z, vocab, _params(params), k, work, work_size, s.ids_ptr, s.counts_ptr, s.n
    )
    if status:
        _raise(status, _row_context(vocab, params))
    n = int(s.n[0])
    return s.ids[:n].copy(), s.counts[:n].copy()


def transform_dense(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The transformed distribution p: float32[V] logits -> float64[V]."""
    z, vocab = _logits(logits)
    work, work_size = _scratch.work_for(vocab)
    out = np.empty(vocab, dtype=np.float64)
    status = lib.pico_transform_dense(
        z, vocab, _params(params), work, work_size, ffi.from_buffer("double[]", out)
    )
    if status:
        _raise(status, _row_context(vocab, params))
    return out


def gumbel_argmax(logits: np.ndarray, params: SamplingParams, key: int) -> int:
    """The id in S maximising x_i + gumbel(key, i) (ties: lowest id)."""
    z, vocab = _logits(logits)
    key = _u64("key", key)
    work, work_size = _scratch.work_for(vocab)
    status = lib.pico_gumbel_argmax(z, vocab, _params(params), key, work, work_size, _scratch.token)
    if status:
        _raise(status, _row_context(vocab, params))
    return int(_scratch.token[0])


def sparse_size(n: int, vocab: int) -> int:
    """Encoded size in bytes of a q16 record of n entries over this vocabulary."""
    vocab = _vocab(vocab)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_K:
        raise ConfigError(f"a q16 record holds 1 to {MAX_K} entries, got {n!r}")
    return int(lib.pico_sparse_size(n, vocab))


def sparse_encode(ids: np.ndarray, counts: np.ndarray, vocab: int) -> bytes:
    """The q16 bytes of ids int32[n] with counts uint32[n] (>= 1, sum 65536)."""
    ids = np.asarray(ids)
    counts = np.asarray(counts)
    if ids.ndim != 1 or ids.shape != counts.shape:
        raise ConfigError(
            f"ids and counts must be 1-D of one length, got {ids.shape}, {counts.shape}"
        )
    size = sparse_size(ids.size, vocab)
    if ids.min() < 0 or ids.max() >= vocab:
        raise KernelError(-1, f"invalid argument: a token id is outside a vocabulary of {vocab}")
    if counts.min() < 1 or counts.max() > Q_ONE:
        raise KernelError(-1, f"invalid argument: counts must be >= 1 and sum to {Q_ONE}")
    ids32 = np.ascontiguousarray(ids, dtype=np.int32)
    counts32 = np.ascontiguousarray(counts, dtype=np.uint32)
    out = bytearray(size)
    status = lib.pico_sparse_encode(
        ffi.from_buffer("int32_t[]", ids32),
        ffi.from_buffer("uint32_t[]", counts32),
        ids.size,
        vocab,
        ffi.from_buffer("uint8_t[]", out),
        size,
        _scratch.size,
    )
    if status:
        _raise(
            status,
            f"{ids.size} entries over a vocabulary of {vocab} (ids distinct, "
            f"counts >= 1 summing to {Q_ONE})",
        )
    return bytes(out)


def sparse_decode(
    buf: bytes | memoryview, vocab: int, cap: int = MAX_K
) -> tuple[np.ndarray, np.ndarray, int]:
    """One q16 record from the front of buf: ids int32[n], counts uint32[n], bytes used."""
    vocab = _vocab(vocab)
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ConfigError(f"decode capacity must be an integer >= 1, got {cap!r}")
    cap = min(int(cap), MAX_K)
    data = ffi.from_buffer("uint8_t[]", buf)
    s = _scratch
    status = lib.pico_sparse_decode(
        data, len(data), vocab, s.ids_ptr, s.counts_ptr, cap, s.n, s.size
    )
    if status:
        _raise(status, f"a q16 record of {len(data)} bytes over a vocabulary of {vocab}")
    n = int(s.n[0])
    return s.ids[:n].copy(), s.counts[:n].copy(), int(s.size[0])


def key(seed: int, position: int, purpose: int) -> int:
    """pico_key: the 64-bit key of the (seed, position, purpose) stream."""
    seed = _u64("seed", seed)
    position = _u64("position", position)
    if isinstance(purpose, bool) or not isinstance(purpose, (int, np.integer)):
        raise ConfigError(f"purpose must be an integer in [0, 2**32), got {purpose!r}")
    if not 0 <= purpose < 2**32:
        raise ConfigError(f"purpose must be an integer in [0, 2**32), got {purpose!r}")
    return int(lib.pico_key(seed, position, int(purpose)))


def uniforms(key: int, first: int, n: int) -> np.ndarray:
    """uniform(key, first + j) for j < n: float64[n] in (0, 1)."""
    key = _u64("key", key)
    first = _u64("first", first)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    out = np.empty(int(n), dtype=np.float64)
    lib.pico_uniforms(key, first, int(n), ffi.from_buffer("double[]", out))
    return out


def pico_exp(x: np.ndarray) -> np.ndarray:
    """pico_exp element by element (for tests): float64[...] -> float64[...]."""
    x = np.asarray(x, dtype=np.float64)
    return np.array([lib.pico_exp(v) for v in x.ravel().tolist()], dtype=np.float64).reshape(
        x.shape
    )
