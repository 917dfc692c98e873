"""``picospec bench gpu``: what a torch verifier costs per round, as a cloud profile.

Measured for one ``TorchBackend`` after a prompt: one forward over n = gamma + 1
tokens for gamma = 1..8 next to one decode step (n = 1) and their ratio, the
prompt's prefill, cloud-only greedy decoding in tokens per second (a forward of
one token, the sampling transform, the next token), and the sampling transform
of a verify pass's rows (gamma 4, T 0.7) on the device, which is the round's work
outside the forward. Every forward is timed as the verifier sees it: up to host numpy
logits, so the device synchronises and the logits copy is included.

Before timing it validates: the rows of one forward over 9 tokens must equal the
rows of nine one-token forwards within a tolerance relative to the logits'
scale (1e-3 in fp32; 5e-2 in bf16/fp16, whose batch-shape rounding differs).

The default model is a randomly initialised Llama of Llama-3-8B shape in bf16 on
CUDA (timing needs no trained weights); ``tiny`` builds a small one so the code
path runs on a CPU; ``model`` measures a GGUF file or a Hugging Face directory
instead. The result is written as a ``CloudProfile`` JSON for the simulator.
Batched verification is timed through the backend's own ``forward_many``
(cloud/torch_batch.py): B sessions, each with its own cache after the same
prompt, one gamma-4 block (5 tokens) each, in one call, every row's logits
copied to the host; B = 1, 4, 16, 64. The call includes the copies of the
sessions' pasts into the padded batch and back. Equal pasts need no padding,
so this is the batch's best case for attention; the copies are what they would
be at any mix of lengths with the same total. The rows of the first session
are checked against a lone forward before they are timed. They go into the
profile's ``batched_round_ms``.
"""

from __future__ import annotations

import datetime
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from picospec.cloud.torch_backend import TorchBackend, cuda_available
from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.sampling import SamplingParams
from picospec.lab.profiles import CloudProfile, save

LLAMA3_8B = {
    "vocab_size": 128256,
    "hidden": 4096,
    "layers": 32,
    "heads": 32,
    "kv_heads": 8,
    "intermediate": 14336,
}
TINY = {
    "vocab_size": 512,
    "hidden": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "intermediate": 128,
}
GAMMAS = range(1, 9)
BATCHES = (1, 4, 16, 64)
RTOL = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}


class ValidationError(PicospecError):
    """The backend's verify pass disagreed with its own decode steps."""


def _backend(
    model: str | None, tiny: bool, device: str | None, dtype: str | None, threads: int | None
) -> Any:
    if device is None and not tiny and not cuda_available():
        raise ConfigError(
            "bench gpu needs a CUDA device and torch sees none; pass --tiny to check the "
            "code path with a tiny random model on the CPU (or --device cpu to time this CPU)"
        )
    options: dict[str, Any] = {
        "device": device or ("cpu" if tiny else None),
        "dtype": dtype,
        "threads": threads,
        "device_transform": True,  # the GPU path, also when a tiny model checks it on a CPU
        "max_sessions": max(BATCHES) + 1,
    }
    if model is not None:
        path = Path(model)
        if path.suffix == ".gguf":
            return TorchBackend.from_gguf(path, **options), path.name
        return TorchBackend.from_pretrained(path, **options), path.name
    shape = TINY if tiny else LLAMA3_8B
    name = "tiny random Llama" if tiny else "random Llama-3-8B shape"
    return TorchBackend.random_llama(**shape, max_context=8192, **options), name


def _median_ms(fn: Callable[[], object], repeats: int, after: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        after()
    return 1e3 * statistics.median(times)


def _validate(b: Any, prompt: list[int], block: list[int]) -> dict[str, Any]:
    """One forward over the block against one forward per token of it."""
    b.open(0)
    b.open(1)
    try:
        b.forward(0, 0, prompt, n_out=1)
        whole = b.forward(0, len(prompt), block)
        b.forward(1, 0, prompt, n_out=1)
        steps = np.concatenate([b.forward(1, len(prompt) + i, [t]) for i, t in enumerate(block)])
    finally:
        b.close(0)
        b.close(1)
    scale = float(np.abs(steps).max())
    diff = float(np.abs(whole - steps).max())
    tol = RTOL[b.dtype_name] * max(1.0, scale)
    out = {
        "max_abs_diff": diff,
        "tolerance": tol,
        "logit_scale": scale,
        "argmax_agree": float((whole.argmax(axis=1) == steps.argmax(axis=1)).mean()),
    }
    if diff > tol:
        raise ValidationError(
            f"a verify pass over {len(block)} tokens differs from {len(block)} decode steps by "
            f"{diff:.4g} in logits (tolerance {tol:.4g}, logits up to {scale:.4g}); not timing"
        )
    return out


def _verify_ms(b: Any, prompt: list[int], block: list[int], repeats: int) -> dict[int, float]:
    """Median ms of one forward over n = 1..9 tokens after the prompt."""
    b.open(0)
    try:
        b.forward(0, 0, prompt, n_out=1)
        p = len(prompt)
        rewind = functools.partial(b.truncate, 0, p)
        return {
            n: _median_ms(functools.partial(b.forward, 0, p, block[:n]), repeats, rewind)
            for n in range(1, max(GAMMAS) + 2)
        }
    finally:
        b.close(0)


def _prefill_ms(b: Any, prompt: list[int], repeats: int) -> float:
    b.open(0)
    try:
        return _median_ms(
            lambda: b.forward(0, 0, prompt, n_out=1), repeats, lambda: b.truncate(0, 0)
        )
    finally:
        b.close(0)


def _decode_tok_s(b: Any, prompt: list[int], tokens: int) -> float:
    """Cloud-only greedy decoding: forward, transform, next token."""
    greedy = SamplingParams(temperature=0.0)
    b.open(0)
    try:
        row = b.forward(0, 0, prompt, n_out=1)
        t0 = time.perf_counter()
        for i in range(tokens):
            nxt = int(np.argmax(b.distributions(row, greedy)[0]))
            row = b.forward(0, len(prompt) + i, [nxt])
        return tokens / (time.perf_counter() - t0)
    finally:
        b.close(0)


def _transform_ms(b: Any, prompt: list[int], block: list[int], repeats: int) -> float:
    """The sampling transform of a gamma-4 verify pass's five rows at T 0.7."""
    params = SamplingParams(temperature=0.7)
    b.open(0)
    try:
        b.forward(0, 0, prompt, n_out=1)
        rows = b.forward(0, len(prompt), block[:5])
        return _median_ms(lambda: b.distributions(rows, params), repeats, lambda: None)
    finally:
        b.close(0)


def _batched_ms(
    b: Any, prompt: list[int], block: list[int], repeats: int, batches: tuple[int, ...]
) -> dict[int, float]:
    """Median ms of one gamma-4 verify forward for B sessions at once (see the module);
    stops at the first B that does not fit the device's memory."""
    p, blk = len(prompt), block[:5]
    b.open(0)
    try:
        b.forward(0, 0, prompt, n_out=1)
        solo = b.forward(0, p, blk)
    finally:
        b.close(0)
    out: dict[int, float] = {}
    for n in batches:
        try:
            out[n] = _one_batch(b, prompt, blk, n, solo, repeats)
        except RuntimeError as e:  # out of memory at this batch: report what fitted
            if "out of memory" not in str(e).lower():
                raise
            break
    return out


def _one_batch(
    b: Any, prompt: list[int], blk: list[int], n: int, solo: np.ndarray, repeats: int
) -> float:
    from picospec.cloud.backend import Forward

    p, ids = len(prompt), range(1, n + 1)
    try:
        for s in ids:
            b.open(s)
            b.forward(s, 0, prompt, n_out=1)
        requests = [Forward(s, p, tuple(blk), len(blk)) for s in ids]

        def once() -> list[Any]:
            return list(b.forward_many(requests))

        def rewind() -> None:
            for s in ids:
                b.truncate(s, p)

        first = once()[0]
        rewind()
        if not isinstance(first, np.ndarray):
            raise ValidationError(f"batch {n}: the first session's forward failed: {first}")
        tol = RTOL[b.dtype_name] * max(1.0, float(np.abs(solo).max()))
        diff = float(np.abs(first - solo).max())
        if diff > tol:
            raise ValidationError(
                f"batch {n}: the first session's rows differ from a lone forward by "
                f"{diff:.4g} (tolerance {tol:.4g}); not timing"
            )
        return _median_ms(once, repeats, rewind)
    finally:
        for s in ids:
            b.close(s)


def _shape(b: Any) -> str:
    c = getattr(b.model, "config", None)
    if c is None:
        return f"V{b.vocab_size}"
    return (
        f"hidden {c.hidden_size}, {c.num_hidden_layers} layers, {c.num_attention_heads} heads, "
        f"{getattr(c, 'num_key_value_heads', c.num_attention_heads)} KV heads, "
        f"intermediate {c.intermediate_size}, vocab {b.vocab_size}"
    )


def run(
    *,
    tiny: bool = False,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    prompt_len: int = 256,
    repeats: int = 10,
    warmup: int = 3,
    decode_tokens: int = 32,
    seed: int = 0,
    threads: int | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Validate, then time a torch verifier; write a CloudProfile JSON to out if given."""
    if prompt_len < 1 or repeats < 1 or decode_tokens < 1 or warmup < 0:
        raise ConfigError("prompt_len, repeats and decode_tokens must be >= 1, warmup >= 0")
    b, model_name = _backend(model, tiny, device, dtype, threads)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, b.vocab_size, size=prompt_len + 2 * max(GAMMAS) + 2).tolist()
    prompt, block = ids[:prompt_len], ids[prompt_len : prompt_len + max(GAMMAS) + 1]

    validation = _validate(b, prompt, block)
    for _ in range(warmup):  # kernels, allocator, cuBLAS handles
        _verify_ms(b, prompt, block, 1)
    verify = _verify_ms(b, prompt, block, repeats)
    result: dict[str, Any] = {
        "model": model_name,
        "shape": _shape(b),
        "device": b.device_name,
        "dtype": b.dtype_name,
        "prompt_len": prompt_len,
        "validation": validation,
        "verify_ms": verify,
        "verify_ratio": {n: v / verify[1] for n, v in verify.items()},
        "prefill_ms": _prefill_ms(b, prompt, repeats),
        "decode_tok_s": _decode_tok_s(b, prompt, decode_tokens),
        "transform_ms": _transform_ms(b, prompt, block, repeats),
        "device_transform": b.device_transform,
    }
    batched = _batched_ms(b, prompt, block, repeats, BATCHES)
    result["batched_round_ms"] = batched
    result["batched"] = ", ".join(
        f"{n}: {ms:.2f} ms ({ms / n:.2f} per session)" for n, ms in batched.items()
    )
    profile = CloudProfile(
        name=f"torch-{b.device_name.split(' (')[0].replace(' ', '-').lower()}",
        verify_ms=tuple(verify[n] for n in sorted(verify)),
        prefill_ms=result["prefill_ms"],
        round_ms=result["transform_ms"],
        batched_round_ms=batched,
        source=(
            f"measured by picospec bench gpu on {b.device_name}, {b.dtype_name}, "
            f"{model_name} ({result['shape']}), prompt {prompt_len} tokens, "
            f"{datetime.date.today().isoformat()}; round_ms is the sampling transform of "
            "5 rows at T 0.7; batched_round_ms: one forward_many of B sessions' gamma-4 "
            "blocks (their pasts copied into one padded batch and back)"
        ),
    )
    if out is not None:
        save(profile, out)
        result["profile"] = str(out)
    return result


def render(r: dict[str, Any]) -> str:
    v = r["validation"]
    lines = [
        f"{r['model']} ({r['shape']}) on {r['device']}, {r['dtype']}, prompt {r['prompt_len']}",
        f"  validated: verify pass vs decode steps max |diff| {v['max_abs_diff']:.3g} "
        f"(tolerance {v['tolerance']:.3g}, argmax agree {v['argmax_agree']:.0%})",
        f"  {'gamma':>5} {'tokens':>6} {'ms':>9} {'x decode':>8}",
        f"  {'-':>5} {1:6d} {r['verify_ms'][1]:9.2f} {1.0:8.2f}   (one decode step)",
    ]
    for g in GAMMAS:
        n = g + 1
        lines.append(f"  {g:5d} {n:6d} {r['verify_ms'][n]:9.2f} {r['verify_ratio'][n]:8.2f}")
    where = "device" if r["device_transform"] else "host"
    lines += [
        f"  prefill {r['prompt_len']} tokens: {r['prefill_ms']:.1f} ms",
        f"  cloud-only greedy decode: {r['decode_tok_s']:.1f} tok/s",
        f"  sampling transform of 5 rows ({where}): {r['transform_ms']:.3f} ms",
        f"  batched gamma-4 verify, B sessions: {r['batched'] or 'none fitted'}",
    ]
    if "profile" in r:
        lines.append(f"  cloud profile written to {r['profile']}")
    return "\n".join(lines)
