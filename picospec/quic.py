"""QUIC transport: one reliable, ordered byte stream per connection (aioquic).

Both sides see a ``Channel``: the first bidirectional stream of a connection,
carrying the length-prefixed frames of codec/framing.py. TLS 1.3 always (QUIC
requires it); the ALPN is ``picospec/1``. The client verifies the server either
against a CA file or against a pinned SHA-256 fingerprint of its certificate;
there is no way to turn verification off. With a pin, TLS-level chain checks
are skipped (a self-signed certificate has no chain) and the certificate the
server presented is compared with the pin as soon as the handshake completes,
before any application byte is sent; a mismatch closes the connection.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import connect as quic_connect
from aioquic.asyncio import serve as quic_serve
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from picospec.codec.errors import ConfigError, PicospecError

ALPN = "picospec/1"
log = logging.getLogger("picospec.quic")


class TransportError(PicospecError):
    """The QUIC connection could not be made or was lost."""


@dataclass(frozen=True)
class ServerTLS:
    certfile: str
    keyfile: str


@dataclass(frozen=True)
class ClientTLS:
    """How the edge verifies the cloud: exactly one of a CA file or a pin."""

    cafile: str | None = None
    pin_sha256: str | None = None
    """Hex SHA-256 of the server certificate (DER), as `picospec cloud gen-cert` prints it."""
    server_name: str = "localhost"

    def __post_init__(self) -> None:
        if (self.cafile is None) == (self.pin_sha256 is None):
            raise ConfigError(
                "verify the cloud with exactly one of --ca CERT_FILE or --pin SHA256 "
                "(certificate verification cannot be turned off)"
            )


class Channel:
    """One connection's byte stream, on either side."""

    def __init__(self, protocol: _Protocol, stream_id: int, peer: str) -> None:
        self._protocol = protocol
        self._stream_id = stream_id
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer = peer
        self.closed = False
        self.close_reason = ""
        self._client: Any = None  # the client's connect() context, exited on close
        self._keepalive: asyncio.Task[None] | None = None

    async def read(self) -> bytes:
        """The next chunk of bytes; b"" once the stream or the connection ended."""
        if self.closed and self._chunks.empty():
            return b""
        chunk = await self._chunks.get()
        if not chunk:
            self._chunks.put_nowait(b"")  # every later read sees the end too
        return chunk

    def write(self, data: bytes) -> None:
        if self.closed:
            raise TransportError(f"the connection to {self.peer} is closed ({self.close_reason})")
        self._protocol._quic.send_stream_data(self._stream_id, data)
        self._protocol.transmit()

    async def close(self, reason: str = "") -> None:
        """End the stream and close the connection cleanly (code 0)."""
        if self.closed:
            return
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._protocol._quic.send_stream_data(self._stream_id, b"", end_stream=True)
        self._protocol.close(error_code=0, reason_phrase=reason)
        self._ended(reason or "closed")
        if self._client is not None:
            await self._client.__aexit__(None, None, None)  # also closes the UDP socket
        else:
            await self._protocol.wait_closed()

    def _feed(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.put_nowait(data)
        if end:
            self._ended("the peer closed the stream")

    def _ended(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._chunks.put_nowait(b"")


class _Protocol(QuicConnectionProtocol):
    def __init__(
        self, *args: Any, on_channel: Callable[[Channel], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.channel: Channel | None = None
        self._on_channel = on_channel

    def _peer(self) -> str:
        addr = self._transport.get_extra_info("peername") if self._transport else None
        return f"{addr[0]}:{addr[1]}" if addr else "?"

    def open_channel(self) -> Channel:
        self.channel = Channel(self, self._quic.get_next_available_stream_id(), self._peer())
        return self.channel

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            if self.channel is None:
                self.channel = Channel(self, event.stream_id, self._peer())
                if self._on_channel is not None:
                    self._on_channel(self.channel)
            if event.stream_id == self.channel._stream_id:
                self.channel._feed(event.data, event.end_stream)
        elif isinstance(event, ConnectionTerminated) and self.channel is not None:
            why = event.reason_phrase or ("idle timeout" if event.error_code == 0 else "")
            self.channel._ended(why or f"connection closed (code {event.error_code})")


class Server:
    def __init__(self, quic: QuicServer, tasks: set[asyncio.Task[None]]) -> None:
        self._quic = quic
        self._tasks = tasks
        assert quic._transport is not None  # bound by quic_serve
        sock = quic._transport.get_extra_info("sockname")
        self.address: tuple[str, int] = (sock[0], sock[1])

    async def close(self) -> None:
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
    """Accept connections; each one's first stream is passed to handler as a Channel."""
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], idle_timeout=idle_timeout)
    try:
        config.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the TLS certificate or key: {e}") from e
    tasks: set[asyncio.Task[None]] = set()

    async def run(ch: Channel) -> None:
        try:
            await handler(ch)
        except Exception:  # one connection's failure must never stop the server
            log.exception("connection %s failed", ch.peer)
            if not ch.closed:
                await ch.close("internal error")

    def on_channel(ch: Channel) -> None:
        task = asyncio.get_running_loop().create_task(run(ch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def factory(*args: Any, **kwargs: Any) -> _Protocol:
        return _Protocol(*args, on_channel=on_channel, **kwargs)

    quic = await quic_serve(host, port, configuration=config, create_protocol=factory)
    return Server(quic, tasks)


async def connect(
    host: str,
    port: int,
    tls: ClientTLS,
    *,
    idle_timeout: float = 60.0,
    keepalive: float | None = 10.0,
    timeout: float = 15.0,
) -> Channel:
    """Connect, verify the server, and open the connection's byte stream."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        server_name=tls.server_name,
    )
    if tls.cafile is not None:
        try:
            config.load_verify_locations(cafile=tls.cafile)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the CA file {tls.cafile}: {e}") from e
    else:
        config.verify_mode = ssl.CERT_NONE  # the pin is checked below, before any data
    cm = quic_connect(
        host, port, configuration=config, create_protocol=_Protocol, wait_connected=True
    )
    try:
        protocol = cast(_Protocol, await asyncio.wait_for(cm.__aenter__(), timeout))
    except TimeoutError as e:
        raise TransportError(f"no QUIC handshake with {host}:{port} within {timeout:.0f} s") from e
    except ConnectionError as e:
        raise TransportError(f"cannot reach {host}:{port}: {e}") from e
    if tls.pin_sha256 is not None:
        got = _peer_fingerprint(protocol)
        if got != tls.pin_sha256.lower().replace(":", ""):
            await cm.__aexit__(None, None, None)
            raise TransportError(
                f"the server's certificate has SHA-256 {got}, not the pinned {tls.pin_sha256}"
            )
    channel = protocol.open_channel()
    if keepalive:
        channel._keepalive = asyncio.get_running_loop().create_task(
            _keepalive(protocol, channel, keepalive)
        )
    channel._client = cm
    return channel


async def _keepalive(protocol: _Protocol, channel: Channel, every: float) -> None:
    while not channel.closed:
        await asyncio.sleep(every)
        if not channel.closed:
            await protocol.ping()  # a PING frame keeps an idle connection alive


def _peer_fingerprint(protocol: _Protocol) -> str:
    cert = protocol._quic.tls._peer_certificate
    if cert is None:
        raise TransportError("the server presented no certificate")
    return cast(x509.Certificate, cert).fingerprint(hashes.SHA256()).hex()


def cert_fingerprint(cert_path: str | Path) -> str:
    """Hex SHA-256 of a PEM certificate's DER bytes (what --pin takes)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def generate_self_signed(
    cert_path: str | Path, key_path: str | Path, host: str = "localhost", days: int = 365
) -> str:
    """A self-signed EC P-256 certificate for host; returns its fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert.fingerprint(hashes.SHA256()).hex()
