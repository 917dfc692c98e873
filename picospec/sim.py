"""A discrete-event simulator of one generation: edge, link and cloud on a virtual clock.

It follows the runtime's protocol step for step, so that a recorded acceptance
trace replayed with the timings measured in the same run reproduces that run,
and other timings answer "what if":

* the edge drafts one token at a time and applies the cloud's messages only
  between tokens (as ``edge/client.py`` does); up to ``depth`` blocks are in
  flight (``sync``: one, with a bonus on every block; ``pipeline``: a bonus
  only on the last block); a block holds min(gamma, tokens left) drafts; a
  rejection, or a bonus under later blocks, voids every block behind it;
* each link direction is the link emulator's own model
  (``picospec.linkmodel.LinkDirection``: serialisation at the rate, queue,
  delay), one datagram per message;
* the cloud verifies blocks in order and drops blocks of a dead epoch for free;
  a forward evaluates the decided tokens not yet in its cache plus the drafts
  (``cloud/target.py``), and after a rejection whose correction the cloud
  decided it evaluates that token at once (fast verify) before the next block.

Acceptance comes from an oracle: ``TraceAcceptance`` replays the (accepted,
drafted) pairs a real run recorded, in verification order (block boundaries
depend only on earlier verdicts, so the replay meets the same blocks);
``IidAcceptance`` draws each position from per-position probabilities.
No clock, no sockets, no models: the same inputs give the same result.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from picospec.codec.errors import ConfigError
from picospec.linkmodel import LinkConfig, LinkDirection
from picospec.profiles import CloudProfile, EdgeProfile, LinkProfile

MODES = ("pipeline", "sync", "cloud-only", "edge-only")


class TraceAcceptance:
    """Replays recorded (accepted, drafted) verdicts in order; past the end of the
    trace (a longer generation) it continues with ``fallback``, if given."""

    def __init__(
        self, blocks: Sequence[tuple[int, int]], fallback: IidAcceptance | None = None
    ) -> None:
        self.blocks = list(blocks)
        self.fallback = fallback
        self.used = 0

    def accepted(self, n: int) -> int:
        if self.used < len(self.blocks):
            a = self.blocks[self.used][0]
            self.used += 1
            return min(a, n)
        if self.fallback is None:
            raise ConfigError(f"the acceptance trace ran out after {len(self.blocks)} blocks")
        return self.fallback.accepted(n)


class IidAcceptance:
    """Each draft accepted with probability accept[j] given the drafts before it were."""

    def __init__(self, accept: Sequence[float], seed: int = 0) -> None:
        if not accept or not all(0.0 <= a <= 1.0 for a in accept):
            raise ConfigError("per-position acceptance must be probabilities, at least one")
        self.accept = list(accept)
        self._rng = random.Random(seed)

    def accepted(self, n: int) -> int:
        for j in range(n):
            a = self.accept[min(j, len(self.accept) - 1)]
            if self._rng.random() >= a:
                return j
        return n


Acceptance = TraceAcceptance | IidAcceptance


@dataclass(frozen=True)
class Scenario:
    """One generation to simulate."""

    mode: str
    n_tokens: int
    """Tokens the generation commits (the first one from the cloud's prefill)."""
    gamma: int = 4
    depth: int = 3
    edge_decides_correction: bool = False
    """``split``: the edge samples the correction and sends it with the next
    block, so the cloud cannot evaluate it early."""
    start_bytes: int = 200
    """The Start message (it carries the prompt)."""
    block_bytes: float = 20.0
    """A DraftBlock's fixed part."""
    block_bytes_per_token: float = 3.0
    """A DraftBlock's bytes per drafted token (ids; q or q(x) with the scheme)."""
    verdict_bytes: float = 30.0
    abandon_on_rejection: bool = False
    """A what-if, not the runtime's behaviour: a rejection that arrives while the
    drafter is busy stops the token in progress at once. The runtime applies
    messages between tokens (a llama.cpp decode cannot be interrupted), so a
    rejection waits for the current step; this switch measures what that costs."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.n_tokens < 1 or not 1 <= self.gamma <= 64 or not 1 <= self.depth <= 64:
            raise ConfigError("a scenario needs n_tokens >= 1 and gamma, depth in 1..64")
        if self.mode == "sync":
            object.__setattr__(self, "depth", 1)


@dataclass
class SimResult:
    seconds: float
    """From the request to the last committed token."""
    n_tokens: int
    ttft: float
    rounds: int = 0
    blocks: list[tuple[int, int]] = field(default_factory=list)
    """(accepted, drafted) of every verified block."""
    discarded: int = 0
    """Drafted tokens voided unverified by a rejection."""
    bytes_up: int = 0
    bytes_down: int = 0

    @property
    def tok_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else 0.0


@dataclass
class _Block:
    epoch: int
    start: int
    n: int
    bonus: bool
    carries_correction: bool


@dataclass
class _Verdict:
    epoch: int
    start: int
    accepted: int
    token: bool
    """The verdict carries a token (correction or bonus); False: all accepted,
    no bonus, or a split rejection whose correction the edge samples."""


class _Engine:
    """The event queue and the three parties' state."""

    def __init__(
        self,
        scenario: Scenario,
        edge: EdgeProfile,
        link: LinkProfile,
        cloud: CloudProfile,
        acceptance: Acceptance | None,
    ) -> None:
        self.s, self.edge_p, self.link_p, self.cloud_p = scenario, edge, link, cloud
        self.oracle = acceptance
        # burst 0: every message serialised at the rate, as the benchmark's emulated link does
        half = LinkConfig(delay_ms=link.rtt_ms / 2, rate_mbit=link.rate_mbit, burst_bytes=0)
        self.up, self.down = LinkDirection(half), LinkDirection(half, seed=1)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.now = 0.0
        self.result = SimResult(0.0, 0, 0.0)
        # edge
        self.epoch = 0
        self.committed = 0
        self.inflight: deque[_Block] = deque()
        self.partial = 0
        self.drafting = False
        self.inbox: list[_Verdict] = []
        self.done = False
        self.correction_pending = False  # split: the next block carries the edge's correction
        self.prefill_due = True
        self.edge_prefill_left = 0.0  # the drafter's prompt forward, paid by its first step
        self.step_id = 0  # the drafter step in progress; an abandoned one is ignored
        # cloud
        self.cloud_epoch = 0
        self.queue: deque[_Block] = deque()
        self.cloud_working = False
        self.pending = 0  # decided tokens not yet in the target's cache
        self.kept = True  # the target's row at the next position is known
        self.precompute = False

    # ------------------------------------------------------------------ machinery
    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, self._seq, fn))
        self._seq += 1

    def run(self) -> SimResult:
        self.send_up(self.s.start_bytes, self.cloud_start)
        for _ in range(10_000_000):
            if not self._events or self.done:
                break
            self.now, _, fn = heapq.heappop(self._events)
            fn()
        if not self.done:
            raise ConfigError("the simulated generation stalled (no events left)")
        return self.result

    def send_up(self, size: float, then: Callable[[], None]) -> None:
        wire = int(size) + self.link_p.packet_overhead_bytes
        self.result.bytes_up += wire
        at = self.up.send(wire, self.now)
        self.at(self.now if at is None else at, then)  # no loss in the simulator

    def send_down(self, size: float, then: Callable[[], None]) -> None:
        wire = int(size) + self.link_p.packet_overhead_bytes
        self.result.bytes_down += wire
        at = self.down.send(wire, self.now)
        self.at(self.now if at is None else at, then)

    # ------------------------------------------------------------------ edge
    def tail(self) -> int:
        return self.inflight[-1].start + self.inflight[-1].n if self.inflight else self.committed

    def want(self) -> int:
        if self.done or self.s.mode == "cloud-only" or self.committed == 0:
            return 0
        if len(self.inflight) >= self.s.depth:
            return 0
        return max(0, min(self.s.gamma, self.s.n_tokens - self.tail()))

    def commit(self, n: int) -> None:
        self.committed = min(self.s.n_tokens, self.committed + n)
        if self.result.ttft == 0.0 and self.committed:
            self.result.ttft = self.now
        if self.committed >= self.s.n_tokens:
            self.done = True
            self.result.seconds = self.now
            self.result.n_tokens = self.committed

    def edge_receive(self, v: _Verdict) -> None:
        if self.drafting and not (self.s.abandon_on_rejection and self._voids(v)):
            self.inbox.append(v)
            return
        if self.drafting:  # the what-if: stop the step in progress
            self.step_id += 1
            self.drafting = False
        self.edge_apply(v)
        self.edge_next()

    def _voids(self, v: _Verdict) -> bool:
        """The verdict rolls the drafter back (a rejection of the oldest block)."""
        return v.epoch == self.epoch and bool(self.inflight) and v.accepted < self.inflight[0].n

    def edge_apply(self, v: _Verdict) -> None:
        if self.done or v.epoch < self.epoch:
            return
        if not self.inflight:  # the prefill's token, or a cloud-only token
            self.commit(1)
            if self.prefill_due and self.s.mode != "cloud-only":
                # the drafter's prompt forward started with the request
                self.prefill_due = False
                self.edge_prefill_left = max(0.0, self.edge_p.prefill_ms / 1e3 - self.now)
            return
        block = self.inflight.popleft()
        self.result.rounds += 1
        self.result.blocks.append((v.accepted, block.n))
        split_correction = not v.token and v.accepted < block.n
        self.commit(v.accepted + (1 if v.token or split_correction else 0))
        if v.accepted < block.n or (v.token and self.inflight):
            self.epoch += 1
            self.result.discarded += (block.n - v.accepted) + sum(b.n for b in self.inflight)
            self.inflight.clear()
            self.partial = 0
        if split_correction:
            self.correction_pending = True

    def edge_next(self) -> None:
        """Start drafting the next token if the session asks for one."""
        if self.done or self.drafting or self.want() == 0:
            return
        cost = self.edge_p.draft_ms / 1e3 + self.edge_prefill_left
        self.edge_prefill_left = 0.0
        self.drafting = True
        step = self.step_id
        self.at(self.now + cost, lambda: self.edge_token_done(step))

    def edge_token_done(self, step: int) -> None:
        if step != self.step_id:
            return  # abandoned
        self.drafting = False
        self.partial += 1
        n = self.want()
        if n and self.partial >= n:
            block = _Block(
                self.epoch,
                self.tail(),
                self.partial,
                bonus=self.s.mode == "sync" or self.tail() + self.partial >= self.s.n_tokens,
                carries_correction=self.correction_pending,
            )
            self.correction_pending = False
            self.partial = 0
            self.inflight.append(block)
            size = self.s.block_bytes + self.s.block_bytes_per_token * block.n
            self.send_up(size, lambda b=block: self.cloud_receive(b))  # type: ignore[misc]
        inbox, self.inbox = self.inbox, []
        for v in inbox:
            self.edge_apply(v)
        self.edge_next()

    # ------------------------------------------------------------------ cloud
    def cloud_start(self) -> None:
        cost = self.cloud_p.prefill_ms / 1e3
        self.cloud_working = True
        self.at(self.now + cost, self.cloud_prefilled)

    def cloud_prefilled(self) -> None:
        self.cloud_working = False
        self.pending, self.kept = 1, False  # the first token is decided, not yet evaluated
        v = _Verdict(0, 0, 0, True)
        self.send_down(self.s.verdict_bytes, lambda: self.edge_receive(v))
        if self.s.mode == "cloud-only":
            self.cloud_decode()
        else:
            self.cloud_work()

    def cloud_decode(self) -> None:
        cost = (self.cloud_p.forward_ms(1) + self.cloud_p.round_ms) / 1e3

        def decoded() -> None:
            v = _Verdict(0, 0, 0, True)
            self.send_down(self.s.verdict_bytes, lambda: self.edge_receive(v))
            self.cloud_decode()

        self.at(self.now + cost, decoded)

    def cloud_receive(self, block: _Block) -> None:
        if block.epoch < self.cloud_epoch:
            return
        self.queue.append(block)
        if not self.cloud_working:
            self.cloud_work()

    def cloud_work(self) -> None:
        cost = 0.0
        if self.precompute:
            self.precompute = False
            cost += self.cloud_p.forward_ms(self.pending) / 1e3
            self.pending, self.kept = 0, True
        while self.queue and self.queue[0].epoch < self.cloud_epoch:
            self.queue.popleft()
        if not self.queue:
            if cost:
                self.cloud_working = True
                self.at(self.now + cost, self.cloud_idle)
            return
        block = self.queue.popleft()
        if block.carries_correction:
            self.pending += 1
            self.kept = False
        a = self.oracle.accepted(block.n) if self.oracle is not None else block.n
        cost += (self.cloud_p.forward_ms(self.pending + block.n) + self.cloud_p.round_ms) / 1e3
        self.pending = 0
        token = False
        if a < block.n:
            self.cloud_epoch = block.epoch + 1
            self.queue.clear()
            self.kept = False
            if not self.s.edge_decides_correction:
                token = True
                self.pending, self.precompute = 1, True
        else:
            self.kept = True
            if block.bonus:
                token = True
                self.pending, self.kept = 1, False
        v = _Verdict(block.epoch, block.start, a, token)
        self.cloud_working = True

        def verified() -> None:
            self.cloud_working = False
            self.send_down(self.s.verdict_bytes, lambda: self.edge_receive(v))
            self.cloud_work()

        self.at(self.now + cost, verified)

    def cloud_idle(self) -> None:
        self.cloud_working = False
        self.cloud_work()


def simulate(
    scenario: Scenario,
    edge: EdgeProfile,
    link: LinkProfile,
    cloud: CloudProfile,
    acceptance: Acceptance | None = None,
) -> SimResult:
    """Run one generation on the virtual clock; acceptance decides each verify
    round (None: every draft is accepted). Not needed for cloud-only and edge-only."""
    if scenario.mode == "edge-only":
        first = edge.prefill_ms + edge.draft_ms
        seconds = (first + edge.draft_ms * (scenario.n_tokens - 1)) / 1e3
        return SimResult(seconds, scenario.n_tokens, first / 1e3)
    return _Engine(scenario, edge, link, cloud, acceptance).run()
