"""The verifier backends by name: what ``picospec cloud serve --backend`` can run.

Each backend module imports its model library lazily, so choosing one never
loads the others. ``open_backend`` passes on only the options a backend
understands, and refuses an unknown name with the list of known ones.
"""

from __future__ import annotations

from pathlib import Path

from picospec.codec.errors import ConfigError

from .backend import Backend

BACKENDS = {
    "llama": "llama.cpp on CPU (a GGUF file); the embedded default",
    "torch": "torch/transformers (a Hugging Face directory or a GGUF file); CUDA when present",
    "ort": "ONNX Runtime GenAI (a model-builder folder); CPU, or CUDA with onnxruntime-genai-cuda",
    "trtllm": "TensorRT-LLM LLM API (a Hugging Face directory); NOT verified in this project",
}


def open_backend(
    kind: str,
    model: str | Path,
    *,
    n_ctx: int = 2048,
    threads: int | None = None,
    max_sessions: int = 16,
    device: str | None = None,
    batched: bool = True,
    prefix_cache: bool = True,
    gpus: int = 1,
) -> Backend:
    """The named backend serving model (batched: evaluate many sessions' forwards
    as one batch, where the backend can; prefix_cache: reuse the KV of a prompt
    prefix another session evaluated, where the backend can; gpus: the GPUs one
    target spans: torch places its layers across them, trtllm runs tensor
    parallel over them; neither is verified on more than one GPU)."""
    path = Path(model)
    if gpus < 1:
        raise ConfigError(f"gpus must be >= 1, got {gpus}")
    if gpus > 1 and (kind not in ("torch", "trtllm") or path.suffix == ".gguf"):
        raise ConfigError(
            f"--gpus {gpus}: a target spans several GPUs only with --backend torch (a Hugging "
            f"Face directory) or trtllm; {kind} on {path.name} runs on one device"
        )
    if kind == "llama":
        from .llama_backend import LlamaBackend

        return LlamaBackend(
            path,
            n_ctx=n_ctx,
            threads=threads,
            max_sessions=max_sessions,
            batched=batched,
            share_prefixes=prefix_cache,
        )
    if kind == "torch":
        from .torch_backend import TorchBackend

        options = dict(
            device=device, max_sessions=max_sessions, max_context=n_ctx, threads=threads,
            batched=batched,
        )  # fmt: skip
        if path.suffix == ".gguf":
            return TorchBackend.from_gguf(path, **options)
        return TorchBackend.from_pretrained(path, gpus=gpus, **options)
    if kind == "ort":
        from .ort_backend import OrtGenAIBackend

        return OrtGenAIBackend(
            path,
            provider=device or "cpu",
            n_ctx=n_ctx,
            threads=threads,
            max_sessions=max_sessions,
        )
    if kind == "trtllm":
        from .trtllm_backend import TrtLlmBackend

        parallel = {"tensor_parallel_size": gpus} if gpus > 1 else {}
        return TrtLlmBackend(
            path, max_seq_len=n_ctx, max_sessions=max_sessions, llm_kwargs=parallel
        )
    raise ConfigError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
