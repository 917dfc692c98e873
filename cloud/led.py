"""``cloud-led`` on the cloud: the drafts waiting for the cloud, and how many a forward takes.

In ``cloud-led`` the cloud decodes continuously, as in ``cloud-only``, and the
edge streams drafts for the positions after the cloud's frontier. Under the
``gumbel`` and ``greedy`` schemes a draft is accepted exactly when it equals the
cloud's own token at its position, so the cloud may take any number of the
waiting drafts into a forward: each forward commits the matched drafts plus one
token of its own, and the output is the ``cloud-only`` output for the seed.

``DraftStore`` keeps one generation's drafts: one contiguous chain per edge
epoch (the edge starts a new chain, with a new epoch, whenever a commit
contradicts or outruns what it drafted). Drafts for positions the cloud has
already committed are checked against what it committed: where they agree the
chain lives on and the drafts after them still count; the first disagreement
kills the chain, and its later drafts are dropped unread.

``LedPolicy`` chooses the number of drafts a forward takes, m, to maximise the
expected committed tokens per second, E(m) / cost(m + 1), where
E(m) = 1 + sum_{i=1..m} prod_{j<i} alpha_j and alpha_j is the measured chance
that the draft at offset j from the frontier matches given that those before it
did. ``ForwardCosts`` measures cost(n), a forward over n tokens, on the
service's own backend. With no cost known, a forward takes every waiting draft
(the right choice wherever a few more tokens in a forward cost little: a GPU).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from picospec.codec.errors import PicospecError, ProtocolError
from picospec.codec.messages import MAX_BLOCK, DraftBlock

PRIOR_ACCEPT = 0.5
"""The acceptance assumed at offset 0 before anything is measured."""
PRIOR_WEIGHT = 2.0
"""How many observations the prior is worth."""
COST_SMOOTHING = 0.2
"""Weight of a new timing in the forward cost EWMA."""

ForwardCost = Callable[[int], float | None]
"""Seconds of a forward over n tokens (None: not known)."""


class DraftLimit(PicospecError):
    """More drafts are waiting than the cloud announced it would hold."""


class DraftStore:
    """One generation's drafts for the positions after the committed ones."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.epoch = -1
        """The chain held now (the edge's epoch it was drafted in)."""
        self.dead = False
        """The chain disagreed with a committed token: the rest of it is dropped."""
        self.start = 0
        """Position of the first draft held (or, with none, of the next one expected)."""
        self.tokens: deque[int] = deque()
        self.matched = 0
        """Drafts that agreed with a committed token when they were checked against it."""

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, block: DraftBlock, committed: Sequence[int]) -> list[bool]:
        """Take a block of drafts; committed: every token the cloud has committed
        (prompt included). Returns the checks of the drafts that arrived for
        committed positions (as ``advance``). Raises ProtocolError for a block
        that cannot belong to a chain, DraftLimit past capacity."""
        if block.epoch < self.epoch or (block.epoch == self.epoch and self.dead):
            return []  # a chain that already disagreed with the cloud
        if block.epoch > self.epoch:
            if block.start > len(committed):
                raise ProtocolError(
                    f"a new chain of drafts starts at {block.start}, after the "
                    f"{len(committed)} positions the cloud has committed"
                )
            self.epoch, self.dead, self.start = block.epoch, False, block.start
            self.tokens.clear()
        elif block.start != self.start + len(self.tokens):
            raise ProtocolError(
                f"a block starts at {block.start}; the drafts of epoch {block.epoch} "
                f"end at {self.start + len(self.tokens)}"
            )
        if len(self.tokens) + len(block.tokens) > self.capacity:
            raise DraftLimit(f"more than {self.capacity} drafts waiting (max_depth x max_block)")
        self.tokens.extend(block.tokens)
        return self.advance(committed)

    def advance(self, committed: Sequence[int]) -> list[bool]:
        """Check the drafts for positions now committed against what was
        committed, dropping them; returns each check's outcome, in order (the
        first False kills the chain)."""
        out: list[bool] = []
        while self.tokens and self.start < len(committed):
            ok = self.tokens.popleft() == committed[self.start]
            out.append(ok)
            if not ok:
                self.dead = True
                self.tokens.clear()
                break
            self.matched += 1
            self.start += 1
        return out

    def ready(self, at: int) -> list[int]:
        """The drafts for positions at, at + 1, ... (none unless the chain is alive
        and reaches position at)."""
        if self.dead or self.start != at:
            return []
        return list(self.tokens)


class LedPolicy:
    """Chooses how many waiting drafts one forward takes, from measured acceptance
    by offset and measured forward cost by size."""

    def __init__(self, cost: ForwardCost | None = None, horizon: int = MAX_BLOCK) -> None:
        self.cost = cost
        self.tried = [0] * horizon
        self.ok = [0] * horizon

    def record(self, offered: int, accepted: int) -> None:
        """A forward took offered drafts and accepted the first accepted of them."""
        for i in range(min(offered, accepted + 1, len(self.tried))):
            self.tried[i] += 1
            self.ok[i] += i < accepted

    def record_checks(self, checks: Sequence[bool], offset: int = 0) -> None:
        """Drafts checked against tokens committed without them, each one draft at
        offset from a frontier where its chain had held: 0 for late drafts checked
        on arrival, m for the waiting draft past the m a forward took, checked
        against that forward's own token."""
        if offset >= len(self.tried):
            return
        for ok in checks:
            self.tried[offset] += 1
            self.ok[offset] += ok

    def alpha(self) -> list[float]:
        """Estimated acceptance at each offset, given the drafts before it matched
        (shrunk toward the previous offset's where little is measured)."""
        out, prior = [], PRIOR_ACCEPT
        for tried, ok in zip(self.tried, self.ok, strict=True):
            prior = (ok + PRIOR_WEIGHT * prior) / (tried + PRIOR_WEIGHT)
            out.append(prior)
        return out

    def choose(self, available: int) -> int:
        """Drafts the next forward takes of the available ones."""
        available = min(available, len(self.tried))
        if available <= 0:
            return 0
        if self.cost is None:
            return available
        base = self.cost(1)
        if base is None:
            return available
        best, best_rate = 0, 1.0 / base
        expected, survive = 1.0, 1.0
        for m, a in enumerate(self.alpha()[:available], start=1):
            survive *= a
            expected += survive
            cost = self.cost(m + 1)
            if cost is None:  # never measured: try it, and learn what it costs
                return m
            if cost > 0 and expected / cost > best_rate:
                best, best_rate = m, expected / cost
        return best


class ForwardCosts:
    """Measured seconds of a backend forward by tokens evaluated (EWMA per size)."""

    def __init__(self, largest: int = MAX_BLOCK + 1) -> None:
        self.largest = largest
        self.seconds: dict[int, float] = {}

    def observe(self, tokens: int, seconds: float) -> None:
        if not 1 <= tokens <= self.largest or seconds < 0:
            return
        old = self.seconds.get(tokens)
        self.seconds[tokens] = (
            seconds if old is None else (1 - COST_SMOOTHING) * old + COST_SMOOTHING * seconds
        )

    def __call__(self, tokens: int) -> float | None:
        """Seconds of a forward over tokens (None: that size was never timed)."""
        return self.seconds.get(tokens)
