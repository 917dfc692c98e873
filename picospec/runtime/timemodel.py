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
* ``cloud-led``: the cloud decodes alone at T_1 = T_verify(1) per token until
  the edge's chain of drafts overtakes it, then commits the chain as fast as
  both allow. A chain starts at a contradiction (the cloud's token differs from
  the draft at that position); the edge hears of it RTT/2 later, ends the step
  it is in (half a step on average), drafts a block of gamma, which arrives
  RTT/2 after that, and then gains on the cloud at
  1/T_draft - 1/T_1 tokens per second: it overtakes after
  t_catch = (RTT + (gamma + 1/2) T_draft) / (1 - T_draft / T_1), that is
  k = t_catch / T_1 tokens (never when T_draft >= T_1: then the mode is
  cloud-only with idle drafts).
  Past that the chain is committed at v (``led_rate``: the drafter, the cloud
  with up to gamma * depth drafts a forward, or the lead of gamma * depth drafts
  cycling through block, round trip and forward, whichever is slowest). A chain
  of n matching drafts and the contradicting token (probability
  prod_{j<n} alpha_j (1 - alpha_n), alpha_j by offset in the chain, the last
  entry of the acceptance repeated) commits n + 1 tokens in (n + 1) T_1 if it
  ends before the edge overtakes, else
  t_catch + (n + 1 - k) / v + T_1 / 2 (the forward that finds the contradiction
  is on average half wasted).
  This is a renewal estimate: it ignores block boundaries and the cloud's own
  choice of how many drafts a forward takes (``cloud/led.py``); the simulator
  runs the real sessions.

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

CHAIN_TAIL = 1e-9
"""``cloud-led``: chains are summed until what is left of their probability is below this."""
MAX_CHAIN = 100_000


def extend(table: Sequence[float], n: int) -> float:
    """table[n - 1], a cost by size n = 1, 2, ...; past the end, linear in the last two
    entries (a one-entry table scales with n)."""
    if n < 1:
        raise ConfigError(f"a forward evaluates at least one token, got {n}")
    if n <= len(table):
        return table[n - 1]
    if len(table) == 1:
        return table[0] * n
    return table[-1] + max(0.0, table[-1] - table[-2]) * (n - len(table))


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


def per_position(blocks: Sequence[tuple[int, int]], gamma: int) -> list[float]:
    """P(draft j accepted | drafts 0..j-1 accepted), j = 0..gamma-1, from
    (accepted, drafted) pairs; blocks shorter than gamma count up to their size."""
    reached, kept = position_counts(blocks, gamma)
    return [k / r if r else 0.0 for k, r in zip(kept, reached, strict=True)]


def position_counts(blocks: Sequence[tuple[int, int]], gamma: int) -> tuple[list[int], list[int]]:
    """(reached, kept) by position j < gamma: blocks whose first j drafts were
    accepted, and of those, the ones whose draft j was accepted too."""
    reached, kept = [0] * gamma, [0] * gamma
    for a, n in blocks:
        for j in range(min(n, gamma)):
            if j <= a:
                reached[j] += 1
            if j < a:
                kept[j] += 1
    return reached, kept


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
    """Expected tokens a verify round emits (1 for cloud-only and edge-only; for
    cloud-led, per chain of drafts)."""
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
    if gamma < 1 and mode in ("pipeline", "sync", "cloud-led"):
        raise ConfigError("speculative modes need the acceptance of at least one position")
    if mode == "cloud-only":
        tokens, seconds = 1.0, costs.forward(1) + costs.round_overhead
        startup = costs.rtt + costs.prefill
    elif mode == "edge-only":
        tokens, seconds = 1.0, costs.draft
        startup = costs.draft_prefill
    elif mode == "cloud-led":
        tokens, seconds = _chain(accept, costs, depth)
        startup = costs.rtt + costs.prefill
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


def led_rate(costs: Costs, gamma: int, depth: int) -> float:
    """cloud-led, once the edge is ahead: tokens per second the pair commits. The
    lowest of the drafter's rate, the cloud's best with up to lead = gamma * depth
    drafts a forward, and what the lead lets through: each of its lead slots holds
    one draft for a cycle of filling its block ((gamma + 1) T_draft / 2), the
    round trip, the wait for the next forward (half of one) and the forward."""
    lead, over = gamma * max(depth, 1), costs.round_overhead
    rates = [(m + 1) / max(costs.forward(m + 1) + over, 1e-9) for m in range(lead + 1)]
    m = max(range(lead + 1), key=lambda i: rates[i])
    forward = costs.forward(m + 1) + over
    cycle = (gamma + 1) * costs.draft / 2 + costs.rtt + 1.5 * forward
    v = min(rates[m], lead / cycle)
    return min(1.0 / costs.draft, v) if costs.draft > 0 else v


def _chain(accept: Sequence[float], costs: Costs, depth: int) -> tuple[float, float]:
    """cloud-led: expected tokens and seconds of one chain of drafts (see the module)."""
    gamma = len(accept)
    t1 = costs.forward(1) + costs.round_overhead
    if costs.draft >= t1:  # the drafts always arrive after the cloud passed them
        return 1.0, t1
    # the edge finishes the step it is in (half a step), then drafts a block
    catch = (costs.rtt + (gamma + 0.5) * costs.draft) / (1 - costs.draft / t1)
    k, v = catch / t1, max(led_rate(costs, gamma, depth), 1 / t1)
    waste = t1 / 2  # the forward that finds the contradiction ends on average half used
    tokens = seconds = 0.0
    alive = 1.0  # P(the first n drafts matched)
    for n in range(MAX_CHAIN):
        a = accept[min(n, gamma - 1)]
        ends = alive * (1 - a)
        span = n + 1.0
        tokens += ends * span
        seconds += ends * (span * t1 if span <= k else catch + (span - k) / v + waste)
        alive *= a
        if alive < CHAIN_TAIL:
            break
    if alive >= CHAIN_TAIL:  # (almost) every draft matches: the chain never ends
        return v, 1.0
    return tokens / (1 - alive), seconds / (1 - alive)
