"""The verifier service: asyncio glue between QUIC channels and CloudSession.

One CloudSession per connection. Every call into a session (and so every use
of the model) runs on one worker thread shared by all connections, so the
backend is never entered twice at once and the event loop stays free for
network traffic. A connection whose frames break the protocol gets an Error
and is closed; the server keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from picospec.codec.errors import PicospecError, ProtocolError
from picospec.codec.framing import FrameParser, encode_frame
from picospec.codec.messages import Error, ErrorCode, Message, Welcome
from picospec.quic import Channel, Server, ServerTLS, serve

from .backend import Backend
from .session import CloudSession

log = logging.getLogger("picospec.cloud")


class VerifierService:
    """Serves one backend to any number of edge connections."""

    def __init__(
        self, backend: Backend, *, token: bytes, name: str = "picospec", max_depth: int = 8
    ) -> None:
        self.backend = backend
        self.token = token
        self.name = name
        self.max_depth = max_depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="picospec-model")
        self.connections = 0
        self.busy_seconds = 0.0
        """Wall time the model thread spent on sessions' work (model and verification)."""
        self.work_units = 0
        """Calls into the sessions from the model thread (each runs at most one step)."""
        self._backend_ids = itertools.count(1)  # one id space for every connection

    async def serve(
        self, host: str, port: int, tls: ServerTLS, *, idle_timeout: float = 60.0
    ) -> Server:
        return await serve(host, port, tls, self.handle, idle_timeout=idle_timeout)

    async def handle(self, ch: Channel) -> None:
        """Run one connection until it closes."""
        self.connections += 1
        loop = asyncio.get_running_loop()
        session = CloudSession(
            self.backend,
            token=self.token,
            server_name=self.name,
            max_depth=self.max_depth,
            backend_ids=self._backend_ids,
        )
        parser = FrameParser()
        inbox: list[Message] = []
        wake = asyncio.Event()

        def send(msgs: list[Message]) -> None:
            for m in msgs:
                if isinstance(m, Welcome) and session.hello is not None:
                    parser.vocab = session.hello.vocab_size
                ch.write(encode_frame(m, parser.vocab))

        def process(batch: list[Message]) -> tuple[list[Message], bool]:
            t0 = time.perf_counter()
            out: list[Message] = []
            for m in batch:
                out += session.receive(m)
            if session.has_work:
                out += session.step()
            self.busy_seconds += time.perf_counter() - t0
            self.work_units += 1
            return out, session.has_work

        async def worker() -> None:
            more = False
            while not session.closed:
                if not inbox and not more:
                    await wake.wait()
                    wake.clear()
                    continue
                batch = inbox[:]
                inbox.clear()
                out, more = await loop.run_in_executor(self._pool, process, batch)
                send(out)
                if session.closed:
                    await ch.close("protocol error")

        task = asyncio.create_task(worker())
        try:
            while not session.closed:
                data = await ch.read()
                if not data:
                    break
                try:
                    inbox.extend(parser.feed(data))
                except ProtocolError as e:
                    send(
                        [
                            Error(
                                session=0,
                                epoch=0,
                                start=0,
                                code=ErrorCode.PROTOCOL,
                                message=str(e)[:1000],
                            )
                        ]
                    )
                    await ch.close("protocol error")
                    break
                wake.set()
        except PicospecError as e:
            log.warning("connection %s: %s", ch.peer, e)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await loop.run_in_executor(self._pool, session.close)
            if not ch.closed:
                await ch.close("bye")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
