"""The TensorRT-LLM backend's bookkeeping, with a fake engine in TensorRT-LLM's place.

TensorRT-LLM is not installed here, so the real adapter is never run (see the
module docstring of picospec.cloud.trtllm_backend). ``FakeEngine`` stands in for
``tensorrt_llm.LLM``: a deterministic "model" whose logits after position i depend
on tokens[: i + 1] only, with KV block reuse modelled as TensorRT-LLM documents it
(positions in reused blocks get no context logits). The backend contract then
checks the position bookkeeping, truncation and session isolation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_onnx
from backend_contract import BackendContract

from picospec.cloud import trtllm_backend
from picospec.cloud.trtllm_backend import TrtLlmBackend, TrtLlmError
from picospec.codec.errors import ConfigError

V = tiny_onnx.MODEL_VOCAB


class FakeEngine:
    """A ContextLogitsEngine with prefix-keyed logits and block reuse across requests."""

    def __init__(self, vocab_size: int = V, block: int = 4, width: int | None = None) -> None:
        self.vocab_size = vocab_size
        self.block = block
        self.width = width or vocab_size
        self.cached: set[tuple[int, ...]] = set()
        self.requests: list[tuple[list[int], int]] = []
        """(tokens sent, rows returned) per request."""

    def row(self, prefix: list[int]) -> np.ndarray:
        seed = hashlib.blake2b(np.asarray(prefix, dtype="<i4").tobytes(), digest_size=8)
        rng = np.random.default_rng(int.from_bytes(seed.digest(), "little"))
        return (3 * rng.standard_normal(self.width)).astype(np.float32)

    def context_logits(self, tokens: list[int]) -> np.ndarray:
        reused = 0  # full blocks before the last token, found in an earlier request
        for end in range(self.block, len(tokens), self.block):
            if tuple(tokens[:end]) not in self.cached:
                break
            reused = end
        for end in range(self.block, len(tokens) + 1, self.block):
            self.cached.add(tuple(tokens[:end]))
        rows = np.stack([self.row(tokens[: i + 1]) for i in range(reused, len(tokens))])
        self.requests.append((list(tokens), len(rows)))
        return rows


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("trt_checkpoint")
    tiny_onnx.write_tokenizer(folder)
    config = {"vocab_size": V, "bos_token_id": 1, "eos_token_id": 2}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def backend(checkpoint):
    return TrtLlmBackend(checkpoint, engine=FakeEngine(), max_seq_len=256)


@pytest.fixture(scope="module")
def prompt(checkpoint):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    return [1, *tok.encode("A robot arm picks up a red cube and").ids]


class TestTrtLlmBackendWithFakeEngine(BackendContract):
    pass


def test_module_imports_without_tensorrt_llm():
    if importlib.util.find_spec("tensorrt_llm") is None:
        assert "tensorrt_llm" not in sys.modules
    assert "NOT verified" in trtllm_backend.__doc__ + trtllm_backend.UNVERIFIED


def test_constructing_without_the_library_says_it_is_missing_and_unverified(
    monkeypatch, checkpoint
):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import now fails
    with pytest.raises(ConfigError) as e:
        TrtLlmBackend(checkpoint)
    assert "TensorRT-LLM is not installed" in str(e.value)
    assert "NOT verified in this project" in str(e.value)


def test_gpus_become_tensorrt_llms_tensor_parallel_size(monkeypatch, checkpoint):
    """What ``cloud serve --backend trtllm --gpus N`` hands TensorRT-LLM (the
    library itself is faked: it cannot be installed here)."""
    import types

    from picospec.cloud.backends import open_backend

    seen: dict[str, object] = {}

    def llm(**kwargs):
        seen.update(kwargs)
        return object()

    fake = types.ModuleType("tensorrt_llm")
    fake.LLM, fake.SamplingParams = llm, lambda **kw: kw  # type: ignore[attr-defined]
    api = types.ModuleType("tensorrt_llm.llmapi")
    api.KvCacheConfig = lambda **kw: ("kv", kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", fake)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", api)
    open_backend("trtllm", checkpoint, n_ctx=512, gpus=4)
    assert seen["tensor_parallel_size"] == 4 and seen["max_seq_len"] == 512
    seen.clear()
    open_backend("trtllm", checkpoint, n_ctx=512)
    assert "tensor_parallel_size" not in seen


def test_each_forward_resends_the_session_sequence(checkpoint, prompt):
    engine = FakeEngine()
    b = TrtLlmBackend(checkpoint, engine=engine)
    b.open(1)
    b.forward(1, 0, prompt, n_out=1)
    b.forward(1, len(prompt), [5, 6, 7])
    assert engine.requests[-1][0] == [*prompt, 5, 6, 7]
    b.truncate(1, len(prompt) + 1)
    b.forward(1, len(prompt) + 1, [9])
    assert engine.requests[-1][0] == [*prompt, 5, 9]


def test_rows_of_reused_blocks_come_from_the_row_cache(checkpoint, prompt):
    engine = FakeEngine()
    b = TrtLlmBackend(checkpoint, engine=engine)
    block = [11, 12, 13, 14, 15]
    rows = []
    for session in (1, 2):  # the same prompt and block in two sessions
        b.open(session)
        b.forward(session, 0, prompt, n_out=1)
        rows.append(b.forward(session, len(prompt), block))
    assert engine.requests[-1][1] < len(block)  # the fake reused blocks: rows were missing
    np.testing.assert_array_equal(rows[1], rows[0])
    want = np.stack([engine.row([*prompt, *block[: i + 1]]) for i in range(len(block))])
    np.testing.assert_array_equal(rows[1], want)


def test_missing_rows_without_a_row_cache_are_a_trtllm_error(checkpoint, prompt):
    b = TrtLlmBackend(checkpoint, engine=FakeEngine(), row_cache=0)
    b.open(1)
    b.open(2)
    b.forward(1, 0, prompt)
    with pytest.raises(TrtLlmError, match="block_reuse=False"):
        b.forward(2, 0, prompt)
    with pytest.raises(ConfigError, match="holds 0 tokens"):  # the failed forward kept nothing
        b.forward(2, 1, prompt)


def test_logits_of_the_wrong_width_are_a_trtllm_error(checkpoint, prompt):
    b = TrtLlmBackend(checkpoint, engine=FakeEngine(width=V - 1))
    b.open(1)
    with pytest.raises(TrtLlmError, match="context logits of shape"):
        b.forward(1, 0, prompt)


def test_bookkeeping_errors_name_the_numbers(checkpoint, prompt):
    b = TrtLlmBackend(checkpoint, engine=FakeEngine(), max_seq_len=16, max_sessions=1)
    b.open(1)
    with pytest.raises(ConfigError, match="at most 1 sessions"):
        b.open(2)
    b.forward(1, 0, prompt[:3])
    with pytest.raises(ConfigError, match=r"holds 3 tokens.*not at 5"):
        b.forward(1, 5, [1])
    with pytest.raises(ConfigError, match="context full: 17 tokens > 16, the most a session holds"):
        b.forward(1, 3, [1] * 14)
    with pytest.raises(ConfigError, match=rf"token id\(s\) \[{V}\] outside the vocabulary"):
        b.forward(1, 3, [V])
    with pytest.raises(ConfigError, match="negative position"):
        b.truncate(1, -1)
    with pytest.raises(ConfigError, match="unknown session 9"):
        b.truncate(9, 0)


def test_fingerprint_and_end_ids_come_from_the_checkpoint_tokenizer(backend):
    fp = backend.fingerprint()
    assert fp.size == V and fp.specials == (1, 2, 0, -1)
    assert [i for i in range(V) if backend.is_end(i)] == [0, 2]


def test_specials_given_by_hand_replace_the_detected_ones(checkpoint):
    b = TrtLlmBackend(checkpoint, engine=FakeEngine(), specials={"eot": 2, "pad": 0})
    assert b.fingerprint().specials == (1, 2, 2, 0)
    with pytest.raises(ConfigError, match="unknown special"):
        TrtLlmBackend(checkpoint, engine=FakeEngine(), specials={"eom": 3})


def test_real_library_matches_transformers(tmp_path):
    """Needs TensorRT-LLM and a GPU; never run in this project."""
    pytest.importorskip("tensorrt_llm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT-LLM needs a CUDA GPU")
    from transformers import LlamaForCausalLM

    tiny_onnx.build_hf_llama(tmp_path)
    b = TrtLlmBackend(tmp_path, max_seq_len=128, llm_kwargs={"dtype": "float32"})
    seq = [1, 40, 50, 60, 70, 80, 90]
    b.open(1)
    got = np.concatenate([b.forward(1, 0, seq[:4]), b.forward(1, 4, seq[4:])])
    with torch.no_grad():
        want = LlamaForCausalLM.from_pretrained(tmp_path).eval()(torch.tensor([seq])).logits[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-2, rtol=0)
