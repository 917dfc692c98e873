"""``picospec bench codec``: the drafter's per-token codec work, native vs numpy.

The job timed is what the drafter does on every token: one full-vocabulary
logits row -> sampling transform -> quantised top-K -> q16 bytes. Three
implementations are compared in the same run, on the same rows:

* native: the C kernels (``codec.native``);
* numpy: the fastest numpy implementation of the same job we could write
  (argpartition for the top K, softmax over the kept entries, vectorised
  quantisation, integer bit-packing);
* reference: ``codec.reference``, the bit-exact numpy model of the kernels.

Before timing, every row is validated: native and reference produce identical
bytes, and the numpy baseline keeps the same ids with the same counts.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from picospec.codec import reference
from picospec.codec.errors import ConfigError
from picospec.codec.sampling import SamplingParams
from picospec.codec.sparse import Q_ONE

PROMPT = (
    "A warehouse robot must move 48 boxes from dock A to shelf C. It can carry 5 boxes "
    "per trip and each round trip takes 3 minutes. Explain step by step how long the job takes."
)


def numpy_topk_q16(logits: np.ndarray, temperature: float, k: int, vocab: int) -> bytes:
    """The argpartition baseline: transform (temperature only) + top-K + q16 bytes."""
    idx = np.argpartition(logits, logits.size - k)[-k:]
    z = logits[idx]
    order = np.lexsort((idx, -z))
    idx, z = idx[order], z[order].astype(np.float64)
    w = np.exp((z - z[0]) / temperature)
    counts = np.floor(w / w.sum() * Q_ONE).astype(np.int64)
    short, n = Q_ONE - int(counts.sum()), counts.size
    counts += short // n
    counts[: short % n] += 1
    keep = counts > 0
    idx, counts = idx[keep], counts[keep]
    bits = max(1, (vocab - 1).bit_length())
    shifts = np.arange(idx.size, dtype=object) * (bits + 16)
    words = idx.astype(object) | ((counts - 1).astype(object) << bits)
    packed = int(np.sum(words << shifts)) if idx.size > 1 else int(words[0])
    nbytes = (idx.size * (bits + 16) + 7) // 8
    return bytes([idx.size - 1]) + packed.to_bytes(nbytes, "little")


def synthetic_rows(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    """Logit rows shaped like a language model's: a broad normal bulk and a
    heavy head of a few dozen plausible tokens."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(0.0, 2.0, size=(n, vocab)).astype(np.float32)
    for row in rows:
        head = rng.choice(vocab, size=32, replace=False)
        row[head] += rng.exponential(4.0, size=32).astype(np.float32) + 6.0
    return rows


def model_rows(path: str, n: int) -> np.ndarray:
    """n real logits rows: the model's own greedy continuation of a prompt."""
    from picospec.runtime.llamacpp import open_model

    with open_model(path, n_ctx=512, n_batch=128) as m:
        tokens = m.weights.tokenize(PROMPT)
        m.decode(tokens, 0)
        rows = np.empty((n, m.vocab_size), dtype=np.float32)
        for i in range(n):
            rows[i] = m.logits()
            nxt = int(np.argmax(rows[i]))
            m.decode([nxt], len(tokens))
            tokens.append(nxt)
    return rows


def _resolve_model(model: str) -> str | None:
    if model == "synthetic":
        return None
    if model != "auto":
        return model
    from picospec.runtime.models import PAIRS, cache_dir

    path = cache_dir() / PAIRS["gemma3"].target_file
    return str(path) if path.is_file() else None


def _time(fn: Any, rows: np.ndarray, repeats: int) -> float:
    """Best-of-repeats mean microseconds per row."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for row in rows:
            fn(row)
        best = min(best, (time.perf_counter() - t0) / len(rows))
    return best * 1e6


def run(
    *,
    vocab: int = 262_144,
    k: int = 8,
    rows: int = 32,
    temperature: float = 0.8,
    top_p: float = 1.0,
    model: str = "auto",
    repeats: int = 5,
) -> dict[str, Any]:
    try:
        from picospec.codec import native
    except ImportError as e:
        raise ConfigError(f"the C kernels are not built ({e}); run `pip install -e .`") from e
    path = _resolve_model(model)
    data = model_rows(path, rows) if path else synthetic_rows(rows, vocab)
    vocab = data.shape[1]
    params = SamplingParams(temperature=temperature, top_p=top_p)

    def run_native(row: np.ndarray) -> bytes:
        return native.sparse_encode(*native.transform_topk(row, params, k), vocab)

    def run_reference(row: np.ndarray) -> bytes:
        return reference.sparse_encode(*reference.transform_topk(row, params, k), vocab)

    def run_numpy(row: np.ndarray) -> bytes:
        return numpy_topk_q16(row, temperature, k, vocab)

    # Validate before timing.
    sizes = []
    for i, row in enumerate(data):
        got = run_native(row)
        if got != run_reference(row):
            raise AssertionError(f"row {i}: native and reference bytes differ")
        if top_p == 1.0:
            ids, counts, _ = reference.sparse_decode(got, vocab)
            ids_np, counts_np, _ = reference.sparse_decode(run_numpy(row), vocab)
            # np.exp and the kernels' exp may differ in the last bit: counts by one at most.
            if not np.array_equal(ids, ids_np) or np.abs(counts.astype(int) - counts_np).max() > 1:
                raise AssertionError(f"row {i}: the numpy baseline disagrees with the kernels")
        sizes.append(len(got))

    native_us = _time(run_native, data, repeats)
    numpy_us = _time(run_numpy, data, repeats) if top_p == 1.0 else None
    reference_us = _time(run_reference, data, max(1, repeats // 2))
    return {
        "rows_source": f"{Path(path).name} logits" if path else "synthetic",
        "vocab": vocab,
        "k": k,
        "rows": len(data),
        "temperature": temperature,
        "top_p": top_p,
        "native_us_per_row": round(native_us, 2),
        "numpy_us_per_row": round(numpy_us, 2) if numpy_us else None,
        "reference_us_per_row": round(reference_us, 2),
        "speedup": round(numpy_us / native_us, 2) if numpy_us else None,
        "speedup_vs_reference": round(reference_us / native_us, 2),
        "bytes_per_position": round(float(np.mean(sizes)), 2),
        "dense_fp32_bytes": 4 * vocab,
        "compression": round(4 * vocab / float(np.mean(sizes)), 1),
        "validated": True,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }


def render(r: dict[str, Any]) -> str:
    """A short human-readable report of ``run``'s result."""
    lines = [
        f"codec benchmark on {r['rows']} rows of {r['rows_source']} "
        f"(V={r['vocab']:,}, K={r['k']}, T={r['temperature']}, top-p={r['top_p']}), one core",
        "  validated: native == reference bytes on every row"
        + (
            ", numpy baseline keeps the same tokens (counts within 1)"
            if r["numpy_us_per_row"]
            else ""
        ),
        f"  native C kernel     {r['native_us_per_row']:10.1f} us/row",
    ]
    if r["numpy_us_per_row"]:
        lines.append(
            f"  numpy argpartition  {r['numpy_us_per_row']:10.1f} us/row   "
            f"native is {r['speedup']:.1f}x faster"
        )
    lines += [
        f"  numpy reference     {r['reference_us_per_row']:10.1f} us/row   "
        f"native is {r['speedup_vs_reference']:.1f}x faster",
        f"  wire: {r['bytes_per_position']:.1f} bytes per position vs {r['dense_fp32_bytes']:,} "
        f"for a dense fp32 row ({r['compression']:,.0f}x smaller)",
    ]
    return "\n".join(lines)
