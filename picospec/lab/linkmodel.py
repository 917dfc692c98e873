"""The link model: when, or whether, a packet sent on an emulated link arrives.

Sans-I/O, in aioquic's manner: no sockets and no clock; ``now`` is a parameter
(seconds from any monotonic origin). A ``LinkDirection`` is one direction of a
link, the three stages a packet crosses in order:

1. a token bucket of ``rate_mbit`` and ``burst_bytes`` with a FIFO queue of
   ``queue_bytes`` in front of it: a packet that would overfill the queue is
   dropped (tail drop). With ``burst_bytes`` 0 there is no bucket: the link
   serialises every packet at the rate, as a physical link (or netem's rate)
   does, so a packet of n bytes arrives n * 8 / rate after its first bit left;
2. random loss, Bernoulli per packet (a lost packet has used its share of the rate);
3. propagation: ``delay_ms`` plus a uniform jitter in [0, ``jitter_ms``], never
   arriving before the packet sent ahead of it (a serialising link does not reorder).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from picospec.codec.errors import ConfigError


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LinkConfig:
    """One direction of an emulated link; every field is checked on construction."""

    delay_ms: float = 0.0
    """One-way propagation delay in milliseconds."""
    jitter_ms: float = 0.0
    """Extra delay per packet, uniform in [0, jitter_ms] milliseconds; order is kept."""
    rate_mbit: float = 0.0
    """Rate of the token bucket in Mbit/s (10**6 bits); 0 = unlimited."""
    loss: float = 0.0
    """Probability in [0, 1) that a packet is lost, independently per packet."""
    burst_bytes: int = 15_000
    """Size of the token bucket: bytes an idle link lets through at once (ten 1500-byte packets).
    A packet larger than the bucket leaves when the bucket is full. 0: no bucket, every
    packet is serialised at the rate (a physical link of that rate)."""
    queue_bytes: int = 256 * 1024
    """Bytes that may wait for tokens; a packet that would exceed this is dropped (tail drop)."""
    seed: int = 0
    """Seed of the jitter and loss draws: the same seed gives the same drops and delays."""

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "rate_mbit"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"link {name} must be a finite number >= 0, got {value!r}")
        if not (_is_number(self.loss) and 0 <= self.loss < 1):
            raise ConfigError(f"link loss must be a probability in [0, 1), got {self.loss!r}")
        if not (_is_int(self.burst_bytes) and self.burst_bytes >= 0):
            raise ConfigError(f"link burst_bytes must be an integer >= 0, got {self.burst_bytes!r}")
        if not (_is_int(self.queue_bytes) and self.queue_bytes >= 0):
            raise ConfigError(f"link queue_bytes must be an integer >= 0, got {self.queue_bytes!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"link seed must be an integer, got {self.seed!r}")


class LinkDirection:
    """One direction of a link: ``send`` returns a packet's arrival time, or None if dropped.

    Counters: ``packets`` and ``bytes`` offered, ``delivered`` packets,
    ``lost`` (random loss), ``queue_drops`` (tail drops at the full queue) and
    ``cut_drops`` (dropped while the direction is ``cut``: an outage, such as a
    robot driving out of Wi-Fi range).
    """

    def __init__(self, config: LinkConfig, seed: int | None = None) -> None:
        """seed overrides config.seed (two directions of one config draw apart)."""
        self.config = config
        self.packets = self.bytes = self.delivered = self.lost = self.queue_drops = 0
        self.cut_drops = 0
        self.cut = False
        """While True, every packet is dropped (and counted in cut_drops)."""
        self._rng = random.Random(config.seed if seed is None else seed)
        self._rate = config.rate_mbit * 1e6 / 8  # bytes per second; 0 = unlimited
        self._tokens = float(config.burst_bytes)  # the bucket's level at _last_leave
        self._last_leave = -math.inf  # an untouched bucket has been filling forever
        self._waiting: deque[tuple[float, int]] = deque()  # (leaves at, size), FIFO
        self._waiting_bytes = 0
        self._last_arrival = -math.inf

    def send(self, size: int, now: float) -> float | None:
        """Arrival time of a packet of size bytes sent at now, or None if the link drops it."""
        self.packets += 1
        self.bytes += size
        if self.cut:
            self.cut_drops += 1
            return None
        leave = self._through_bucket(size, now) if self._rate else now
        if leave is None:
            self.queue_drops += 1
            return None
        c = self.config
        if c.loss and self._rng.random() < c.loss:
            self.lost += 1
            return None
        jitter = self._rng.uniform(0.0, c.jitter_ms) if c.jitter_ms else 0.0
        arrival = max(leave + (c.delay_ms + jitter) / 1e3, self._last_arrival)
        self._last_arrival = arrival
        self.delivered += 1
        return arrival

    def stats(self) -> dict[str, int]:
        """The counters, by name."""
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "delivered": self.delivered,
            "lost": self.lost,
            "queue_drops": self.queue_drops,
            "cut_drops": self.cut_drops,
        }

    def _through_bucket(self, size: int, now: float) -> float | None:
        """When the packet leaves the token bucket, or None when the queue has no room."""
        while self._waiting and self._waiting[0][0] <= now:
            self._waiting_bytes -= self._waiting.popleft()[1]
        burst = self.config.burst_bytes
        start = max(now, self._last_leave)  # FIFO: not before the packet ahead
        if burst == 0:  # serialisation: the last bit leaves size / rate after the first
            if start > now and self._waiting_bytes + size > self.config.queue_bytes:
                return None
            leave = start + size / self._rate
            self._waiting.append((leave, size))
            self._waiting_bytes += size
            self._last_leave = leave
            return leave
        tokens = min(burst, self._tokens + (start - self._last_leave) * self._rate)
        need = min(size, burst)
        leave = start if tokens >= need else start + (need - tokens) / self._rate
        if leave > now:
            if self._waiting_bytes + size > self.config.queue_bytes:
                return None
            self._waiting.append((leave, size))
            self._waiting_bytes += size
        self._tokens = tokens + (leave - start) * self._rate - size
        self._last_leave = leave
        return leave
