"""A verifier service on loopback, in its own thread, for tests that abuse it.

``ServerThread`` runs the real ``VerifierService`` and QUIC server on an event
loop of its own, so a test can hit it from any number of clients, each in its
own ``asyncio.run``, across many hypothesis examples, while a well-behaved edge
generates; ``call`` reads its state on its own loop. ``good_tokens`` is what a
well-behaved Markov edge must get: the in-process cloud-only output.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from markov import MarkovBackend, MarkovDrafter, sampling

from picospec.cloud.backend import Backend
from picospec.cloud.limits import Limits
from picospec.cloud.server import VerifierService
from picospec.codec.scheme import Scheme
from picospec.edge.client import EdgeClient
from picospec.lab.inprocess import generate
from picospec.runtime.quic import ClientTLS, Server, ServerTLS, generate_self_signed

T = TypeVar("T")
TOKEN = b"test-token"
GREEDY = sampling(Scheme.GREEDY, 0.0)
PROMPT = [0, 1, 2, 3]


class ServerThread:
    """``with ServerThread(backend, limits=...) as srv``: srv.address, srv.tls, srv.service."""

    def __init__(
        self, backend: Backend, *, limits: Limits | None = None, idle_timeout: float = 10.0
    ) -> None:
        self.backend, self.limits, self.idle_timeout = backend, limits, idle_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._tmp = tempfile.TemporaryDirectory()
        self.service: VerifierService
        self.server: Server
        self.address: tuple[str, int]
        self.tls: ClientTLS

    def __enter__(self) -> ServerThread:
        self._thread.start()
        cert, key = Path(self._tmp.name) / "cert.pem", Path(self._tmp.name) / "key.pem"
        pin = generate_self_signed(cert, key, host="localhost")
        self.tls = ClientTLS(pin_sha256=pin)

        async def start() -> None:
            self.service = VerifierService(self.backend, token=TOKEN, limits=self.limits)
            self.server = await self.service.serve(
                "127.0.0.1", 0, ServerTLS(str(cert), str(key)), idle_timeout=self.idle_timeout
            )
            self.address = self.server.address

        self.run(start())
        return self

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the server's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """fn() on the server's loop (to read its state without racing it)."""
        done: Future[T] = Future()
        self.loop.call_soon_threadsafe(lambda: done.set_result(fn()))
        return done.result(30)

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self.server.close()
            await self.service.close()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self._tmp.cleanup()


def good_tokens(n: int = 16, prompt: list[int] = PROMPT) -> list[int]:
    """What a well-behaved greedy edge must get: the target's own greedy output."""
    backend = MarkovBackend()
    g = generate(MarkovDrafter(backend.table), backend, prompt, mode="cloud-only",
                 sampling=GREEDY, max_new_tokens=n)  # fmt: skip
    return g.token_ids


async def well_behaved(
    srv: ServerThread, n: int = 16, mode: str = "pipeline", prompt: list[int] = PROMPT
) -> tuple[list[int], float]:
    """One greedy generation by a well-behaved edge (a drafter that disagrees with
    the target, so blocks are rejected); its tokens and seconds."""
    drafts = MarkovBackend(seed=5).table
    client = EdgeClient(MarkovDrafter(drafts))
    try:
        await asyncio.wait_for(client.connect(*srv.address, srv.tls, token=TOKEN), 30)
        res = await asyncio.wait_for(
            client.generate(prompt, sampling=GREEDY, max_new_tokens=n, mode=mode, seed=0), 60
        )
        return res.token_ids, res.seconds
    finally:
        await client.close()


def rss_bytes() -> int:
    """This process's resident set size."""
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
