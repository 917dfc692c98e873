"""The edge session: one generation's pipelining state machine (sans-I/O).

The edge keeps drafting while the cloud verifies: up to ``depth`` draft blocks
are in flight, each drafted from the tail of the previous ones. A verdict
commits its accepted prefix; a rejection (or a correction) bumps the epoch,
discards every later block, and tells the driver where the drafter resumes.
Verdicts of an older epoch are dropped. In ``pipeline`` mode the position after
a fully accepted block is verified by the next block, never by a bonus token;
``sync`` is stop-and-wait (depth 1, a bonus on every block that leaves room for
one). Block boundaries therefore depend only on earlier outcomes, never on
timing, and neither does any token. ``cloud-only`` drafts nothing: the cloud
decodes alone and the session only commits what it streams.

In ``cloud-led`` the cloud decodes continuously and takes the drafts waiting
for its next positions into its forwards (``cloud/led.py``); the edge drafts up
to ``gamma * depth`` tokens ahead of what is committed, in blocks of ``gamma``,
and every verdict commits its accepted drafts plus the cloud's own token. A
verdict that agrees with the drafts sent leaves them in flight; one that
contradicts them (a rollback) or outruns them starts a new chain: a new epoch,
and the drafter resumes after the cloud's token. Which drafts the cloud took
depends on timing; the tokens do not.

No sockets, no clock, no model: the driver feeds messages and ``now``, drafts
what ``want()`` asks for, applies the returned events to its drafter, and sends
``bye()`` or ``cancel()`` when the generation ends. The network client, the
in-process loop and the simulator all drive this one class.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from picospec.codec.draft import DraftToken
from picospec.codec.errors import ConfigError
from picospec.codec.messages import (
    MAX_BLOCK,
    Bye,
    Cancel,
    DraftBlock,
    Error,
    ErrorCode,
    Message,
    Progress,
    Start,
    Verdict,
    Welcome,
)
from picospec.codec.rng import KeyedRandom
from picospec.codec.sampling import Sampling
from picospec.codec.scheme import LED_SCHEMES, Mode, Scheme
from picospec.codec.sparse import Q_ONE
from picospec.codec.verify import split_correction

MAX_DEPTH = 64
"""Most blocks one session keeps in flight (the cloud announces its own limit)."""


@dataclass(frozen=True)
class Committed:
    """Tokens that are final (stream them)."""

    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Resume:
    """The drafter must hold exactly its first ``position`` tokens, then ``token``
    (roll back, push the decided token: a correction, or a bonus it never drafted)."""

    position: int
    token: int


def surviving(
    ev: Resume, partial_at: int, partial: Sequence[DraftToken]
) -> list[DraftToken] | None:
    """The drafts not yet sent (at positions partial_at..) that a Resume leaves
    valid: when the decided token is the first of them, the drafter already holds
    it and the rest follow it, so neither a rollback nor a push is needed (cloud-led,
    when the cloud commits past what was sent). None: carry out the Resume."""
    if partial and ev.position == partial_at and partial[0].token == ev.token:
        return list(partial[1:])
    return None


@dataclass(frozen=True)
class Finished:
    reason: str


@dataclass(frozen=True)
class Failed:
    """The generation cannot go on; every committed token is kept."""

    message: str


Event = Committed | Resume | Finished | Failed


class LimitError(ConfigError):
    """A request the cloud announced it would refuse; nothing was sent."""


def fit(
    welcome: Welcome,
    *,
    prompt_tokens: int,
    max_new: int,
    gamma: int,
    depth: int,
    k: int,
) -> tuple[int, int]:
    """Check a generation against the cloud's announced limits before sending it;
    returns gamma and depth clamped to what the cloud takes (raises LimitError
    naming the limit for what cannot be clamped)."""
    w = welcome
    if prompt_tokens > w.max_prompt_tokens:
        raise LimitError(
            f"the prompt has {prompt_tokens} tokens; the cloud takes at most "
            f"{w.max_prompt_tokens} (max_prompt_tokens)"
        )
    if max_new > w.max_new_tokens:
        raise LimitError(
            f"max_new_tokens {max_new} is over the cloud's limit of {w.max_new_tokens}"
        )
    if prompt_tokens + max_new > w.context_size:
        raise LimitError(
            f"{prompt_tokens} prompt tokens + {max_new} new tokens do not fit the cloud's "
            f"context of {w.context_size} tokens"
        )
    if k > w.max_k:
        raise LimitError(f"k {k} is over the cloud's limit of {w.max_k} (max_k)")
    return min(gamma, w.max_block), min(depth, w.max_depth)


@dataclass
class _Block:
    epoch: int
    start: int
    drafts: tuple[DraftToken, ...]
    sent_at: float


@dataclass
class EdgeStats:
    rounds: int = 0
    """Verdicts on draft blocks (not counting the prefill's)."""
    drafted: int = 0
    """Tokens sent in draft blocks (discarded ones included)."""
    accepted: int = 0
    emitted: int = 0
    """Tokens committed by block verdicts: accepted drafts plus corrections and bonuses."""
    blocks: list[tuple[int, int]] = field(default_factory=list)
    """(accepted, drafted) of every verified block, in order."""
    rollbacks: int = 0
    stale_dropped: int = 0
    """Verdicts dropped because their epoch was already rolled back."""
    discarded: int = 0
    """Drafted tokens thrown away unverified by a rollback."""
    target_forwards: int = 0
    """Target forward passes the cloud reported for this generation."""
    last_latency: float = 0.0
    """Seconds from sending the last verified block to its verdict."""
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending each verified block to its verdict, in order."""
    chains: list[tuple[int, int]] = field(default_factory=list)
    """cloud-led: (matched, checked) of every chain of drafts that ended: checked
    is matched + 1 when the cloud contradicted it, matched when the cloud outran it."""


@dataclass
class EdgeSession:
    session: int
    prompt: tuple[int, ...]
    seed: int
    max_new: int
    sampling: Sampling
    is_end: Callable[[int], bool]
    mode: Mode = Mode.PIPELINE
    gamma: int = 4
    depth: int = 3
    early_send: bool = False
    first_gamma: int = 0
    """The first block after a rejection (and the generation's first) holds at
    most this many drafts (0: gamma)."""
    generated: list[int] = field(default_factory=list)
    stats: EdgeStats = field(default_factory=EdgeStats)
    epoch: int = 0
    done: bool = False
    closed_by_cloud: bool = False
    """The cloud ended the generation (Bye or Error): it needs no Bye or Cancel."""
    exact: bool = True
    """False once a split correction was sampled from a truncated p."""
    error_code: ErrorCode | None = None
    """The code of the Error the cloud ended the generation with, if it did."""
    _inflight: deque[_Block] = field(default_factory=deque)
    _correction: int | None = None  # split: decided on the edge, travels with the next block
    _led: deque[_Block] = field(default_factory=deque)
    """cloud-led: the drafts sent for positions committed_end.., one per entry."""
    _matched: int = 0  # cloud-led: drafts of the current chain that matched
    _fresh: bool = True  # no block sent since the start or the last rejection

    def __post_init__(self) -> None:
        self.mode = Mode.parse(self.mode)
        if not 1 <= self.gamma <= MAX_BLOCK:
            raise ConfigError(f"gamma must be in 1..{MAX_BLOCK}, got {self.gamma}")
        if not 0 <= self.first_gamma <= MAX_BLOCK:
            raise ConfigError(f"first_gamma must be in 0..{MAX_BLOCK}, got {self.first_gamma}")
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ConfigError(f"depth must be in 1..{MAX_DEPTH}, got {self.depth}")
        if self.max_new < 1 or not self.prompt:
            raise ConfigError("a generation needs a prompt and max_new >= 1")
        if self.mode is Mode.SYNC:
            self.depth = 1
        if self.mode is Mode.CLOUD_LED and self.sampling.scheme not in LED_SCHEMES:
            names = " or ".join(s.value for s in LED_SCHEMES)
            raise ConfigError(
                f"mode cloud-led runs under the {names} scheme, not {self.sampling.scheme.value}"
            )
        self.rand = KeyedRandom(self.seed)

    @property
    def scheme(self) -> Scheme:
        return self.sampling.scheme

    # ------------------------------------------------------------------ positions
    @property
    def committed_end(self) -> int:
        """Position after the last committed token."""
        return len(self.prompt) + len(self.generated)

    @property
    def led(self) -> bool:
        return self.mode is Mode.CLOUD_LED

    @property
    def tail(self) -> int:
        """Position after the last drafted token in flight."""
        if self.led:
            return self.committed_end + len(self._led)
        if self._inflight:
            return self._inflight[-1].start + len(self._inflight[-1].drafts)
        return self.committed_end

    @property
    def in_flight(self) -> int:
        """Blocks sent and not yet verified (cloud-led: drafts sent and not yet committed)."""
        return len(self._led) if self.led else len(self._inflight)

    def start_message(self) -> Start:
        if self.mode is Mode.EDGE_ONLY:
            raise ConfigError("an edge-only generation has nothing to tell the cloud")
        s = self.sampling
        return Start(
            session=self.session,
            epoch=0,
            start=len(self.prompt),
            seed=self.seed,
            max_new_tokens=self.max_new,
            mode=self.mode,
            scheme=s.scheme,
            params=s.params,
            k=s.k,
            allow_inexact=s.allow_inexact,
            prompt=self.prompt,
        )

    def bye(self) -> Bye:
        """The message that ends a finished generation on the cloud."""
        return Bye(session=self.session, epoch=self.epoch, start=self.committed_end)

    def cancel(self, reason: str) -> Cancel:
        """The message that stops a generation the edge gives up on; the session ends."""
        self._end_drafts()
        return Cancel(
            session=self.session, epoch=self.epoch, start=self.committed_end, reason=reason[:256]
        )

    # ------------------------------------------------------------------ drafting
    def want(self) -> int:
        """How many tokens to draft for the next block now (0: wait for a verdict)."""
        if self.done or not self.mode.speculative or not self.generated:
            return 0
        gamma = self.gamma
        if self.first_gamma and self._fresh:
            gamma = min(gamma, self.first_gamma)  # after a rejection: send a block sooner
        if self.led:
            room = self.gamma * self.depth - len(self._led)
        elif len(self._inflight) >= self.depth:
            return 0
        else:
            room = gamma
        left = len(self.prompt) + self.max_new - self.tail
        return max(0, min(gamma, left, room))

    def send_early(self, drafted: int, drafting_s: float) -> bool:
        """Latency-aware early send: with nothing in flight the cloud is idle, so
        send a partial block once drafting has taken longer than a round trip."""
        return (
            self.early_send
            and drafted > 0
            and not self._inflight
            and drafting_s > self.stats.last_latency > 0
        )

    def block(self, drafts: Sequence[DraftToken], now: float) -> DraftBlock:
        """Record a drafted block as in flight; returns the message to send."""
        if not drafts or len(drafts) > self.want():
            raise ConfigError(f"a block of {len(drafts)} tokens was not asked for")
        qs = [d.q for d in drafts if d.q is not None]
        if self.scheme in (Scheme.SPARSE_Q, Scheme.SPLIT) and len(qs) != len(drafts):
            raise ConfigError(f"the {self.scheme.value} scheme sends each token's q")
        start = self.tail
        end = start + len(drafts) - len(self.prompt)  # generated tokens once all are accepted
        msg = DraftBlock(
            session=self.session,
            epoch=self.epoch,
            start=start,
            scheme=self.scheme,
            # sync asks for the bonus while it still fits; the pipeline's next block
            # verifies that position instead
            bonus=self.mode is Mode.SYNC and end < self.max_new,
            correction=self._correction,
            tokens=tuple(d.token for d in drafts),
            q=tuple(qs) if self.scheme is Scheme.SPARSE_Q else (),
            q_counts=tuple(int(q.prob(d.token) * Q_ONE) for q, d in zip(qs, drafts, strict=True))
            if self.scheme is Scheme.SPLIT
            else (),
        )
        self._correction = None
        self._fresh = False
        if self.led:
            self._led.extend(_Block(self.epoch, start + i, (d,), now) for i, d in enumerate(drafts))
        else:
            self._inflight.append(_Block(self.epoch, start, tuple(drafts), now))
        self.stats.drafted += len(drafts)
        return msg

    # ------------------------------------------------------------------ verdicts
    def receive(self, msg: Message, now: float) -> list[Event]:
        """Apply a message from the cloud; returns what the driver must do."""
        if self.done:
            return []
        if isinstance(msg, Error):
            self.closed_by_cloud = True
            self.error_code = msg.code
            return self._fail(f"the cloud refused: {msg.message} ({msg.code.name})")
        if isinstance(msg, Bye):
            self.closed_by_cloud = True
            return self._fail(f"the cloud ended the generation: {msg.reason or 'no reason'}")
        if isinstance(msg, Progress):
            return []  # the cloud is evaluating a long prompt (the driver's wait restarts)
        if not isinstance(msg, Verdict):
            return self._fail(f"unexpected {type(msg).__name__} from the cloud")
        if self.led:
            return self._led_verdict(msg, now)
        if msg.epoch < self.epoch:
            self.stats.stale_dropped += 1
            return []
        self.stats.target_forwards += msg.target_forwards
        if not self._inflight:  # the prefill's first token, or a cloud-only token
            if msg.start != self.committed_end or msg.token is None or msg.accepted:
                return self._fail(f"a token for position {msg.start} was not expected")
            return self.commit([msg.token])
        block = self._inflight.popleft()
        if msg.start != block.start or msg.epoch != block.epoch:
            return self._fail(f"a verdict for position {msg.start}, expected {block.start}")
        n, a = len(block.drafts), msg.accepted
        if a > n:
            return self._fail(f"{a} tokens accepted of a block of {n}")
        if msg.p is not None and a >= n:
            return self._fail("a target distribution came with a fully accepted block")
        self.stats.rounds += 1
        self.stats.accepted += a
        self.stats.last_latency = now - block.sent_at
        self.stats.latencies.append(self.stats.last_latency)
        tokens = [d.token for d in block.drafts[:a]]
        token = msg.token
        if token is None and msg.p is not None:  # split: the edge samples the correction
            q = block.drafts[a].q
            if q is None:
                return self._fail("a split distribution for a token drafted without q")
            self.exact &= msg.p_exact
            token = self._correction = split_correction(msg.p, q, self.rand, block.start + a)
        elif token is None and a < n:
            return self._fail("a rejection came without a token or a distribution")
        self.stats.emitted += len(tokens) + (token is not None)
        self.stats.blocks.append((a, n))
        events = self.commit(tokens + ([] if token is None else [token]))
        if a < n or (token is not None and self._inflight):
            # a rejection, or a bonus under blocks drafted without it: their tail is void
            self.epoch += 1
            self.stats.rollbacks += 1
            self.stats.discarded += (n - a) + sum(len(b.drafts) for b in self._inflight)
            self._inflight.clear()
            self._fresh = True
        if token is not None and not self.done:
            # the drafter holds the block's drafts; it must hold the decided token too
            # (after a bonus as after a correction), or its next block starts one short
            events.append(Resume(block.start + a, token))
        return events

    def _led_verdict(self, msg: Verdict, now: float) -> list[Event]:
        """cloud-led: every verdict commits tokens, whatever its epoch; accepted
        drafts must be the ones in flight."""
        a, sent = msg.accepted, self._led
        if msg.start != self.committed_end or msg.token is None:
            return self._fail(f"a token for position {msg.start} was not expected")
        if a and (msg.epoch != self.epoch or a > len(sent)):
            return self._fail(f"{a} drafts of epoch {msg.epoch} accepted at position {msg.start}")
        first = not self.generated
        self.stats.target_forwards += msg.target_forwards
        if a:
            self.stats.rounds += 1
            self.stats.accepted += a
            self.stats.blocks.append((a, a))
            self.stats.last_latency = now - sent[a - 1].sent_at
            self.stats.latencies.append(self.stats.last_latency)
        accepted = [sent.popleft().drafts[0].token for _ in range(a)]
        self.stats.emitted += a + (not first)
        follows = bool(sent) and sent[0].drafts[0].token == msg.token
        self._matched += a + follows
        events = self.commit([*accepted, msg.token])
        if self.done:
            return events
        if follows:
            sent.popleft()  # the cloud's token is the next draft: the chain goes on
            return events
        if sent:  # the cloud's token contradicts the drafts in flight
            self.stats.rollbacks += 1
            self.stats.discarded += len(sent)
            self.stats.chains.append((self._matched, self._matched + 1))
            sent.clear()
            self._fresh = True
        elif self._matched:
            self.stats.chains.append((self._matched, self._matched))
        self._matched = 0
        if not first:  # a new chain, drafted after the cloud's token
            self.epoch += 1
            events.append(Resume(msg.start + a, msg.token))
        return events

    def voids(self, msg: Message) -> bool:
        """True when msg rolls the drafter back: a rejection of the oldest block in
        flight, so whatever the drafter is drafting now is wasted."""
        if self.led:
            if not isinstance(msg, Verdict) or msg.token is None or not self._led:
                return False
            a = msg.accepted
            return a >= len(self._led) or self._led[a].drafts[0].token != msg.token
        if not isinstance(msg, Verdict) or msg.epoch != self.epoch or not self._inflight:
            return False
        return msg.accepted < len(self._inflight[0].drafts)

    def connection_lost(self, why: str) -> list[Event]:
        """The transport failed: keep what is committed, say so clearly."""
        if self.done:
            return []
        self.closed_by_cloud = True  # nobody to tell
        return self._fail(f"connection lost after {len(self.generated)} committed tokens: {why}")

    def commit(self, tokens: list[int]) -> list[Event]:
        """Make tokens final (trimmed at max_new and after an end token)."""
        room = self.max_new - len(self.generated)
        tokens = tokens[:room]
        for i, t in enumerate(tokens):
            if self.is_end(t):
                tokens = tokens[: i + 1]
                break
        self.generated += tokens
        events: list[Event] = [Committed(tuple(tokens))] if tokens else []
        if len(self.generated) >= self.max_new:
            events += self._finish("max tokens")
        elif tokens and self.is_end(tokens[-1]):
            events += self._finish("end of text")
        return events

    def _end_drafts(self) -> None:
        self.done = True
        self._inflight.clear()
        self._led.clear()

    def _finish(self, reason: str) -> list[Event]:
        self._end_drafts()
        return [Finished(reason)]

    def _fail(self, message: str) -> list[Event]:
        self._end_drafts()
        return [Failed(message)]
