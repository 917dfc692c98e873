"""The torch/transformers verifier backend: a Hugging Face causal LM serving sessions.

Owns: running a transformers causal language model (on a GPU when there is one)
behind the ``Backend`` interface. Its vocabulary, described as llama.cpp does so
that a llama.cpp drafter and this verifier agree on the fingerprint, comes from
cloud/hf_vocab.py. It is the only module that imports torch and transformers,
always lazily: importing it needs neither, and building a backend without them
raises a ``ConfigError`` that names the extra to install.

KV cache: one transformers ``DynamicCache`` per session, created without the
model's config, so every layer keeps its whole past (a sliding-window layer
too). Rollback is then ``crop`` to any earlier position, exact, and sessions
share nothing but the weights. A ``StaticCache`` would make CUDA graphs and
``torch.compile`` possible, but it reserves max-context KV per session up front
and its rollback relies on masking stale slots; the dynamic cache's cost, one
concatenation per layer and forward (O(context) copies), is small next to
reading the weights at the context lengths a verifier sees. Neither
``torch.compile`` nor CUDA graphs are offered: nothing here shows that they pay.

Distributions: ``forward`` must return host float32 logits (the interface's
contract), but it keeps the device copy of the rows it returned last; when
``distributions`` is given that very array, the sampling transform runs on the
device (cloud/torch_sampling.py) and only the support of p comes back. The
float32 rows still cross once (the interface returns them); what stays on the
device is the float64 transform over the whole vocabulary. That is the default
on CUDA; on the CPU the shared host transform is used unless
``device_transform=True``.

Batching: ``forward_many`` runs the forwards of every session that has a past
as one model call (cloud/torch_batch.py: each past left-padded into one batch
cache, the blocks right-padded, a mask and per-row positions, the caches
scattered back); a session's first forward (its prompt) runs alone. The
batch's copies of the pasts are its cost; a paged KV cache would avoid them.
``batched=False`` evaluates one session per forward.
"""

from __future__ import annotations

import inspect
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from picospec.codec.errors import ConfigError, PicospecError
from picospec.codec.sampling import SamplingParams

from .backend import Forward, Sessions, VocabBackend, check_forward
from .hf_vocab import LlamaVocab

EXTRA = "pip install -e .[torch]"


class TorchBackendError(PicospecError):
    """The model failed while evaluating a forward (out of memory, a device error)."""


def _libraries() -> tuple[Any, Any]:
    """torch and transformers, or a ConfigError that says how to install them."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ConfigError(
            f"the torch verifier backend needs torch and transformers ({e}); "
            f"install them with `{EXTRA}`"
        ) from e
    return torch, transformers


# --- the backend ---------------------------------------------------------------------


@dataclass
class _Session:
    cache: Any
    length: int = 0
    """Positions held in the KV cache."""


DTYPES = ("bf16", "fp16", "fp32")


class TorchBackend(VocabBackend):
    """A transformers causal LM with one KV cache per session (see the module docstring)."""

    batch_note = (
        "torch: the forwards of sessions with a past run as one padded batch over their "
        "own DynamicCaches (copied in and out); prompts run alone"
    )

    def __init__(
        self,
        model: Any,
        vocab: LlamaVocab,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_sessions: int = 16,
        max_context: int | None = None,
        device_transform: bool | None = None,
        threads: int | None = None,
        name: str = "torch",
        placed: bool = False,
        batched: bool = True,
    ) -> None:
        """model: a transformers causal LM (``model(input_ids=..., position_ids=...,
        cache=..., use_cache=True)`` returning ``.logits``); device: "cuda" when
        available, else "cpu"; dtype: "bf16" on CUDA, "fp32" on the CPU;
        max_context: positions per session (default: the model's
        max_position_embeddings); device_transform: run the sampling transform on
        the device (default: on CUDA only); threads: CPU threads for torch's
        operators (process-wide, ``torch.set_num_threads``; default: torch's own);
        placed: the model's layers are already on their devices (a multi-GPU
        device map, ``from_pretrained(gpus=N)``): it is not moved, and device is
        where the inputs go (the first GPU); batched: run many sessions'
        forwards as one (``forward_many``)."""
        torch, _ = _libraries()
        self._torch = torch
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.device = _resolve_device(torch, device)
        self.dtype_name = dtype or ("bf16" if self.device.type == "cuda" else "fp32")
        self.dtype = _torch_dtype(torch, self.dtype_name)
        self.model = (model if placed else model.to(device=self.device, dtype=self.dtype)).eval()
        self.vocab_size = _output_width(model)
        if vocab.size != self.vocab_size:
            raise ConfigError(
                f"the vocabulary has {vocab.size} tokens but the model outputs {self.vocab_size}"
            )
        self.vocab = vocab
        self.name = name
        config = getattr(model, "config", None)
        self.max_context = int(
            max_context or getattr(config, "max_position_embeddings", None) or 4096
        )
        self.max_sessions = max_sessions
        self.device_transform = (
            self.device.type == "cuda" if device_transform is None else device_transform
        )
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" in params
        self._sessions: Sessions[_Session] = Sessions(max_sessions)
        self._last: list[tuple[np.ndarray, Any]] = []  # (host rows, their device copy)
        self.batches = batched
        if not batched:
            self.batch_note = "torch: one session per forward (batched=False)"

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, *, gpus: int = 1, **options: Any) -> TorchBackend:
        """A Hugging Face model directory (config.json, safetensors, tokenizer).

        gpus > 1 places the layers across the first gpus CUDA devices
        (transformers' ``device_map="balanced"``, which needs accelerate), for a
        target larger than one GPU's memory: the layers run one GPU after the
        other (pipeline placement, not tensor parallelism), so it adds memory,
        not speed. NOT VERIFIED: this project has had no multi-GPU machine."""
        torch, transformers = _libraries()
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"not a model directory: {path}")
        placement = _placement(torch, gpus)
        if placement:
            options.update(device="cuda:0", placed=True)
        dtype = _torch_dtype(torch, _default_dtype(torch, options))
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, local_files_only=True, **placement
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"could not load a causal LM from {path}: {e}") from None
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        fallback = {k: getattr(model.config, f"{k}_token_id", None) for k in ("bos", "eos", "pad")}
        vocab = LlamaVocab.from_tokenizer(
            tokenizer, _output_width(model), fallback_ids=fallback, eos_ids=eos_ids
        )
        options.setdefault("name", f"torch:{path.name}" + (f" on {gpus} GPUs" if placement else ""))
        return cls(model, vocab, **options)

    @classmethod
    def from_gguf(cls, path: str | Path, **options: Any) -> TorchBackend:
        """A GGUF file, dequantised by transformers' GGUF reader into a torch model
        (the weights are then those llama.cpp would compute with, before its own
        quantised arithmetic)."""
        torch, transformers = _libraries()
        path = Path(path)
        vocab = LlamaVocab.from_gguf(path)
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        dtype = _torch_dtype(torch, _default_dtype(torch, options))
        try:
            config = transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
            state = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"transformers could not load {path}: {e}") from None
        _load_weights(model, state["tensors"], str(path))
        options.setdefault("name", f"torch:{path.name}")
        return cls(model, vocab, **options)

    @classmethod
    def random_llama(
        cls,
        *,
        vocab_size: int,
        hidden: int,
        layers: int,
        heads: int,
        kv_heads: int,
        intermediate: int,
        seed: int = 0,
        max_context: int = 4096,
        **options: Any,
    ) -> TorchBackend:
        """A randomly initialised Llama of the given shape, built on the backend's
        device in its dtype (for timing and tests: no trained weights needed).
        Seeds torch's global generator."""
        torch, transformers = _libraries()
        device = _resolve_device(torch, options.get("device"))
        options["device"] = str(device)
        dtype = _torch_dtype(torch, _default_dtype(torch, options))
        config = transformers.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            intermediate_size=intermediate,
            max_position_embeddings=max_context,
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
        shape = f"h{hidden} L{layers} heads {heads}/{kv_heads} ff{intermediate} V{vocab_size}"
        options.setdefault("name", f"torch:random-llama {shape}")
        return cls(model, LlamaVocab.numbered(vocab_size), **options)

    # --- the Backend interface ---------------------------------------------------------

    def open(self, session: int) -> None:
        self._sessions.open(session, lambda: _Session(self._new_cache()))

    def close(self, session: int) -> None:
        self._sessions.close(session)

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        s = self._sessions[session]
        n_out = check_forward(
            session,
            start,
            s.length,
            tokens,
            n_out,
            vocab_size=self.vocab_size,
            capacity=self.max_context,
        )
        torch = self._torch
        kwargs: dict[str, Any] = {self._cache_arg: s.cache, "use_cache": True}
        if self._keep_arg:
            kwargs["logits_to_keep"] = n_out
        with torch.inference_mode():
            ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
            positions = torch.arange(start, start + len(tokens), device=self.device)[None, :]
            try:
                out = self.model(input_ids=ids, position_ids=positions, **kwargs)
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError among them
                _rewind(s.cache, start)
                raise TorchBackendError(
                    f"the forward of {len(tokens)} tokens at position {start} failed: {e}"
                ) from None
            rows = out.logits[0, -n_out:].float().contiguous()
        s.length = start + len(tokens)
        host = rows.cpu().numpy()
        self._last = [(host, rows)]
        return host

    def forward_many(self, requests: Sequence[Forward]) -> list[np.ndarray | PicospecError]:
        """One model call for the requests of sessions with a past (one each);
        the rest, and every request when not batched, one at a time. A bad
        request fails alone; a failed batch fails each of its requests, and every
        session's cache stays as it was."""
        if not self.batches or len(requests) < 2:
            return super().forward_many(requests)
        from .torch_batch import Row, forward_rows

        out: list[np.ndarray | PicospecError | None] = [None] * len(requests)
        rows: list[Row] = []
        where: list[int] = []
        alone: list[int] = []
        recent: list[tuple[np.ndarray, Any]] = []  # each result and its device copy
        for i, r in enumerate(requests):
            try:
                s = self._sessions[r.session]
                n_out = check_forward(
                    r.session, r.start, s.length, list(r.tokens), r.n_out,
                    vocab_size=self.vocab_size, capacity=self.max_context,
                )  # fmt: skip
            except PicospecError as e:
                out[i] = e
                continue
            if s.length == 0 or any(requests[j].session == r.session for j in where):
                alone.append(i)
            else:
                rows.append(Row(s.cache, s.length, r.tokens, n_out))
                where.append(i)
        if len(rows) < 2:
            alone, where = sorted(alone + where), []
        else:
            try:
                with self._torch.inference_mode():
                    caches, logits = forward_rows(
                        self._torch, self.model, self.device, rows, cache_arg=self._cache_arg
                    )
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError among them
                failed = TorchBackendError(f"a batched forward of {len(rows)} sessions failed: {e}")
                for i in where:
                    out[i] = failed
            else:
                for i, cache, dev in zip(where, caches, logits, strict=True):
                    s = self._sessions[requests[i].session]
                    s.cache, s.length = cache, s.length + len(requests[i].tokens)
                    host = dev.cpu().numpy()
                    recent.append((host, dev))
                    out[i] = host
        for i in alone:
            r = requests[i]
            try:
                out[i] = self.forward(r.session, r.start, list(r.tokens), r.n_out)
                recent += self._last
            except PicospecError as e:
                out[i] = e
        self._last = recent
        assert all(o is not None for o in out)
        return [o for o in out if o is not None]

    def _truncate(self, session: int, position: int) -> None:
        s = self._sessions[session]
        if position >= s.length:
            return
        if position == 0:
            s.cache = self._new_cache()
        else:
            s.cache.crop(position - s.length)  # a negative count: drop that many positions
        s.length = position

    def distributions(self, logits: np.ndarray, params: SamplingParams) -> np.ndarray:
        if not self.device_transform:
            return super().distributions(logits, params)
        from . import torch_sampling

        return torch_sampling.distributions(self._device_rows(logits), params)

    # --- helpers -----------------------------------------------------------------------

    @property
    def device_name(self) -> str:
        """The device in words (the GPU's name, or the CPU's)."""
        if self.device.type == "cuda":
            return str(self._torch.cuda.get_device_name(self.device))
        return f"cpu ({platform.processor() or platform.machine()})"

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache()

    def _device_rows(self, logits: np.ndarray) -> Any:
        """The device copy of rows the last forward returned, else an upload of them."""
        for host, dev in self._last:
            if host is logits:
                return dev
        return self._torch.from_numpy(np.ascontiguousarray(logits)).to(self.device)


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _resolve_device(torch: Any, device: str | None) -> Any:
    """A torch.device: the one asked for, else CUDA when there is one, else the CPU."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but torch sees no CUDA device")
    return dev


def _placement(torch: Any, gpus: int) -> dict[str, Any]:
    """``from_pretrained`` arguments that spread a model over gpus CUDA devices
    (none for one)."""
    if gpus < 1:
        raise ConfigError(f"gpus must be >= 1, got {gpus}")
    if gpus == 1:
        return {}
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus:
        raise ConfigError(f"--gpus {gpus} was asked for, but torch sees {found} CUDA devices")
    try:
        import accelerate  # noqa: F401  (transformers' device_map needs it)
    except ImportError:
        raise ConfigError(
            f"placing a model over {gpus} GPUs needs accelerate; install it with `{EXTRA}`"
        ) from None
    memory = {i: torch.cuda.get_device_properties(i).total_memory for i in range(gpus)}
    return {"device_map": "balanced", "max_memory": memory}


def _default_dtype(torch: Any, options: Mapping[str, Any]) -> str:
    if options.get("dtype"):
        return str(options["dtype"])
    device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return "bf16" if str(device).startswith("cuda") else "fp32"


def _torch_dtype(torch: Any, name: str) -> Any:
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return table[name]


def _output_width(model: Any) -> int:
    """The number of logits the model produces per position."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _load_weights(model: Any, state: dict[str, Any], where: str) -> None:
    """Load a state dict; a missing key is accepted only when its tensor is tied to
    a loaded one (the output head sharing the embedding)."""
    result = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in state if k in params}
    missing = [k for k in result.missing_keys if k not in params or id(params[k]) not in loaded]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{where}: the weights do not fit the model "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )


def _rewind(cache: Any, start: int) -> None:
    """Cut every layer of a cache back to start positions (after a failed forward,
    which may have extended some layers and not others)."""
    for layer in getattr(cache, "layers", []):
        n = int(layer.get_seq_length())
        if n > start:
            layer.crop(start - n)
