"""QUIC transport: one reliable, ordered, bidirectional byte stream per connection.

Both sides see a ``Channel``: the first bidirectional stream the client opens on
a connection (stream 0); data on any other stream is ignored. The server's
handler starts when the handshake completes, before the client writes. The
application frames its own messages on it; this module never parses them.
TLS 1.3 always (QUIC requires it); the ALPN is ``picospec/1``.

How the client verifies the server (see picospec/runtime/tls.py) is never optional:

- with a CA file, aioquic verifies the chain and the server name during the
  handshake;
- with a pinned fingerprint, aioquic's chain check is switched off (a
  self-signed certificate has no chain; aioquic still checks that the server
  signed the handshake with the certificate's key), and this module compares the
  certificate's SHA-256 with the pin when the handshake completes, in the same
  event loop step, before the Channel exists. A mismatch closes the connection
  and ``connect`` raises ``TransportError``; no application byte is sent or
  accepted. ``connect`` offers no way around this check.

``write`` never blocks: aioquic buffers the bytes and paces them by QUIC flow
and congestion control. ``pending`` says how many written bytes the peer has
not acknowledged yet and ``drain`` waits until that is below a bound, which is
how either side applies backpressure to a peer that stops reading. ``close``
delivers what was written, ends the stream (FIN) and closes the connection
with code 0. The client sends PINGs every ``keepalive`` seconds so an idle
connection stays open; a dead one ends by the idle timeout, and the Channel
says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import serve as quic_serve
from aioquic.asyncio.protocol import QuicStreamHandler
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet import QuicErrorCode

from picospec.codec.errors import ConfigError, PicospecError
from picospec.runtime.tls import (
    ClientTLS,
    ServerTLS,
    cert_fingerprint,
    fingerprint,
    generate_self_signed,
    load_certificates,
)

__all__ = [
    "ALPN",
    "Channel",
    "ClientTLS",
    "Server",
    "ServerTLS",
    "TransportError",
    "cert_fingerprint",
    "connect",
    "generate_self_signed",
    "serve",
]

ALPN = "picospec/1"
SERVER_CHANNEL_STREAM = 0
"""The stream that is the Channel: the first bidirectional stream a client opens."""
CLOSE_LINGER_S = 5.0
"""How long ``Channel.close`` waits for the peer to acknowledge the written bytes."""
_TLS_BAD_CERTIFICATE = QuicErrorCode.CRYPTO_ERROR + 42  # TLS alert bad_certificate

log = logging.getLogger("picospec.quic")


class TransportError(PicospecError):
    """The QUIC connection could not be made, was refused, or has ended."""


class _Unreachable(TransportError):
    """This address refused or cannot be reached; connect tries the next one."""


class Channel:
    """One connection's byte stream, on either side."""

    def __init__(self, protocol: _Protocol, stream_id: int) -> None:
        self._protocol = protocol
        self._stream_id = stream_id
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer = protocol.peer
        """'host:port' of the other side, for logs."""
        self.closed = False
        """True once the stream or the connection ended, or close() was called."""
        self.close_reason = ""
        """Why it ended: the peer closed, idle timeout, or the error's text."""

    async def read(self) -> bytes:
        """The next chunk of bytes; b"" once the peer ended the stream or the connection ended."""
        chunk = await self._chunks.get()
        if not chunk:
            self._chunks.put_nowait(b"")  # every later read sees the end too
        return chunk

    @property
    def min_rtt(self) -> float | None:
        """The smallest round trip QUIC has measured (seconds; None: none yet)."""
        return None if self.closed else self._protocol.min_rtt()

    @property
    def pending(self) -> int:
        """Bytes written and not yet acknowledged by the peer."""
        return 0 if self.closed else self._protocol.unacked(self._stream_id)

    async def drain(self, limit: int) -> None:
        """Wait until at most limit written bytes are unacknowledged; raises
        TransportError if the channel ends first."""
        while self.pending > limit:
            if self.closed:
                break
            await self._protocol.progress()
        if self.closed:
            raise TransportError(f"the channel to {self.peer} ended: {self.close_reason}")

    def write(self, data: bytes) -> None:
        """Queue data on the stream and transmit what flow control allows now."""
        if self.closed:
            raise TransportError(
                f"cannot write to {self.peer}: the channel is closed ({self.close_reason})"
            )
        if data:
            self._protocol.send(self._stream_id, data, end=False)

    async def close(self, reason: str = "") -> None:
        """Deliver what was written, end the stream and close the connection (code 0)."""
        self._end(reason or "closed locally")
        await self._protocol.close_cleanly(self._stream_id, reason)

    def abort(self, reason: str) -> None:
        """Close the connection now, without waiting for written bytes to arrive."""
        self._end(reason)
        self._protocol.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase=reason)

    def _feed(self, data: bytes, end: bool) -> None:
        if data and not self.closed:
            self._chunks.put_nowait(data)
        if end:
            self._end("the peer closed the stream")

    def _end(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._chunks.put_nowait(b"")


class _Protocol(QuicConnectionProtocol):
    """One QUIC connection: turns aioquic's events into a Channel, on either side."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: QuicStreamHandler | None = None,
        *,
        on_channel: Callable[[Channel], None] | None = None,
        verify: ClientTLS | None = None,
        keepalive: float | None = None,
        peer: str = "?",
    ) -> None:
        super().__init__(quic, stream_handler)
        self.peer = peer
        self.channel: Channel | None = None
        self.ready: asyncio.Future[None] = self._loop.create_future()
        """Client: the handshake completed and the server passed verification."""
        self.terminated = False
        self._on_channel = on_channel
        self._verify = verify
        self._keepalive = keepalive
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._progress = asyncio.Event()  # set whenever an ACK may have delivered our bytes

    # --- aioquic and asyncio callbacks

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        if self.peer == "?":
            self.peer = _format_address(addr)
        super().datagram_received(data, addr)
        self._progress.set()

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            self._settle(_Unreachable(f"connection refused by {self.peer} (nothing listens there)"))

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted) and self._quic.configuration.is_client:
            self._handshake_completed()
        elif isinstance(event, HandshakeCompleted):
            self._open_server_channel()
        elif isinstance(event, StreamDataReceived):
            self._stream_data(event)
        elif isinstance(event, StreamReset) and self._is_channel(event.stream_id):
            assert self.channel is not None
            self.channel._end(f"the peer reset the stream (code {event.error_code})")
        elif isinstance(event, ConnectionTerminated):
            self._terminated(event)

    # --- what a Channel asks of its connection

    def send(self, stream_id: int, data: bytes, *, end: bool) -> None:
        """Queue bytes (and maybe the FIN) on the stream and transmit."""
        try:
            self._quic.send_stream_data(stream_id, data, end_stream=end)
        except (RuntimeError, ValueError) as e:  # e.g. the peer stopped reading the stream
            raise TransportError(f"the stream to {self.peer} takes no more data: {e}") from e
        self.transmit()

    async def close_cleanly(self, stream_id: int, reason: str) -> None:
        """FIN the stream, wait (bounded) until the peer has it all, close with code 0."""
        if not self._closing and not self.terminated:
            self._closing = True
            with contextlib.suppress(TransportError):  # then there is nothing left to deliver
                self.send(stream_id, b"", end=True)
            deadline = self._loop.time() + CLOSE_LINGER_S
            while not self.terminated and not self._delivered(stream_id):
                self._progress.clear()
                left = deadline - self._loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._progress.wait(), left)
                except TimeoutError:
                    break
            self.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase=reason)
        try:
            await asyncio.wait_for(self.wait_closed(), CLOSE_LINGER_S)
        except TimeoutError:
            log.warning("connection %s did not finish closing", self.peer)

    def unacked(self, stream_id: int) -> int:
        """Bytes written to the stream that the peer has not acknowledged."""
        # aioquic keeps a stream's unacknowledged bytes in its sender's buffer
        # (_buffer_start.._buffer_stop) and has no public query; test_quic checks
        # that this grows while a peer does not acknowledge.
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(getattr(sender, "_buffer_stop", 0)) - int(getattr(sender, "_buffer_start", 0))

    def min_rtt(self) -> float | None:
        """The smallest round trip QUIC has measured on this connection (seconds;
        None before the first acknowledgement): the path's delay without queueing."""
        # aioquic's loss recovery keeps it and has no public query; test_quic checks it
        rtt = getattr(getattr(self._quic, "_loss", None), "_rtt_min", math.inf)
        return float(rtt) if math.isfinite(rtt) else None

    async def progress(self) -> None:
        """Wait for the next datagram from the peer (it may acknowledge data) or the end."""
        if not self.terminated:
            self._progress.clear()
            await self._progress.wait()

    def abandon(self) -> None:
        """Client: give up a handshake; close the connection and the UDP socket now."""
        self.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="handshake abandoned")
        if self._transport is not None:
            self._transport.close()

    def _delivered(self, stream_id: int) -> bool:
        # aioquic has no public "all sent data acknowledged" query; a finished
        # stream's sender has had every byte and the FIN acknowledged, and a stream
        # finished in both directions is removed from the table.
        stream = self._quic._streams.get(stream_id)
        return stream is None or stream.sender.is_finished

    # --- event handling

    def _handshake_completed(self) -> None:
        pin = self._verify.pin_sha256 if self._verify is not None else None
        if pin is not None:
            got = self._peer_fingerprint()
            if got != pin:
                self._quic.close(
                    error_code=_TLS_BAD_CERTIFICATE,
                    reason_phrase="certificate does not match the pinned fingerprint",
                )
                self._settle(
                    TransportError(
                        f"the server at {self.peer} presented a certificate with SHA-256 {got}, "
                        f"which does not match the pinned fingerprint {pin}"
                    )
                )
                return
        self._settle(None)
        if self._keepalive is not None:
            # Ping often enough for the server's idle timeout too (aioquic keeps the
            # limit the server announced private).
            remote = getattr(self._quic, "_remote_max_idle_timeout", None)
            if remote:
                self._keepalive = min(self._keepalive, remote / 2)
            self._keepalive_timer = self._loop.call_later(self._keepalive, self._ping)

    def _open_server_channel(self) -> None:
        """Server: the connection is up; its Channel is the client's first bidirectional
        stream (id 0), and the handler runs from now on, whether or not the client
        ever writes (so a silent client meets the handler's deadlines and limits)."""
        if self.channel is None:
            self.channel = Channel(self, SERVER_CHANNEL_STREAM)
            if self._on_channel is not None:
                self._on_channel(self.channel)

    def _stream_data(self, event: StreamDataReceived) -> None:
        if not self._quic.configuration.is_client and event.stream_id == SERVER_CHANNEL_STREAM:
            self._open_server_channel()  # 0-RTT data may come before the handshake event
        if self._is_channel(event.stream_id):
            assert self.channel is not None
            self.channel._feed(event.data, event.end_stream)

    def _terminated(self, event: ConnectionTerminated) -> None:
        self.terminated = True
        self._progress.set()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._quic.configuration.is_client and not self.ready.done():
            self._settle(TransportError(self._handshake_failure(event)))
        if self.channel is not None:
            self.channel._end(_describe(event))
        if self._quic.configuration.is_client and self._transport is not None:
            self._transport.close()  # the client's UDP socket is its own

    def _handshake_failure(self, event: ConnectionTerminated) -> str:
        got = self._peer_fingerprint()
        tls_alert = (
            QuicErrorCode.CRYPTO_ERROR <= event.error_code <= QuicErrorCode.CRYPTO_ERROR + 255
        )
        if self._verify is not None and self._verify.cafile is not None and got and tls_alert:
            return (
                f"the server at {self.peer} presented a certificate with SHA-256 {got}, "
                f"which the CA file {self._verify.cafile} does not accept "
                f"for {self._verify.server_name!r}: {event.reason_phrase}"
            )
        return f"QUIC handshake with {self.peer} failed: {_describe(event)}"

    def _ping(self) -> None:
        if not self.terminated and self._keepalive is not None:
            self._quic.send_ping(0)  # no one awaits this PING; its ACK resets the idle timer
            self.transmit()
            self._keepalive_timer = self._loop.call_later(self._keepalive, self._ping)

    # --- helpers

    def _is_channel(self, stream_id: int) -> bool:
        return self.channel is not None and stream_id == self.channel._stream_id

    def _settle(self, error: TransportError | None) -> None:
        if self.ready.done():
            return
        if error is None:
            self.ready.set_result(None)
        else:
            self.ready.set_exception(error)

    def _peer_fingerprint(self) -> str:
        # aioquic keeps the peer's certificate only in a private attribute; were it
        # renamed, this returns "" and every pin check fails closed.
        cert = getattr(self._quic.tls, "_peer_certificate", None)
        return fingerprint(cert) if cert is not None else ""


def _describe(event: ConnectionTerminated) -> str:
    """A human reason for a connection's end."""
    if event.error_code == QuicErrorCode.INTERNAL_ERROR and event.reason_phrase == "Idle timeout":
        return "idle timeout"  # aioquic's local verdict: nothing arrived for idle_timeout seconds
    if event.error_code == QuicErrorCode.NO_ERROR:
        return "the peer closed the connection" + (
            f": {event.reason_phrase}" if event.reason_phrase else ""
        )
    if QuicErrorCode.CRYPTO_ERROR <= event.error_code <= QuicErrorCode.CRYPTO_ERROR + 255:
        alert = event.error_code - QuicErrorCode.CRYPTO_ERROR
        return f"TLS alert {alert}: {event.reason_phrase or 'no reason given'}"
    return f"connection closed with error 0x{event.error_code:x}: {event.reason_phrase}"


def _format_address(addr: NetworkAddress) -> str:
    host = str(addr[0]).removeprefix("::ffff:")
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class Server:
    """A listening QUIC endpoint; one handler task per connection."""

    def __init__(self, quic: QuicServer, tasks: set[asyncio.Task[None]]) -> None:
        self._quic = quic
        self._tasks = tasks
        # aioquic's QuicServer keeps its transport private; it is bound by now.
        transport = cast(asyncio.DatagramTransport, quic._transport)
        bound = transport.get_extra_info("sockname")
        self.address: tuple[str, int] = (bound[0], bound[1])
        """(host, port) actually bound; the port is the ephemeral one when 0 was asked."""

    async def close(self) -> None:
        """Close every connection ("server shutting down") and stop listening."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._quic.close()


async def serve(
    host: str,
    port: int,
    tls: ServerTLS,
    handler: Callable[[Channel], Awaitable[None]],
    *,
    idle_timeout: float = 60.0,
) -> Server:
    """Listen on UDP host:port; each connection's first client stream goes to handler.

    The handler runs as its own task, from the completed handshake on. When it
    returns the connection is closed cleanly; when it raises, the error is logged
    and that connection alone is closed.
    """
    if not idle_timeout > 0:
        raise ConfigError(f"idle_timeout must be > 0 seconds, got {idle_timeout}")
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], idle_timeout=idle_timeout)
    try:
        config.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot load the TLS certificate {tls.certfile} and key {tls.keyfile}: {e}"
        ) from e
    tasks: set[asyncio.Task[None]] = set()

    async def run(ch: Channel) -> None:
        reason = "bye"
        try:
            await handler(ch)
        except asyncio.CancelledError:
            ch.abort("server shutting down")
            raise
        except Exception:  # one connection's failure must never stop the server
            log.exception("connection %s: the handler failed", ch.peer)
            reason = "the server failed while handling this connection"
        await ch.close(reason)

    def on_channel(ch: Channel) -> None:
        task = asyncio.get_running_loop().create_task(run(ch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def factory(quic: QuicConnection, stream_handler: QuicStreamHandler | None = None) -> Any:
        return _Protocol(quic, stream_handler, on_channel=on_channel)

    try:
        quic = await quic_serve(host, port, configuration=config, create_protocol=factory)
    except OSError as e:
        raise TransportError(f"cannot listen on UDP {host}:{port}: {e}") from e
    return Server(quic, tasks)


async def connect(
    host: str,
    port: int,
    tls: ClientTLS,
    *,
    idle_timeout: float = 60.0,
    keepalive: float | None = 10.0,
    handshake_timeout: float = 10.0,
) -> Channel:
    """Connect to host:port, verify the server as tls says, and open the byte stream.

    Each address host resolves to is tried in turn while the previous one refuses.
    Raises TransportError when the handshake fails, the certificate does not
    match, nothing answers within handshake_timeout, or the connection is refused.
    """
    for name, value in (("idle_timeout", idle_timeout), ("handshake_timeout", handshake_timeout)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0 seconds, got {value}")
    if keepalive is not None and not 0 < keepalive < idle_timeout:
        raise ConfigError(
            f"keepalive must be between 0 and idle_timeout ({idle_timeout} s), got {keepalive}"
        )
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        server_name=tls.server_name,
    )
    if tls.cafile is not None:
        load_certificates(tls.cafile)  # a clear error now rather than a TLS alert later
        config.load_verify_locations(cafile=tls.cafile)
    else:
        config.verify_mode = ssl.CERT_NONE  # the pin is checked when the handshake completes
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise TransportError(f"cannot resolve {host}: {e}") from e
    unreachable: TransportError | None = None
    for family, _, proto, _, addr in infos:
        try:
            protocol = await _handshake(
                config, tls, family, proto, addr, keepalive, handshake_timeout
            )
        except _Unreachable as e:
            unreachable = e
            continue
        except TimeoutError as e:
            raise TransportError(
                f"timed out: no QUIC handshake with {host}:{port} within "
                f"{handshake_timeout:g} s (is the cloud running and UDP port {port} reachable?)"
            ) from e
        protocol.channel = Channel(protocol, protocol._quic.get_next_available_stream_id())
        return protocol.channel
    assert unreachable is not None  # getaddrinfo returns at least one address or raises
    raise unreachable


async def _handshake(
    config: QuicConfiguration,
    tls: ClientTLS,
    family: int,
    proto: int,
    addr: Any,
    keepalive: float | None,
    handshake_timeout: float,
) -> _Protocol:
    """One handshake attempt on a connected UDP socket (so a refusal is reported)."""
    peer = _format_address(addr)
    sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    try:
        sock.setblocking(False)
        sock.connect(addr)
        quic = QuicConnection(configuration=config)
        _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Protocol(quic, verify=tls, keepalive=keepalive, peer=peer), sock=sock
        )
    except OSError as e:
        sock.close()
        raise _Unreachable(f"cannot reach {peer}: {e}") from e
    protocol.connect(addr)
    try:
        await asyncio.wait_for(protocol.ready, handshake_timeout)
    except BaseException:
        protocol.abandon()
        raise
    return protocol
