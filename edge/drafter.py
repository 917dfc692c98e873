"""The drafter: a small GGUF model on the device proposing tokens.

Lifecycle (after llama.cpp's common/speculative.h): ``begin`` with the context
and the generation's sampling (parameters, scheme and K are per generation),
``draft`` n tokens, then ``rollback`` to the accepted prefix and ``push`` the
token the verifier decided. Each drafted token comes with the exact object it
was sampled from: the quantised top-K q (``sparse-q``, ``split``, ``greedy``),
or nothing for ``gumbel``, whose draft is the Gumbel-max with the noise the
target shares. Every random number is keyed by (seed, position), so a draft
never depends on timing.

Nor on history: llama.cpp's logits depend slightly on how a sequence was split
into decode calls, and a draft sampled from q can flip with them. So the drafter
evaluates on one schedule only: ``begin(context)`` evaluates ``context[:-1]`` in
one call from position 0 (``prefill`` does the same ahead of time, while the
cloud works on the first token), and every later call evaluates what the
generation's own verdicts leave pending. The KV of a context is reused by the
next generation only when that generation's context[:-1] is the very sequence
that was evaluated, so an earlier generation never changes a later one's drafts.

The logits row is read zero-copy from llama.cpp and handed straight to the C
kernel; no dense row is ever copied into Python.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from picospec.codec import ops, rng
from picospec.codec.draft import DraftToken
from picospec.codec.errors import ConfigError
from picospec.codec.rng import Purpose
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import SparseDist
from picospec.codec.verify import target_token
from picospec.codec.vocab import VocabFingerprint
from picospec.runtime.llamacpp import LlamaContext, LlamaWeights, default_threads

__all__ = ["DraftToken", "Drafter", "DrafterStats"]


@dataclass
class DrafterStats:
    """Counters kept by the drafter (times are wall-clock seconds)."""

    drafted: int = 0
    """Tokens drafted, including those later discarded."""
    forwards: int = 0
    """llama.cpp decode calls (a forward may evaluate several tokens)."""
    draft_seconds: float = 0.0
    """Time inside ``draft``: forwards, transform and sampling."""
    rollbacks: int = 0

    @property
    def ms_per_token(self) -> float:
        return 1e3 * self.draft_seconds / self.drafted if self.drafted else 0.0


@dataclass
class Drafter:
    """Drafts from one llama.cpp context; ``tokens`` is everything it assumes."""

    ctx: LlamaContext
    sampling: Sampling = field(
        default_factory=lambda: Sampling(SamplingParams(temperature=0.0), Scheme.GREEDY)
    )
    """The current generation's sampling (set by ``begin``)."""
    seed: int = 0
    tokens: list[int] = field(default_factory=list)
    stats: DrafterStats = field(default_factory=DrafterStats)
    _n_kv: int = 0  # tokens[:_n_kv] are in the KV cache; always < len(tokens)
    _base: tuple[int, ...] = ()  # evaluated in one call from position 0; its KV is intact

    @classmethod
    def open(
        cls, path: str | Path, *, n_ctx: int = 2048, threads: int | None = None,
        gpu_layers: int = 0,
    ) -> Drafter:  # fmt: skip
        """A drafter over a GGUF file; threads defaults to ``default_threads()``
        (half the cores, for a drafter that shares the machine with a verifier);
        gpu_layers are offloaded by a GPU build of llama.cpp (-1: all)."""
        ctx = LlamaContext(
            LlamaWeights(path, gpu_layers=gpu_layers),
            n_ctx=n_ctx,
            n_batch=min(512, n_ctx),
            threads=threads or default_threads(),
        )
        return cls(ctx)

    @property
    def vocab_size(self) -> int:
        return self.ctx.vocab_size

    @property
    def n_ctx(self) -> int:
        return self.ctx.n_ctx

    def fingerprint(self) -> VocabFingerprint:
        return self.ctx.weights.vocab_fingerprint

    def is_end(self, token: int) -> bool:
        return self.ctx.weights.is_end(token)

    def piece(self, token: int) -> bytes:
        return self.ctx.weights.piece(token)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of text (special tokens parsed)."""
        return self.ctx.weights.tokenize(text)

    def chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a chat in the model's own template, up to the reply."""
        return self.tokenize(self.ctx.weights.chat(messages))

    @property
    def name(self) -> str:
        """The drafter's model file."""
        return self.ctx.weights.path.name

    def prefill(self, prompt: list[int]) -> None:
        """Evaluate a prompt ahead of ``begin(prompt + [first token])``, on the same
        schedule begin would use (one call), so the drafts are the same either way."""
        if not prompt:
            raise ConfigError("the drafter needs at least one context token")
        self._evaluate_base(tuple(prompt))
        self.tokens = list(prompt)

    def begin(self, tokens: list[int], seed: int, sampling: Sampling) -> None:
        """Start a generation whose known context (prompt and decided tokens) is
        tokens, drafting with the generation's sampling."""
        if not tokens:
            raise ConfigError("the drafter needs at least one context token")
        if len(tokens) >= self.ctx.n_ctx:
            raise ConfigError(
                f"a context of {len(tokens)} tokens does not fit the drafter's {self.ctx.n_ctx}"
            )
        self.seed = seed
        self.sampling = sampling
        if len(tokens) > 1:
            self._evaluate_base(tuple(tokens[:-1]))
        else:
            self.ctx.truncate(0)
            self._n_kv, self._base = 0, ()
        self.tokens = list(tokens)

    def _evaluate_base(self, base: tuple[int, ...]) -> None:
        if self._base == base and self._n_kv >= len(base):
            self.ctx.truncate(len(base))  # the same sequence, evaluated the same way: reuse it
        else:
            self.ctx.truncate(0)
            self.ctx.decode(list(base), 0)
            self.stats.forwards += 1
        self._n_kv, self._base = len(base), base

    def draft(self, n: int) -> list[DraftToken]:
        """Draft n tokens after the current tail (which stays assumed until rollback)."""
        t0 = time.perf_counter()
        out = []
        for _ in range(n):
            pending = self.tokens[self._n_kv :]
            self.ctx.decode(pending, self._n_kv)
            self.stats.forwards += 1
            self._n_kv = len(self.tokens)
            out.append(self._sample(self.ctx.logits(), len(self.tokens)))
            self.tokens.append(out[-1].token)
        self.stats.drafted += n
        self.stats.draft_seconds += time.perf_counter() - t0
        return out

    def _sample(self, logits: np.ndarray, position: int) -> DraftToken:
        s = self.sampling
        if s.scheme is Scheme.GUMBEL:
            key = rng.key(self.seed, position, Purpose.GUMBEL)
            return DraftToken(ops.gumbel_argmax(logits, s.params, key), None)
        q = SparseDist.from_counts(*ops.transform_topk(logits, s.params, s.k))
        return DraftToken(q.sample(rng.uniform(self.seed, position, Purpose.DRAFT)), q)

    def sample_own(self) -> int:
        """Edge-only decoding: sample the next token from the drafter's own full
        distribution (as the target would from p) and append it."""
        t0 = time.perf_counter()
        self.ctx.decode(self.tokens[self._n_kv :], self._n_kv)
        self.stats.forwards += 1
        self._n_kv = len(self.tokens)
        q = ops.transform_dense(self.ctx.logits(), self.sampling.params)
        token = target_token(self.sampling.scheme, q, rng.KeyedRandom(self.seed), len(self.tokens))
        self.tokens.append(token)
        self.stats.drafted += 1
        self.stats.draft_seconds += time.perf_counter() - t0
        return token

    def rollback(self, position: int) -> None:
        """Keep only tokens[:position]: the verifier rejected what follows."""
        if not 1 <= position <= len(self.tokens):
            raise ConfigError(
                f"cannot roll back to {position}: the drafter holds {len(self.tokens)}"
            )
        if position < len(self.tokens):
            self.stats.rollbacks += 1
        del self.tokens[position:]
        if self._n_kv > position - 1:
            self._n_kv = position - 1
            self.ctx.truncate(self._n_kv)
            if self._n_kv < len(self._base):
                self._base = ()

    def push(self, token: int) -> None:
        """Append a token decided by the verifier (a correction or a bonus)."""
        if not 0 <= token < self.vocab_size:
            raise ConfigError(f"token {token} is outside the vocabulary of {self.vocab_size}")
        self.tokens.append(token)

    def close(self) -> None:
        self.ctx.close()
