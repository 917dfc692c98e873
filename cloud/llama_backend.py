"""The llama.cpp verifier backend (CPU), the embedded default.

Sessions get one llama.cpp context each over one loaded model: the weights are
shared, every session has its own KV cache, and a rollback of one session can
never disturb another. (One context with a KV sequence per session would allow
batching several sessions' verify passes into one decode, which pays on a GPU;
on a CPU a forward is compute-bound in its own right, so separate contexts buy
isolation and simple rollback at the price of one compute buffer per session.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from picospec.codec.vocab import VocabFingerprint
from picospec.runtime.llamacpp import LlamaContext, LlamaWeights

from .backend import Backend, Sessions, check_forward


@dataclass
class _Slot:
    ctx: LlamaContext
    length: int = 0
    """Tokens in the session's KV."""


class LlamaBackend(Backend):
    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 2048,
        threads: int | None = None,
        max_sessions: int = 16,
    ) -> None:
        self.weights = LlamaWeights(path)
        self.vocab_size = self.weights.vocab_size
        self.name = f"llama.cpp:{Path(path).name}"
        self.n_ctx = self.max_context = n_ctx
        self.threads = threads
        self.max_sessions = max_sessions
        self._slots: Sessions[_Slot] = Sessions(max_sessions)

    def fingerprint(self) -> VocabFingerprint:
        return self.weights.vocab_fingerprint

    def is_end(self, token: int) -> bool:
        return self.weights.is_end(token)

    def open(self, session: int) -> None:
        n_batch = min(512, self.n_ctx)
        self._slots.open(
            session,
            lambda: _Slot(
                LlamaContext(self.weights, n_ctx=self.n_ctx, n_batch=n_batch, threads=self.threads)
            ),
        )

    def close(self, session: int) -> None:
        slot = self._slots.close(session)
        if slot is not None:
            slot.ctx.close()

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        slot = self._slots[session]
        ctx = slot.ctx
        n_out = check_forward(
            session,
            start,
            slot.length,
            tokens,
            n_out,
            vocab_size=self.vocab_size,
            capacity=ctx.n_ctx,
            most=ctx.n_batch,
        )
        head, tail = tokens[: len(tokens) - n_out], tokens[len(tokens) - n_out :]
        if head:
            ctx.decode(head, start)
        ctx.decode(tail, start + len(head), all_logits=True)
        slot.length = start + len(tokens)
        out = np.empty((n_out, self.vocab_size), dtype=np.float32)
        for i in range(n_out):
            out[i] = ctx.logits(i)
        return out

    def _truncate(self, session: int, position: int) -> None:
        slot = self._slots[session]
        slot.ctx.truncate(position)
        slot.length = min(slot.length, position)
