"""Monte-Carlo: the pipelined protocol samples the exact target sequence distribution.

Many seeded generations of 10 tokens go through the real EdgeSession and
CloudSession together (pipeline, depth 3, gamma 2: rollbacks and epochs on
nearly every generation), with a drafter that disagrees with the target, at
T = 1 and T = 0.7. The target is a Markov chain over 3 tokens, so the exact
probability of every one of the 3**10 sequences is known. Three views are
compared with it: the joint distribution of the first three tokens, the
marginal of every position, and the distribution of each whole sequence's
log-probability (binned at the exact distribution's quantiles).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from markov import MarkovBackend, MarkovDrafter, sampling
from scipy import stats

from picospec.codec.scheme import Scheme
from picospec.lab.inprocess import generate

VOCAB, LENGTH, PROMPT = 3, 10, [0]
N = 2000
ALPHA = 1e-3
"""Each p-value must exceed this (the seeds are fixed, so the test is deterministic)."""


def exact_probs(backend: MarkovBackend, params) -> np.ndarray:
    """float64[3**LENGTH]: the probability of every sequence, in itertools.product order."""
    step = np.stack([backend.p(t, params) for t in range(VOCAB)])  # step[prev, next]
    seqs = np.array(list(itertools.product(range(VOCAB), repeat=LENGTH)))
    prev = np.concatenate([np.full((len(seqs), 1), PROMPT[-1]), seqs[:, :-1]], axis=1)
    return np.prod(step[prev, seqs], axis=1)


def index_of(seq: list[int]) -> int:
    return int(np.ravel_multi_index(seq, (VOCAB,) * LENGTH))


def chi2(observed: np.ndarray, expected: np.ndarray) -> float:
    """Chi-square p-value, cells with expected count < 5 pooled into one."""
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(stats.chisquare(obs[keep], exp[keep]).pvalue)


@pytest.mark.slow
@pytest.mark.parametrize(("scheme", "t"), [(Scheme.SPARSE_Q, 1.0), (Scheme.SPARSE_Q, 0.7)])
def test_pipelined_generations_follow_the_exact_sequence_distribution(scheme, t):
    backend = MarkovBackend(seed=1, vocab=VOCAB)
    drafter = MarkovDrafter(np.random.default_rng(7).normal(size=(VOCAB, VOCAB)) * 2)
    samp = sampling(scheme, t, k=2)  # q truncated to 2 of 3 tokens: exact all the same
    counts = np.zeros(VOCAB**LENGTH)
    rollbacks = 0
    for seed in range(N):
        g = generate(
            drafter, backend, PROMPT, mode="pipeline", sampling=samp, max_new_tokens=LENGTH,
            seed=seed, gamma=2, depth=3,
        )  # fmt: skip
        assert g.n_tokens == LENGTH
        counts[index_of(g.token_ids)] += 1
        rollbacks += sum(1 for a, n in zip(g.accepted_at, g.gamma_at, strict=True) if a < n)
        assert len({e for e, _, _ in g.verdicts}) > 0
    assert rollbacks > N  # more than one rollback per generation on average
    p = exact_probs(backend, samp.params)
    grid = counts.reshape((VOCAB,) * LENGTH)
    exact = p.reshape((VOCAB,) * LENGTH)
    # the first three tokens, jointly
    head = tuple(range(3, LENGTH))
    assert chi2(grid.sum(axis=head).ravel(), N * exact.sum(axis=head).ravel()) > ALPHA
    # every position's marginal
    for pos in range(LENGTH):
        others = tuple(i for i in range(LENGTH) if i != pos)
        assert chi2(grid.sum(axis=others), N * exact.sum(axis=others)) > ALPHA, pos
    # whole sequences, by their log-probability, in 20 bins of exact mass
    logp = np.log(p)
    order = np.argsort(logp)
    edges = np.searchsorted(np.cumsum(p[order]), np.linspace(0, 1, 21)[1:-1])
    bins = np.zeros(p.size, dtype=int)
    bins[order] = np.searchsorted(edges, np.arange(p.size), side="right")
    observed = np.bincount(bins, weights=counts, minlength=20)
    expected = N * np.bincount(bins, weights=p, minlength=20)
    assert chi2(observed, expected) > ALPHA
