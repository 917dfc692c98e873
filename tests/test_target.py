"""TargetSequence bookkeeping against a model-free backend.

The fake target is a Markov chain (tests/markov.py): the logits after a token
depend on that token alone, so the exact target distribution at every position
is known and every forward can be checked for the positions it evaluates.
"""

from __future__ import annotations

import numpy as np
import pytest
from markov import MarkovBackend, V

from picospec.cloud.target import TargetSequence
from picospec.codec import ops
from picospec.codec.errors import ConfigError
from picospec.codec.rng import Purpose
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import SparseDist
from picospec.codec.verify import split_correction


def make(scheme=Scheme.SPARSE_Q, t=1.0, seed=0):
    backend = MarkovBackend()
    backend.open(1)
    sampling = Sampling(SamplingParams(temperature=t), scheme, k=V, allow_inexact=True)
    seq = TargetSequence(backend, 1, sampling, seed)
    return backend, seq


def q_for(backend, prev: int, params) -> SparseDist:
    return SparseDist.from_counts(*ops.transform_topk(backend.table[(prev + 1) % V], params, 3))


def test_prefill_commits_one_token_and_evaluates_the_prompt_once():
    backend, seq = make()
    first = seq.prefill([0, 1, 2])
    assert seq.tokens == [0, 1, 2, first]
    assert backend.forwards == [(0, 3)]


def test_a_long_prompt_is_evaluated_in_chunks_that_continue_the_kv():
    backend, seq = make()
    seq.start(list(range(V)) * 3)  # 18 tokens
    steps = 0
    while not seq.prefill_step(5):
        steps += 1
    assert steps == 3 and backend.forwards == [(0, 5), (5, 5), (10, 5), (15, 3)]
    first = seq.decode_one()  # the last chunk's row: no forward more
    assert len(backend.forwards) == 4 and seq.tokens[-1] == first


def test_fully_accepted_block_keeps_the_next_row_and_skips_recomputation():
    backend, seq = make(Scheme.GREEDY, t=0.0)
    seq.prefill([0])
    block = []
    prev = seq.tokens[-1]
    for _ in range(3):  # draft the target's own greedy choices
        prev = int(np.argmax(backend.table[prev]))
        block.append(prev)
    out = seq.verify(2, block, bonus=False)
    assert (out.accepted, out.token) == (3, None)
    # The next block's first position is checked from the kept row: the
    # forward evaluates only the new drafted tokens, starting at position 5.
    nxt = int(np.argmax(backend.table[block[-1]]))
    out = seq.verify(5, [nxt], bonus=False)
    assert out.accepted == 1
    assert backend.forwards[-1] == (5, 1)


def test_rejection_truncates_the_kv_and_the_correction_rides_the_next_forward():
    backend, seq = make(Scheme.GREEDY, t=0.0)
    seq.prefill([0])
    best = int(np.argmax(backend.table[seq.tokens[-1]]))
    wrong = (best + 1) % V
    out = seq.verify(2, [wrong, wrong, wrong])
    assert (out.accepted, out.token) == (0, best)
    assert backend.kv[1] == [0, seq.tokens[1]]  # the drafted tokens are gone
    seq.verify(3, [0])
    assert backend.forwards[-1] == (2, 2)  # correction + drafted token, one forward


def test_block_must_start_after_the_committed_prefix():
    _, seq = make()
    seq.prefill([0, 1])
    with pytest.raises(ConfigError, match="must start at position 3"):
        seq.verify(5, [1])


def test_split_rejection_waits_for_the_edge_correction():
    backend, seq = make(Scheme.SPLIT)
    params = SamplingParams(temperature=1.0)
    seq.prefill([0])
    start = len(seq.tokens)
    for _ in range(50):  # find a rejection: repeat rounds until one happens
        q = q_for(backend, seq.tokens[-1], params)
        x = q.sample(seq.rand.uniform(start, Purpose.DRAFT))
        out = seq.verify(start, [x], q_x=[q.prob(x)], bonus=False)
        if out.accepted == 0:
            break
        start += 1
    else:
        pytest.fail("no rejection in 50 rounds")
    assert out.token is None and out.p_exact
    with pytest.raises(ConfigError, match=f"must start at position {start}"):
        seq.verify(start + 1, [0])
    seq.commit(split_correction(out.p_topk, q, seq.rand, start))
    seq.verify(start + 1, [0], q_x=[0.5])  # accepted or not, the bookkeeping holds


def test_cloud_only_decoding_samples_from_the_exact_target():
    params = SamplingParams(temperature=1.0)
    counts = np.zeros(V)
    for seed in range(1500):
        _, seq = make(Scheme.SPARSE_Q, seed=seed)
        seq.prefill([3])
        counts[seq.tokens[-1]] += 1
    p = ops.transform_dense(MarkovBackend().table[3], params)
    from scipy import stats

    assert stats.chisquare(counts, 1500 * p).pvalue > 1e-3
