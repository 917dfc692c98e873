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

The vocabulary fingerprint comes from the folder's tokenizer files, read as
llama.cpp would see the same vocabulary after ``convert_hf_to_gguf.py``
(cloud/hf_vocab.py), so a GGUF drafter and this target can be compared in the
handshake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from picospec.codec.errors import ConfigError, PicospecError

from .backend import Sessions, VocabBackend, check_forward
from .hf_vocab import LlamaVocab, read_json

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


class OrtGenAIBackend(VocabBackend):
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
        the tokenizer files (see ``LlamaVocab.from_folder``)."""
        og = _og()
        path = Path(path)
        genai = read_json(path / "genai_config.json")
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
        self.max_context = self.n_ctx
        if self.n_ctx < 1:
            raise ConfigError(f"n_ctx must be at least 1, got {n_ctx}")
        self.name = f"onnxruntime-genai:{path.name}"
        self.path = path
        self.provider = provider
        self.max_sessions = max_sessions
        fallback = {name: model_cfg.get(f"{name}_token_id") for name in ("bos", "eos")}
        self.vocab = LlamaVocab.from_folder(
            path,
            self.vocab_size,
            fallback_ids=fallback,  # not genai's pad: the model builder's guess
            eos_ids=_as_list(model_cfg.get("eos_token_id")),
        ).with_specials(**(specials or {}))
        self._og = og
        self._model = _load_model(og, path, provider, threads)
        self._generators: Sessions[Any] = Sessions(max_sessions)

    def open(self, session: int) -> None:
        def generator() -> Any:
            params = self._og.GeneratorParams(self._model)
            params.set_search_options(max_length=self.n_ctx)
            return self._og.Generator(self._model, params)

        self._generators.open(session, generator)

    def close(self, session: int) -> None:
        self._generators.close(session)

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        gen = self._generators[session]
        n_out = check_forward(
            session,
            start,
            int(gen.token_count()),
            tokens,
            n_out,
            vocab_size=self.vocab_size,
            capacity=self.n_ctx,
        )
        ids = np.asarray(tokens, dtype=np.int32)  # checked by check_forward
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

    def _truncate(self, session: int, position: int) -> None:
        gen = self._generators[session]
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


def _as_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []
