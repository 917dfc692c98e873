"""The edge's connection to its cloud, kept up in the background.

``CloudLink`` holds at most one connected ``EdgeClient``. When the cloud cannot
be reached at start, or a connection is lost (it ended, or a generation judged
the cloud silent), it reconnects in the background with exponential backoff and
jitter, forever, until closed. Generations ask it for the client of the moment
(None while offline), and whether the link is back (``online``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from picospec.codec.errors import PicospecError
from picospec.runtime.quic import ClientTLS

from .client import EdgeClient
from .model import DraftModel

log = logging.getLogger("picospec.edge")

FIRST_BACKOFF_S = 0.2
HANDSHAKE_TIMEOUT_S = 3.0


class CloudLink:
    def __init__(
        self,
        drafter: DraftModel,
        executor: ThreadPoolExecutor,
        address: tuple[str, int],
        tls: ClientTLS,
        token: bytes,
        *,
        name: str = "picospec-edge",
        max_backoff_s: float = 5.0,
        on_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        """on_change(online, why) is called whenever the link comes up or goes down."""
        self.drafter, self.executor = drafter, executor
        self.address, self.tls, self.token, self.name = address, tls, token, name
        self.max_backoff_s = max_backoff_s
        self.on_change = on_change
        self._client: EdgeClient | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.offline_since: float | None = time.time()
        """Wall-clock time the link went down (None while it is up)."""
        self.last_error = "not connected yet"
        self.connects = 0
        """Connections made (the first one included)."""

    @property
    def client(self) -> EdgeClient | None:
        """The connected client, or None while the link is down."""
        c = self._client
        if c is not None and not c.connected:
            self.lost(c.lost or "the connection ended")
            return None
        return c

    @property
    def online(self) -> bool:
        return self.client is not None

    async def start(self, wait_s: float = HANDSHAKE_TIMEOUT_S) -> bool:
        """Begin connecting; True when the first attempt succeeded within wait_s (if
        not, the link keeps trying in the background)."""
        self._task = asyncio.create_task(self._keep_up())
        try:
            await asyncio.wait_for(self._up.wait(), wait_s)
        except TimeoutError:
            return False
        return True

    async def wait_online(self, timeout: float | None) -> bool:
        """Wait (at most timeout seconds) for the link to be up; True if it is."""
        if self.online:
            return True
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return self.online

    def lost(self, why: str) -> None:
        """The connection is gone or judged dead: drop it and reconnect."""
        c, self._client = self._client, None
        if c is None:
            return
        c.abort(why)
        self._up.clear()
        self.offline_since, self.last_error = time.time(), why
        log.warning("cloud %s:%d lost: %s", *self.address, why)
        if self.on_change is not None:
            self.on_change(False, why)
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._keep_up())

    async def _keep_up(self) -> None:
        delay = FIRST_BACKOFF_S
        while not self._closed and self._client is None:
            client = EdgeClient(self.drafter, executor=self.executor, on_lost=self._ended)
            try:
                await client.connect(
                    *self.address, self.tls, token=self.token, name=self.name,
                    timeout=HANDSHAKE_TIMEOUT_S,
                )  # fmt: skip
            except PicospecError as e:
                with contextlib.suppress(PicospecError):
                    await client.close()
                self.last_error = str(e)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, self.max_backoff_s)
                continue
            self._client = client
            self.connects += 1
            self.offline_since = None
            self._up.set()
            log.info("cloud %s:%d connected", *self.address)
            if self.on_change is not None:
                self.on_change(True, "connected")

    def _ended(self, why: str) -> None:
        """A client's connection ended (called from its reader)."""
        if self._client is not None and self._client.lost:
            asyncio.get_running_loop().call_soon(self.lost, why)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        c, self._client = self._client, None
        if c is not None:
            with contextlib.suppress(PicospecError):
                await c.close()
