"""llama.cpp adapter: the one module that imports ``llama_cpp``.

A resource-owning wrapper over llama.cpp's C API (through llama-cpp-python's
raw binding): a model, one context with its KV cache, a reusable batch, and
zero-copy views of the logits rows llama.cpp writes. The edge drafter and the
cloud verifier both build on this; neither imports ``llama_cpp`` itself.
``llama_cpp`` is imported lazily, so the codec and the tests that need no model
run without it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.vocab import VocabFingerprint, fingerprint


class ModelError(PicospecError):
    """A GGUF model could not be loaded or evaluated."""


def _lib() -> Any:
    try:
        import llama_cpp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ModelError(
            "llama-cpp-python is not installed; run `pip install -e .[models]` "
            "(it builds llama.cpp from source, about 12 minutes on 2 cores)"
        ) from e
    return llama_cpp


def default_threads() -> int:
    """llama.cpp threads when none are asked for: half the cores (at least one).

    A drafter and a verifier on one machine (the demo, a laptop, the tests) each
    get half; with every core each, llama.cpp's spinning workers fight over the
    same cores and a 19 ms drafter step takes 60 ms. A verifier alone on its host
    is started with ``--threads`` set to its cores.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def quantize(src: Path, dst: Path, ftype: str = "Q2_K", threads: int | None = None) -> None:
    """Requantise a GGUF with llama.cpp's own quantiser (allow_requantize)."""
    lib = _lib()
    _init_backend(lib)
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    params.nthread = threads or os.cpu_count() or 1
    status = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        raise ModelError(f"llama.cpp could not quantise {src} to {ftype} (status {status})")


class LlamaWeights:
    """A loaded GGUF model and its vocabulary (shared by any number of contexts)."""

    def __init__(self, path: str | Path, *, gpu_layers: int = 0) -> None:
        """gpu_layers: layers llama.cpp offloads to a GPU (-1: all); a build of
        llama.cpp without a GPU backend keeps every layer on the CPU."""
        lib = self._lib = _lib()
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model file not found: {path}")
        if gpu_layers < -1:
            raise ConfigError(f"gpu_layers must be >= -1 (-1: all), got {gpu_layers}")
        _init_backend(lib)
        mparams = lib.llama_model_default_params()
        mparams.use_extra_bufts = not _has_amx(lib)
        mparams.n_gpu_layers = 2**30 if gpu_layers == -1 else gpu_layers
        self._model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ModelError(f"llama.cpp could not load {path} (not a GGUF model?)")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.path = path
        self.vocab_size = int(lib.llama_vocab_n_tokens(self._vocab))
        self.train_ctx = int(lib.llama_model_n_ctx_train(self._model))

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of text (with the model's BOS when it wants one)."""
        data = text.encode()
        cap = len(data) + 16
        buf = (self._lib.llama_token * cap)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, cap, special, special)
        if n < 0:
            cap = -n
            buf = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, cap, special, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens rendered as their text)."""
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)]

    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, ...)."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def token_info(self, token: int) -> tuple[bytes, int]:
        """(text, attribute bits) of a vocabulary entry, for fingerprints."""
        text = self._lib.llama_vocab_get_text(self._vocab, token) or b""
        return text, int(self._lib.llama_vocab_get_attr(self._vocab, token))

    def special_ids(self) -> dict[str, int]:
        lib, v = self._lib, self._vocab
        return {
            "bos": int(lib.llama_vocab_bos(v)),
            "eos": int(lib.llama_vocab_eos(v)),
            "eot": int(lib.llama_vocab_eot(v)),
            "pad": int(lib.llama_vocab_pad(v)),
        }

    @functools.cached_property
    def vocab_fingerprint(self) -> VocabFingerprint:
        """The vocabulary fingerprint both sides compare in the handshake."""
        entries = (self.token_info(i) for i in range(self.vocab_size))
        return fingerprint(entries, self.special_ids())

    def chat_prompt(self, user: str) -> str:
        """The model's own chat template applied to one user message."""
        return self.chat([{"role": "user", "content": user}])

    def chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The model's own chat template over messages ({"role", "content"} each),
        ending where the assistant's reply starts."""
        lib = self._lib
        tmpl = lib.llama_model_chat_template(self._model, None)
        if not tmpl:  # no template in the GGUF: use llama.cpp's built-in one for the family
            tmpl = b"gemma" if self.architecture().startswith("gemma") else b"chatml"
        if not messages:
            raise ConfigError("a chat needs at least one message")
        encoded = []
        for i, m in enumerate(messages):
            role, content = m.get("role"), m.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise ConfigError(f"messages[{i}] needs a string role and a string content")
            encoded.append((role.encode(), content.encode()))
        msgs = (lib.llama_chat_message * len(encoded))(
            *(lib.llama_chat_message(role=r, content=c) for r, c in encoded)
        )
        size = sum(len(c) + len(r) for r, c in encoded) * 2 + 4096
        buf = ctypes.create_string_buffer(size)
        n = lib.llama_chat_apply_template(tmpl, msgs, len(encoded), True, buf, len(buf))
        if n > len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            n = lib.llama_chat_apply_template(tmpl, msgs, len(encoded), True, buf, len(buf))
        if n < 0:
            raise ModelError(f"{self.path.name} has no usable chat template")
        return buf.raw[:n].decode(errors="replace")

    def architecture(self) -> str:
        """The GGUF's general.architecture (e.g. "llama", "gemma3")."""
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_model_meta_val_str(self._model, b"general.architecture", buf, len(buf))
        return buf.value.decode() if n > 0 else ""

    def close(self) -> None:
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()


class LlamaContext:
    """One evaluation context over shared weights: its own KV cache, holding
    n_seq sequences of up to n_ctx tokens each (their KV apart, never unified)."""

    def __init__(
        self,
        weights: LlamaWeights,
        *,
        n_ctx: int = 2048,
        n_batch: int = 512,
        threads: int | None = None,
        n_seq: int = 1,
    ) -> None:
        lib = self._lib = weights._lib
        if n_seq < 1:
            raise ConfigError(f"a context holds at least one sequence, got n_seq={n_seq}")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx * n_seq
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq
        cparams.kv_unified = False
        cparams.n_threads = cparams.n_threads_batch = threads or default_threads()
        self._ctx = lib.llama_init_from_model(weights._model, cparams)
        if not self._ctx:
            raise ModelError(f"llama.cpp could not create a context of {n_seq} x {n_ctx} tokens")
        self.weights = weights  # keeps the model alive as long as the context
        self.n_ctx = n_ctx
        self.n_seq = n_seq
        self.n_batch = n_batch
        self.vocab_size = weights.vocab_size
        self._batch = lib.llama_batch_init(n_batch, 0, 1)

    def decode(self, tokens: list[int], start: int, *, all_logits: bool = False) -> None:
        """Evaluate tokens at positions start.., in batches of n_batch.

        Afterwards ``logits(i)`` reads the logits after token i of the last
        batch (-1: the last token); every token has them when ``all_logits``
        (then tokens must fit in one batch).
        """
        if not tokens:
            raise ConfigError("decode needs at least one token")
        if start + len(tokens) > self.n_ctx:
            raise ModelError(f"context full: {start + len(tokens)} tokens > n_ctx {self.n_ctx}")
        if all_logits and len(tokens) > self.n_batch:
            raise ConfigError(f"all_logits needs at most n_batch={self.n_batch} tokens")
        b = self._batch
        for lo in range(0, len(tokens), self.n_batch):
            chunk = tokens[lo : lo + self.n_batch]
            b.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = start + lo + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = all_logits or (lo + i == len(tokens) - 1)
            status = self._lib.llama_decode(self._ctx, b)
            if status != 0:
                raise ModelError(f"llama_decode failed with status {status}")

    def decode_many(self, spans: Sequence[tuple[int, int, Sequence[int], int]]) -> list[np.ndarray]:
        """Evaluate several sequences' tokens together: spans of (sequence, start,
        tokens, n_out), packed into as few decode calls of n_batch tokens as they
        fit. Returns a copy of float32[n_out, V] logits per span, after each of
        its last n_out tokens. The sequences' KV stay apart (one seq id each)."""
        entries: list[tuple[int, int, int, int, int]] = []  # seq, pos, token, span, row
        out: list[np.ndarray] = []
        for k, (seq, start, tokens, n_out) in enumerate(spans):
            if not 0 <= seq < self.n_seq:
                raise ConfigError(f"sequence {seq} is outside 0..{self.n_seq - 1}")
            if not tokens or not 1 <= n_out <= len(tokens):
                raise ConfigError(f"a span needs tokens and 1 <= n_out <= {len(tokens)}")
            if start + len(tokens) > self.n_ctx:
                raise ModelError(f"context full: {start + len(tokens)} tokens > n_ctx {self.n_ctx}")
            first_out = len(tokens) - n_out
            for i, t in enumerate(tokens):
                entries.append((seq, start + i, t, k, i - first_out))
            out.append(np.empty((n_out, self.vocab_size), dtype=np.float32))
        b = self._batch
        for lo in range(0, len(entries), self.n_batch):
            chunk = entries[lo : lo + self.n_batch]
            b.n_tokens = len(chunk)
            for i, (seq, pos, t, _, row) in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = row >= 0
            status = self._lib.llama_decode(self._ctx, b)
            if status != 0:
                raise ModelError(f"llama_decode failed with status {status}")
            for i, (_, _, _, k, row) in enumerate(chunk):
                if row >= 0:
                    out[k][row] = self.logits(i)
        return out

    def logits(self, i: int = -1) -> np.ndarray:
        """Zero-copy float32[V] view of the logits after token i of the last decode.

        Valid until the next decode; copy it to keep it.
        """
        ptr = self._lib.llama_get_logits_ith(self._ctx, i)
        if not ptr:
            raise ModelError(f"no logits for output row {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.vocab_size,))

    def truncate(self, position: int, seq: int = 0) -> None:
        """Forget every KV entry of a sequence from position on (rollback)."""
        mem = self._lib.llama_get_memory(self._ctx)
        if not self._lib.llama_memory_seq_rm(mem, seq, position, -1):
            raise ModelError(f"llama.cpp could not truncate the KV cache at {position}")

    def copy_seq(self, src: int, dst: int) -> None:
        """Make sequence dst hold what sequence src holds (its KV stream copied whole;
        the copy happens at the next decode)."""
        if src == dst or not (0 <= src < self.n_seq and 0 <= dst < self.n_seq):
            raise ConfigError(f"cannot copy sequence {src} to {dst} of {self.n_seq}")
        mem = self._lib.llama_get_memory(self._ctx)
        self._lib.llama_memory_seq_rm(mem, dst, 0, -1)
        self._lib.llama_memory_seq_cp(mem, src, dst, -1, -1)

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> LlamaContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def open_model(path: str | Path, **context_args: Any) -> LlamaContext:
    """Weights and one context in one call (the context keeps the weights alive)."""
    return LlamaContext(LlamaWeights(path), **context_args)


@functools.cache
def _init_backend(lib: Any) -> None:
    """Initialise llama.cpp once per process and silence its logging."""
    lib.llama_backend_init()
    lib.llama_log_set(_SILENT, ctypes.c_void_p(0))


@functools.cache
def _has_amx(lib: Any) -> bool:
    """True when llama.cpp was built with its AMX kernels (a -march=native build on
    a Sapphire Rapids class CPU). Their extra weight buffers crash the first decode
    on the virtualised CPUs we run on (llama.cpp issue 20824), so models load
    without extra buffer types there; elsewhere weight repacking stays on."""
    return b"AMX_INT8 = 1" in (lib.llama_print_system_info() or b"")


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _SILENT(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp log callback that drops its chatter."""
