"""The exactness report: is each scheme's output distributed as the target's own?

For one chat prompt and each (scheme, temperature), ``n`` seeded generations of
``LENGTH`` tokens run stop-and-wait in process with gamma 2: the prefill samples
token 0 from p, and the first verify round tests drafted tokens 1 and 2
(acceptance, the residual after a rejection, the next round's first position),
so the tokens exercise every path of the verification maths. Two tests per
token position, each with a p-value (small means "not distributed as p"):

* against target-only sampling (the issue's comparison): ``n`` generations by
  the target alone (``cloud-only``, other seeds) and a two-sample chi-square of
  the token's marginal over the ids seen at least ``MIN_COUNT`` times (the rest
  pooled), with the total-variation distance between the two empirical
  marginals next to its sampling-noise floor (the mean TV of random re-splits
  of the pooled samples);
* against the exact target (positions 0 and 1): the randomised probability
  integral transform u = P(tokens ranked above t) + V p(t), with p the target's
  distribution given the sample's own prefix and V uniform, is uniform exactly
  when t ~ p; a Kolmogorov-Smirnov test of the u's.

``split`` rows add the probability of p left out of the top-K that travelled,
per rejection, and how many rejections were therefore inexact.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from picospec.cloud.llama_backend import LlamaBackend
from picospec.codec.errors import ConfigError
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.edge.drafter import Drafter
from picospec.lab.inprocess import generate
from picospec.runtime.models import prepare

from .progress import Progress

PROMPT = "Name one sensor a robot uses to avoid obstacles."
LENGTH = 3
MIN_COUNT = 10
"""Pooled count an id needs for a chi-square category of its own."""
PIT_POSITIONS = (0, 1)


def two_sample(
    a: list[int], b: list[int], *, resplits: int = 200, seed: int = 0
) -> dict[str, float]:
    """Chi-square homogeneity test and TV of two samples of token ids."""
    from scipy.stats import chi2_contingency

    pooled = Counter(a) + Counter(b)
    kept = sorted(t for t, c in pooled.items() if c >= MIN_COUNT)
    index = {t: i for i, t in enumerate(kept)}

    def hist(xs: list[int]) -> np.ndarray:
        h = np.zeros(len(kept) + 1)
        for x in xs:
            h[index.get(x, len(kept))] += 1
        return h

    table = np.stack([hist(a), hist(b)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        p_value, stat, dof = 1.0, 0.0, 0
    else:
        res = chi2_contingency(table)
        p_value, stat, dof = float(res.pvalue), float(res.statistic), int(res.dof)

    def tv(x: list[int], y: list[int]) -> float:
        cx, cy = Counter(x), Counter(y)
        return 0.5 * sum(abs(cx[t] / len(x) - cy[t] / len(y)) for t in cx.keys() | cy.keys())

    rng = np.random.default_rng(seed)
    both = np.asarray(a + b)
    floor = []
    for _ in range(resplits):
        perm = rng.permutation(both)
        floor.append(tv(list(perm[: len(a)]), list(perm[len(a) :])))
    return {
        "chi2": stat,
        "dof": dof,
        "p_value": p_value,
        "tv": tv(a, b),
        "tv_floor": float(np.mean(floor)),
    }


class ExactTarget:
    """The target's distribution after the prompt and a prefix, cached by prefix."""

    def __init__(self, backend: LlamaBackend, params: SamplingParams, prompt: list[int]) -> None:
        self.backend, self.params, self.prompt = backend, params, prompt
        self._rows: dict[tuple[int, ...], np.ndarray] = {}

    def p(self, prefix: tuple[int, ...]) -> np.ndarray:
        row = self._rows.get(prefix)
        if row is None:
            self.backend.open(0)
            try:
                logits = self.backend.forward(0, 0, self.prompt + list(prefix), n_out=1)
            finally:
                self.backend.close(0)
            row = self._rows[prefix] = self.backend.distributions(logits, self.params)[0]
        return row


def pit_p_value(
    samples: list[tuple[int, ...]], position: int, exact: ExactTarget, seed: int
) -> float:
    """KS p-value of the randomised PIT of each sample's token at position."""
    from scipy.stats import kstest

    rng = np.random.default_rng(seed)
    u = []
    for sample in samples:
        if len(sample) <= position:
            continue
        p = exact.p(sample[:position])
        t = sample[position]
        above = float(p[(p > p[t]) | ((p == p[t]) & (np.arange(p.size) < t))].sum())
        u.append(above + rng.random() * float(p[t]))
    return float(kstest(u, "uniform").pvalue) if u else 1.0


def run(
    pair: str = "smollm2",
    *,
    n: int = 300,
    temperatures: tuple[float, ...] = (0.7, 1.0),
    schemes: tuple[str, ...] = ("sparse-q", "split", "gumbel"),
    k: int = 8,
) -> dict[str, Any]:
    """The report's rows, one per (scheme, temperature), with cloud-only as the floor."""
    if n < 10:
        raise ConfigError(f"the exactness report needs at least 10 generations, got {n}")
    paths = prepare(pair)
    backend = LlamaBackend(paths["target"], n_ctx=256, threads=2)
    drafter = Drafter.open(paths["drafter"], n_ctx=256, threads=2)
    bar = Progress(len(temperatures) * (len(schemes) + 1) * n, label="exactness")
    rows = []
    for t in temperatures:
        params = SamplingParams(temperature=t)
        samplings = {s: Sampling.of(params, s, k, allow_inexact=True) for s in schemes}
        w = drafter.ctx.weights
        prompt = w.tokenize(w.chat_prompt(PROMPT))
        exact = ExactTarget(backend, params, prompt)
        floor: list[tuple[int, ...]] = []
        for scheme in ("cloud-only", *schemes):
            sampling = samplings[schemes[0] if scheme == "cloud-only" else scheme]
            samples, rejections, truncated = [], 0, []
            for i in range(n):
                g = generate(
                    drafter,
                    backend,
                    prompt,
                    mode="cloud-only" if scheme == "cloud-only" else "sync",
                    sampling=sampling,
                    max_new_tokens=LENGTH,
                    seed=10_000 + i if scheme == "cloud-only" else i,
                    gamma=LENGTH - 1,
                )
                samples.append(tuple(g.token_ids[:LENGTH]))
                rejections += sum(
                    1 for a, m in zip(g.accepted_at, g.gamma_at, strict=True) if a < m
                )
                truncated += g.truncated_mass
                bar.step(f"{scheme} T={t:g}")
            if scheme == "cloud-only":
                floor = samples
            positions = []
            for pos in range(LENGTH):
                col = [x[pos] for x in samples if len(x) > pos]
                ref = [x[pos] for x in floor if len(x) > pos]
                stats = two_sample(col, ref, seed=pos) if scheme != "cloud-only" else {}
                if pos in PIT_POSITIONS:
                    stats["pit_p_value"] = pit_p_value(samples, pos, exact, seed=pos)
                positions.append({"position": pos, **stats})
            row: dict[str, Any] = {
                "scheme": scheme,
                "temperature": t,
                "n": n,
                "rejections": rejections,
                "positions": positions,
            }
            if scheme == "split":
                row["truncated_mass_mean"] = float(np.mean(truncated)) if truncated else 0.0
                row["truncated_mass_max"] = float(np.max(truncated)) if truncated else 0.0
                row["inexact_rejections"] = sum(1 for m in truncated if m > 0)
            rows.append(row)
    drafter.close()
    return {"prompt": PROMPT, "length": LENGTH, "k": k, "rows": rows}
