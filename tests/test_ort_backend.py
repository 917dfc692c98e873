"""The onnxruntime-genai verifier backend against the shared backend contract.

A tiny random Llama (tests/tiny_onnx.py) is saved with transformers and converted
with onnxruntime-genai's model builder once per module (about 8 s on 2 cores).
Its ORT logits are checked against the same model run by transformers/torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_onnx
from backend_contract import BackendContract

from picospec.cloud.hf_vocab import LlamaVocab
from picospec.cloud.ort_backend import OrtGenAIBackend
from picospec.codec.errors import ConfigError

TORCH_ATOL = 1e-4
"""ORT fp32 vs torch fp32 logits (logits span about +-6): measured at most 9e-6."""


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    for name in ("onnxruntime_genai", "torch", "transformers", "onnx_ir", "onnxscript"):
        pytest.importorskip(name)
    root = tmp_path_factory.mktemp("tiny_onnx")
    tiny_onnx.build_hf_llama(root / "hf")
    tiny_onnx.build_onnx(root / "hf", root / "onnx", root / "cache")
    return {"hf": root / "hf", "onnx": root / "onnx"}


@pytest.fixture(scope="module")
def backend(model_dirs):
    return OrtGenAIBackend(model_dirs["onnx"], n_ctx=128, threads=2)


@pytest.fixture(scope="module")
def prompt(model_dirs):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dirs["onnx"] / "tokenizer.json"))
    return [1, *tok.encode("A robot arm picks up a red cube and").ids]


class TestOrtGenAIBackend(BackendContract):
    pass


def test_logits_equal_the_transformers_model(backend, model_dirs, prompt):
    import torch
    from transformers import LlamaForCausalLM

    seq = prompt + [(7919 * (i + 1)) % backend.vocab_size for i in range(12)]
    model = LlamaForCausalLM.from_pretrained(model_dirs["hf"]).eval()
    with torch.no_grad():
        want = model(torch.tensor([seq])).logits[0].numpy()
    backend.open(201)
    try:
        head = backend.forward(201, 0, seq[:-4])
        steps = [backend.forward(201, i, [seq[i]]) for i in range(len(seq) - 4, len(seq))]
    finally:
        backend.close(201)
    got = np.concatenate([head, *steps])
    np.testing.assert_allclose(got, want, atol=TORCH_ATOL, rtol=0)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_forward_must_start_at_the_session_length(backend, prompt):
    backend.open(202)
    try:
        backend.forward(202, 0, prompt, n_out=1)
        with pytest.raises(ConfigError, match=rf"holds {len(prompt)} tokens.*not at 3"):
            backend.forward(202, 3, prompt)
    finally:
        backend.close(202)


def test_out_of_vocabulary_token_and_full_context_are_config_errors(backend, prompt):
    backend.open(203)
    try:
        with pytest.raises(ConfigError, match="outside the vocabulary"):
            backend.forward(203, 0, [backend.vocab_size])
        with pytest.raises(ConfigError, match="context full"):
            backend.forward(203, 0, [1] * (backend.n_ctx + 1))
    finally:
        backend.close(203)


def test_max_sessions_is_enforced(model_dirs):
    small = OrtGenAIBackend(model_dirs["onnx"], n_ctx=16, max_sessions=1)
    small.open(1)
    with pytest.raises(ConfigError, match="at most 1 sessions"):
        small.open(2)
    small.close(1)
    small.open(2)


def test_cuda_provider_without_the_cuda_package_is_a_clear_error(model_dirs):
    import onnxruntime_genai as og

    if og.is_cuda_available():
        pytest.skip("this install has CUDA")
    with pytest.raises(ConfigError, match="onnxruntime-genai-cuda"):
        OrtGenAIBackend(model_dirs["onnx"], provider="cuda")
    with pytest.raises(ConfigError, match="provider must be one of"):
        OrtGenAIBackend(model_dirs["onnx"], provider="tpu")


def test_fingerprint_and_end_ids_come_from_the_folder_tokenizer(backend, model_dirs):
    want = LlamaVocab.from_folder(model_dirs["onnx"], tiny_onnx.MODEL_VOCAB)
    fp = backend.fingerprint()
    assert fp.difference(want.fingerprint) is None and fp.specials == (1, 2, 0, -1)
    assert [i for i in range(backend.vocab_size) if backend.is_end(i)] == [0, 2]


def test_missing_library_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # import now fails
    with pytest.raises(ConfigError, match=r"pip install -e \.\[ort\]"):
        OrtGenAIBackend(tmp_path)
