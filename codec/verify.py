"""The verification maths: accept, correct, or add a bonus token.

For a block of drafted tokens x_0..x_{n-1} at absolute positions start..start+n-1,
with target distributions p_j (after the shared sampling transform) and draft
distributions q_j (the exact objects the drafter sampled from):

* accepted tokens: x_j is accepted with probability min(1, p_j(x_j) / q_j(x_j)),
  tested in order; the first rejection ends the block.
* recovered (correction) token: at the first rejected position j, one token is
  sampled from the residual r = norm(max(0, p_j - q_j)), computed per token id
  over the whole vocabulary (an id the draft did not keep has q = 0).
* bonus token: if every drafted token is accepted and the caller asks for it, one
  token sampled from p_n at the next position. (The pipeline asks only at the end
  of a generation; otherwise the next drafted block covers that position.)

This makes every emitted token an exact sample from p. Schemes change only what
the verifier knows about q (DESIGN.md section 2): ``sparse-q`` sees the whole
quantised q, ``split`` only q(x) (the edge samples the residual from a top-K p,
see ``split_correction``), ``gumbel`` nothing (both sides take the Gumbel-max
with shared noise), ``greedy`` nothing (argmax).

Randomness is passed in (``rand``, normally ``codec.rng.KeyedRandom(seed)``):
every decision reads the uniform of its (position, purpose), so the outcome is
a function of the seed and the inputs, never of call order. No I/O, no model
code: arrays in, an ``Outcome`` out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CodecError
from .rng import Purpose, Randomness
from .scheme import Scheme
from .sparse import SparseDist


@dataclass(frozen=True)
class Outcome:
    """What one verification round decided."""

    accepted: int
    """How many drafted tokens were accepted (a prefix of the block)."""
    token: int | None
    """The token emitted after the accepted prefix: the correction at position
    start + accepted, the bonus at start + n, or None (all accepted, no bonus
    asked for; or a ``split`` rejection, whose correction the edge samples)."""
    bonus: bool = False
    """True when ``token`` is a bonus rather than a correction."""
    p_topk: SparseDist | None = None
    """``split`` only, on a rejection: the target's top-K p at the rejected
    position, unnormalised float64 values (their sum is 1 minus the truncated mass)."""
    p_exact: bool = True
    """``split`` only: False when p's support did not fit in K at the rejected
    position, so the edge's residual is an approximation."""

    @property
    def truncated_mass(self) -> float:
        """Probability of p that the ``split`` downlink left out (0 when exact)."""
        return 0.0 if self.p_topk is None else max(0.0, 1.0 - self.p_topk.mass)


def accept_probability(p_x: float, q_x: float) -> float:
    """min(1, p(x) / q(x)) for a token drafted with q(x) > 0."""
    if not q_x > 0.0:
        raise CodecError(f"a drafted token must have q(x) > 0, got {q_x}")
    return 1.0 if p_x >= q_x else p_x / q_x


def residual(p: np.ndarray, q: SparseDist) -> np.ndarray:
    """norm(max(0, p - q)) over the whole vocabulary, keyed by token id.

    p: float64[V], a distribution. q: the sparse draft distribution (ids outside
    it have q = 0, so their residual is p itself). When p <= q everywhere (the
    rejection then had probability 0 and arises only through rounding), the
    residual is p.
    """
    r = p.copy()
    r[q.ids] = np.maximum(0.0, p[q.ids] - q.probs)
    total = r.sum()
    return p if not total > 0.0 else r / total


def sample_dense(p: np.ndarray, u: float) -> int:
    """Inverse-CDF sample of a float64[V] weight row at uniform u in (0, 1), in id order."""
    cdf = np.cumsum(p)
    i = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(i, p.size - 1)


def gumbel_token(p: np.ndarray, rand: Randomness, position: int) -> int:
    """argmax(log p + g) over p's support with the shared noise g at a position.

    An exact sample from p; the drafter takes the same argmax over its own q, so
    the two agree with probability at least (1 - TV) / (1 + TV).
    """
    g = rand.gumbel(position, p.size)
    with np.errstate(divide="ignore"):
        scores = np.log(p) + g
    return int(np.argmax(scores))


def target_token(scheme: Scheme, p: np.ndarray, rand: Randomness, position: int) -> int:
    """A token sampled from p alone (bonus, prefill, cloud-only decoding).

    ``gumbel`` uses the keyed Gumbel-max, so cloud-only decoding and every
    speculative mode emit the very same tokens for a seed; ``greedy`` takes the
    argmax (lowest id on ties); the others invert the CDF at a keyed uniform.
    """
    if scheme is Scheme.GUMBEL:
        return gumbel_token(p, rand, position)
    if scheme is Scheme.GREEDY:
        return int(np.argmax(p))
    return sample_dense(p, rand.uniform(position, Purpose.TARGET))


def sparse_top_k(p: np.ndarray, k: int) -> tuple[SparseDist, bool]:
    """The k most likely ids of p (probability descending, id ascending) with
    p's own values, and whether they hold p's whole support."""
    support = int(np.count_nonzero(p))
    n = min(k, support)
    if n < p.size:
        cand = np.argpartition(-p, n - 1)[:n] if n < support else np.flatnonzero(p)
    else:
        cand = np.arange(p.size)
    order = np.lexsort((cand, -p[cand]))
    ids = cand[order][:n]
    return SparseDist(ids, p[ids]), support <= k


def split_correction(p_topk: SparseDist, q: SparseDist, rand: Randomness, position: int) -> int:
    """The edge half of the ``split`` scheme: sample norm(max(0, p_K - q)) over
    the ids of the top-K p received from the cloud. Exact when p_K is all of p."""
    r = p_topk.probs.copy()
    for j, token in enumerate(p_topk.ids):
        r[j] = max(0.0, r[j] - q.prob(int(token)))
    if not r.sum() > 0.0:
        r = p_topk.probs
    u = rand.uniform(position, Purpose.RESIDUAL)
    return int(p_topk.ids[sample_dense(r, u)])


def verify_block(
    scheme: Scheme,
    tokens: Sequence[int] | np.ndarray,
    p: np.ndarray,
    *,
    rand: Randomness,
    start: int,
    q: Sequence[SparseDist] | None = None,
    q_x: Sequence[float] | np.ndarray | None = None,
    bonus: bool = True,
    k: int = 8,
) -> Outcome:
    """Verify a drafted block against the target distributions.

    tokens: int[n], the drafted ids at positions start..start+n-1.
    p: float64[m, V] target distributions at those positions; m >= n, and
       m >= n + 1 when ``bonus`` (row n is the position after the block).
    q: sparse-q only, the n draft distributions. q_x: split only, float[n] q(x_j).
    k: split only, how many entries of p travel back on a rejection.
    rand: the round's randomness, read by (position, purpose).
    """
    toks = np.asarray(tokens, dtype=np.int64)
    n = int(toks.size)
    if p.ndim != 2 or p.shape[0] < n + (1 if bonus else 0):
        need = n + (1 if bonus else 0)
        raise CodecError(f"need {need} target rows for {n} drafted tokens, got shape {p.shape}")
    vocab = p.shape[1]
    if n and (toks.min() < 0 or toks.max() >= vocab):
        raise CodecError(f"a drafted token id is outside the vocabulary of {vocab}")

    for j in range(n):
        x, pos = int(toks[j]), start + j
        if scheme is Scheme.GREEDY:
            best = int(np.argmax(p[j]))
            if x != best:
                return Outcome(j, best)
        elif scheme is Scheme.GUMBEL:
            best = gumbel_token(p[j], rand, pos)
            if x != best:
                return Outcome(j, best)
        elif scheme is Scheme.SPARSE_Q:
            if q is None or len(q) != n:
                raise CodecError("sparse-q verification needs one q per drafted token")
            u = rand.uniform(pos, Purpose.ACCEPT)
            if not u < accept_probability(float(p[j, x]), q[j].prob(x)):
                u = rand.uniform(pos, Purpose.RESIDUAL)
                return Outcome(j, sample_dense(residual(p[j], q[j]), u))
        elif scheme is Scheme.SPLIT:
            if q_x is None or len(q_x) != n:
                raise CodecError("split verification needs q(x) for every drafted token")
            u = rand.uniform(pos, Purpose.ACCEPT)
            if not u < accept_probability(float(p[j, x]), float(q_x[j])):
                p_topk, fits = sparse_top_k(p[j], k)
                return Outcome(j, None, p_topk=p_topk, p_exact=fits)
        else:
            raise CodecError(f"unknown scheme {scheme!r}")

    if not bonus:
        return Outcome(n, None)
    return Outcome(n, target_token(scheme, p[n], rand, start + n), bonus=True)
