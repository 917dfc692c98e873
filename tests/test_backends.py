"""Choosing a verifier backend by name (``picospec cloud serve --backend``)."""

from __future__ import annotations

import pytest

from picospec.cli import main
from picospec.cloud.backends import BACKENDS, open_backend
from picospec.codec.errors import ConfigError


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ConfigError, match="choose one of llama, torch, ort, trtllm"):
        open_backend("vllm", "/nowhere")


def test_tensorrt_llm_says_it_is_missing_and_unverified():
    try:
        import tensorrt_llm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="not installed"):
            open_backend("trtllm", "/nowhere")
    else:  # pragma: no cover - no TensorRT-LLM in this workplace
        pytest.skip("TensorRT-LLM is installed")


@pytest.mark.models
def test_llama_backend_by_name(smollm2):
    backend = open_backend("llama", smollm2["target"], n_ctx=128, threads=1, max_sessions=2)
    assert backend.vocab_size == 49152 and backend.name.startswith("llama.cpp:")


def test_serve_refuses_a_non_default_backend_without_a_model(capsys, tmp_path):
    argv = ["cloud", "serve", "--backend", "torch", "--cert", "c", "--key", "k", "--token", "t"]
    assert main(argv) == 2
    assert "--backend torch needs --model" in capsys.readouterr().err
    assert set(BACKENDS) == {"llama", "torch", "ort", "trtllm"}


def test_gpus_is_refused_where_a_target_cannot_span_gpus():
    with pytest.raises(ConfigError, match="--gpus 2: a target spans several GPUs only with"):
        open_backend("llama", "/nowhere/model.gguf", gpus=2)
    with pytest.raises(ConfigError, match="ort on m runs on one device"):
        open_backend("ort", "/nowhere/m", gpus=2)
    with pytest.raises(ConfigError, match="gpus must be >= 1"):
        open_backend("torch", "/nowhere/m", gpus=0)


def test_torch_over_more_gpus_than_torch_sees_says_how_many_it_sees(tmp_path):
    torch = pytest.importorskip("torch")
    from picospec.cloud.torch_backend import TorchBackend

    if torch.cuda.is_available() and torch.cuda.device_count() >= 64:  # pragma: no cover
        pytest.skip("this machine has 64 GPUs")
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=f"--gpus 64 was asked for, but torch sees {found} CUDA"):
        TorchBackend.from_pretrained(tmp_path, gpus=64)
