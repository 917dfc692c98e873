"""The verification maths, checked by exact enumeration and by Monte-Carlo.

Exact enumeration drives ``verify_block`` itself with scripted uniforms: every
random decision is a step function of its uniform, so evaluating the real code
at the midpoint of each step and weighting by the step's width gives the exact
output distribution of one verification step.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from picospec.codec import ops
from picospec.codec.rng import KeyedRandom, Purpose
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import SparseDist
from picospec.codec.verify import (
    accept_probability,
    gumbel_token,
    residual,
    sparse_top_k,
    split_correction,
    target_token,
    verify_block,
)

# --------------------------------------------------------------------------- builders


class Scripted:
    """Randomness with fixed uniforms per purpose (same at every position)."""

    def __init__(self, **u: float) -> None:
        self.u = {Purpose[name.upper()]: value for name, value in u.items()}

    def uniform(self, position: int, purpose: Purpose) -> float:
        return self.u[purpose]

    def gumbel(self, position: int, vocab: int) -> np.ndarray:
        raise AssertionError("this scheme must not read Gumbel noise")


def interval_midpoints(weights: np.ndarray) -> list[tuple[int, float, float]]:
    """(index, midpoint u, width) of each step of an inverse-CDF sampler."""
    cdf = np.cumsum(weights) / weights.sum()
    lo = np.concatenate(([0.0], cdf[:-1]))
    return [
        (i, (lo[i] + cdf[i]) / 2, cdf[i] - lo[i]) for i in range(weights.size) if cdf[i] > lo[i]
    ]


def q_of(logits: np.ndarray, params: SamplingParams, k: int) -> SparseDist:
    ids, counts = ops.transform_topk(logits.astype(np.float32), params, k)
    return SparseDist.from_counts(ids, counts)


def p_of(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    return ops.transform_dense(logits.astype(np.float32), params)


def one_step_distribution(scheme: Scheme, p: np.ndarray, q: SparseDist, k: int) -> np.ndarray:
    """Exact distribution of the token emitted at the first position of a
    one-token block drafted from q, computed through the real code path."""
    out = np.zeros_like(p)
    for x, qx in zip(q.ids, q.probs, strict=True):
        a = accept_probability(float(p[x]), float(qx))
        if a > 0.0:
            res = verify_block(
                scheme,
                [x],
                p[None, :],
                rand=Scripted(accept=a / 2),
                start=0,
                q=[q],
                q_x=[qx],
                bonus=False,
                k=k,
            )
            assert res.accepted == 1
            out[x] += qx * a
        if a >= 1.0:
            continue
        # On a rejection the correction is an inverse-CDF draw; walk its steps.
        u_reject = (1.0 + a) / 2
        probe = verify_block(
            scheme,
            [x],
            p[None, :],
            rand=Scripted(accept=u_reject, residual=0.5),
            start=0,
            q=[q],
            q_x=[qx],
            bonus=False,
            k=k,
        )
        assert probe.accepted == 0
        if scheme is Scheme.SPLIT:
            assert probe.p_topk is not None
            top = probe.p_topk  # the edge walks the residual in the order p arrived
            r = np.maximum(0.0, top.probs - np.array([q.prob(int(t)) for t in top.ids]))
            if not r.sum() > 0:
                r = top.probs
            for _, u, width in interval_midpoints(r):
                token = split_correction(top, q, Scripted(residual=u), 0)
                out[token] += qx * (1 - a) * width
        else:
            r = residual(p, q)
            support = np.flatnonzero(r)
            for i, u, width in interval_midpoints(r[support]):
                res = verify_block(
                    scheme,
                    [x],
                    p[None, :],
                    rand=Scripted(accept=u_reject, residual=u),
                    start=0,
                    q=[q],
                    bonus=False,
                )
                # a step narrower than float resolution may round to its neighbour;
                # its weight is far below the tolerance of the comparison with p
                assert res.token == support[i] or width < 1e-12
                out[res.token] += qx * (1 - a) * width
    return out


logit_rows = st.integers(min_value=2, max_value=8).flatmap(
    lambda v: st.tuples(
        st.lists(st.floats(-6, 6), min_size=v, max_size=v),
        st.lists(st.floats(-6, 6), min_size=v, max_size=v),
        st.lists(st.booleans(), min_size=v, max_size=v),
    )
)
temperatures = st.sampled_from([0.25, 0.7, 1.0, 1.5, 3.0])


def make_pair(rows, disjoint: bool):
    zp, zq, mask = (np.array(r, dtype=np.float64) for r in rows)
    mask = mask.astype(bool)
    if disjoint and mask.any() and not mask.all():
        zp[mask] = -np.inf  # p lives where q does not, and the other way round
        zq[~mask] = -np.inf
    return zp, zq


# --------------------------------------------------------------------------- exact enumeration


@settings(max_examples=150, deadline=None)
@given(
    rows=logit_rows,
    t=temperatures,
    k=st.integers(1, 8),
    top_k=st.integers(0, 8),
    disjoint=st.booleans(),
)
def test_sparse_q_step_distribution_equals_p(rows, t, k, top_k, disjoint):
    zp, zq = make_pair(rows, disjoint)
    params = SamplingParams(temperature=t, top_k=top_k)
    p, q = p_of(zp, params), q_of(zq, params, k)
    np.testing.assert_allclose(
        one_step_distribution(Scheme.SPARSE_Q, p, q, k), p, rtol=0, atol=1e-12
    )


@settings(max_examples=100, deadline=None)
@given(rows=logit_rows, k=st.integers(1, 8), disjoint=st.booleans())
def test_greedy_step_distribution_equals_p(rows, k, disjoint):
    zp, zq = make_pair(rows, disjoint)
    greedy = SamplingParams(temperature=0.0)
    p, q = p_of(zp, greedy), q_of(zq, greedy, k)
    out = np.zeros_like(p)
    x = int(q.ids[0])
    res = verify_block(Scheme.GREEDY, [x], p[None, :], rand=Scripted(), start=0, bonus=False)
    out[x if res.accepted else res.token] = 1.0
    np.testing.assert_array_equal(out, p)


SPLIT_TV: list[tuple[float, float]] = []


@settings(max_examples=150, deadline=None)
@given(
    rows=logit_rows,
    t=temperatures,
    k=st.integers(1, 8),
    top_k=st.integers(0, 8),
    disjoint=st.booleans(),
)
def test_split_step_is_exact_iff_support_fits(rows, t, k, top_k, disjoint):
    zp, zq = make_pair(rows, disjoint)
    params = SamplingParams(temperature=t, top_k=top_k)
    p, q = p_of(zp, params), q_of(zq, params, k)
    out = one_step_distribution(Scheme.SPLIT, p, q, k)
    if np.count_nonzero(p) <= k:
        np.testing.assert_allclose(out, p, rtol=0, atol=1e-12)
    else:
        # Truncating p before the residual moves exactly the residual mass that
        # lay outside the top K: TV(out, p) is at most p's truncated mass.
        tv = 0.5 * float(np.abs(out - p).sum())
        top, _ = sparse_top_k(p, k)
        SPLIT_TV.append((tv, 1.0 - top.mass))
        assert tv <= 1.0 - top.mass + 1e-12


def test_split_reports_truncated_mass_when_support_does_not_fit():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    res = verify_block(
        Scheme.SPLIT,
        [0],
        p[None, :],
        rand=Scripted(accept=0.9),
        start=0,
        q_x=[1.0],
        bonus=False,
        k=2,
    )
    assert res.accepted == 0 and res.token is None
    assert not res.p_exact
    assert res.truncated_mass == pytest.approx(0.3)
    assert list(res.p_topk.ids) == [0, 1]


def test_split_support_fits_is_flagged_exact():
    p = np.array([0.0, 0.7, 0.0, 0.3])
    q = SparseDist.from_counts(np.array([1]), np.array([65536]))
    res = verify_block(
        Scheme.SPLIT,
        [1],
        p[None, :],
        rand=Scripted(accept=0.99),
        start=0,
        q_x=[1.0],
        bonus=False,
        k=2,
    )
    assert res.p_exact and res.truncated_mass == 0.0
    assert split_correction(res.p_topk, q, Scripted(residual=0.5), 0) == 3


# --------------------------------------------------------------------------- named cases


def test_reject_at_first_position_emits_correction_from_residual():
    p = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    q = SparseDist.from_counts(np.array([0, 1]), np.array([32768, 32768]))
    res = verify_block(Scheme.SPARSE_Q, [0], p, rand=KeyedRandom(7), start=10, q=[q])
    assert (res.accepted, res.token, res.bonus) == (0, 2, False)


def test_all_accepted_gives_bonus_only_when_asked():
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q = SparseDist.from_counts(np.array([0]), np.array([65536]))
    rand = KeyedRandom(3)
    with_bonus = verify_block(Scheme.SPARSE_Q, [0, 0], p, rand=rand, start=0, q=[q, q])
    assert (with_bonus.accepted, with_bonus.token, with_bonus.bonus) == (2, 1, True)
    without = verify_block(
        Scheme.SPARSE_Q, [0, 0], p[:2], rand=rand, start=0, q=[q, q], bonus=False
    )
    assert (without.accepted, without.token) == (2, None)


def test_self_speculation_accepts_everything():
    rng = np.random.default_rng(0)
    params = SamplingParams(temperature=1.0, top_k=4)
    for seed in range(50):
        logits = rng.normal(size=(3, 16)).astype(np.float32)
        p = np.stack([ops.transform_dense(row, params) for row in logits])
        q = [SparseDist.from_counts(*ops.transform_topk(row, params, 4)) for row in logits[:2]]
        # q is p quantised to 1/65536, so acceptance can fall short only by that rounding.
        res = verify_block(
            Scheme.SPARSE_Q, [int(d.ids[0]) for d in q], p, rand=KeyedRandom(seed), start=5, q=q
        )
        assert res.accepted >= 1


def test_drafted_token_outside_its_q_is_refused():
    p = np.array([[0.5, 0.5]])
    q = SparseDist.from_counts(np.array([0]), np.array([65536]))
    with pytest.raises(ValueError, match="q\\(x\\) > 0"):
        verify_block(Scheme.SPARSE_Q, [1], p, rand=KeyedRandom(0), start=0, q=[q], bonus=False)


def test_too_few_target_rows_is_refused():
    with pytest.raises(ValueError, match="target rows"):
        verify_block(Scheme.GREEDY, [0, 1], np.ones((2, 4)) / 4, rand=KeyedRandom(0), start=0)


def test_token_outside_vocabulary_is_refused():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        verify_block(Scheme.GREEDY, [9], np.ones((2, 4)) / 4, rand=KeyedRandom(0), start=0)


def test_residual_is_keyed_by_token_id_not_by_rank():
    # q's ids are listed out of id order; an index-aligned subtraction would be wrong.
    p = np.array([0.1, 0.2, 0.3, 0.4])
    q = SparseDist(np.array([3, 0]), np.array([0.75, 0.25]))
    np.testing.assert_allclose(residual(p, q), [0.0, 0.4, 0.6, 0.0])


def test_outcome_depends_on_position_and_seed_not_call_order():
    p = np.full((3, 8), 1 / 8)
    q = SparseDist.from_counts(np.arange(8), np.full(8, 8192))
    first = [
        verify_block(Scheme.SPARSE_Q, [s % 8, 1], p, rand=KeyedRandom(s), start=s, q=[q, q])
        for s in range(20)
    ]
    again = [
        verify_block(Scheme.SPARSE_Q, [s % 8, 1], p, rand=KeyedRandom(s), start=s, q=[q, q])
        for s in reversed(range(20))
    ]
    assert first == list(reversed(again))


# --------------------------------------------------------------------------- gumbel


def test_gumbel_emitted_token_never_depends_on_the_draft():
    p = p_of(np.array([1.0, 0.5, 0.2, -1.0, 0.0]), SamplingParams(temperature=1.0))
    for seed in range(30):
        rand = KeyedRandom(seed)
        emitted = set()
        for x in range(5):
            res = verify_block(Scheme.GUMBEL, [x], p[None, :], rand=rand, start=3, bonus=False)
            emitted.add(x if res.accepted else res.token)
        assert emitted == {target_token(Scheme.GUMBEL, p, rand, 3)}


def test_gumbel_distribution_over_seeds_matches_p_and_coupling_bound():
    p = p_of(np.array([1.0, 0.5, 0.2, -1.0, 0.0, 2.0]), SamplingParams(temperature=1.0))
    q = p_of(np.array([0.2, 0.5, 1.0, -1.0, 0.5, 1.5]), SamplingParams(temperature=1.0))
    n = 6000
    counts = np.zeros(p.size)
    matches = 0
    for seed in range(n):
        rand = KeyedRandom(seed)
        token = gumbel_token(p, rand, 11)
        counts[token] += 1
        matches += gumbel_token(q, rand, 11) == token
    assert stats.chisquare(counts, n * p).pvalue > 1e-3
    tv = 0.5 * np.abs(p - q).sum()
    bound = (1 - tv) / (1 + tv)
    assert matches / n >= bound - 4 * np.sqrt(bound * (1 - bound) / n)


# --------------------------------------------------------------------------- Monte-Carlo


V, GAMMA, LENGTH = 5, 3, 3


def markov(seed: int, temperature: float) -> np.ndarray:
    """A tiny 'model': the next-token distribution given the previous token."""
    z = np.random.default_rng(seed).normal(size=(V, V)) * 1.5
    return np.stack(
        [ops.transform_dense(r.astype(np.float32), SamplingParams(temperature)) for r in z]
    )


def speculative_sequence(
    scheme: Scheme,
    target: np.ndarray,
    draft_logits: np.ndarray,
    params: SamplingParams,
    seed: int,
    k: int,
) -> list[int]:
    """Generate LENGTH tokens after token 0 by repeated draft/verify rounds."""
    rand = KeyedRandom(seed)
    out = [0]
    while len(out) <= LENGTH:
        start = len(out)
        tokens, qs = [], []
        prev = out[-1]
        for j in range(GAMMA):
            row = draft_logits[prev].astype(np.float32)
            if scheme is Scheme.GUMBEL:
                x = gumbel_token(ops.transform_dense(row, params), rand, start + j)
                q = SparseDist(np.array([x]), np.array([1.0]))
            else:
                q = SparseDist.from_counts(*ops.transform_topk(row, params, k))
                x = q.sample(rand.uniform(start + j, Purpose.DRAFT))
            tokens.append(x)
            qs.append(q)
            prev = x
        context = [out[-1], *tokens]
        p = np.stack([target[c] for c in context])
        res = verify_block(
            scheme,
            tokens,
            p,
            rand=rand,
            start=start,
            q=qs,
            q_x=[q.prob(x) for q, x in zip(qs, tokens, strict=True)],
            k=k,
        )
        token = res.token
        if token is None:  # a split rejection: the edge samples the correction
            token = split_correction(res.p_topk, qs[res.accepted], rand, start + res.accepted)
        out += [*tokens[: res.accepted], token]
    return out[1 : LENGTH + 1]


@pytest.mark.parametrize("scheme", [Scheme.SPARSE_Q, Scheme.SPLIT, Scheme.GUMBEL])
def test_multi_position_block_matches_target_sequence_distribution(scheme):
    params = SamplingParams(temperature=1.0)
    target = markov(1, 1.0)
    draft_logits = np.random.default_rng(2).normal(size=(V, V))
    exact = np.zeros((V,) * LENGTH)
    for seq in np.ndindex(*exact.shape):
        prev, prob = 0, 1.0
        for t in seq:
            prob *= target[prev, t]
            prev = t
        exact[seq] = prob
    n = 4000
    counts = np.zeros_like(exact)
    for seed in range(n):
        counts[tuple(speculative_sequence(scheme, target, draft_logits, params, seed, k=V))] += 1
    expected = n * exact.ravel()
    keep = expected >= 5  # pool rare sequences into one cell
    obs = np.append(counts.ravel()[keep], counts.ravel()[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3
