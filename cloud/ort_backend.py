"""The ONNX Runtime GenAI verifier backend: the one module that imports ``onnxruntime_genai``.

A model folder written by onnxruntime-genai's model builder (``genai_config.json``,
``model.onnx``, ``tokenizer.json``) is loaded once as an ``og.Model``; every
session gets its own ``og.Generator`` over it (its own KV cache, batch size 1).
The backend primitives map onto the generator like this:

* ``forward``: ``Generator.append_tokens(ids)`` evaluates the tokens at the
  session's current length, then ``Generator.get_output("logits")`` reads the
  float[1, n, V] logits of every appended position (the last n_out are returned);
* ``truncate``: ``Generator.rewind_to(position)`` drops the KV from position on;
* ``open`` / ``close``: create / drop the session's generator.

``start`` must equal the session's current length: a generator appends, it does
not seek. The provider is the CPU by default; ``provider="cuda"`` needs the
``onnxruntime-genai-cuda`` package instead of ``onnxruntime-genai``.

This module also owns the vocabulary fingerprint of a Hugging Face
``tokenizer.json`` (``tokenizer_fingerprint``), built as llama.cpp would see the
same vocabulary after ``convert_hf_to_gguf.py``, so a GGUF drafter and this target
can be compared in the handshake. What it reproduces and what it cannot is listed
in that function's docstring. The TensorRT-LLM backend reuses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.vocab import SPECIALS, VocabFingerprint, fingerprint

from .backend import Backend

PROVIDERS = ("cpu", "cuda")


class OrtError(PicospecError):
    """ONNX Runtime GenAI could not load or evaluate a model."""


def _og() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise ConfigError(
            "onnxruntime-genai is not installed; run `pip install -e .[ort]` "
            "(CPU), or install `onnxruntime-genai-cuda` for the CUDA provider"
        ) from e
    return og


class OrtGenAIBackend(Backend):
    """A target model in an onnxruntime-genai model folder, one generator per session."""

    def __init__(
        self,
        path: str | Path,
        *,
        provider: str = "cpu",
        n_ctx: int = 2048,
        threads: int | None = None,
        max_sessions: int = 16,
        specials: Mapping[str, int] | None = None,
    ) -> None:
        """path: the model builder's output folder. n_ctx: the most tokens a
        session holds (clipped to the model's context_length; each generator
        reserves its KV for that many). threads: intra-op threads (None: ORT's
        default). specials: bos/eos/eot/pad ids that override the ones read from
        the tokenizer files (see ``tokenizer_fingerprint``)."""
        og = _og()
        path = Path(path)
        genai = _read_json(path / "genai_config.json")
        if provider not in PROVIDERS:
            raise ConfigError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        if provider == "cuda" and not og.is_cuda_available():
            raise ConfigError(
                "the CUDA provider needs the onnxruntime-genai-cuda package "
                "(`pip install onnxruntime-genai-cuda` in place of onnxruntime-genai); "
                "this install has no CUDA support"
            )
        model_cfg = genai.get("model", {})
        self.vocab_size = int(model_cfg["vocab_size"])
        self.n_ctx = min(n_ctx, int(model_cfg.get("context_length", n_ctx)))
        if self.n_ctx < 1:
            raise ConfigError(f"n_ctx must be at least 1, got {n_ctx}")
        self.name = f"onnxruntime-genai:{path.name}"
        self.path = path
        self.provider = provider
        self.max_sessions = max_sessions
        self.vocab = tokenizer_vocab(path, self.vocab_size, genai=model_cfg, overrides=specials)
        self._og = og
        self._model = _load_model(og, path, provider, threads)
        self._generators: dict[int, Any] = {}

    def fingerprint(self) -> VocabFingerprint:
        return self.vocab.fingerprint

    def is_end(self, token: int) -> bool:
        return token in self.vocab.end_ids

    def open(self, session: int) -> None:
        if session in self._generators:
            raise ConfigError(f"session {session} is already open")
        if len(self._generators) >= self.max_sessions:
            raise ConfigError(f"the backend serves at most {self.max_sessions} sessions at once")
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=self.n_ctx)
        self._generators[session] = self._og.Generator(self._model, params)

    def close(self, session: int) -> None:
        self._generators.pop(session, None)

    def _generator(self, session: int) -> Any:
        try:
            return self._generators[session]
        except KeyError:
            raise ConfigError(f"unknown session {session}") from None

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        gen = self._generator(session)
        n_out = len(tokens) if n_out is None else n_out
        if not 1 <= n_out <= len(tokens):
            raise ConfigError(f"n_out must be in 1..{len(tokens)}, got {n_out}")
        length = int(gen.token_count())
        if start != length:
            raise ConfigError(
                f"session {session} holds {length} tokens; a forward must start there, "
                f"not at {start}"
            )
        if start + len(tokens) > self.n_ctx:
            raise ConfigError(f"context full: {start + len(tokens)} tokens > n_ctx {self.n_ctx}")
        ids = _token_array(tokens, self.vocab_size)
        try:
            gen.append_tokens(ids)
            logits = np.asarray(gen.get_output("logits"))
        except RuntimeError as e:
            raise OrtError(f"onnxruntime-genai failed to evaluate {len(tokens)} tokens: {e}") from e
        if logits.shape[-2:] != (len(tokens), self.vocab_size):
            raise OrtError(
                f"the model returned logits of shape {logits.shape} for {len(tokens)} tokens; "
                f"the verifier needs one row per appended token (was the LM head pruned?)"
            )
        return np.array(logits.reshape(len(tokens), self.vocab_size)[-n_out:], dtype=np.float32)

    def truncate(self, session: int, position: int) -> None:
        gen = self._generator(session)
        if position < 0:
            raise ConfigError(f"cannot truncate to a negative position ({position})")
        if position < int(gen.token_count()):
            gen.rewind_to(position)


def _load_model(og: Any, path: Path, provider: str, threads: int | None) -> Any:
    config = og.Config(str(path))
    if threads is not None:  # before the provider calls, which edit the same session options
        options = {"intra_op_num_threads": int(threads)}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    config.clear_providers()
    if provider == "cuda":
        config.append_provider("cuda")
    try:
        return og.Model(config)
    except RuntimeError as e:
        raise OrtError(f"onnxruntime-genai could not load {path} on {provider}: {e}") from e


def _token_array(tokens: list[int], vocab_size: int) -> np.ndarray:
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ConfigError("a forward needs a non-empty list of token ids")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        raise ConfigError(f"token {int(ids[bad][0])} is outside the vocabulary of {vocab_size}")
    return ids.astype(np.int32)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path.name} not found in {path.parent}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


# -- the vocabulary as llama.cpp sees it ---------------------------------------------------

# llama_token_attr bits (llama.h).
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5

# Texts llama.cpp's loader (src/llama-vocab.cpp, "auto-detect special tokens by text")
# picks EOT from, and texts it forces to CONTROL (EOT/EOM/FIM/EOG lists).
_EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)  # fmt: skip
_CONTROL_TEXTS = frozenset(_EOT_TEXTS) | frozenset((
    "<|eom_id|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "</s>", "[EOS]",
    "<eos>", "<turn|>", "<|tool_response>", "[e~[",
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
    "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
    "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
    "<|code_middle|>", "<|middle|>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
))  # fmt: skip
# End-of-generation texts: llama.cpp's EOG list and its FIM pad/repo/file-separator tokens.
_EOG_TEXTS = frozenset(_EOT_TEXTS) | frozenset((
    "<|eom_id|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "</s>", "[EOS]",
    "<eos>", "<turn|>", "<|tool_response>", "[e~[",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
))  # fmt: skip
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass(frozen=True)
class TokenizerVocab:
    """What the verifier needs from a model folder's tokenizer files."""

    fingerprint: VocabFingerprint
    specials: dict[str, int]
    """bos, eos, eot, pad ids (-1 where none was found)."""
    end_ids: frozenset[int]
    """End-of-generation ids: eos/eot, the config's eos ids, llama.cpp's EOG texts."""


def tokenizer_vocab(
    folder: str | Path,
    vocab_size: int,
    *,
    genai: Mapping[str, Any] | None = None,
    overrides: Mapping[str, int] | None = None,
) -> TokenizerVocab:
    """The fingerprint, special ids and end ids of the tokenizer in folder.

    genai: the "model" section of a genai_config.json (bos/eos fallbacks when the
    folder has no config.json). overrides: ids that replace the detected ones.
    """
    folder = Path(folder)
    tok = _Tokenizer.load(folder)
    entries = tok.llama_entries(vocab_size)
    specials = _special_ids(folder, tok, genai or {})
    for name, value in (overrides or {}).items():
        if name not in SPECIALS:
            raise ConfigError(f"unknown special token {name!r}; expected one of {SPECIALS}")
        specials[name] = int(value)
    ends = {i for i, (text, _) in enumerate(entries) if text in _EOG_TEXTS}
    ends |= {specials[name] for name in ("eos", "eot") if specials[name] >= 0}
    ends |= {int(i) for i in _as_list((genai or {}).get("eos_token_id"))}
    fp = fingerprint(((text.encode(), attr) for text, attr in entries), specials)
    return TokenizerVocab(fp, specials, frozenset(ends))


def tokenizer_fingerprint(folder: str | Path, vocab_size: int) -> VocabFingerprint:
    """The fingerprint of folder/tokenizer.json, as llama.cpp would build it.

    Each id 0..vocab_size-1 gets the (text, attribute bits) that
    ``convert_hf_to_gguf.py`` writes and llama.cpp's loader then adjusts:

    * text: the vocabulary string as stored (byte-level BPE keeps "Ġ"-style
      characters, SentencePiece keeps "▁"); ids the tokenizer lacks become
      ``[PAD{id}]``, UNUSED (models whose embedding is padded past the tokenizer);
    * added tokens: re-encoded and decoded when not ``normalized``; CONTROL when
      ``special`` or when they look special (``<|...|>``, ``<pad>``, ...),
      otherwise USER_DEFINED with "▁" written as a space;
    * ``<0xNN>`` tokens of a byte-fallback model: BYTE; everything else NORMAL;
    * then, as llama.cpp does at load time: tokens whose text is on its EOT/EOM/FIM/EOG
      lists gain CONTROL, and CONTROL tokens whose text contains "unused" gain UNUSED.

    Special ids: bos/eos/pad from tokenizer_config.json's ``*_token`` entries
    looked up among the added tokens, then config.json's ``*_token_id`` (what
    gguf-py's SpecialVocab writes), then genai_config's bos/eos; eot is found by
    text as llama.cpp does.

    Not identical to llama.cpp in these cases (pass explicit ids to the backend,
    or compare fingerprints before serving):

    * when several EOT texts exist (SmolLM2 and Qwen have both ``<|endoftext|>``
      and ``<|im_end|>``), llama.cpp takes the first in its hash-map order, which
      is not reproducible here; this picks the lowest id, which matches llama.cpp
      on SmolLM2;
    * GGUFs converted from a SentencePiece ``tokenizer.model`` (Llama 2, Gemma)
      take types from the .model file (UNKNOWN, CONTROL, UNUSED per piece); here
      they come from tokenizer.json and may differ;
    * a missing bos/eos is -1 here, where llama.cpp falls back to per-type
      defaults (11 for GPT-2 BPE, 1 and 2 for SentencePiece);
    * llama.cpp's per-model attribute tweaks (LSTRIP/RSTRIP for phi-3 and jina,
      USER_DEFINED for gpt-oss channel tokens) and TemplateProcessing-derived EOT
      ids are not applied.
    """
    return tokenizer_vocab(folder, vocab_size).fingerprint


class _Tokenizer:
    """tokenizer.json read through ``tokenizers`` plus its raw added-token flags."""

    def __init__(self, tok: Any, spec: dict[str, Any]) -> None:
        self.tok = tok
        self.added = {int(a["id"]): a for a in spec.get("added_tokens", [])}
        model = spec.get("model", {})
        self.byte_fallback = bool(model.get("byte_fallback")) or model.get("type") == "Unigram"

    @classmethod
    def load(cls, folder: Path) -> _Tokenizer:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ConfigError("the `tokenizers` package is needed to read tokenizer.json") from e
        path = folder / "tokenizer.json"
        spec = _read_json(path)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise ConfigError(
                f"{path} is not a tokenizer the `tokenizers` package can read: {e}"
            ) from None
        return cls(tok, spec)

    def llama_entries(self, vocab_size: int) -> list[tuple[str, int]]:
        n = self.tok.get_vocab_size(with_added_tokens=True)
        if n > vocab_size:
            raise ConfigError(f"the tokenizer has {n} tokens but the model only {vocab_size}")
        entries = [self._entry(i) for i in range(vocab_size)]
        return [(text, _loader_attr(text, attr)) for text, attr in entries]

    def _entry(self, i: int) -> tuple[str, int]:
        text = self.tok.id_to_token(i)
        if text is None:
            return f"[PAD{i}]", ATTR_UNUSED
        added = self.added.get(i)
        if added is not None:
            if not added.get("normalized", True):
                ids = self.tok.encode(text, add_special_tokens=False).ids
                text = self.tok.decode(ids, skip_special_tokens=False)
            if added.get("special") or _looks_special(text):
                return text, ATTR_CONTROL
            return text.replace("▁", " "), ATTR_USER_DEFINED
        if self.byte_fallback and _BYTE_TOKEN.fullmatch(text):
            return text, ATTR_BYTE
        return text, ATTR_NORMAL

    def added_id(self, content: str) -> int | None:
        return next((i for i, a in self.added.items() if a.get("content") == content), None)


def _looks_special(text: str) -> bool:
    """convert_hf_to_gguf.py's does_token_look_special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _loader_attr(text: str, attr: int) -> int:
    """The attribute adjustments llama.cpp's loader makes by token text."""
    if text in _CONTROL_TEXTS:
        attr |= ATTR_CONTROL
    if attr & ATTR_CONTROL and "unused" in text:
        attr |= ATTR_UNUSED
    return attr


def _special_ids(folder: Path, tok: _Tokenizer, genai: Mapping[str, Any]) -> dict[str, int]:
    cfg = _read_optional(folder / "tokenizer_config.json")
    hf = _read_optional(folder / "config.json")
    ids: dict[str, int] = {}
    for name in ("bos", "eos", "pad"):
        entry = cfg.get(f"{name}_token")
        content = entry.get("content") if isinstance(entry, dict) else entry
        found = tok.added_id(content) if isinstance(content, str) else None
        if found is None:
            found = _int(hf.get(f"{name}_token_id"))
        if found is None and name != "pad":  # genai_config's pad is the builder's guess
            found = _int(genai.get(f"{name}_token_id"))
        ids[name] = -1 if found is None else found
    vocab = tok.tok.get_vocab(with_added_tokens=True)
    eot = [vocab[text] for text in _EOT_TEXTS if text in vocab]
    ids["eot"] = min(eot) if eot else -1
    return {name: ids[name] for name in SPECIALS}


def _read_optional(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_list(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []
