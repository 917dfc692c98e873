"""The C kernels against their numpy reference: identical results, bit for bit.

Tests that need the native extension are skipped when it is not built, unless
PICOSPEC_KERNELS=native (CI), where importing picospec.codec.ops already fails
loudly. Properties that hold for any backend run on every available backend.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picospec.codec import ops, reference
from picospec.codec.errors import CodecError, ConfigError, KernelError
from picospec.codec.sampling import SamplingParams

NATIVE_REQUIRED = os.environ.get("PICOSPEC_KERNELS") == "native"
HAVE_NATIVE = ops.BACKEND == "native"

needs_native = pytest.mark.skipif(
    not (HAVE_NATIVE or NATIVE_REQUIRED),
    reason="the C extension is not built (pip install -e .)",
)

BACKENDS = ["reference", pytest.param("native", marks=needs_native)]

E_ARG, E_NONFINITE, E_SPACE, E_TRUNCATED, E_CORRUPT = -1, -2, -3, -4, -5


def backend(name: str):
    if name == "reference":
        return reference
    from picospec.codec import native

    return native


@pytest.fixture
def native():
    return backend("native")


# --- builders -----------------------------------------------------------------


def row(vocab: int, kind: str, seed: int) -> np.ndarray:
    """A float32 logits row: normal, with ties, with -inf masks, or one finite."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(vocab) * rng.choice([0.3, 2.0, 6.0])).astype(np.float32)
    if kind == "ties":
        z = np.round(z).astype(np.float32)
    elif kind == "masked":
        z[rng.random(vocab) < 0.5] = -np.inf
        z[rng.integers(vocab)] = 1.0
    elif kind == "one-finite":
        z[:] = -np.inf
        z[rng.integers(vocab)] = 0.0
    elif kind == "flat":
        z[:] = 0.25
    return z


def same_topk(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return (
        a[0].dtype == b[0].dtype == np.int32
        and a[1].dtype == b[1].dtype == np.uint32
        and np.array_equal(a[0], b[0])
        and np.array_equal(a[1], b[1])
    )


PARAM_GRID = [
    SamplingParams(t, k, p, m)
    for t, k, p, m in itertools.product(
        [0.0, 0.5, 0.8, 2.0], [0, 1, 3, 40, 300], [1.0, 0.95, 0.3, 0.01], [0.0, 0.05, 0.6]
    )
]

params_strategy = st.builds(
    SamplingParams,
    temperature=st.one_of(st.sampled_from([0.0, 0.8, 1.0]), st.floats(1e-3, 100.0)),
    top_k=st.one_of(st.sampled_from([0, 1]), st.integers(0, 400)),
    top_p=st.one_of(st.just(1.0), st.floats(1e-6, 1.0)),
    min_p=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
)


# --- pico_exp -----------------------------------------------------------------


def test_exp_coefficients_are_inverse_factorials() -> None:
    assert all(c == 1.0 / math.factorial(n) for n, c in enumerate(reference._COEFFS))


@pytest.mark.parametrize("name", BACKENDS)
def test_exp_of_zero_is_exactly_one(name: str) -> None:
    assert backend(name).pico_exp(np.array([0.0, -0.0])).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("name", BACKENDS)
def test_exp_is_close_to_math_exp(name: str) -> None:
    x = -np.random.default_rng(1).random(20000) * 700.0
    got = backend(name).pico_exp(x)
    want = np.array([math.exp(v) for v in x])
    assert np.max(np.abs(got / want - 1.0)) < 1e-15


@pytest.mark.parametrize("name", BACKENDS)
def test_exp_is_zero_outside_its_domain(name: str) -> None:
    x = np.array([-700.0000001, -701.0, -1e300, -np.inf, np.nan])
    assert backend(name).pico_exp(x).tolist() == [0.0] * 5
    assert backend(name).pico_exp(np.array([-700.0]))[0] > 0.0


@needs_native
def test_exp_native_equals_reference(native) -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([-rng.random(50000) * 720.0, -rng.random(5000), [-700.0, -0.0, -np.inf]])
    assert np.array_equal(native.pico_exp(x), reference.pico_exp(x))


# --- the transform: native == reference ----------------------------------------


@needs_native
@pytest.mark.parametrize("vocab", [1, 2, 7, 8, 9, 300, 5000])
@pytest.mark.parametrize("kind", ["normal", "ties", "masked", "one-finite", "flat"])
def test_transform_native_equals_reference_on_param_grid(native, vocab: int, kind: str) -> None:
    z = row(vocab, kind, seed=vocab)
    for p in PARAM_GRID:
        for k in (1, 8, 256):
            assert same_topk(native.transform_topk(z, p, k), reference.transform_topk(z, p, k)), (
                p,
                k,
            )
        assert np.array_equal(native.transform_dense(z, p), reference.transform_dense(z, p)), p
        key = reference.key(vocab, 7, 5)
        assert native.gumbel_argmax(z, p, key) == reference.gumbel_argmax(z, p, key), p


@needs_native
@pytest.mark.slow
@pytest.mark.parametrize("vocab", [50000, 262144])
@pytest.mark.parametrize("kind", ["normal", "ties", "masked"])
def test_transform_native_equals_reference_on_large_rows(native, vocab: int, kind: str) -> None:
    z = row(vocab, kind, seed=vocab + 1)
    grid = [
        SamplingParams(0.0),
        SamplingParams(0.8),
        SamplingParams(0.8, top_p=0.95),
        SamplingParams(0.8, top_p=0.999),
        SamplingParams(1.0, top_k=40, top_p=0.9, min_p=0.05),
        SamplingParams(1.0, top_k=1000, top_p=0.95),
        SamplingParams(2.0, top_k=1),
        SamplingParams(1.5, min_p=0.001),
    ]
    for p in grid:
        assert same_topk(native.transform_topk(z, p, 8), reference.transform_topk(z, p, 8)), p
        assert np.array_equal(native.transform_dense(z, p), reference.transform_dense(z, p)), p
        key = reference.key(1, vocab, 5)
        assert native.gumbel_argmax(z, p, key) == reference.gumbel_argmax(z, p, key), p


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    vocab=st.integers(1, 3000),
    kind=st.sampled_from(["normal", "ties", "masked", "one-finite", "flat"]),
    seed=st.integers(0, 2**32 - 1),
    params=params_strategy,
    k=st.integers(1, 256),
)
def test_transform_native_equals_reference_on_random_rows(
    vocab: int, kind: str, seed: int, params: SamplingParams, k: int
) -> None:
    native = backend("native")
    z = row(vocab, kind, seed)
    assert same_topk(native.transform_topk(z, params, k), reference.transform_topk(z, params, k))
    assert np.array_equal(native.transform_dense(z, params), reference.transform_dense(z, params))
    key = seed * 7919
    assert native.gumbel_argmax(z, params, key) == reference.gumbel_argmax(z, params, key)


@needs_native
def test_transform_treats_negative_zero_as_zero(native) -> None:
    z = np.array([-0.0, 0.0, -0.0, -1.0], dtype=np.float32)
    for p in (SamplingParams(0.0), SamplingParams(1.0, top_p=0.5), SamplingParams(1.0, top_k=2)):
        assert same_topk(native.transform_topk(z, p, 8), reference.transform_topk(z, p, 8))
        assert np.array_equal(native.transform_dense(z, p), reference.transform_dense(z, p))
    assert native.transform_topk(z, SamplingParams(0.0), 8)[0].tolist() == [0]


# --- the transform: properties on every backend ---------------------------------


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("kind", ["normal", "ties", "masked"])
def test_topk_counts_are_positive_and_sum_to_q_one(name: str, kind: str) -> None:
    impl = backend(name)
    z = row(2000, kind, seed=3)
    for p in PARAM_GRID[::5]:
        ids, counts = impl.transform_topk(z, p, 16)
        assert 1 <= ids.size <= 16
        assert counts.min() >= 1 and int(counts.sum()) == 65536
        assert np.unique(ids).size == ids.size
        ranked = sorted(ids.tolist(), key=lambda i: (-z[i], i))
        assert ids.tolist() == ranked


@pytest.mark.parametrize("name", BACKENDS)
def test_greedy_keeps_the_lowest_id_among_equal_maxima(name: str) -> None:
    impl = backend(name)
    z = np.array([1.0, 3.0, 3.0, -np.inf, 2.0], dtype=np.float32)
    for p in (SamplingParams(0.0), SamplingParams(1.0, top_k=1)):
        ids, counts = impl.transform_topk(z, p, 8)
        assert ids.tolist() == [1] and counts.tolist() == [65536]
        assert impl.transform_dense(z, p).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
        assert impl.gumbel_argmax(z, p, 12345) == 1


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("kind", ["normal", "ties", "masked", "flat"])
def test_dense_sums_to_one(name: str, kind: str) -> None:
    impl = backend(name)
    z = row(3000, kind, seed=4)
    for p in PARAM_GRID[::3]:
        probs = impl.transform_dense(z, p)
        assert probs.dtype == np.float64 and probs.shape == z.shape
        assert abs(math.fsum(probs.tolist()) - 1.0) < 1e-12
        assert probs[np.isneginf(z)].max(initial=0.0) == 0.0


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("kind", ["normal", "ties", "masked"])
def test_topk_is_the_dense_output_quantised(name: str, kind: str) -> None:
    """The kept ids lead S in rank order and their counts quantise p renormalised."""
    impl = backend(name)
    z = row(1000, kind, seed=5)
    for p in PARAM_GRID:
        if p.temperature == 0.0:
            continue
        k = 12
        ids, counts = impl.transform_topk(z, p, k)
        probs = impl.transform_dense(z, p)
        support = sorted(np.flatnonzero(probs).tolist(), key=lambda i: (-z[i], i))
        lead = support[:k]
        exact = probs[lead] / probs[lead].sum() * 65536.0
        by_id = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        assert set(by_id) <= set(lead), p
        for i, e in zip(lead, exact, strict=True):
            assert abs(by_id.get(i, 0) - e) < 2.0, (p, i)


@pytest.mark.parametrize("name", BACKENDS)
def test_gumbel_samples_follow_the_dense_distribution(name: str) -> None:
    impl = backend(name)
    z = np.array([0.0, 1.0, -1.0, 0.5, -np.inf, 0.9], dtype=np.float32)
    p = SamplingParams(1.0, top_p=0.8)
    probs = impl.transform_dense(z, p)
    trials = 6000
    hits = np.bincount(
        [impl.gumbel_argmax(z, p, reference.key(9, i, 5)) for i in range(trials)], minlength=6
    )
    sd = np.sqrt(probs * (1 - probs) / trials)
    assert np.all(np.abs(hits / trials - probs) <= 5 * sd + 1e-12)


# --- errors: the same on both backends -----------------------------------------


BAD_ROWS = {
    "nan": (np.array([0.0, np.nan], dtype=np.float32), E_NONFINITE),
    "plus-inf": (np.array([0.0, np.inf], dtype=np.float32), E_NONFINITE),
    "all-minus-inf": (np.full(9, -np.inf, dtype=np.float32), E_NONFINITE),
    "empty": (np.zeros(0, dtype=np.float32), E_ARG),
}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_logits_raise_kernel_error_with_the_status(name: str, case: str) -> None:
    impl = backend(name)
    z, status = BAD_ROWS[case]
    calls = [
        lambda p: impl.transform_topk(z, p, 8),
        lambda p: impl.transform_dense(z, p),
        lambda p: impl.gumbel_argmax(z, p, 1),
    ]
    for call, p in itertools.product(calls, (SamplingParams(0.0), SamplingParams(0.7, top_p=0.9))):
        with pytest.raises(KernelError) as info:
            call(p)
        assert info.value.status == status
        assert str(len(z)) in str(info.value)


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_parameters_raise_config_error(name: str) -> None:
    impl = backend(name)
    z = np.zeros(5, dtype=np.float32)
    p = SamplingParams()
    for k in (0, 257, -1, 2.5, True):
        with pytest.raises(ConfigError):
            impl.transform_topk(z, p, k)
    for bad in (z.astype(np.float64), z.reshape(1, 5), np.zeros(10, np.float32)[::2]):
        with pytest.raises(ConfigError):
            impl.transform_topk(bad, p, 8)
    for args in ((-1, 0, 1), (2**64, 0, 1), (0, -1, 1), (0, 0, 2**32)):
        with pytest.raises(ConfigError):
            impl.key(*args)
    with pytest.raises(ConfigError):
        impl.uniforms(2**64, 0, 1)
    with pytest.raises(ConfigError):
        impl.gumbel_argmax(z, p, -1)
    for n, vocab in ((0, 10), (257, 10), (1, 0), (1, 2**31 + 1)):
        with pytest.raises(ConfigError):
            impl.sparse_size(n, vocab)


@needs_native
def test_logits_may_be_any_float32_buffer(native) -> None:
    z = row(100, "normal", seed=6)
    p = SamplingParams(0.8, top_p=0.9)
    want = reference.transform_topk(z, p, 8)
    assert same_topk(native.transform_topk(z.data, p, 8), want)
    assert same_topk(native.transform_topk(z.view(np.uint8).view(np.float32), p, 8), want)


@needs_native
def test_native_is_thread_safe(native) -> None:
    rows = [row(v, "normal", seed=v) for v in (10, 5000, 70000, 300)]
    p = SamplingParams(0.8, top_k=50, top_p=0.9)
    want = [reference.transform_topk(z, p, 8) for z in rows]
    bad: list[int] = []

    def work(i: int) -> None:
        for _ in range(30):
            if not same_topk(native.transform_topk(rows[i], p, 8), want[i]):
                bad.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


# --- sparse q16 format ----------------------------------------------------------


def record(rng: np.random.Generator, n: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """A valid record: n distinct ids below vocab, counts >= 1 summing to 65536."""
    ids = rng.choice(vocab, size=n, replace=False).astype(np.int32)
    counts = (rng.multinomial(65536 - n, np.ones(n) / n) + 1).astype(np.uint32)
    return ids, counts


VOCABS = [1, 2, 7, 8, 9, 256, 257, 50000, 262144, 2**31]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("vocab", VOCABS)
def test_sparse_round_trip_is_exact(name: str, vocab: int) -> None:
    impl = backend(name)
    rng = np.random.default_rng(vocab % 1000)
    for n in sorted({1, 2, 3, 8, 255, 256} & set(range(1, min(vocab, 256) + 1))):
        ids, counts = record(rng, n, vocab)
        buf = impl.sparse_encode(ids, counts, vocab)
        assert (
            len(buf)
            == impl.sparse_size(n, vocab)
            == 1 + (n * (max(1, (vocab - 1).bit_length()) + 16) + 7) // 8
        )
        got_ids, got_counts, used = impl.sparse_decode(buf + b"\xff\x00", vocab)
        assert used == len(buf)
        assert got_ids.dtype == np.int32 and got_counts.dtype == np.uint32
        assert np.array_equal(got_ids, ids) and np.array_equal(got_counts, counts)


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    vocab=st.sampled_from(VOCABS) | st.integers(1, 2**31),
    n=st.integers(1, 256),
    seed=st.integers(0, 2**32 - 1),
)
def test_sparse_encode_native_equals_reference(vocab: int, n: int, seed: int) -> None:
    n = min(n, vocab)
    ids, counts = record(np.random.default_rng(seed), n, vocab)
    native = backend("native")
    assert native.sparse_encode(ids, counts, vocab) == reference.sparse_encode(ids, counts, vocab)
    assert native.sparse_size(n, vocab) == reference.sparse_size(n, vocab)


@pytest.mark.parametrize("name", BACKENDS)
def test_sparse_encode_refuses_what_decode_would(name: str) -> None:
    impl = backend(name)
    cases = [
        ([1, 1], [65535, 1], 10),
        ([1, 10], [65535, 1], 10),
        ([-1, 2], [65535, 1], 10),
        ([1, 2], [65535, 2], 10),
        ([1, 2], [65536, 0], 10),
    ]
    for ids, counts, vocab in cases:
        with pytest.raises(KernelError) as info:
            impl.sparse_encode(np.array(ids, np.int32), np.array(counts, np.uint32), vocab)
        assert info.value.status == E_ARG


@pytest.mark.parametrize("name", BACKENDS)
def test_sparse_decode_reports_each_fault(name: str) -> None:
    impl = backend(name)
    buf = impl.sparse_encode(
        np.array([5, 3, 0], np.int32), np.array([60000, 5000, 536], np.uint32), 7
    )
    assert buf == bytes([2, 253, 82, 223, 225, 4, 46, 4, 0])

    def status(data: bytes, vocab: int = 7, cap: int = 256) -> int:
        with pytest.raises(KernelError) as info:
            impl.sparse_decode(data, vocab, cap)
        return info.value.status

    for cut in range(len(buf)):
        assert status(buf[:cut]) == E_TRUNCATED
    assert status(buf, cap=2) == E_SPACE
    assert status(buf, vocab=5) == E_CORRUPT
    assert status(buf[:-1] + b"\x80") == E_CORRUPT
    assert status(bytes([buf[0], (buf[1] & ~7) | 3]) + buf[2:]) == E_CORRUPT
    assert status(buf[:2] + bytes([buf[2] ^ 1]) + buf[3:]) == E_CORRUPT


def decode_outcome(impl, data: bytes, vocab: int, cap: int) -> tuple:
    """What decoding gives: ('ok', ids, counts, used) or ('error', status)."""
    try:
        ids, counts, used = impl.sparse_decode(data, vocab, cap)
    except KernelError as e:
        return ("error", e.status)
    assert counts.min() >= 1 and int(counts.sum()) == 65536
    assert np.unique(ids).size == ids.size and int(ids.max()) < vocab
    return ("ok", tuple(ids.tolist()), tuple(counts.tolist()), used)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600), vocab=st.integers(1, 2**31), cap=st.integers(1, 300))
def test_sparse_decode_of_random_bytes_never_crashes(data: bytes, vocab: int, cap: int) -> None:
    outcomes = {decode_outcome(reference, data, vocab, cap)}
    if HAVE_NATIVE or NATIVE_REQUIRED:
        outcomes.add(decode_outcome(backend("native"), data, vocab, cap))
    assert len(outcomes) == 1


@settings(max_examples=400, deadline=None)
@given(
    vocab=st.sampled_from(VOCABS),
    n=st.integers(1, 256),
    seed=st.integers(0, 2**32 - 1),
    flips=st.lists(st.integers(0, 10**6), min_size=1, max_size=4),
    cut=st.integers(0, 10**6),
    tail=st.binary(max_size=8),
)
def test_sparse_decode_of_mutated_records_never_crashes(
    vocab: int, n: int, seed: int, flips: list[int], cut: int, tail: bytes
) -> None:
    n = min(n, vocab)
    buf = bytearray(reference.sparse_encode(*record(np.random.default_rng(seed), n, vocab), vocab))
    for f in flips:
        bit = f % (8 * len(buf))
        buf[bit // 8] ^= 1 << (bit % 8)
    data = bytes(buf[: len(buf) - cut % 3] if cut % 2 else buf) + tail
    outcomes = {decode_outcome(reference, data, vocab, 256)}
    if HAVE_NATIVE or NATIVE_REQUIRED:
        outcomes.add(decode_outcome(backend("native"), data, vocab, 256))
    assert len(outcomes) == 1


@pytest.mark.parametrize("name", BACKENDS)
def test_sparse_decode_accepts_memoryview_and_raises_codec_errors(name: str) -> None:
    impl = backend(name)
    buf = impl.sparse_encode(np.array([3], np.int32), np.array([65536], np.uint32), 50)
    ids, counts, used = impl.sparse_decode(memoryview(b"xx" + buf)[2:], 50)
    assert ids.tolist() == [3] and counts.tolist() == [65536] and used == len(buf)
    with pytest.raises(CodecError):
        impl.sparse_decode(b"", 50)


# --- keyed randomness -----------------------------------------------------------


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    position=st.integers(0, 2**64 - 1),
    purpose=st.integers(0, 2**32 - 1),
    first=st.integers(0, 2**64 - 1),
    n=st.integers(0, 300),
)
def test_keys_and_uniforms_native_equal_reference(
    seed: int, position: int, purpose: int, first: int, n: int
) -> None:
    native = backend("native")
    key = native.key(seed, position, purpose)
    assert key == reference.key(seed, position, purpose)
    assert np.array_equal(native.uniforms(key, first, n), reference.uniforms(key, first, n))


@pytest.mark.parametrize("name", BACKENDS)
def test_keyed_values_match_the_known_answers(name: str) -> None:
    impl = backend(name)
    key = impl.key(1, 2, 3)
    assert key == 0x29B8940F969E33B4
    assert impl.key(0, 0, 0) == 0xEF3A6A52052FB9FF
    assert impl.uniforms(key, 0, 3).tolist() == [
        0.7242802594324654,
        0.15315147774596938,
        0.8270631051342311,
    ]


@pytest.mark.parametrize("name", BACKENDS)
def test_a_uniform_depends_only_on_seed_position_purpose_and_index(name: str) -> None:
    impl = backend(name)
    key = impl.key(42, 1000, 2)
    block = impl.uniforms(key, 0, 64)
    singles = [impl.uniforms(impl.key(42, 1000, 2), i, 1)[0] for i in range(64)]
    assert block.tolist() == singles
    assert np.array_equal(impl.uniforms(key, 10, 20), block[10:30])
    others = [impl.key(43, 1000, 2), impl.key(42, 1001, 2), impl.key(42, 1000, 3)]
    assert len({key, *others}) == 4
    for other in others:
        assert not np.array_equal(impl.uniforms(other, 0, 64), block)


@pytest.mark.parametrize("name", BACKENDS)
def test_uniforms_lie_strictly_inside_the_unit_interval(name: str) -> None:
    u = backend(name).uniforms(backend(name).key(5, 6, 7), 2**64 - 1000, 100000)
    assert u.dtype == np.float64 and u.min() > 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01


# --- backend selection ----------------------------------------------------------


def ops_in_subprocess(choice: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = prelude + "import picospec.codec.ops as ops; print(ops.BACKEND)"
    env = {**os.environ, "PICOSPEC_KERNELS": choice}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_reference_backend_is_chosen_on_request() -> None:
    result = ops_in_subprocess("reference")
    assert result.returncode == 0 and result.stdout.strip() == "reference"


def test_auto_falls_back_to_the_reference_without_the_extension() -> None:
    block = "import sys; sys.modules['picospec.codec._kernels'] = None\n"
    result = ops_in_subprocess("auto", block)
    assert result.returncode == 0 and result.stdout.strip() == "reference"


def test_native_without_the_extension_fails_with_a_build_hint() -> None:
    block = "import sys; sys.modules['picospec.codec._kernels'] = None\n"
    result = ops_in_subprocess("native", block)
    assert result.returncode != 0 and "pip install -e ." in result.stderr


def test_unknown_backend_choice_is_refused() -> None:
    result = ops_in_subprocess("fortran")
    assert result.returncode != 0 and "PICOSPEC_KERNELS" in result.stderr
