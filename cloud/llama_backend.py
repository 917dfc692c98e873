"""The llama.cpp verifier backend (CPU), the embedded default.

Sessions get one llama.cpp context each over one loaded model: the weights are
shared, every session has its own KV cache, and a rollback of one session can
never disturb another. (One context with a KV sequence per session would allow
batching several sessions' verify passes into one decode, which pays on a GPU;
on a CPU a forward is compute-bound in its own right, so separate contexts buy
isolation and simple rollback at the price of one compute buffer per session.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from picospec.codec.errors import ConfigError
from picospec.codec.vocab import VocabFingerprint
from picospec.llamacpp import LlamaContext, LlamaWeights

from .backend import Backend


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
        self.n_ctx = n_ctx
        self.threads = threads
        self.max_sessions = max_sessions
        self._contexts: dict[int, LlamaContext] = {}

    def fingerprint(self) -> VocabFingerprint:
        return self.weights.vocab_fingerprint

    def is_end(self, token: int) -> bool:
        return self.weights.is_end(token)

    def open(self, session: int) -> None:
        if session in self._contexts:
            raise ConfigError(f"session {session} is already open")
        if len(self._contexts) >= self.max_sessions:
            raise ConfigError(f"the backend serves at most {self.max_sessions} sessions at once")
        self._contexts[session] = LlamaContext(
            self.weights, n_ctx=self.n_ctx, n_batch=min(512, self.n_ctx), threads=self.threads
        )

    def close(self, session: int) -> None:
        ctx = self._contexts.pop(session, None)
        if ctx is not None:
            ctx.close()

    def _ctx(self, session: int) -> LlamaContext:
        try:
            return self._contexts[session]
        except KeyError:
            raise ConfigError(f"unknown session {session}") from None

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        ctx = self._ctx(session)
        n_out = len(tokens) if n_out is None else n_out
        if not 1 <= n_out <= min(len(tokens), ctx.n_batch):
            raise ConfigError(f"n_out must be in 1..min({len(tokens)}, {ctx.n_batch}), got {n_out}")
        head, tail = tokens[: len(tokens) - n_out], tokens[len(tokens) - n_out :]
        if head:
            ctx.decode(head, start)
        ctx.decode(tail, start + len(head), all_logits=True)
        out = np.empty((n_out, self.vocab_size), dtype=np.float32)
        for i in range(n_out):
            out[i] = ctx.logits(i)
        return out

    def truncate(self, session: int, position: int) -> None:
        self._ctx(session).truncate(position)
