"""The llama.cpp verifier backend (CPU), the embedded default.

Two layouts over one loaded model, chosen by ``batched``:

* batched (the default): one llama.cpp context holding a KV sequence per
  session (``n_seq_max`` = max_sessions, the KV of each kept apart), so the
  forward requests of many sessions run as one ``llama_decode`` whose batch
  carries a sequence id per token (``forward_many``). Every weight is read once
  per batch instead of once per session, which is what batching buys.
  The same layout shares prompt prefixes (``reuse_prefix``): every sequence's
  tokens are known, and a closed session's KV stays in its sequence until the
  sequence is needed again, so a new generation whose prompt begins like one
  held (a robot app's system prompt) takes that KV instead of evaluating it:
  a free sequence is taken over as it is, a live one is copied
  (``llama_memory_seq_cp``), and either is cut to the common prefix.
* separate: one context per session, opened with the session. A session's
  forward is then evaluated exactly as it would be alone, whatever else runs;
  the price is one forward per session.

A batched forward is evaluated in a batch whose shape depends on what else is
in it, and llama.cpp's logits move slightly with the batch shape (different
matrix-multiply tilings), so a session's logits are not bit-identical to a solo
evaluation; ``tests/test_batching.py`` measures by how much and checks that the
verdicts of seeded traces do not change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from picospec.codec.errors import PicospecError
from picospec.codec.vocab import VocabFingerprint
from picospec.runtime.llamacpp import LlamaContext, LlamaWeights

from .backend import Backend, Forward, Sessions, check_forward

MIN_REUSE = 16
"""Shortest common prefix worth reusing (copying a live sequence copies its whole
KV stream, about what evaluating a few tokens costs)."""


@dataclass
class _Slot:
    ctx: LlamaContext
    seq: int = 0
    """Its sequence id in ctx."""
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
        batched: bool = True,
        share_prefixes: bool = True,
    ) -> None:
        """n_ctx: most tokens per session; batched: one context for every session
        (see the module); share_prefixes: reuse prompt prefixes' KV (batched only)."""
        self.weights = LlamaWeights(path)
        self.vocab_size = self.weights.vocab_size
        self.name = f"llama.cpp:{Path(path).name}"
        self.n_ctx = self.max_context = n_ctx
        self.threads = threads
        self.max_sessions = max_sessions
        self.batches = batched
        self.share_prefixes = share_prefixes and batched
        self.n_batch = min(512, n_ctx)
        self._slots: Sessions[_Slot] = Sessions(max_sessions)
        self._shared: LlamaContext | None = None
        self._free: deque[int] = deque()  # free sequence ids, least recently used first
        self._held: list[list[int]] = []  # per sequence id: the tokens its KV holds
        self.reused_tokens = 0
        """Prompt tokens whose KV a later session took instead of evaluating them."""
        if batched:
            self._shared = LlamaContext(
                self.weights,
                n_ctx=n_ctx,
                n_batch=self.n_batch,
                threads=threads,
                n_seq=max_sessions,
            )
            self._free = deque(range(max_sessions))
            self._held = [[] for _ in range(max_sessions)]
            self.batch_note = (
                f"one llama.cpp context, {max_sessions} sequences: sessions' forwards "
                "are batched into one decode"
            )
        else:
            self.batch_note = "one llama.cpp context per session: one session per forward"

    def fingerprint(self) -> VocabFingerprint:
        return self.weights.vocab_fingerprint

    def is_end(self, token: int) -> bool:
        return self.weights.is_end(token)

    def open(self, session: int) -> None:
        shared = self._shared
        if shared is None:
            self._slots.open(
                session,
                lambda: _Slot(
                    LlamaContext(
                        self.weights, n_ctx=self.n_ctx, n_batch=self.n_batch, threads=self.threads
                    )
                ),
            )
            return
        self._slots.open(session, lambda: _Slot(shared, self._free[0]))
        self._free.popleft()  # its old KV stays until reuse_prefix or a forward needs it

    def close(self, session: int) -> None:
        slot = self._slots.close(session)
        if slot is None:
            return
        if self._shared is None:
            slot.ctx.close()
        else:
            self._free.append(slot.seq)  # its KV is kept for a later shared prefix

    def reuse_prefix(self, session: int, tokens: Sequence[int]) -> int:
        slot = self._slots[session]
        shared = self._shared
        if shared is None or slot.length or not self.share_prefixes:
            return 0
        live = {s.seq for s in self._slots.values()} - {slot.seq}
        best, best_len = slot.seq, _common(self._held[slot.seq], tokens)
        for seq in (*self._free, *sorted(live)):
            n = _common(self._held[seq], tokens)
            if n > best_len:
                best, best_len = seq, n
        if best_len < MIN_REUSE:
            return 0  # the first forward clears what the sequence held
        if best in self._free:  # take the free sequence over, as it is
            self._free.remove(best)
            self._free.append(slot.seq)
            slot.seq = best
        elif best != slot.seq:  # a live session's: copy its whole stream
            shared.copy_seq(best, slot.seq)
            self._held[slot.seq] = list(self._held[best])
        self._cut(slot.seq, best_len)
        slot.length = best_len
        self.reused_tokens += best_len
        return best_len

    def _cut(self, seq: int, position: int) -> None:
        held = self._held[seq]
        if len(held) > position:
            assert self._shared is not None
            self._shared.truncate(position, seq)
            del held[position:]

    def _check(self, req: Forward) -> tuple[_Slot, int]:
        slot = self._slots[req.session]
        n_out = check_forward(
            req.session,
            req.start,
            slot.length,
            list(req.tokens),
            req.n_out,
            vocab_size=self.vocab_size,
            capacity=self.n_ctx,
            most=self.n_batch,
        )
        return slot, n_out

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        req = Forward(session, start, tuple(tokens), len(tokens) if n_out is None else n_out)
        slot, n = self._check(req)
        self._before(slot, req)
        out = slot.ctx.decode_many([(slot.seq, start, tokens, n)])[0]
        self._after(slot, req)
        return out

    def _before(self, slot: _Slot, req: Forward) -> None:
        """The batched layout: forget what the sequence holds past the request's start
        (a previous session's KV)."""
        if self._shared is not None:
            self._cut(slot.seq, req.start)

    def _after(self, slot: _Slot, req: Forward) -> None:
        slot.length = req.start + len(req.tokens)
        if self._shared is not None:
            self._held[slot.seq] += req.tokens

    def forward_many(self, requests: Sequence[Forward]) -> list[np.ndarray | PicospecError]:
        if self._shared is None:
            return super().forward_many(requests)
        results: list[np.ndarray | PicospecError] = []
        spans, where, slots = [], [], []
        for i, req in enumerate(requests):
            try:
                slot, n = self._check(req)
            except PicospecError as e:
                results.append(e)
                continue
            if slot in slots:  # one request per session per batch: it must start where it ends
                results.append(PicospecError(f"session {req.session} twice in one batch"))
                continue
            results.append(np.empty(0))
            self._before(slot, req)
            spans.append((slot.seq, req.start, req.tokens, n))
            where.append(i)
            slots.append(slot)
        if spans:
            rows = self._shared.decode_many(spans)
            for i, slot, req, r in zip(
                where, slots, (requests[i] for i in where), rows, strict=True
            ):
                self._after(slot, req)
                results[i] = r
        return results

    def _truncate(self, session: int, position: int) -> None:
        slot = self._slots[session]
        if self._shared is None:
            slot.ctx.truncate(position, slot.seq)
        else:
            self._cut(slot.seq, position)
        slot.length = min(slot.length, position)


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of a and b."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
