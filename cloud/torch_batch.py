"""Several torch sessions' forwards as one batched forward (padded, over per-session caches).

Owns: turning forwards of sessions whose pasts differ in length into one model
call, and giving each session back exactly the KV cache it would have had
alone. Each session keeps its own ``DynamicCache`` (rollback stays an exact
``crop``); a batched forward

1. gathers them into one batch cache, each row's past left-padded with zeros
   to the longest past, P;
2. right-pads each row's new tokens to the longest block, N, and runs the
   model once with an attention mask that hides both paddings and position
   ids that start at each row's own past length (so rotary embeddings see the
   positions they would alone);
3. scatters the result: row i's cache becomes its past plus its own new tokens
   (the padding cut away), and its logits are the rows of its own tokens.

What a row computes is what it would alone, up to the arithmetic of a
different batch shape (the masked positions add exact zeros to the softmax, but
a matmul over a batch may sum in another order): ``tests/test_torch_backend.py``
measures the difference. The cost is the copies: every batched forward copies
each session's whole past twice (into the batch and back), O(sessions x context)
next to the weights the forward reads once for all of them. A paged KV cache
(vLLM's) would avoid the copies; a ``DynamicCache`` cannot be shared that way.
Not measured on a GPU (none was lent to this work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    """One session's part of a batched forward."""

    cache: Any
    """The session's DynamicCache (``past`` positions, at least one)."""
    past: int
    tokens: Sequence[int]
    n_out: int


def forward_rows(
    torch: Any, model: Any, device: Any, rows: Sequence[Row], *, cache_arg: str
) -> tuple[list[Any], list[Any]]:
    """One model call for every row; returns, per row, its new cache (past +
    tokens) and its last n_out logits rows (on the device, float32)."""
    from transformers import DynamicCache

    b = len(rows)
    p = max(r.past for r in rows)
    n = max(len(r.tokens) for r in rows)
    ids = torch.zeros((b, n), dtype=torch.long, device=device)
    mask = torch.zeros((b, p + n), dtype=torch.long, device=device)
    positions = torch.zeros((b, n), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        k = len(r.tokens)
        ids[i, :k] = torch.tensor(list(r.tokens), dtype=torch.long, device=device)
        mask[i, p - r.past : p + k] = 1
        positions[i] = torch.arange(r.past, r.past + n, device=device)
    batch: Any = DynamicCache()
    for layer in range(_layers(rows)):
        like = rows[0].cache.layers[layer].keys
        shape = (b, like.shape[1], p, like.shape[3])
        k_b = torch.zeros(shape, dtype=like.dtype, device=like.device)
        v_b = torch.zeros(shape, dtype=like.dtype, device=like.device)
        for i, r in enumerate(rows):
            k_b[i, :, p - r.past :] = r.cache.layers[layer].keys[0]
            v_b[i, :, p - r.past :] = r.cache.layers[layer].values[0]
        batch.update(k_b, v_b, layer)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{cache_arg: batch},
    )
    caches, logits = [], []
    for i, r in enumerate(rows):
        k = len(r.tokens)
        own = DynamicCache()
        for layer, entry in enumerate(batch.layers):
            keys = entry.keys[i : i + 1, :, p - r.past : p + k].contiguous()
            values = entry.values[i : i + 1, :, p - r.past : p + k].contiguous()
            own.update(keys, values, layer)
        caches.append(own)
        logits.append(out.logits[i, k - r.n_out : k].float().contiguous())
    return caches, logits


def _layers(rows: Sequence[Row]) -> int:
    """Layers the pasts hold (every row has a past: a prefill runs alone)."""
    counts = {len(r.cache.layers) for r in rows}
    if len(counts) != 1 or any(r.past < 1 for r in rows):
        raise ValueError("a batched forward needs sessions with pasts of the same layers")
    return counts.pop()
