"""The torch/transformers verifier backend: the shared contract on a tiny random
Llama, the device-side sampling transform against the reference, a real GGUF
against llama.cpp, and the CPU path of bench gpu."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from backend_contract import BackendContract

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from picospec.cloud import torch_sampling  # noqa: E402
from picospec.cloud.hf_vocab import LlamaVocab  # noqa: E402
from picospec.cloud.torch_backend import TorchBackend  # noqa: E402
from picospec.codec import ops  # noqa: E402
from picospec.codec.errors import ConfigError, KernelError  # noqa: E402
from picospec.codec.sampling import SamplingParams  # noqa: E402
from picospec.lab.bench import gpu  # noqa: E402
from picospec.lab.profiles import CloudProfile, load  # noqa: E402

VOCAB = 512
CORPUS = [
    "A robot arm picks up a red cube and puts it down on the table.",
    "The quick brown fox jumps over the lazy dog.",
] * 20


def tiny_tokenizer():
    """A byte-level BPE trained in memory (about 320 entries) with three special
    tokens and one plain added token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    hf.add_tokens(["<robot>"])
    return hf


DEVICE = os.environ.get("PICOSPEC_TEST_DEVICE", "cpu")
"""Where the contract and the batching test run (deploy/gpu/measure.sh sets cuda)."""


def tiny_llama(seed: int = 0):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a small shared CPU, two threads spinning against other
    work make a tiny forward 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def backend(tokenizer):
    vocab = LlamaVocab.from_tokenizer(tokenizer, VOCAB)
    return TorchBackend(tiny_llama(), vocab, device=DEVICE, dtype="fp32", device_transform=True)


@pytest.fixture(scope="module")
def prompt(tokenizer):
    return tokenizer.encode("A robot arm picks up a red cube and")


class TestTorchBackend(BackendContract):
    pass


# --- the backend's own rules ------------------------------------------------------------


def test_forward_must_start_at_the_kv_length(backend, prompt):
    backend.open(201)
    try:
        backend.forward(201, 0, prompt, n_out=1)
        with pytest.raises(ConfigError, match=rf"holds {len(prompt)} tokens.*not at 3"):
            backend.forward(201, 3, [5])
        backend.truncate(201, 3)
        assert backend.forward(201, 3, [5]).shape == (1, VOCAB)
    finally:
        backend.close(201)


def test_tokens_outside_the_vocabulary_are_refused(backend):
    backend.open(202)
    try:
        with pytest.raises(ConfigError, match="outside the vocabulary"):
            backend.forward(202, 0, [1, VOCAB])
        assert backend.forward(202, 0, [1, 2]).shape == (2, VOCAB)  # nothing was evaluated
    finally:
        backend.close(202)


def test_sessions_beyond_the_limit_are_refused(tokenizer):
    small = TorchBackend(
        tiny_llama(), LlamaVocab.from_tokenizer(tokenizer, VOCAB), device="cpu", max_sessions=1
    )
    small.open(1)
    with pytest.raises(ConfigError, match="at most 1 sessions"):
        small.open(2)
    small.close(1)
    small.open(2)


def test_cpu_default_is_fp32_with_the_host_transform(tokenizer, prompt):
    plain = TorchBackend(tiny_llama(), LlamaVocab.from_tokenizer(tokenizer, VOCAB), device="cpu")
    assert plain.dtype == torch.float32 and not plain.device_transform
    plain.open(1)
    logits = plain.forward(1, 0, prompt)
    params = SamplingParams(temperature=0.8, top_k=40)
    want = np.stack([ops.transform_dense(row, params) for row in logits])
    np.testing.assert_array_equal(plain.distributions(logits, params), want)


def test_distributions_of_rows_not_from_the_last_forward(backend, prompt):
    """Rows the backend did not just return (a copy, an older forward) are
    uploaded and give the same distributions."""
    backend.open(203)
    try:
        first = backend.forward(203, 0, prompt)
        backend.forward(203, len(prompt), [7, 8])
    finally:
        backend.close(203)
    params = SamplingParams(temperature=0.9, top_p=0.8)
    want = np.stack([ops.transform_dense(row, params) for row in first])
    np.testing.assert_allclose(backend.distributions(first.copy(), params), want, atol=1e-6)


def test_batched_forwards_equal_one_session_at_a_time(tokenizer, prompt):
    """Sessions with pasts of different lengths in one padded batch: each gets the
    logits and then the cache it would alone (the next forwards agree too), a
    prompt and a bad request in the same call run alone."""
    from picospec.cloud.backend import Forward

    vocab = LlamaVocab.from_tokenizer(tokenizer, VOCAB)
    one = TorchBackend(tiny_llama(), vocab, device=DEVICE, dtype="fp32", batched=False)
    many = TorchBackend(tiny_llama(), vocab, device=DEVICE, dtype="fp32")
    assert many.batches and not one.batches
    pasts = {1: prompt, 2: prompt[:3], 3: [*prompt[:7], 9, 10]}
    for b in (one, many):
        for sid, past in pasts.items():
            b.open(sid)
            b.forward(sid, 0, past)
        b.open(4)  # no past yet: its prompt runs alone
    rounds = [
        [Forward(1, len(prompt), (5, 6, 7, 8, 9), 5), Forward(2, 3, (11,), 1),
         Forward(3, 9, (12, 13), 2), Forward(4, 0, tuple(prompt[:4]), 1)],
        [Forward(1, len(prompt) + 5, (3,), 1), Forward(2, 4, (4, 5, 6), 3),
         Forward(3, 11, (7,), 1), Forward(4, 4, (8, 9), 2),
         Forward(3, 99, (7,), 1)],  # a bad start: refused alone
    ]  # fmt: skip
    worst = 0.0
    for requests in rounds:
        alone, batched = one.forward_many(requests), many.forward_many(requests)
        for a, b in zip(alone, batched, strict=True):
            if isinstance(a, Exception):
                assert isinstance(b, Exception) and "not at 99" in str(a) and "not at 99" in str(b)
                continue
            assert isinstance(b, np.ndarray) and a.shape == b.shape
            worst = max(worst, float(np.abs(a - b).max()))
            assert (a.argmax(-1) == b.argmax(-1)).all()
    assert worst < 1e-4, worst  # fp32 on the CPU: the same sums, a different batch shape
    params = SamplingParams(temperature=0.9)
    rows = many.forward_many([Forward(1, len(prompt) + 6, (2,), 1), Forward(2, 7, (3,), 1)])
    assert isinstance(rows[0], np.ndarray)
    want = np.stack([ops.transform_dense(r, params) for r in rows[0]])
    np.testing.assert_allclose(many.distributions(rows[0], params), want, atol=1e-6)


def test_sliding_window_layers_roll_back_past_the_window():
    """Gemma 3 style sliding-window layers keep their whole past in the session's
    cache, so a rollback past the window gives the model's own one-pass logits."""
    config = transformers.Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(config)
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, VOCAB, 20)]
    with torch.inference_mode():
        one_pass = model(input_ids=torch.tensor([tokens]), use_cache=False).logits[0].numpy()
    b = TorchBackend(model, LlamaVocab.numbered(VOCAB), device="cpu")
    b.open(1)
    b.forward(1, 0, tokens[:8], n_out=1)
    b.forward(1, 8, tokens[8:14])
    b.truncate(1, 10)  # 4 positions back, with 10 > window positions seen
    again = b.forward(1, 10, tokens[10:])
    np.testing.assert_allclose(again, one_pass[10:], atol=1e-4, rtol=0)


def test_from_pretrained_reads_the_folder_vocabulary(tmp_path):
    import tiny_onnx

    tiny_onnx.build_hf_llama(tmp_path)
    b = TorchBackend.from_pretrained(tmp_path, device="cpu")
    want = LlamaVocab.from_folder(tmp_path, tiny_onnx.MODEL_VOCAB)
    assert b.fingerprint().difference(want.fingerprint) is None
    assert b.vocab.end_ids == {0, 2}


def test_importing_the_module_needs_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import picospec.cloud.torch_backend as tb\n"
        "try:\n"
        "    tb.TorchBackend.random_llama(vocab_size=8, hidden=8, layers=1, heads=1,"
        " kv_heads=1, intermediate=8)\n"
        "except tb.ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install -e .[torch]" in out.stdout


# --- the sampling transform on the device ------------------------------------------------

TRANSFORMS = [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=1.3, top_k=20),
    SamplingParams(temperature=1.0, top_k=20, top_p=0.9),
    SamplingParams(temperature=0.8, top_p=0.5),
    SamplingParams(temperature=1.0, min_p=0.05),
    SamplingParams(temperature=0.6, top_k=50, top_p=0.95, min_p=0.1),
    SamplingParams(temperature=1.0, top_k=1),
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=2.0, top_k=VOCAB + 5),
    SamplingParams(temperature=1.0, top_p=1e-9),
]


def logits_rows(seed: int = 0) -> np.ndarray:
    """float32[6, 300]: normal rows, rows with many exact ties, a row of equal
    logits, a row with -inf entries."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(0.0, 3.0, size=(6, 300)).astype(np.float32)
    rows[1] = np.round(rows[1])  # ties everywhere
    rows[2] = np.round(rows[2] / 4) * 4  # few distinct values
    rows[3] = 0.5  # all equal
    rows[4, ::3] = -np.inf
    rows[5, 7] = rows[5, 11] = rows[5].max() + 1.0  # a tie at the top
    return rows


@pytest.mark.parametrize("params", TRANSFORMS, ids=str)
def test_torch_transform_matches_the_reference(params):
    rows = logits_rows()
    got = torch_sampling.distributions(torch.from_numpy(rows), params)
    want = np.stack([ops.transform_dense(row, params) for row in rows])
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_array_equal(got > 0, want > 0)  # the same support, ties included
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_ties_keep_the_lowest_ids():
    rows = torch.zeros((1, 10), dtype=torch.float32)
    top3 = torch_sampling.distributions(rows, SamplingParams(top_k=3))
    np.testing.assert_allclose(top3[0], [1 / 3] * 3 + [0.0] * 7, atol=1e-15)
    greedy = torch_sampling.distributions(rows, SamplingParams(temperature=0.0))
    assert greedy[0, 0] == 1.0 and greedy.sum() == 1.0


def test_support_is_what_travels():
    rows = torch.from_numpy(logits_rows())
    s = torch_sampling.support(rows, SamplingParams(temperature=1.0, top_k=5))
    assert s.ids.shape == (6, 5) and s.sizes.tolist() == [5] * 6
    np.testing.assert_allclose(s.probs.sum(dim=1).numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_logits_are_refused_like_the_reference(bad):
    rows = logits_rows()
    rows[2, 5] = bad
    with pytest.raises(KernelError, match=r"row\(s\) \[2\]"):
        torch_sampling.distributions(torch.from_numpy(rows), SamplingParams())
    with pytest.raises(KernelError):
        ops.transform_dense(rows[2], SamplingParams())


# --- a real GGUF through transformers against llama.cpp ---------------------------------------

GGUF_LOGIT_ATOL = 2.0
"""Largest |torch - llama.cpp| logit allowed. Measured on SmolLM2 Q4_1: at most
1.0 on this test's prompt and continuation, 1.5 over 98 rows of three chat
prompts with 16 greedy steps each (mean 0.20; logits span about -20..30).
llama.cpp quantises the activations inside its Q4_1 matrix products; the
dequantised torch model computes in float32."""
GGUF_MAX_TV = 0.15
"""Largest total variation between the two T = 1 distributions of a row
(measured: at most 0.077, mean 0.020, over the same 98 rows)."""


@pytest.fixture(scope="module")
def gguf_pair(smollm2):
    pytest.importorskip("gguf")
    from picospec.cloud.llama_backend import LlamaBackend

    path = smollm2["target"]
    return TorchBackend.from_gguf(path, device="cpu"), LlamaBackend(path, n_ctx=256, threads=2)


@pytest.mark.models
def test_gguf_through_transformers_decodes_like_llama_cpp(gguf_pair):
    torch_b, llama_b = gguf_pair
    prompt = llama_b.weights.tokenize("A robot arm picks up a red cube and")
    rows = {}
    for name, b in (("torch", torch_b), ("llama", llama_b)):
        b.open(1)
        try:
            out = [b.forward(1, 0, prompt)]
            pos = len(prompt)
            for _ in range(6):  # greedy continuation, each backend from its own tokens
                out.append(b.forward(1, pos, [int(out[-1][-1].argmax())]))
                pos += 1
            rows[name] = np.concatenate(out)
        finally:
            b.close(1)
    t, ll = rows["torch"], rows["llama"]
    n = len(prompt) - 1  # from the row that predicts the first new token on
    np.testing.assert_array_equal(t[n:].argmax(axis=1), ll[n:].argmax(axis=1))
    diff = np.abs(t - ll).max()
    assert diff < GGUF_LOGIT_ATOL, f"max logit difference {diff}"
    params = SamplingParams(temperature=1.0)
    tv = [
        0.5 * np.abs(ops.transform_dense(a, params) - ops.transform_dense(b, params)).sum()
        for a, b in zip(t, ll, strict=True)
    ]
    assert max(tv) < GGUF_MAX_TV, f"total variation up to {max(tv)}"


@pytest.mark.models
def test_gguf_fingerprint_equals_llama_cpp(gguf_pair):
    torch_b, llama_b = gguf_pair
    assert llama_b.fingerprint().difference(torch_b.fingerprint()) is None
    ends = [i for i in range(torch_b.vocab_size) if llama_b.is_end(i)]
    assert sorted(torch_b.vocab.end_ids) == ends


# --- bench gpu on the CPU ------------------------------------------------------------------


def test_bench_gpu_tiny_runs_validates_and_writes_a_profile(tmp_path):
    out = tmp_path / "cloud.json"
    r = gpu.run(tiny=True, prompt_len=16, repeats=2, decode_tokens=4, threads=1, out=out)
    assert r["validation"]["max_abs_diff"] <= r["validation"]["tolerance"]
    assert r["device_transform"]  # the tiny run checks the GPU's code path
    assert sorted(r["verify_ms"]) == list(range(1, 10))
    profile = load(out, "cloud")
    assert isinstance(profile, CloudProfile) and len(profile.verify_ms) == 9
    assert "cpu" in profile.source and "fp32" in profile.source
    assert r["decode_tok_s"] > 0
    assert sorted(r["batched_round_ms"]) == list(gpu.BATCHES)
    assert profile.batched_round_ms == r["batched_round_ms"]
    text = gpu.render(r)
    assert "gamma" in text and "decode" in text and "B sessions" in text


def test_bench_gpu_without_cuda_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ConfigError, match="--tiny"):
        gpu.run()
