"""``mode="auto"``: choosing the mode and its knobs from what the edge measured.

``Estimates`` keeps running averages (EWMA) of what the edge sees: the round
trip to the cloud (the handshake), one drafter step, the cloud's time per
streamed token, the time from sending a block of n drafts to its verdict less
the round trip (the cloud's forward over n + 1 tokens and its queueing), and
the acceptance of drafts by position (blocks in ``pipeline`` and ``sync``,
chains of drafts in ``cloud-led``, per scheme). ``choose`` asks the time model
(``picospec.runtime.timemodel``) what each candidate would give and takes the
fastest:

* under ``gumbel`` and ``greedy`` every mode produces the same tokens for a
  seed, so the candidates are ``cloud-only``, ``cloud-led``, ``pipeline`` and
  ``sync`` with gamma in ``GAMMAS``; the output does not depend on the choice;
* under ``sparse-q`` and ``split`` (exact in distribution, the tokens depend on
  the mode) they are ``cloud-only``, ``pipeline`` and ``sync``.

A candidate whose inputs were never measured cannot be predicted; while an input
is missing the plan explores: ``cloud-led`` for the first generation under
``gumbel``/``greedy`` (it measures the drafter, the link and acceptance; the
cloud adapts how many drafts a forward takes from its own timings), the
caller's ``pipeline`` under the other schemes, then ``cloud-only`` once to
measure the cloud's decode step (only a generation the cloud decodes alone
measures it: in ``cloud-led`` the drafter shares the edge's and, co-located,
the cloud's cores, and forwards carry drafts). A later generation with the same
client plans from the estimates. Where acceptance under the scheme is still not
known, it hopes: the drafts it has measured count, and the samples still missing
(up to ``MIN_ACCEPT_SAMPLES`` per position) are taken as accepted at the best
rate measured under any scheme, or 1.0; if even that plan cannot beat
``cloud-only``, it takes ``cloud-only``, and otherwise it explores that plan.
Each prediction is scaled by its mode's measured error (``Estimates.error``: the
tok/s a generation reached over the time model's own prediction for it, before
scaling: a planned generation's prediction, or for an exploration what the model
gives from what it measured), so a mode the model flatters on this edge is
planned at what it delivers. A near tie goes to the candidate that costs less
(``cloud-only`` first: it runs no drafter).

Within a generation, ``revise`` asks again at ``REVISE_AT`` committed tokens,
from the estimates with what the generation measured so far, and the client
switches when another plan is predicted ``SWITCH_GAIN`` faster than the
running one has been going: it cancels the running generation and starts one
after everything committed, with the same seed. An exploration is cut short the
same way: while acceptance is not yet measured no speculative plan can be
predicted, but ``cloud-only`` can, and a generation exploring at clearly less
than that switches to it (and leaves its mode's error). Nothing committed is
lost or repeated, and because every random number is keyed by (seed, position)
the ``gumbel`` and ``greedy`` output is the same whatever the switches. Under
``sparse-q`` and ``split`` the output stays exact in distribution (each part
samples exactly from the target given what is committed, and when to switch
depends only on the past), but which tokens come out depends on where the
switch happened, as it depends on the mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from picospec.codec.scheme import LED_SCHEMES, Mode, Scheme
from picospec.runtime.timemodel import Costs, position_counts, predict

AUTO = "auto"
GAMMAS = (1, 2, 3, 4, 6, 8)
"""Block sizes auto considers (clamped to the cloud's max_block)."""
SMOOTHING = 0.3
"""Weight of a new measurement in an estimate."""
TIE = 0.02
"""A candidate must beat a cheaper one by this fraction to be chosen over it."""
MIN_ACCEPT_SAMPLES = 8
"""Drafts measured at the first position before acceptance counts as known."""
LED_DEPTH = 6
"""cloud-led is also considered at this depth (a lead of gamma x 6 drafts), besides
the caller's: where acceptance is low, short blocks with a long lead keep drafts
waiting at the cloud's frontier after each contradiction."""
REVISE_AT = (16, 32, 48, 64, 96, 128, 192, 256)
"""Committed tokens of a generation at which auto revises its plan."""
SWITCH_GAIN = 0.10
"""A revision switches only to a plan predicted this much faster than the one
running (a switch costs a round trip and the cloud's forward over the context)."""
MIN_SWITCH_TOKENS = 16
"""Tokens that must be left for a switch to be worth its cost."""


def parse_mode(name: str | Mode | None) -> Mode | None:
    """A mode by name; None (and ``"auto"``) means: let ``choose`` pick."""
    if name is None or name == AUTO:
        return None
    return Mode.parse(name)


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - SMOOTHING) * old + SMOOTHING * new


@dataclass
class Estimates:
    """What one edge measured of its drafter, its link and its cloud (seconds)."""

    rtt: float | None = None
    draft: float | None = None
    decode: float | None = None
    """The cloud's seconds per streamed token, decoding alone (cloud-only)."""
    verify: dict[int, float] = field(default_factory=dict)
    """Tokens in a forward -> seconds, from block verdicts less the round trip."""
    reached: dict[Scheme, list[int]] = field(default_factory=dict)
    kept: dict[Scheme, list[int]] = field(default_factory=dict)
    error: dict[Mode, float] = field(default_factory=dict)
    """Measured tok/s / the time model's prediction, by mode (EWMA): what the
    model misses for a mode on this edge (contention, a cloud that takes fewer
    drafts than it could), measured, and applied to that mode's predictions."""

    def add_rtt(self, seconds: float) -> None:
        self.rtt = _ewma(self.rtt, seconds)

    def add_draft(self, seconds: float) -> None:
        self.draft = _ewma(self.draft, seconds)

    def add_decode(self, seconds: float) -> None:
        self.decode = _ewma(self.decode, seconds)

    def add_verify(self, tokens: int, latency: float) -> None:
        """A block verdict: the cloud evaluated tokens positions, latency seconds
        after the block was sent."""
        # never below a decode step: a round trip measured on a busier path can
        # exceed a verdict's whole latency
        cost = max(latency - (self.rtt or 0.0), self.decode or 0.0, 1e-4)
        self.verify[tokens] = _ewma(self.verify.get(tokens), cost)

    def add_outcome(self, mode: Mode, measured: float, predicted: float) -> None:
        """A generation planned at predicted tok/s ran at measured."""
        if measured > 0 and predicted > 0:
            self.error[mode] = _ewma(self.error.get(mode), measured / predicted)

    def add_blocks(self, scheme: Scheme, blocks: Sequence[tuple[int, int]]) -> None:
        """(accepted, drafted) of verified blocks or chains of drafts."""
        longest = max((n for _, n in blocks), default=0)
        reached = self.reached.setdefault(scheme, [])
        kept = self.kept.setdefault(scheme, [])
        reached += [0] * (longest - len(reached))
        kept += [0] * (longest - len(kept))
        for j, (r, k) in enumerate(zip(*position_counts(blocks, longest), strict=True)):
            reached[j] += r
            kept[j] += k

    def accept(self, scheme: Scheme, gamma: int) -> list[float] | None:
        """P(draft j accepted | the ones before were), j < gamma (positions never
        measured take the last measured one's); None until measured."""
        reached, kept = self.reached.get(scheme, []), self.kept.get(scheme, [])
        if not reached or reached[0] < MIN_ACCEPT_SAMPLES:
            return None
        out: list[float] = []
        for j in range(gamma):
            if j < len(reached) and reached[j] >= MIN_ACCEPT_SAMPLES:
                out.append(kept[j] / reached[j])
            else:
                out.append(out[-1])
        return out

    def hopeful(self, scheme: Scheme, fill: Sequence[float]) -> list[float]:
        """Acceptance by position for len(fill) positions while it is not known:
        the drafts measured under scheme, with those missing up to
        MIN_ACCEPT_SAMPLES at each position counted as accepted at fill's rate."""
        reached, kept = self.reached.get(scheme, []), self.kept.get(scheme, [])
        out: list[float] = []
        for j, hope in enumerate(fill):
            r, k = (reached[j], kept[j]) if j < len(reached) else (0, 0)
            missing = max(0, MIN_ACCEPT_SAMPLES - r)
            out.append((k + missing * hope) / (r + missing) if r + missing else hope)
        return out

    def costs(self, sizes: int) -> Costs | None:
        """The time model's costs for forwards up to sizes tokens (None until the
        drafter, the link and the cloud's decode are measured)."""
        if self.rtt is None or self.draft is None or self.decode is None:
            return None
        known = {1: self.decode, **{n: s for n, s in self.verify.items() if n > 1}}
        return Costs(
            draft=self.draft,
            verify=tuple(_interpolate(known, n) for n in range(1, sizes + 1)),
            rtt=self.rtt,
        )


def _interpolate(known: dict[int, float], n: int) -> float:
    """A forward's cost at size n, linear between the nearest measured sizes
    (flat past the largest: the optimistic choice, until it is measured)."""
    if n in known:
        return known[n]
    below = max((k for k in known if k < n), default=None)
    above = min((k for k in known if k > n), default=None)
    if below is None:
        assert above is not None
        return known[above]
    if above is None:
        return known[below]
    w = (n - below) / (above - below)
    return (1 - w) * known[below] + w * known[above]


@dataclass(frozen=True)
class Plan:
    mode: Mode
    gamma: int
    depth: int
    reason: str
    """One line: what was chosen and why."""
    predicted: dict[str, float] = field(default_factory=dict)
    """tok/s predicted for each candidate, the time model's scaled by its mode's
    measured error, as compared (empty while exploring)."""
    model: dict[str, float] = field(default_factory=dict)
    """The time model's own tok/s for each candidate, before that scaling: what a
    generation's outcome is measured against (``Estimates.add_outcome``)."""


def candidates(scheme: Scheme, max_block: int, depth: int) -> list[tuple[Mode, int, int]]:
    """(mode, gamma, depth) auto considers, the cheaper first."""
    gammas = sorted({min(g, max_block) for g in GAMMAS})
    out: list[tuple[Mode, int, int]] = [(Mode.CLOUD_ONLY, 1, 1)]
    if scheme in LED_SCHEMES:
        leads = sorted({depth, LED_DEPTH})
        out += [(Mode.CLOUD_LED, g, d) for g in gammas for d in leads]
    out += [(Mode.PIPELINE, g, depth) for g in gammas]
    out += [(Mode.SYNC, g, 1) for g in gammas]
    return out


def choose(
    scheme: Scheme,
    estimates: Estimates,
    *,
    gamma: int,
    depth: int,
    max_block: int = 32,
    n_tokens: int = 0,
) -> Plan:
    """The plan for the next generation; gamma and depth: the caller's knobs,
    used while exploring."""
    cands = candidates(scheme, max_block, depth)
    biggest = max(g * d for _, g, d in cands) + 2
    longest = max(g for _, g, _ in cands)
    costs = estimates.costs(biggest)
    accept = estimates.accept(scheme, longest)
    if costs is None:
        if estimates.draft is not None and estimates.decode is None:
            why = "the cloud's decode step not measured yet: cloud-only measures it"
            return Plan(Mode.CLOUD_ONLY, 1, 1, f"auto: cloud-only ({why})")
        if scheme in LED_SCHEMES:
            why = "nothing measured yet: cloud-led measures the drafter, the link and acceptance"
            return Plan(Mode.CLOUD_LED, gamma, depth, f"auto: cloud-led ({why})")
        why = "nothing measured yet: the pipeline measures the drafter, acceptance and verify"
        return Plan(Mode.PIPELINE, gamma, depth, f"auto: pipeline ({why})")
    if accept is not None:
        return best_plan(scheme, costs, accept, cands, n_tokens=n_tokens, error=estimates.error)
    # acceptance under this scheme is not known: hope for the best measured under any
    # scheme (or every draft accepted) in the samples still missing, beside those this
    # scheme has (an exploration cut short); if even that cannot beat the cloud alone,
    # nothing can
    proxy = _hope(scheme, estimates, longest)
    hope = best_plan(scheme, costs, proxy, cands, n_tokens=n_tokens, error=estimates.error)
    if hope.mode is Mode.CLOUD_ONLY:
        return Plan(
            Mode.CLOUD_ONLY,
            1,
            1,
            hope.reason.replace(
                "(predicted",
                f"(acceptance under {scheme.value} not measured; "
                f"even at {proxy[0]:.2f} per position: predicted",
                1,
            ),
            hope.predicted,
            hope.model,
        )
    # explore the plan that hope makes best: it measures its own acceptance (blocks,
    # or chains of drafts) and, against the model, its own error
    name = label(hope.mode, hope.gamma, hope.depth)
    why = (
        f"acceptance under {scheme.value} not measured yet: hoping for {proxy[0]:.2f} at "
        f"the first position it is predicted {hope.predicted[name]:.1f} tok/s against "
        f"cloud-only {hope.predicted[Mode.CLOUD_ONLY.value]:.1f}, and it measures it"
    )
    return Plan(hope.mode, hope.gamma, hope.depth, f"auto: {name} ({why})", {}, hope.model)


def _hope(scheme: Scheme, estimates: Estimates, positions: int) -> list[float]:
    """Acceptance by position while scheme's is not known: what it measured, with
    the samples still missing at the best measured under any scheme (or every
    draft accepted)."""
    proxies = [a for s in estimates.reached if (a := estimates.accept(s, positions)) is not None]
    return estimates.hopeful(scheme, max(proxies, key=sum, default=[1.0] * positions))


def label(mode: Mode, gamma: int, depth: int) -> str:
    """How ``Plan.predicted`` names a candidate."""
    if mode is Mode.CLOUD_ONLY:
        return mode.value
    return f"{mode.value} gamma {gamma}" + ("" if mode is Mode.SYNC else f" depth {depth}")


def revise(
    scheme: Scheme,
    estimates: Estimates,
    running: tuple[Mode, int, int],
    *,
    depth: int,
    max_block: int = 32,
    n_tokens: int,
    observed: float | None = None,
) -> Plan | None:
    """Mid-generation: the plan to switch to for the n_tokens still to come, or
    None to go on with the running (mode, gamma, depth). A switch needs a gain
    of at least SWITCH_GAIN over the running plan (its tok/s observed so far in
    this generation when given, else its prediction from the same estimates)
    and every input of the plan switched to measured: with acceptance not yet
    measured, only an exploration observed to run slower than ``cloud-only``'s
    prediction is cut short (to ``cloud-only``, which needs no acceptance)."""
    if n_tokens < MIN_SWITCH_TOKENS:
        return None
    cands = candidates(scheme, max_block, depth)
    longest = max(g for _, g, _ in cands)
    costs = estimates.costs(max(g * d for _, g, d in cands) + 2)
    accept = estimates.accept(scheme, longest)
    mode, gamma, running_depth = running
    name = label(mode, gamma, running_depth)
    if costs is not None and accept is None and observed and mode is not Mode.CLOUD_ONLY:
        raw = predict(Mode.CLOUD_ONLY.value, [], costs, n_tokens=n_tokens).tok_per_s
        only = raw * estimates.error.get(Mode.CLOUD_ONLY, 1.0)
        if only < observed * (1 + SWITCH_GAIN):
            return None
        return Plan(
            Mode.CLOUD_ONLY,
            1,
            1,
            f"auto switched from {name} ({observed:.1f}) to cloud-only (predicted "
            f"{only:.1f} tok/s; acceptance under {scheme.value} not measured yet; "
            f"cloud {1e3 * costs.verify[0]:.1f} ms/token, RTT {1e3 * costs.rtt:.0f} ms)",
            {Mode.CLOUD_ONLY.value: only},
            {Mode.CLOUD_ONLY.value: raw},
        )
    if costs is None or accept is None:
        return None
    best = best_plan(scheme, costs, accept, cands, n_tokens=n_tokens, error=estimates.error)
    if (best.mode, best.gamma, best.depth) == (mode, gamma, running_depth):
        return None
    padded = [*accept, *[accept[-1]] * gamma][:gamma]
    now = observed or (
        predict(mode.value, padded, costs, depth=running_depth, n_tokens=n_tokens).tok_per_s
        * estimates.error.get(mode, 1.0)
    )
    new = best.predicted.get(label(best.mode, best.gamma, best.depth), 0.0)
    if new < now * (1 + SWITCH_GAIN):
        return None
    return Plan(
        best.mode,
        best.gamma,
        best.depth,
        best.reason.replace("auto:", f"auto switched from {name} ({now:.1f}) to", 1),
        best.predicted,
        best.model,
    )


def model_rate(
    scheme: Scheme, estimates: Estimates, plan: tuple[Mode, int, int], n_tokens: int = 0
) -> float | None:
    """The time model's tok/s for (mode, gamma, depth) from the estimates now
    (acceptance measured, else hoped for; n_tokens as ``predict``), before any
    error scaling: what an exploration's measured rate is set against. None while
    the costs are not measured."""
    mode, gamma, depth = plan
    costs = estimates.costs(gamma * depth + 2)
    if costs is None:
        return None
    accept = estimates.accept(scheme, gamma) or _hope(scheme, estimates, gamma)
    return predict(mode.value, accept, costs, depth=depth, n_tokens=n_tokens).tok_per_s


def best_plan(
    scheme: Scheme,
    costs: Costs,
    accept: Sequence[float],
    cands: Sequence[tuple[Mode, int, int]],
    *,
    n_tokens: int = 0,
    error: Mapping[Mode, float] | None = None,
) -> Plan:
    """The candidate the time model predicts fastest, from known costs and
    acceptance by position (at least as long as the largest gamma), each
    prediction scaled by its mode's measured error (``Estimates.error``)."""
    longest = max(g for _, g, _ in cands)
    accept = [*accept, *[accept[-1]] * longest][: max(longest, len(accept))]
    rates: dict[str, float] = {}
    model: dict[str, float] = {}
    best: tuple[Mode, int, int] | None = None
    best_rate = 0.0
    for mode, g, d in cands:
        raw = predict(mode.value, accept[:g], costs, depth=d, n_tokens=n_tokens).tok_per_s
        rate = raw * (error or {}).get(mode, 1.0)
        model[label(mode, g, d)], rates[label(mode, g, d)] = raw, rate
        if best is None or rate > best_rate * (1 + TIE):
            best, best_rate = (mode, g, d), rate
    assert best is not None
    mode, g, d = best
    only = rates[Mode.CLOUD_ONLY.value]
    knobs = (
        ""
        if mode is Mode.CLOUD_ONLY
        else f" gamma {g}" + (f" depth {d}" if mode in (Mode.PIPELINE, Mode.CLOUD_LED) else "")
    )
    why = (
        f"predicted {best_rate:.1f} tok/s vs cloud-only {only:.1f}"
        if mode is not Mode.CLOUD_ONLY
        else f"predicted {only:.1f} tok/s; the best speculative plan "
        f"{max(r for k, r in rates.items() if k != 'cloud-only'):.1f}"
    )
    return Plan(
        mode,
        g,
        d,
        f"auto: {mode.value}{knobs} ({why}; drafter {1e3 * costs.draft:.1f} ms/token, "
        f"cloud {1e3 * costs.verify[0]:.1f} ms/token, RTT {1e3 * costs.rtt:.0f} ms, "
        f"acceptance {accept[0]:.2f} at the first position)",
        rates,
        model,
    )
