"""The numpy reference of the kernels: the same definitions, bit for bit.

kernels/picospec_kernels.h defines the sampling transform, its quantised top-K,
the q16 sparse byte format and the keyed uniforms as exact sequences of IEEE-754
double operations; this module evaluates the same sequences with numpy (sums
only through ``np.cumsum``, which is sequential), so its outputs equal the C
kernels' byte for byte. It is the fallback backend when the C extension is not
built, and the oracle the native backend is tested against. It raises the same
exceptions, with the same status codes, as codec/native.py.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError, KernelError
from .sampling import SamplingParams

MAX_K = 256
"""Most entries a quantised top-K / q16 record holds (PICO_MAX_K)."""
Q_ONE = 65536
"""Fixed-point denominator of quantised probabilities (PICO_Q_ONE)."""
MAX_VOCAB = 2**31
"""Largest vocabulary: ids are int32."""

# pico_status codes (kernels/picospec_kernels.h)
E_ARG = -1
E_NONFINITE = -2
E_SPACE = -3
E_TRUNCATED = -4
E_CORRUPT = -5

# --- pico_exp -----------------------------------------------------------------

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SHIFTER = 6755399441055744.0  # 0x1.8p52
_SHIFTER_BITS = np.float64(_SHIFTER).view(np.uint64)
# C0..C13 = 1/n!, the same literals as kernels/exp.c
_COEFFS = (
    1.0,
    1.0,
    0.5,
    0.16666666666666666,
    0.041666666666666664,
    0.008333333333333333,
    0.001388888888888889,
    0.0001984126984126984,
    2.48015873015873e-05,
    2.7557319223985893e-06,
    2.755731922398589e-07,
    2.505210838544172e-08,
    2.08767569878681e-09,
    1.6059043836821613e-10,
)


def pico_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 as pico_exp defines it; float64[...] -> float64[...]."""
    x = np.asarray(x, dtype=np.float64)
    ok = x >= -700.0
    xc = np.where(ok, x, 0.0)
    t = xc * _LOG2E + _SHIFTER
    k = t - _SHIFTER
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _COEFFS[13])
    for c in _COEFFS[12::-1]:
        p = p * r + c
    with np.errstate(over="ignore"):
        kbits = t.view(np.uint64) - _SHIFTER_BITS  # k as two's complement
        scale = ((kbits + np.uint64(1023)) << np.uint64(52)).view(np.float64)
    return np.where(ok, p * scale, 0.0)


# --- the sampling transform ---------------------------------------------------


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ConfigError(f"top-K size k must be an integer in [1, {MAX_K}], got {k!r}")


def _logits(logits: np.ndarray) -> np.ndarray:
    """The row as float32[V], validated as the kernels do (V >= 1, finite or -inf)."""
    z = np.asarray(logits)
    if z.dtype != np.float32 or z.ndim != 1:
        raise ConfigError(
            f"logits must be a 1-D float32 array, got dtype {z.dtype} and shape {z.shape}"
        )
    if not z.flags.c_contiguous:
        raise ConfigError("logits must be C-contiguous (a row view, not a column slice)")
    if z.size == 0 or z.size > MAX_VOCAB:
        raise KernelError(E_ARG, f"invalid argument: vocabulary size {z.size}")
    if np.isnan(z).any() or np.isposinf(z).any():
        raise KernelError(E_NONFINITE, f"non-finite logits: NaN or +inf in a row of {z.size}")
    if np.isneginf(z).all():
        raise KernelError(E_NONFINITE, f"non-finite logits: all {z.size} logits are -inf")
    return z


def _striped_sum(w: np.ndarray) -> float:
    """The eight-lane striped sum of float64[V] (zeros stand for non-members)."""
    lanes = np.zeros(8, dtype=np.float64)
    if w.size:
        padded = np.zeros(-(-w.size // 8) * 8, dtype=np.float64)
        padded[: w.size] = w
        lanes = np.cumsum(padded.reshape(-1, 8), axis=0)[-1]
    z = lanes[0]
    for lane in lanes[1:]:
        z = z + lane
    return float(z)


def _support(
    z: np.ndarray, params: SamplingParams
) -> tuple[np.ndarray, np.ndarray, int, float, np.ndarray]:
    """Rank order int64[V], weights w float64[V], n_S, Z_S and x float64[V] (T > 0)."""
    order = np.argsort(-z, kind="stable")
    m = np.float64(z[order[0]])
    x = (z.astype(np.float64) - m) / params.temperature
    w = pico_exp(x)
    vocab = z.size
    n_k = vocab if params.top_k == 0 or params.top_k >= vocab else params.top_k
    ranked = w[order[:n_k]]
    cum = np.cumsum(ranked)
    n_p = n_m = n_k
    z_k = None
    if n_k == vocab:
        z_k = _striped_sum(w)
    else:
        member = np.zeros(vocab, dtype=np.float64)
        member[order[:n_k]] = w[order[:n_k]]
        z_k = _striped_sum(member)
    if params.top_p < 1.0:
        hit = np.flatnonzero(cum >= params.top_p * z_k)
        if hit.size:
            n_p = int(hit[0]) + 1
    if params.min_p > 0.0:
        low = np.flatnonzero(ranked < params.min_p)
        if low.size:
            n_m = int(low[0])
    n_s = min(n_k, n_p, n_m)
    z_s = z_k if n_s == n_k else float(cum[n_s - 1])
    return order, w, n_s, z_s, x


def transform_dense(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The transformed distribution p: float32[V] logits -> float64[V]."""
    z = _logits(logits)
    p = np.zeros(z.size, dtype=np.float64)
    if params.temperature == 0.0:
        p[int(np.argmax(z))] = 1.0
        return p
    order, w, n_s, z_s, _ = _support(z, params)
    kept = order[:n_s]
    p[kept] = w[kept] / z_s
    return p


def transform_topk(
    logits: np.ndarray, params: SamplingParams, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The drafter's quantised top-K q: ids int32[n], counts uint32[n] (rank order)."""
    _check_k(k)
    z = _logits(logits)
    if params.temperature == 0.0:
        return np.array([np.argmax(z)], dtype=np.int32), np.array([Q_ONE], dtype=np.uint32)
    order, w, n_s, _, _ = _support(z, params)
    n = min(k, n_s)
    kept = order[:n]
    wk = w[kept]
    zk = np.cumsum(wk)[-1]
    counts = np.floor((wk / zk) * 65536.0).astype(np.int64)
    rest = Q_ONE - int(counts.sum())
    counts += rest // n + (np.arange(n) < rest % n)
    nz = counts > 0
    return kept[nz].astype(np.int32), counts[nz].astype(np.uint32)


# --- sparse q16 byte format -----------------------------------------------------


def _id_bits(vocab: int) -> int:
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
        raise ConfigError(f"vocabulary size must be an integer, got {vocab!r}")
    if not 1 <= vocab <= MAX_VOCAB:
        raise ConfigError(f"vocabulary size must be in [1, 2**31], got {vocab}")
    return max(1, (int(vocab) - 1).bit_length())


def sparse_size(n: int, vocab: int) -> int:
    """Encoded size in bytes of a q16 record of n entries over this vocabulary."""
    bits = _id_bits(vocab)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_K:
        raise ConfigError(f"a q16 record holds 1 to {MAX_K} entries, got {n!r}")
    return 1 + (int(n) * (bits + 16) + 7) // 8


def sparse_encode(ids: np.ndarray, counts: np.ndarray, vocab: int) -> bytes:
    """The q16 bytes of ids int32[n] with counts uint32[n] (>= 1, sum 65536)."""
    ids = np.asarray(ids)
    counts = np.asarray(counts)
    if ids.ndim != 1 or ids.shape != counts.shape:
        raise ConfigError(
            f"ids and counts must be 1-D of one length, got {ids.shape}, {counts.shape}"
        )
    size = sparse_size(ids.size, vocab)
    bits = _id_bits(vocab)
    ids64 = ids.astype(np.int64)
    counts64 = counts.astype(np.int64)
    if ids64.min() < 0 or ids64.max() >= vocab:
        raise KernelError(E_ARG, f"invalid argument: a token id is outside a vocabulary of {vocab}")
    if np.unique(ids64).size != ids64.size:
        raise KernelError(E_ARG, "invalid argument: a token id is repeated")
    if counts64.min() < 1 or counts64.max() > Q_ONE or int(counts64.sum()) != Q_ONE:
        raise KernelError(E_ARG, f"invalid argument: counts must be >= 1 and sum to {Q_ONE}")
    width = bits + 16
    fields = ids64.astype(np.uint64) | ((counts64 - 1).astype(np.uint64) << np.uint64(bits))
    shifts = np.arange(width, dtype=np.uint64)
    stream = ((fields[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8).ravel()
    body = np.packbits(stream, bitorder="little").tobytes()
    out = bytes([ids.size - 1]) + body
    assert len(out) == size
    return out


def sparse_decode(
    buf: bytes | memoryview, vocab: int, cap: int = MAX_K
) -> tuple[np.ndarray, np.ndarray, int]:
    """One q16 record from the front of buf: ids int32[n], counts uint32[n], bytes used."""
    bits = _id_bits(vocab)
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ConfigError(f"decode capacity must be an integer >= 1, got {cap!r}")
    data = np.frombuffer(buf, dtype=np.uint8)
    if data.size < 1:
        raise KernelError(E_TRUNCATED, "truncated record: an empty buffer")
    n = int(data[0]) + 1
    if n > cap:
        raise KernelError(E_SPACE, f"buffer too small: the record has {n} entries, capacity {cap}")
    size = sparse_size(n, vocab)
    if data.size < size:
        raise KernelError(
            E_TRUNCATED, f"truncated record: {n} entries need {size} bytes, got {data.size}"
        )
    width = bits + 16
    stream = np.unpackbits(data[1:size], bitorder="little")
    if stream[n * width :].any():
        raise KernelError(E_CORRUPT, "corrupt record: non-zero padding bits")
    weights = np.uint64(1) << np.arange(width, dtype=np.uint64)
    fields = (stream[: n * width].reshape(n, width).astype(np.uint64) * weights).sum(
        axis=1, dtype=np.uint64
    )
    ids = (fields & np.uint64((1 << bits) - 1)).astype(np.int64)
    counts = (fields >> np.uint64(bits)).astype(np.int64) + 1
    if ids.max() >= vocab:
        raise KernelError(
            E_CORRUPT, f"corrupt record: a token id is outside a vocabulary of {vocab}"
        )
    if np.unique(ids).size != n:
        raise KernelError(E_CORRUPT, "corrupt record: a token id is repeated")
    if int(counts.sum()) != Q_ONE:
        raise KernelError(
            E_CORRUPT, f"corrupt record: counts sum to {int(counts.sum())}, not {Q_ONE}"
        )
    return ids.astype(np.int32), counts.astype(np.uint32), size


# --- keyed randomness -----------------------------------------------------------

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _u64(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= _M64:
        raise ConfigError(f"{name} must be an integer in [0, 2**64), got {v!r}")
    return int(v)


def key(seed: int, position: int, purpose: int) -> int:
    """pico_key: the 64-bit key of the (seed, position, purpose) stream."""
    seed = _u64("seed", seed)
    position = _u64("position", position)
    if isinstance(purpose, bool) or not isinstance(purpose, (int, np.integer)):
        raise ConfigError(f"purpose must be an integer in [0, 2**32), got {purpose!r}")
    if not 0 <= purpose < 2**32:
        raise ConfigError(f"purpose must be an integer in [0, 2**32), got {purpose!r}")
    inner = _mix(_mix(seed ^ 0x7069636F73706563) ^ int(purpose))
    return _mix((inner + position) & _M64)


def uniforms(key: int, first: int, n: int) -> np.ndarray:
    """uniform(key, first + j) for j < n: float64[n] in (0, 1)."""
    key = _u64("key", key)
    first = _u64("first", first)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    with np.errstate(over="ignore"):
        counter = np.arange(n, dtype=np.uint64) + np.uint64(first) + np.uint64(1)
        bits = _mix_array(np.uint64(key) + counter * np.uint64(_GOLDEN))
    return ((bits >> np.uint64(12)).astype(np.float64) + 0.5) * 2.0**-52


# --- Gumbel-max -----------------------------------------------------------------


def gumbel_argmax(logits: np.ndarray, params: SamplingParams, key: int) -> int:
    """The id in S maximising x_i + gumbel(key, i) (ties: lowest id)."""
    z = _logits(logits)
    key = _u64("key", key)
    if params.temperature == 0.0:
        return int(np.argmax(z))
    order, _, n_s, _, x = _support(z, params)
    members = np.sort(order[:n_s])
    u = uniforms(key, 0, z.size)[members]
    scores = x[members] + -np.log(-np.log(u))
    return int(members[int(np.argmax(scores))])
