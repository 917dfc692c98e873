"""The TensorRT-LLM verifier backend: the one module that imports ``tensorrt_llm``.

NOT VERIFIED. This adapter has never been run against TensorRT-LLM: the library
cannot be installed where picospec is developed (the PyPI wheel is a stub that
downloads from NVIDIA's index), so only its pure-Python bookkeeping is tested,
against a fake engine. It is written from TensorRT-LLM's documentation; treat
it as a starting point to check on a GPU machine, not as a working backend.

How the backend primitives map onto TensorRT-LLM's LLM API (PyTorch backend):

* the model: ``tensorrt_llm.LLM(model=..., max_seq_len=...,
  kv_cache_config=KvCacheConfig(enable_block_reuse=True))`` (LLM API reference,
  ``tensorrt_llm.llmapi.LLM`` and ``KvCacheConfig``; "How to Change KV Cache
  Behavior" in the examples);
* ``forward``: the LLM API has no per-request KV cache that a caller can extend
  and truncate, so every forward submits the session's *whole* sequence (the
  committed prefix plus the new tokens) as one request,
  ``LLM.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=1,
  return_context_logits=True), use_tqdm=False)``, and reads the per-position
  logits from ``RequestOutput.context_logits`` ("Additional Outputs:
  return_context_logits"; ``RequestOutput.context_logits``, "the logits on the
  prompt token ids"). The prefix is not recomputed thanks to KV cache block reuse
  ("KV Cache System: Reuse Across Requests"): the blocks the session's previous
  request filled are found again by prefix match. One token is generated per
  forward and discarded (``max_tokens=1`` is the least a request can ask for).
* with block reuse on, ``context_logits`` covers only the positions that were
  recomputed, not the reused prefix (NVIDIA/Model-Optimizer issue #1577 and its
  ``enable_kv_cache_reuse`` note: "shared-prefix requests only return logits for
  the recomputed suffix"). Rows are missing when the new tokens themselves were
  evaluated before (a block re-verified after a rollback, two generations with
  the same prompt and seed). The backend therefore keeps the rows it has seen in
  an LRU keyed by the prefix that produced them (``row_cache`` rows, V floats
  each) and fills the gap from there; a row found nowhere is a ``TrtLlmError``.
  ``block_reuse=False`` recomputes every prefix in full instead;
* ``truncate``: bookkeeping only: the session's token list is cut; the KV blocks
  stay in TensorRT-LLM's reuse pool until it evicts them (an evicted prefix is
  recomputed: slower, still correct);
* ``UserProvidedDecodingConfig`` / ``DraftTargetDecodingConfig`` are not used: they
  run a drafter inside TensorRT-LLM's own decoding loop and decide acceptance
  there, while here the drafter is on the edge and the verifier needs the
  target's logits rows.

Known numeric caveat: TensorRT-LLM reports that a reused-prefix request computes
logits that differ from a fresh one by about one bf16 ulp (NVIDIA/TensorRT-LLM
issue #15503), so rows are not bit-identical across a rollback. The verification
maths stays exact for whatever p is computed; only bit-for-bit equality with a
cloud-only run (the gumbel scheme's promise) can break.

The vocabulary fingerprint comes from the checkpoint folder's tokenizer files
(``picospec.cloud.hf_vocab.LlamaVocab.from_folder``), and ``vocab_size`` from its
config.json.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from picospec.codec.errors import ConfigError, PicospecError

from .backend import Sessions, VocabBackend, check_forward
from .hf_vocab import LlamaVocab, read_json

UNVERIFIED = (
    "this TensorRT-LLM adapter is NOT verified in this project (it has never been run "
    "against TensorRT-LLM)"
)


class TrtLlmError(PicospecError):
    """TensorRT-LLM failed, or answered with something the verifier cannot use."""


class ContextLogitsEngine(Protocol):
    """What the backend needs from TensorRT-LLM: the logits of a whole sequence."""

    def context_logits(self, tokens: list[int]) -> np.ndarray:
        """float32[rows, V]: logits after each of the last ``rows`` tokens
        (rows <= len(tokens); fewer when a cached prefix was not recomputed)."""
        ...


def _trt() -> Any:
    try:
        import tensorrt_llm
    except ImportError as e:
        raise ConfigError(
            "TensorRT-LLM is not installed (see NVIDIA's installation guide; the PyPI "
            f"package downloads from NVIDIA's index); note that {UNVERIFIED}"
        ) from e
    return tensorrt_llm


class LlmApiEngine:
    """``ContextLogitsEngine`` over ``tensorrt_llm.LLM`` (unverified, see the module doc)."""

    def __init__(self, llm: Any, sampling_params: Any) -> None:
        self.llm = llm
        self._params = sampling_params(max_tokens=1, return_context_logits=True)

    @classmethod
    def create(
        cls,
        model: str | Path,
        *,
        max_seq_len: int,
        block_reuse: bool = True,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> LlmApiEngine:
        trt = _trt()
        from tensorrt_llm.llmapi import KvCacheConfig

        llm = trt.LLM(
            model=str(model),
            max_seq_len=max_seq_len,
            kv_cache_config=KvCacheConfig(enable_block_reuse=block_reuse),
            **dict(llm_kwargs or {}),
        )
        return cls(llm, trt.SamplingParams)

    def context_logits(self, tokens: list[int]) -> np.ndarray:
        out = self.llm.generate({"prompt_token_ids": list(tokens)}, self._params, use_tqdm=False)
        if isinstance(out, list):
            out = out[0]
        logits = getattr(out, "context_logits", None)
        if logits is None:
            raise TrtLlmError("TensorRT-LLM returned no context logits for the request")
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


class TrtLlmBackend(VocabBackend):
    """A target served by TensorRT-LLM; each session is a token list re-sent per forward."""

    def __init__(
        self,
        model: str | Path,
        *,
        engine: ContextLogitsEngine | None = None,
        max_seq_len: int = 4096,
        max_sessions: int = 16,
        block_reuse: bool = True,
        row_cache: int = 1024,
        specials: Mapping[str, int] | None = None,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """model: a Hugging Face checkpoint folder (config.json, tokenizer.json).
        engine: what evaluates sequences; by default ``LlmApiEngine.create`` (needs
        TensorRT-LLM). row_cache: logits rows kept to stand in for the positions
        TensorRT-LLM did not recompute (row_cache * V * 4 bytes of host memory).
        llm_kwargs: further ``tensorrt_llm.LLM`` arguments."""
        if engine is None:
            _trt()  # a missing library is reported before anything else
        model = Path(model)
        self.vocab_size = _vocab_size(model)
        self.vocab = LlamaVocab.from_folder(model, self.vocab_size).with_specials(
            **(specials or {})
        )
        self.name = f"tensorrt-llm:{model.name}"
        self.max_seq_len = self.max_context = max_seq_len
        self.max_sessions = max_sessions
        if engine is None:
            engine = LlmApiEngine.create(
                model, max_seq_len=max_seq_len, block_reuse=block_reuse, llm_kwargs=llm_kwargs
            )
        self.engine = engine
        self._row_cache = RowCache(row_cache)
        self._sessions: Sessions[list[int]] = Sessions(max_sessions)

    def open(self, session: int) -> None:
        self._sessions.open(session, list)

    def close(self, session: int) -> None:
        self._sessions.close(session)

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        seq = self._sessions[session]
        n_out = check_forward(
            session,
            start,
            len(seq),
            tokens,
            n_out,
            vocab_size=self.vocab_size,
            capacity=self.max_seq_len,
        )
        full = seq + [int(t) for t in tokens]
        logits = self.engine.context_logits(full)
        if logits.ndim != 2 or logits.shape[1] != self.vocab_size or logits.shape[0] > len(full):
            raise TrtLlmError(
                f"context logits of shape {logits.shape} for {len(full)} tokens; expected "
                f"(rows <= {len(full)}, {self.vocab_size})"
            )
        rows = self._row_cache.complete(full, logits, n_out)
        seq.extend(full[start:])
        return rows

    def _truncate(self, session: int, position: int) -> None:
        seq = self._sessions[session]
        del seq[position:]


class RowCache:
    """Logits rows keyed by the token prefix that produced them (least recently used go).

    Only the last ``TAIL`` rows of each reply are kept: later requests only ever
    need rows near their end (a verify block), never deep inside a prompt.
    """

    TAIL = 64

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def complete(self, tokens: list[int], logits: np.ndarray, n_out: int) -> np.ndarray:
        """float32[n_out, V] for the last n_out positions of tokens, from the
        logits of its last len(logits) positions and, before those, this cache."""
        length, have = len(tokens), logits.shape[0]
        lo = min(length - n_out, length - have)
        keys = _prefix_keys(tokens, lo)  # keys[i - lo]: the prefix tokens[: i + 1]
        for i in range(max(length - have, length - self.TAIL), length):
            self._put(keys[i - lo], logits[i - (length - have)])
        out = np.empty((n_out, logits.shape[1]), dtype=np.float32)
        for j, i in enumerate(range(length - n_out, length)):
            if i >= length - have:
                out[j] = logits[i - (length - have)]
            elif (row := self._get(keys[i - lo])) is not None:
                out[j] = row
            else:
                raise TrtLlmError(
                    f"TensorRT-LLM returned logits for the last {have} positions only (the "
                    f"rest came from reused KV blocks) and position {i} is not in the row "
                    "cache; use a larger row_cache or block_reuse=False"
                )
        return out

    def _put(self, key: bytes, row: np.ndarray) -> None:
        if self.capacity == 0:
            return
        self._rows[key] = np.array(row, dtype=np.float32)
        self._rows.move_to_end(key)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def _get(self, key: bytes) -> np.ndarray | None:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row


def _prefix_keys(tokens: list[int], lo: int) -> list[bytes]:
    """Digests of tokens[: i + 1] for i = lo .. len(tokens) - 1."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(tokens[:lo], dtype="<i4").tobytes())
    keys = []
    for t in tokens[lo:]:
        h.update(int(t).to_bytes(4, "little", signed=True))
        keys.append(h.copy().digest())
    return keys


def _vocab_size(folder: Path) -> int:
    path = folder / "config.json"
    config = read_json(path)
    text_config = config.get("text_config")
    size = config.get("vocab_size")
    if size is None and isinstance(text_config, dict):
        size = text_config.get("vocab_size")
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"{path} has no vocab_size")
    return size
