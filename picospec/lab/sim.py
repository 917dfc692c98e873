"""A discrete-event simulator of one generation: edge, link and cloud on a virtual clock.

It runs the runtime's own protocol: the real ``EdgeSession`` and
``CloudSession`` exchange real messages, and only the models and the network
are modelled. So a change to the protocol changes the simulator with it, and a
recorded acceptance trace replayed with the timings measured in the same run
reproduces that run, while other timings answer "what if":

* the edge drafts one token per ``draft_ms`` and applies the cloud's messages
  only between tokens (as ``edge/client.py`` does); blocks, epochs, bonuses
  and rollbacks are the session's;
* each link direction is the link emulator's own model
  (``picospec.lab.linkmodel.LinkDirection``: serialisation at the rate, queue,
  delay), one datagram per message of its real encoded size (or the sizes a
  scenario gives);
* the cloud session runs on a modelled backend whose forward over n tokens
  costs ``forward_ms(n)`` (the prompt ``prefill_ms``), plus ``round_ms`` per
  verdict; messages that arrive while it works are applied before its next
  unit, as the server's model thread does. In ``cloud-led`` the cloud chooses
  how many drafts a forward takes from forward costs it learns as it runs them
  (``ForwardCosts``, a size never run tried once), as the server does, not from
  the modelled table.

Acceptance comes from an oracle that stands in for the verification maths:
``TraceAcceptance`` replays the (accepted, drafted) pairs a real run recorded,
in verification order (block boundaries depend only on earlier verdicts, so the
replay meets the same blocks); ``IidAcceptance`` draws each position from
per-position probabilities. In ``cloud-led`` the cloud's token is always token 0
and the real greedy maths runs: the oracle decides, as the edge drafts, whether
each draft is right (token 0) or wrong (token 2), by its offset in the chain of
drafts since the drafter last resumed, so a draft counts exactly when it equals
the cloud's token, whenever it arrives. No clock, no sockets, no models: the
same inputs give the same result.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from picospec.cloud.backend import Backend, Sessions, check_forward
from picospec.cloud.led import ForwardCosts
from picospec.cloud.limits import Limits
from picospec.cloud.session import CloudSession
from picospec.codec.draft import DraftToken
from picospec.codec.errors import ConfigError
from picospec.codec.framing import encode_frame
from picospec.codec.messages import MAX_BLOCK, DraftBlock, Hello, Message, Start, Verdict
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode, Scheme
from picospec.codec.sparse import Q_ONE, SparseDist
from picospec.codec.verify import Outcome, verify_block
from picospec.codec.vocab import VocabFingerprint, fingerprint
from picospec.edge.session import Committed, EdgeSession, Failed, Resume, surviving

from .linkmodel import LinkConfig, LinkDirection
from .profiles import CloudProfile, EdgeProfile, LinkProfile

V = 4
"""The modelled vocabulary: drafts are token 0, corrections token 1 (cloud-led:
the cloud's token is 0, a wrong draft 2)."""
MAX_EVENTS = 10_000_000


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

    def matches(self, offset: int) -> bool:
        """cloud-led: a trace of blocks says nothing of chains; the fallback decides."""
        if self.fallback is None:
            raise ConfigError("cloud-led needs per-position acceptance, not a trace of blocks")
        return self.fallback.matches(offset)


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

    def matches(self, offset: int) -> bool:
        """cloud-led: whether the draft at offset in its chain is right, given the
        ones before it were."""
        return self._rng.random() < self.accept[min(offset, len(self.accept) - 1)]


class FullAcceptance:
    """Every draft is accepted."""

    def accepted(self, n: int) -> int:
        return n

    def matches(self, offset: int) -> bool:
        return True


Acceptance = TraceAcceptance | IidAcceptance | FullAcceptance


@dataclass(frozen=True)
class Scenario:
    """One generation to simulate."""

    mode: str
    n_tokens: int
    """Tokens the generation commits (the first one from the cloud's prefill)."""
    gamma: int = 4
    depth: int = 3
    scheme: str = "greedy"
    """Which scheme's messages travel; ``split`` leaves each correction to the
    edge, so the cloud cannot evaluate it ahead of the next block."""
    prompt_tokens: int = 8
    start_bytes: float | None = None
    """The Start message on the wire (None: its real encoded size)."""
    block_bytes: float | None = None
    """A DraftBlock's fixed part (None: real encoded sizes, with block_bytes_per_token)."""
    block_bytes_per_token: float = 0.0
    """Bytes per drafted token: with block_bytes set, all of them; without, on top of
    the real frame (the modelled q records are one entry long, a real one K)."""
    verdict_bytes: float | None = None
    """A Verdict on the wire (None: its real encoded size)."""
    first_gamma: int = 0
    """The first block after a rejection holds at most this many drafts (0: gamma)."""
    abandon_on_rejection: bool = False
    """A what-if, not the runtime's behaviour: a rejection that arrives while the
    drafter is busy stops the token in progress at once. The runtime applies
    messages between tokens (a llama.cpp decode cannot be interrupted), so a
    rejection waits for the current step; this switch measures what that costs."""

    def __post_init__(self) -> None:
        Mode.parse(self.mode)
        Scheme.parse(self.scheme)
        if self.n_tokens < 1 or not 1 <= self.gamma <= MAX_BLOCK or not 1 <= self.depth <= 64:
            raise ConfigError(
                f"a scenario needs n_tokens >= 1, gamma in 1..{MAX_BLOCK}, depth in 1..64"
            )
        if self.prompt_tokens < 1:
            raise ConfigError("a scenario needs a prompt of at least one token")
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
    target_forwards: int = 0
    sent: list[tuple[int, int, int]] = field(default_factory=list)
    """(epoch, start, drafted) of every DraftBlock, in the order sent."""
    verdicts: list[tuple[int, int, int]] = field(default_factory=list)
    """(epoch, start, accepted) of every Verdict on a block, in the order received."""

    @property
    def tok_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else 0.0


class ModelledBackend(Backend):
    """A target with no model: it keeps each session's length and charges each
    forward its modelled cost (``take`` collects what a unit of work cost)."""

    name = "modelled"
    vocab_size = V
    max_context = 1 << 30

    def __init__(self, cloud: CloudProfile, prompt_tokens: int, costs: ForwardCosts) -> None:
        self.cloud = cloud
        self.prompt_tokens = prompt_tokens
        self.costs = costs
        """Told every forward's modelled seconds, as the server times its backend's."""
        self._len: Sessions[list[int]] = Sessions(1 << 16)
        self._charged = 0.0
        self.forwards = 0

    def fingerprint(self) -> VocabFingerprint:
        return _FINGERPRINT

    def is_end(self, token: int) -> bool:
        return False

    def open(self, session: int) -> None:
        self._len.open(session, lambda: [0])

    def close(self, session: int) -> None:
        self._len.close(session)

    def forward(
        self, session: int, start: int, tokens: list[int], n_out: int | None = None
    ) -> np.ndarray:
        length = self._len[session]
        n_out = check_forward(
            session, start, length[0], tokens, n_out, vocab_size=V, capacity=self.max_context
        )
        length[0] = start + len(tokens)
        prompt = max(0, min(self.prompt_tokens, start + len(tokens)) - start)
        ms = self.cloud.prefill_ms * prompt / self.prompt_tokens
        if len(tokens) > prompt:
            ms += self.cloud.forward_ms(len(tokens) - prompt if prompt else len(tokens))
        self._charged += ms / 1e3
        self.forwards += 1
        self.costs.observe(len(tokens), ms / 1e3)
        return np.zeros((n_out, V), dtype=np.float32)

    def _truncate(self, session: int, position: int) -> None:
        length = self._len[session]
        length[0] = min(length[0], position)

    def distributions(self, logits: np.ndarray, params: SamplingParams) -> np.ndarray:
        return np.full(logits.shape, 1.0 / V)

    def take(self) -> float:
        """Seconds charged since the last call."""
        charged, self._charged = self._charged, 0.0
        return charged


_FINGERPRINT = fingerprint(((b"t%d" % i, 0) for i in range(V)), {})
_ONE_HOT = SparseDist.from_counts(np.array([0]), np.array([Q_ONE]))


def oracle_verify(oracle: Acceptance | None) -> Callable[..., Outcome]:
    """A stand-in for ``codec.verify.verify_block``: the oracle decides how many
    drafts a block keeps; a rejection's correction (token 1) comes from the cloud,
    or under ``split`` from the edge (p is all on token 1, so it is exact)."""

    def verify(scheme: Scheme, tokens: Sequence[int], p: Any, *, bonus: bool, **_: Any) -> Outcome:
        n = len(tokens)
        a = n if oracle is None else oracle.accepted(n)
        if a < n:
            if scheme is Scheme.SPLIT:
                return Outcome(a, None, p_topk=SparseDist(np.array([1]), np.array([1.0])))
            return Outcome(a, 1)
        return Outcome(n, 1, bonus=True) if bonus else Outcome(n, None)

    return verify


class _Engine:
    """The event queue and the three parties."""

    def __init__(
        self,
        scenario: Scenario,
        edge: EdgeProfile,
        link: LinkProfile,
        cloud: CloudProfile,
        acceptance: Acceptance | None,
    ) -> None:
        self.s, self.edge_p, self.link_p, self.cloud_p = scenario, edge, link, cloud
        # burst 0: every message serialised at the rate, as the benchmark's emulated link does
        half = LinkConfig(delay_ms=link.rtt_ms / 2, rate_mbit=link.rate_mbit, burst_bytes=0)
        self.up, self.down = LinkDirection(half), LinkDirection(half, seed=1)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.now = 0.0
        self.result = SimResult(0.0, 0, 0.0)
        mode, scheme = Mode.parse(scenario.mode), Scheme.parse(scenario.scheme)
        self.led = mode is Mode.CLOUD_LED
        if self.led:  # the cloud's token is argmax of the modelled (uniform) p: token 0
            scheme = Scheme.GREEDY
        self.acceptance = acceptance or FullAcceptance()
        self.chain = 0  # cloud-led: drafts since the drafter last resumed
        params = SamplingParams(temperature=0.0 if scheme is Scheme.GREEDY else 1.0, top_k=1)
        sampling = Sampling(params, scheme, k=1)
        self.edge = EdgeSession(
            1,
            (0,) * scenario.prompt_tokens,
            seed=0,
            max_new=scenario.n_tokens,
            sampling=sampling,
            is_end=lambda _t: False,
            mode=mode,
            gamma=scenario.gamma,
            first_gamma=scenario.first_gamma,
            depth=scenario.depth,
        )
        self.draft = DraftToken(0, None if scheme is Scheme.GUMBEL else _ONE_HOT)
        self.drafting = False
        self.partial: list[DraftToken] = []
        self.partial_at = 0  # the position of partial[0]
        self.inbox: list[Message] = []
        self.edge_prefill_left = 0.0  # the drafter's prompt forward, paid by its first step
        self.begun = False
        self.failed = ""
        self.step_id = 0  # the drafter step in progress; an abandoned one is ignored
        # the cloud learns what a forward costs by size from the forwards it runs, as the
        # server does (a size never run is tried once): it does not know the table
        costs = ForwardCosts()
        self.backend = ModelledBackend(cloud, scenario.prompt_tokens, costs)
        limits = Limits(
            max_new_tokens=scenario.n_tokens,
            max_depth=64,
            max_k=1,
            max_generations_per_connection=1,
            prefill_chunk=1 << 30,
        )
        self.cloud = CloudSession(
            self.backend,
            limits=limits,
            verify_fn=verify_block if self.led else oracle_verify(acceptance),
            forward_cost=costs,
        )
        self.cloud.receive(Hello(session=0, epoch=0, start=0, vocab_fingerprint=_FINGERPRINT))
        self.cloud_inbox: list[Message] = []
        self.cloud_busy = False

    # ------------------------------------------------------------------ machinery
    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, self._seq, fn))
        self._seq += 1

    def run(self) -> SimResult:
        self.send_up(self.edge.start_message())
        for _ in range(MAX_EVENTS):
            if not self._events or self.edge.done:
                break
            self.now, _, fn = heapq.heappop(self._events)
            fn()
        if not self.edge.done:
            raise ConfigError("the simulated generation stalled (no events left)")
        if self.failed:
            raise ConfigError(f"the simulated generation failed: {self.failed}")
        st, r = self.edge.stats, self.result
        r.n_tokens = len(self.edge.generated)
        r.rounds, r.blocks, r.discarded = st.rounds, list(st.blocks), st.discarded
        r.target_forwards = st.target_forwards
        return r

    def _wire(self, msg: Message) -> int:
        s = self.s
        if isinstance(msg, Start) and s.start_bytes is not None:
            size = s.start_bytes
        elif isinstance(msg, DraftBlock) and s.block_bytes is not None:
            size = s.block_bytes + s.block_bytes_per_token * len(msg.tokens)
        elif isinstance(msg, Verdict) and s.verdict_bytes is not None:
            size = s.verdict_bytes
        else:
            size = len(encode_frame(msg, V))
            if isinstance(msg, DraftBlock):
                size += s.block_bytes_per_token * len(msg.tokens)
        return int(size) + self.link_p.packet_overhead_bytes

    def send_up(self, msg: Message) -> None:
        wire = self._wire(msg)
        self.result.bytes_up += wire
        at = self.up.send(wire, self.now)  # no loss in the simulator: never None
        self.at(self.now if at is None else at, lambda: self.cloud_receive(msg))

    def send_down(self, msg: Message) -> None:
        wire = self._wire(msg)
        self.result.bytes_down += wire
        at = self.down.send(wire, self.now)
        self.at(self.now if at is None else at, lambda: self.edge_receive(msg))

    # ------------------------------------------------------------------ edge
    def edge_receive(self, msg: Message) -> None:
        if self.drafting and not (self.s.abandon_on_rejection and self.edge.voids(msg)):
            self.inbox.append(msg)
            return
        if self.drafting:  # the what-if: stop the step in progress
            self.step_id += 1
            self.drafting = False
        self.edge_apply(msg)
        self.edge_next()

    def edge_apply(self, msg: Message) -> None:
        edge = self.edge
        if isinstance(msg, Verdict) and edge.in_flight and msg.epoch == edge.epoch:
            self.result.verdicts.append((msg.epoch, msg.start, msg.accepted))
        for ev in edge.receive(msg, self.now):
            if isinstance(ev, Committed):
                if not self.result.ttft:
                    self.result.ttft = self.now
                if not self.begun:
                    self.begun = True
                    # the drafter's prompt forward started with the request
                    self.edge_prefill_left = max(0.0, self.edge_p.prefill_ms / 1e3 - self.now)
            elif isinstance(ev, Resume):
                kept = surviving(ev, self.partial_at, self.partial)
                if kept is None:
                    self.partial, self.chain = [], 0
                else:
                    self.partial, self.partial_at = kept, self.partial_at + 1
            elif isinstance(ev, Failed):
                self.failed = ev.message
        if edge.done:
            self.result.seconds = self.now

    def edge_next(self) -> None:
        """Start drafting the next token if the session asks for one."""
        if self.edge.done or self.drafting or self.edge.want() == 0:
            return
        if not self.partial:
            self.partial_at = self.edge.tail
        cost = self.edge_p.draft_ms / 1e3 + self.edge_prefill_left
        self.edge_prefill_left = 0.0
        self.drafting = True
        step = self.step_id
        self.at(self.now + cost, lambda: self.edge_token_done(step))

    def edge_token_done(self, step: int) -> None:
        if step != self.step_id:
            return  # abandoned
        self.drafting = False
        if self.led:
            right = self.acceptance.matches(self.chain)
            self.partial.append(self.draft if right else DraftToken(2, None))
            self.chain += 1
        else:
            self.partial.append(self.draft)
        n = self.edge.want()
        if n and len(self.partial) >= n:
            block = self.edge.block(self.partial, self.now)
            self.result.sent.append((block.epoch, block.start, len(block.tokens)))
            self.partial = []
            self.send_up(block)
        inbox, self.inbox = self.inbox, []
        for msg in inbox:
            self.edge_apply(msg)
        self.edge_next()

    # ------------------------------------------------------------------ cloud
    def cloud_receive(self, msg: Message) -> None:
        self.cloud_inbox.append(msg)
        if not self.cloud_busy:
            self.cloud_work()

    def cloud_work(self) -> None:
        """Apply what arrived, then run one unit of the session's work."""
        inbox, self.cloud_inbox = self.cloud_inbox, []
        out: list[Message] = []
        for msg in inbox:
            out += self.cloud.receive(msg)
        for m in out:
            self.send_down(m)
        if not self.cloud.has_work:
            return
        produced = self.cloud.step()
        verdicts = sum(
            1 for m in produced if isinstance(m, Verdict) and m.start > self.s.prompt_tokens
        )
        cost = self.backend.take() + verdicts * self.cloud_p.round_ms / 1e3
        self.cloud_busy = True

        def done() -> None:
            self.cloud_busy = False
            for m in produced:
                self.send_down(m)
            self.cloud_work()

        self.at(self.now + cost, done)


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
