"""Link emulator: one-way delay, jitter, rate limit and loss for UDP, in user space.

The kernel here has no netem, so QUIC traffic in tests and benchmarks passes
through a UDP relay on loopback. ``LinkDirection`` is the sans-I/O model of one
direction (``now`` is a parameter): a token bucket serialises packets at the
configured rate with a bounded queue (tail drop), then each packet is delayed by
the one-way delay plus seeded jitter, never overtaking the one before it, and
dropped with the configured probability. ``LinkRelay`` is the asyncio glue: it
keeps one upstream socket per client address, so several connections stay apart.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from picospec.codec.errors import ConfigError


@dataclass(frozen=True)
class LinkConfig:
    """One direction of an emulated link."""

    delay_ms: float = 0.0
    """One-way propagation delay."""
    jitter_ms: float = 0.0
    """Extra delay drawn uniformly from [0, jitter_ms] per packet (order is kept)."""
    rate_mbit: float = 0.0
    """Serialisation rate in Mbit/s; 0 = unlimited."""
    loss: float = 0.0
    """Probability that a packet is dropped, independently per packet."""
    queue_bytes: int = 256 * 1024
    """Bytes that may wait for the rate limiter before packets are tail-dropped."""
    seed: int = 0
    """Seed of the jitter and loss draws."""

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "rate_mbit"):
            value = getattr(self, name)
            if not value >= 0.0 or value == float("inf"):
                raise ConfigError(f"link {name} must be a finite number >= 0, got {value}")
        if not 0.0 <= self.loss < 1.0:
            raise ConfigError(f"link loss must be in [0, 1), got {self.loss}")
        if self.queue_bytes < 1500:
            raise ConfigError(f"link queue_bytes must be at least 1500, got {self.queue_bytes}")


@dataclass
class LinkDirection:
    """The sans-I/O model of one direction: when (or whether) a packet arrives."""

    config: LinkConfig
    packets: int = 0
    delivered: int = 0
    lost: int = 0
    overflowed: int = 0
    _free_at: float = 0.0  # when the rate limiter finishes the packets queued so far
    _last_arrival: float = 0.0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)

    def send(self, size: int, now: float) -> float | None:
        """Arrival time of a packet of size bytes sent at now, or None if dropped."""
        c = self.config
        self.packets += 1
        start = max(now, self._free_at)
        if c.rate_mbit:
            backlog = (start - now) * c.rate_mbit * 1e6 / 8
            if backlog + size > c.queue_bytes:
                self.overflowed += 1
                return None
            self._free_at = start + size * 8 / (c.rate_mbit * 1e6)
        else:
            self._free_at = start
        if c.loss and self._rng.random() < c.loss:
            self.lost += 1
            return None
        jitter = self._rng.uniform(0.0, c.jitter_ms) if c.jitter_ms else 0.0
        arrival = max(self._free_at + (c.delay_ms + jitter) / 1e3, self._last_arrival)
        self._last_arrival = arrival
        self.delivered += 1
        return arrival


class _Upstream(asyncio.DatagramProtocol):
    """The relay's socket towards the server for one client."""

    def __init__(self, relay: LinkRelay, client: tuple[str, int]) -> None:
        self.relay, self.client = relay, client
        self.transport: asyncio.DatagramTransport | None = None
        self.backlog: list[bytes] = []  # client packets that came before the socket

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        for data in self.backlog:
            self.relay._forward(self.relay.up, data, transport, None)
        self.backlog.clear()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._forward(self.relay.down, data, self.relay._listen_transport, self.client)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: LinkRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._from_client(data, addr)


class LinkRelay:
    """``async with LinkRelay(listen, upstream, up=..., down=...) as relay``: relay.address."""

    def __init__(
        self,
        *,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        up: LinkConfig,
        down: LinkConfig,
    ) -> None:
        self.listen, self.upstream = listen, upstream
        self.up = LinkDirection(up)
        self.down = LinkDirection(LinkConfig(**{**down.__dict__, "seed": down.seed + 1}))
        self._listen_transport: Any = None
        self._clients: dict[tuple[str, int], _Upstream] = {}
        self._pending: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.address: tuple[str, int] = ("", 0)

    async def __aenter__(self) -> LinkRelay:
        loop = asyncio.get_running_loop()
        self._listen_transport, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=self.listen
        )
        self.address = self._listen_transport.get_extra_info("sockname")[:2]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for handle in self._pending:
            handle.cancel()
        for up in self._clients.values():
            if up.transport is not None:
                up.transport.close()
        if self._listen_transport is not None:
            self._listen_transport.close()

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        up = self._clients.get(addr)
        if up is None:
            up = self._clients[addr] = _Upstream(self, addr)
            loop = asyncio.get_running_loop()
            task = loop.create_task(
                loop.create_datagram_endpoint(lambda: up, remote_addr=self.upstream)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if up.transport is None:
            up.backlog.append(data)
        else:
            self._forward(self.up, data, up.transport, None)

    def _forward(
        self, direction: LinkDirection, data: bytes, transport: Any, addr: tuple[str, int] | None
    ) -> None:
        loop = asyncio.get_running_loop()
        at = direction.send(len(data), loop.time())
        if at is None or transport is None:
            return

        def deliver() -> None:
            self._pending.discard(handle)
            if not transport.is_closing():
                transport.sendto(data, addr) if addr else transport.sendto(data)

        handle = loop.call_at(at, deliver)
        self._pending.add(handle)
