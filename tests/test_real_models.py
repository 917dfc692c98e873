"""The real smollm2 pair through the drafter, the llama.cpp backend and the
in-process loop: rollback, self-speculation, scheme contracts, exactness."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from picospec.cloud.llama_backend import LlamaBackend
from picospec.cloud.target import TargetSequence
from picospec.codec import ops
from picospec.codec.errors import ConfigError
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Scheme
from picospec.edge.drafter import Drafter
from picospec.lab.inprocess import generate
from picospec.runtime.llamacpp import LlamaContext, LlamaWeights

pytestmark = pytest.mark.models

PROMPT = "Explain what a robot arm does in two sentences."


@pytest.fixture(scope="module")
def backend(smollm2):
    return LlamaBackend(smollm2["target"], n_ctx=512, threads=2)


def drafter(path) -> Drafter:
    return Drafter.open(path, n_ctx=512, threads=2)


def samp(scheme=Scheme.SPARSE_Q, t=1.0, k=8, **params) -> Sampling:
    return Sampling(SamplingParams(temperature=t, **params), scheme, k, allow_inexact=True)


def chat(d: Drafter) -> list[int]:
    w = d.ctx.weights
    return w.tokenize(w.chat_prompt(PROMPT))


def test_rollback_reproduces_a_fresh_evaluation(smollm2):
    ctx = LlamaContext(LlamaWeights(smollm2["drafter"]), n_ctx=256, threads=2)
    tokens = ctx.weights.tokenize(PROMPT)
    ctx.decode(tokens, 0)
    fresh = ctx.logits().copy()
    ctx.decode([11, 22, 33, 44], len(tokens))
    ctx.truncate(len(tokens) - 1)
    ctx.decode(tokens[-1:], len(tokens) - 1)
    # llama.cpp's numerics depend slightly on batch shape: compare with a tolerance.
    np.testing.assert_allclose(ctx.logits(), fresh, atol=2e-3, rtol=0)


def test_drafter_redrafts_the_same_tokens_after_rollback(smollm2):
    d = drafter(smollm2["drafter"])
    prompt = chat(d)
    d.begin(prompt, 5, samp())
    first = [x.token for x in d.draft(6)]
    d.rollback(len(prompt) + 2)
    again = [x.token for x in d.draft(4)]
    assert again == first[2:]
    assert d.stats.rollbacks == 1 and d.stats.drafted == 10


def test_self_speculation_accepts_nearly_everything(smollm2, backend):
    # q covers p's whole support (top_k 40 <= K 64), so only quantisation to
    # 1/65536 and batch-shape numerics can cause a rejection.
    d = drafter(smollm2["target"])
    drafted = accepted = 0
    for seed in range(4):
        gen = generate(
            d, backend, chat(d), mode="sync", sampling=samp(k=64, top_k=40), max_new_tokens=64,
            seed=seed,
        )  # fmt: skip
        drafted, accepted = drafted + gen.drafted, accepted + gen.accepted
    assert drafted >= 64
    assert accepted / drafted >= 0.98


def test_self_speculation_greedy_equals_cloud_only(smollm2, backend):
    d, greedy = drafter(smollm2["target"]), samp(Scheme.GREEDY, t=0.0)
    sync = generate(d, backend, chat(d), mode="sync", sampling=greedy, max_new_tokens=48)
    cloud = generate(d, backend, chat(d), mode="cloud-only", sampling=greedy, max_new_tokens=48)
    assert sync.token_ids == cloud.token_ids
    assert sync.accept_rate == 1.0


def test_greedy_with_the_q2k_drafter_equals_cloud_only(smollm2, backend):
    d, greedy = drafter(smollm2["drafter"]), samp(Scheme.GREEDY, t=0.0)
    sync = generate(d, backend, chat(d), mode="sync", sampling=greedy, max_new_tokens=48)
    pipe = generate(d, backend, chat(d), mode="pipeline", sampling=greedy, max_new_tokens=48)
    cloud = generate(d, backend, chat(d), mode="cloud-only", sampling=greedy, max_new_tokens=48)
    assert sync.token_ids == pipe.token_ids == cloud.token_ids
    assert 0 < sync.accept_rate < 1  # a real drafter: some drafts are rejected


def test_gumbel_sync_equals_cloud_only_at_temperature_one(smollm2, backend):
    d, gumbel = drafter(smollm2["drafter"]), samp(Scheme.GUMBEL)
    for seed in (0, 1):
        sync = generate(
            d, backend, chat(d), mode="sync", sampling=gumbel, max_new_tokens=32, seed=seed
        )
        cloud = generate(
            d, backend, chat(d), mode="cloud-only", sampling=gumbel, max_new_tokens=32, seed=seed
        )
        assert sync.token_ids == cloud.token_ids


@pytest.mark.parametrize("scheme", [Scheme.SPARSE_Q, Scheme.SPLIT])
def test_split_is_flagged_inexact_only_when_p_does_not_fit(smollm2, backend, scheme):
    d = drafter(smollm2["drafter"])
    fits = samp(scheme, top_k=8)  # p's support fits K=8
    assert generate(
        d, backend, chat(d), mode="sync", sampling=fits, max_new_tokens=32, seed=2
    ).exact
    wide = samp(scheme)  # p's support is the whole vocabulary
    gen = generate(d, backend, chat(d), mode="sync", sampling=wide, max_new_tokens=32, seed=2)
    assert gen.exact == (scheme is Scheme.SPARSE_Q)


@pytest.mark.slow
def test_verified_tokens_follow_the_target_distribution(smollm2, backend):
    """Sparse-q at T=1: the token emitted at the first drafted position, over
    many seeds, against the target's exact distribution there (chi-square)."""
    params = SamplingParams(temperature=1.0)
    warm = samp()
    d = drafter(smollm2["drafter"])
    context = d.ctx.weights.tokenize("The robot picked up the")
    backend.open(99)
    try:
        p = ops.transform_dense(backend.forward(99, 0, context, n_out=1)[0], params)
        counts = np.zeros(p.size)
        n = 600
        for seed in range(n):
            backend.truncate(99, 0)
            seq = TargetSequence(backend, 99, warm, seed)
            seq.begin(context)
            d.begin(context, seed, warm)
            drafts = d.draft(2)
            out = seq.verify(len(context), [x.token for x in drafts], q=[x.q for x in drafts])
            counts[drafts[0].token if out.accepted else out.token] += 1
    finally:
        backend.close(99)
    expected = n * p
    keep = expected >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    assert keep.sum() >= 5, "the test needs a spread-out distribution"
    assert stats.chisquare(obs, exp).pvalue > 0.01


def test_a_target_with_another_vocabulary_is_refused_by_name(smollm2):
    from markov import MarkovBackend

    d = drafter(smollm2["drafter"])
    with pytest.raises(ConfigError, match="vocabulary size 49152 vs 6"):
        generate(d, MarkovBackend(), chat(d), mode="sync", max_new_tokens=4)


def test_drafter_and_target_files_share_a_fingerprint(smollm2, backend):
    w = LlamaWeights(smollm2["drafter"])
    assert w.vocab_fingerprint.difference(backend.fingerprint()) is None
    assert w.vocab_fingerprint.digest == backend.fingerprint().digest


def test_sessions_in_one_backend_do_not_disturb_each_other(backend):
    a, b = [1, 2, 3, 4, 5], [9, 8, 7]
    backend.open(11)
    backend.open(12)
    try:
        alone = backend.forward(11, 0, a)
        backend.truncate(11, 0)
        backend.forward(12, 0, b)
        interleaved_a = backend.forward(11, 0, a[:2])
        backend.truncate(12, 1)  # a rollback in session 12 ...
        backend.forward(12, 1, [4])
        rest = backend.forward(11, 2, a[2:])  # ... leaves session 11 intact
        np.testing.assert_allclose(np.concatenate([interleaved_a, rest]), alone, atol=2e-3)
    finally:
        backend.close(11)
        backend.close(12)


def test_gpu_layers_on_a_cpu_build_change_nothing_and_a_bad_value_is_refused(smollm2):
    """The Jetson setting (gpu_layers = -1) is accepted by a CPU build of llama.cpp,
    which keeps every layer on the CPU: the same logits as gpu_layers = 0."""
    tokens = LlamaWeights(smollm2["drafter"]).tokenize(PROMPT)
    logits = []
    for layers in (0, -1):
        ctx = LlamaContext(LlamaWeights(smollm2["drafter"], gpu_layers=layers), n_ctx=256,
                           threads=2)  # fmt: skip
        ctx.decode(tokens, 0)
        logits.append(ctx.logits().copy())
    np.testing.assert_array_equal(logits[0], logits[1])
    with pytest.raises(ConfigError, match="gpu_layers must be >= -1"):
        LlamaWeights(smollm2["drafter"], gpu_layers=-2)
