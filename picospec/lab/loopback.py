"""A whole cloud side on loopback: verifier service, certificate, link emulator.

The demo, ``picospec bench rtt`` and the end-to-end tests all need the same
thing: the verifier service on 127.0.0.1 with a fresh self-signed certificate
and token, reached directly or through the link emulator.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from picospec.cloud.backend import Backend
from picospec.cloud.limits import Limits
from picospec.cloud.server import VerifierService
from picospec.lab.link import LinkConfig, LinkRelay
from picospec.runtime.quic import ClientTLS, ServerTLS, generate_self_signed


@dataclass(frozen=True)
class LoopbackCloud:
    address: tuple[str, int]
    """Where the edge connects: the link emulator's address, or the server's."""
    server_address: tuple[str, int]
    tls: ClientTLS
    """Pins the fresh certificate."""
    token: bytes
    service: VerifierService
    """The verifier service (its counters: busy_seconds, work_units)."""
    link: LinkRelay | None = None
    """The link emulator, when there is one (its counters: up, down)."""


@asynccontextmanager
async def loopback_cloud(
    backend: Backend,
    *,
    rtt_ms: float = 0.0,
    loss: float = 0.0,
    rate_mbit: float = 0.0,
    token: bytes | None = None,
    name: str = "picospec",
    idle_timeout: float = 60.0,
    seed: int = 1,
    limits: Limits | None = None,
) -> AsyncIterator[LoopbackCloud]:
    """Serve backend on loopback; with rtt_ms, loss or rate_mbit, behind the link
    emulator: rtt_ms / 2 of delay each way, and a link of rate_mbit each way that
    serialises every datagram at that rate (no token-bucket burst)."""
    token = token or secrets.token_hex(16).encode()
    service = VerifierService(backend, token=token, name=name, limits=limits)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        pin = generate_self_signed(cert, key, host="localhost")
        server = await service.serve(
            "127.0.0.1", 0, ServerTLS(str(cert), str(key)), idle_timeout=idle_timeout
        )
        try:
            tls = ClientTLS(pin_sha256=pin)
            if rtt_ms == 0 and loss == 0 and rate_mbit == 0:
                yield LoopbackCloud(server.address, server.address, tls, token, service)
            else:
                half = LinkConfig(
                    delay_ms=rtt_ms / 2, loss=loss, rate_mbit=rate_mbit, burst_bytes=0, seed=seed
                )
                async with LinkRelay(
                    listen=("127.0.0.1", 0), upstream=server.address, up=half, down=half
                ) as link:
                    yield LoopbackCloud(link.address, server.address, tls, token, service, link)
        finally:
            await server.close()
            await service.close()
