"""The link relay: UDP datagrams through the link model on real sockets, in user space.

The kernel here has no netem, so QUIC traffic in tests and benchmarks passes
through this relay on loopback. It listens on one address and opens one socket
towards the upstream server per client address, so that several clients (several
QUIC connections) stay apart and each reply goes back to its own client. A
mapping with no traffic either way for ``idle_timeout`` seconds is closed.

All clients share one link: their datagrams queue behind each other in the ``up``
direction, the server's replies in ``down``. Each datagram goes through the model
(``picospec.lab.linkmodel``) when it is received and is sent at its arrival time by a
``loop.call_at`` timer, in order; the rest is socket plumbing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import cast

from picospec.codec.errors import ConfigError
from picospec.lab.linkmodel import LinkConfig, LinkDirection

__all__ = ["LinkConfig", "LinkDirection", "LinkRelay"]

log = logging.getLogger("picospec.link")

Address = tuple[str, int]


class _Mapping(asyncio.DatagramProtocol):
    """One client's socket towards the upstream server."""

    def __init__(self, relay: LinkRelay, client: Address, now: float) -> None:
        self.relay, self.client = relay, client
        self.last_active = now
        self.transport: asyncio.DatagramTransport | None = None
        self.opening: asyncio.Task[object] | None = None
        self.early: list[bytes] = []  # due before the socket was open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass in 3.11
        for data in self.early:
            self.transport.sendto(data)
        self.early.clear()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_upstream(self, data)

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.early.append(data)
        elif not self.transport.is_closing():
            self.transport.sendto(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        elif self.opening is not None:
            self.opening.cancel()


class _Deliveries:
    """One direction's datagrams in arrival order, each sent by a timer at its arrival time.

    One timer for the head of a FIFO, not one per datagram: the event loop's timer heap
    does not keep the order of equal deadlines, and a link must not reorder.
    """

    def __init__(self) -> None:
        self._due: deque[tuple[float, Callable[[], None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, at: float, send: Callable[[], None]) -> None:
        """at is never before the previous one's: the model keeps each direction in order."""
        self._due.append((at, send))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(at, self._fire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._due.popleft()[1]()  # the one the timer was set for
        while self._due and self._due[0][0] <= now:
            self._due.popleft()[1]()
        self._timer = loop.call_at(self._due[0][0], self._fire) if self._due else None


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: LinkRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay._from_client(data, addr)


class LinkRelay:
    """``async with LinkRelay(listen=..., upstream=..., up=..., down=...) as relay``.

    ``relay.address`` is where clients send (the bound listen address); ``relay.up``
    and ``relay.down`` are the two directions' models with their counters. The down
    direction draws its jitter and loss from ``down.seed + 1``, so that one config
    given for both directions does not drop the same packet numbers each way.
    """

    def __init__(
        self,
        *,
        listen: Address,
        upstream: Address,
        up: LinkConfig,
        down: LinkConfig,
        idle_timeout: float = 60.0,
    ) -> None:
        if not idle_timeout > 0:
            raise ConfigError(f"link idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        self.listen, self.upstream, self.idle_timeout = listen, upstream, idle_timeout
        self.up = LinkDirection(up)
        self.down = LinkDirection(down, seed=down.seed + 1)
        self.address: Address = ("", 0)
        self._listener: asyncio.DatagramTransport | None = None
        self._mappings: dict[Address, _Mapping] = {}
        self._up_due, self._down_due = _Deliveries(), _Deliveries()
        self._sweep: asyncio.TimerHandle | None = None

    def cut(self, *, up: bool = True, down: bool = True) -> None:
        """Drop every datagram in the given directions from now on (an outage)."""
        self.up.cut = self.up.cut or up
        self.down.cut = self.down.cut or down

    def restore(self) -> None:
        """End an outage: both directions carry datagrams again."""
        self.up.cut = self.down.cut = False

    @property
    def clients(self) -> int:
        """Client addresses with an open mapping."""
        return len(self._mappings)

    def stats(self) -> dict[str, object]:
        """Both directions' counters and the number of open mappings."""
        return {"up": self.up.stats(), "down": self.down.stats(), "clients": self.clients}

    async def __aenter__(self) -> LinkRelay:
        loop = asyncio.get_running_loop()
        self._listener, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=self.listen
        )
        self.address = self._listener.get_extra_info("sockname")[:2]
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Cancel the deliveries still due and close every socket."""
        self._up_due.cancel()
        self._down_due.cancel()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for mapping in self._mappings.values():
            mapping.close()
        self._mappings.clear()
        if self._listener is not None:
            self._listener.close()
        await asyncio.sleep(0)  # let the transports finish closing

    def _from_client(self, data: bytes, client: Address) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        mapping = self._mappings.get(client) or self._open(client, now)
        mapping.last_active = now
        at = self.up.send(len(data), now)
        if at is not None:
            self._up_due.add(at, partial(mapping.send, data))

    def _from_upstream(self, mapping: _Mapping, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        mapping.last_active = now
        at = self.down.send(len(data), now)
        if at is not None:
            self._down_due.add(at, partial(self._to_client, data, mapping.client))

    def _to_client(self, data: bytes, client: Address) -> None:
        if self._listener is not None and not self._listener.is_closing():
            self._listener.sendto(data, client)

    def _open(self, client: Address, now: float) -> _Mapping:
        loop = asyncio.get_running_loop()
        mapping = self._mappings[client] = _Mapping(self, client, now)
        mapping.opening = loop.create_task(
            loop.create_datagram_endpoint(lambda: mapping, remote_addr=self.upstream)
        )
        mapping.opening.add_done_callback(lambda task: self._opened(mapping, task))
        if self._sweep is None:
            self._sweep = loop.call_at(now + self.idle_timeout, self._expire)
        return mapping

    def _opened(self, mapping: _Mapping, task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.warning("link: no socket towards %s: %s", self.upstream, task.exception())
        if self._mappings.get(mapping.client) is mapping:
            del self._mappings[mapping.client]

    def _expire(self) -> None:
        """Close the mappings idle for idle_timeout; re-arm for the next one due."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for client, mapping in list(self._mappings.items()):
            if mapping.last_active + self.idle_timeout <= now:
                mapping.close()
                del self._mappings[client]
        self._sweep = None
        if self._mappings:
            due = min(m.last_active for m in self._mappings.values()) + self.idle_timeout
            self._sweep = loop.call_at(due, self._expire)
