"""A model-free target and drafter: Markov chains over a small vocabulary.

The logits after a token depend on that token alone, so the exact target
distribution of every position, and of whole sequences, is known in closed
form. ``MarkovBackend`` is a verifier backend (it checks that every forward
continues its KV exactly); ``MarkovDrafter`` is a drafter with the production
sampling rules (the exact q16 q the C kernel builds, keyed randomness), so the
real sessions, client, server and in-process loop run on them unchanged.
"""

from __future__ import annotations

import numpy as np

from picospec.cloud.backend import Backend
from picospec.codec import ops, rng
from picospec.codec.draft import DraftToken
from picospec.codec.rng import KeyedRandom, Purpose
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import SparseDist
from picospec.codec.verify import target_token
from picospec.codec.vocab import VocabFingerprint, fingerprint

V = 6


def table(seed: int = 0, vocab: int = V, scale: float = 2.0) -> np.ndarray:
    """float32[vocab, vocab]: the logits after each token."""
    return np.random.default_rng(seed).normal(size=(vocab, vocab)).astype(np.float32) * scale


def markov_fingerprint(vocab: int = V) -> VocabFingerprint:
    return fingerprint([(bytes([97 + i % 26]) * (1 + i // 26), 0) for i in range(vocab)], {})


class MarkovBackend(Backend):
    """Logits after token t are table[t]; the KV length is tracked and checked."""

    name = "markov"

    def __init__(
        self, seed: int = 0, *, vocab: int = V, end: int | None = None, max_context: int = 4096
    ) -> None:
        self.vocab_size = vocab
        self.max_context = max_context
        self.table = table(seed, vocab)
        self.end = end
        self.kv: dict[int, list[int]] = {}
        self.forwards: list[tuple[int, int]] = []  # (start, n tokens)

    def is_end(self, token: int) -> bool:
        return token == self.end

    def fingerprint(self) -> VocabFingerprint:
        return markov_fingerprint(self.vocab_size)

    def open(self, session: int) -> None:
        assert session not in self.kv, "a session opens once"
        self.kv[session] = []

    def close(self, session: int) -> None:
        del self.kv[session]

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        assert start == len(self.kv[session]), "forward must continue the KV exactly"
        self.kv[session] += tokens
        self.forwards.append((start, len(tokens)))
        n_out = len(tokens) if n_out is None else n_out
        return self.table[tokens[len(tokens) - n_out :]]

    def _truncate(self, session: int, position: int) -> None:
        del self.kv[session][position:]

    def p(self, prev: int, params: SamplingParams) -> np.ndarray:
        """The exact target distribution after prev."""
        return ops.transform_dense(self.table[prev], params)


class MarkovDrafter:
    """A drafter (``edge.model.DraftModel``) drafting from its own Markov table."""

    def __init__(
        self,
        drafts: np.ndarray,
        *,
        end: int | None = None,
        n_ctx: int = 4096,
    ) -> None:
        self.table = np.ascontiguousarray(drafts, dtype=np.float32)
        self.vocab_size = drafts.shape[0]
        self.n_ctx = n_ctx
        self.end = end
        self.tokens: list[int] = []
        self.seed = 0
        self.sampling = Sampling(SamplingParams(temperature=0.0), Scheme.GREEDY)
        self.prefilled: list[list[int]] = []

    def fingerprint(self) -> VocabFingerprint:
        return markov_fingerprint(self.vocab_size)

    def is_end(self, token: int) -> bool:
        return token == self.end

    def piece(self, token: int) -> bytes:
        return bytes([97 + token % 26]) * (1 + token // 26)

    name = "markov"

    def tokenize(self, text: str) -> list[int]:
        """Each letter a.. is its token (others map into the vocabulary)."""
        return [(ord(c) - 97) % self.vocab_size for c in text]

    def chat(self, messages) -> list[int]:
        return self.tokenize("".join(m["content"] for m in messages))

    def prefill(self, prompt: list[int]) -> None:
        self.prefilled.append(list(prompt))

    def begin(self, tokens: list[int], seed: int, sampling: Sampling) -> None:
        self.tokens, self.seed, self.sampling = list(tokens), seed, sampling

    def draft(self, n: int) -> list[DraftToken]:
        out = []
        params = self.sampling.params
        for _ in range(n):
            row, pos = self.table[self.tokens[-1]], len(self.tokens)
            if self.sampling.scheme is Scheme.GUMBEL:
                key = rng.key(self.seed, pos, Purpose.GUMBEL)
                d = DraftToken(ops.gumbel_argmax(row, params, key), None)
            else:
                q = SparseDist.from_counts(*ops.transform_topk(row, params, self.sampling.k))
                d = DraftToken(q.sample(rng.uniform(self.seed, pos, Purpose.DRAFT)), q)
            self.tokens.append(d.token)
            out.append(d)
        return out

    def sample_own(self) -> int:
        q = ops.transform_dense(self.table[self.tokens[-1]], self.sampling.params)
        token = target_token(self.sampling.scheme, q, KeyedRandom(self.seed), len(self.tokens))
        self.tokens.append(token)
        return token

    def rollback(self, position: int) -> None:
        assert 1 <= position <= len(self.tokens), "roll back within what the drafter holds"
        del self.tokens[position:]

    def push(self, token: int) -> None:
        assert 0 <= token < self.vocab_size
        self.tokens.append(token)


def sampling(
    scheme: Scheme | str, t: float = 1.0, k: int = 4, *, top_k: int = 0, inexact: bool = True
) -> Sampling:
    """The generation sampling of a test (split may be inexact unless said otherwise)."""
    params = SamplingParams(temperature=0.0 if Scheme.parse(scheme) is Scheme.GREEDY else t,
                            top_k=top_k)  # fmt: skip
    return Sampling(params, Scheme.parse(scheme), k, allow_inexact=inexact)
