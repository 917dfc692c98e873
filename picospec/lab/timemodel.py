"""The time model of DESIGN.md section 3: the throughput each mode should reach.

Closed-form expectations from measured inputs, never assumed ones: the
per-position acceptance of the run (``per_position``), the cost of one drafted
token, of a target forward over n tokens, the round-trip time and the pipeline
depth. Times are seconds. With a block of gamma drafts, reach_j = P(the first j
drafts are all accepted) and a verify round emits the accepted prefix plus one
token (the correction, or in ``sync`` the bonus):

* ``sync`` (stop-and-wait): every round costs gamma T_draft + RTT + T_verify(gamma + 1)
  (the forward also evaluates the previous round's bonus or correction) and
  emits sum_j reach_j tokens (accepted drafts + the correction or bonus).
* ``pipeline``: a fully accepted block emits gamma tokens (the next position is
  verified by the next block) and, in steady state, costs
  T_block = max(gamma T_draft, T_verify(gamma), (gamma T_draft + RTT + T_verify(gamma)) / depth):
  the drafter, the verifier, or the round trip shared by ``depth`` blocks in
  flight, whichever is slowest. A block with a rejection emits its accepted
  prefix plus the correction and costs a full serial round, because every block
  drafted behind it is void. DESIGN.md writes the steady-state term as
  max(T_draft, RTT + T_verify); that is the depth-2 picture with drafting
  overlapped but not verification, and an upper bound of T_block for depth >= 2.
* ``cloud-only``: one decode step per token, T_verify(1) (tokens stream; the
  RTT delays only the first).
* ``edge-only``: one drafter step per token.

A generation's time adds the time to first token (RTT + the target's prefill;
the drafter evaluates the prompt meanwhile, and only what it takes longer
counts) and, in ``pipeline``, the filling of the pipeline (one serial round in
place of a steady-state block) to tokens / rate, so short generations are
predicted as measured: tokens over wall time from the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from picospec.codec.errors import ConfigError
from picospec.codec.scheme import Mode
from picospec.lab.profiles import CloudProfile, EdgeProfile, LinkProfile, extend


@dataclass(frozen=True)
class Costs:
    """What one step of each stage costs, in seconds."""

    draft: float
    """One drafted token (a drafter step)."""
    verify: tuple[float, ...]
    """verify[n - 1]: one target forward over n tokens (verify[0] is a decode step)."""
    rtt: float
    prefill: float = 0.0
    """The target's prompt forward and first token."""
    draft_prefill: float = 0.0
    """The drafter's prompt forward (once per generation)."""
    round_overhead: float = 0.0
    """Cloud work per verify round outside the forward."""

    def __post_init__(self) -> None:
        if not self.verify:
            raise ConfigError("the time model needs at least one verify cost (n = 1)")
        for name in ("draft", "rtt", "prefill", "draft_prefill", "round_overhead"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"time model: {name} must be >= 0 seconds")

    def forward(self, n: int) -> float:
        """A target forward over n tokens; past the table, linear in its last two entries."""
        return extend(self.verify, n)

    @classmethod
    def of(cls, edge: EdgeProfile, link: LinkProfile, cloud: CloudProfile, sizes: int) -> Costs:
        """The same costs as the simulator's profiles, in seconds (forwards up to sizes)."""
        return cls(
            draft=edge.draft_ms / 1e3,
            verify=tuple(cloud.forward_ms(n) / 1e3 for n in range(1, sizes + 1)),
            rtt=link.rtt_ms / 1e3,
            prefill=cloud.prefill_ms / 1e3,
            draft_prefill=edge.prefill_ms / 1e3,
            round_overhead=cloud.round_ms / 1e3,
        )


def per_position(blocks: Sequence[tuple[int, int]], gamma: int) -> list[float]:
    """P(draft j accepted | drafts 0..j-1 accepted), j = 0..gamma-1, from
    (accepted, drafted) pairs; blocks shorter than gamma count up to their size."""
    reached, kept = [0] * gamma, [0] * gamma
    for a, n in blocks:
        for j in range(min(n, gamma)):
            if j <= a:
                reached[j] += 1
            if j < a:
                kept[j] += 1
    return [k / r if r else 0.0 for k, r in zip(kept, reached, strict=True)]


def reach(accept: Sequence[float]) -> list[float]:
    """reach[j] = P(the first j drafts are all accepted), j = 0..gamma."""
    out = [1.0]
    for a in accept:
        out.append(out[-1] * a)
    return out


@dataclass(frozen=True)
class Prediction:
    tok_per_s: float
    """Tokens per second over the whole generation (first-token latency included)."""
    tokens_per_round: float
    """Expected tokens a verify round emits (1 for cloud-only and edge-only)."""
    seconds_per_round: float

    @property
    def steady_tok_per_s(self) -> float:
        """Tokens per second once tokens flow (the rate without the start-up)."""
        return self.tokens_per_round / self.seconds_per_round


def predict(
    mode: str, accept: Sequence[float], costs: Costs, *, depth: int = 3, n_tokens: int = 0
) -> Prediction:
    """The model's throughput for mode, from per-position acceptance of gamma = len(accept).

    n_tokens > 0 adds the start-up (first-token latency, drafter prefill) to a
    generation of that many tokens; 0 gives the steady state alone.
    """
    mode = Mode.parse(mode)
    gamma = len(accept)
    if gamma < 1 and mode in ("pipeline", "sync"):
        raise ConfigError("speculative modes need the acceptance of at least one position")
    if mode == "cloud-only":
        tokens, seconds = 1.0, costs.forward(1) + costs.round_overhead
        startup = costs.rtt + costs.prefill
    elif mode == "edge-only":
        tokens, seconds = 1.0, costs.draft
        startup = costs.draft_prefill
    else:
        r = reach(accept)
        t_draft = gamma * costs.draft
        # the drafter evaluates the prompt while the cloud computes the first token
        startup = max(costs.rtt + costs.prefill, costs.draft_prefill)
        if mode == "sync":
            tokens = sum(r)
            seconds = t_draft + costs.rtt + costs.forward(gamma + 1) + costs.round_overhead
        else:
            verify = costs.forward(gamma) + costs.round_overhead
            serial = t_draft + costs.rtt + verify
            block = max(t_draft, verify, serial / max(depth, 1))
            full = r[gamma]
            tokens = full * gamma + sum((j + 1) * r[j] * (1 - accept[j]) for j in range(gamma))
            seconds = full * block + (1 - full) * serial
            # every run of accepted blocks opens with a serial round; the steady state
            # charges that to the miss that ends the run, but the generation's last run
            # ends without one, so a generation pays one serial round more
            startup += serial - block
    steady = tokens / seconds
    if n_tokens <= 0:
        return Prediction(steady, tokens, seconds)
    first = 0 if mode == "edge-only" else 1  # the prefill's token arrives with the start-up
    total = startup + (n_tokens - first) / steady
    return Prediction(n_tokens / total, tokens, seconds)
