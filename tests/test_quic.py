"""The QUIC byte stream on loopback: integrity, verification that cannot be turned off,
robustness of the server, and how a connection ends."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from picospec.codec.errors import ConfigError
from picospec.runtime.quic import (
    Channel,
    ClientTLS,
    ServerTLS,
    TransportError,
    cert_fingerprint,
    connect,
    generate_self_signed,
    serve,
)

LIMIT_S = 20.0  # per test body; generous, the machine is shared


@dataclass(frozen=True)
class Certs:
    dir: Path
    pin: str
    """Fingerprint of the server's certificate (cert.pem)."""
    other_pin: str
    """Fingerprint of a certificate the server does not have (other.pem)."""

    @property
    def server(self) -> ServerTLS:
        return ServerTLS(str(self.dir / "cert.pem"), str(self.dir / "key.pem"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    pin = generate_self_signed(d / "cert.pem", d / "key.pem")
    other = generate_self_signed(d / "other.pem", d / "other.key")
    return Certs(d, pin, other)


async def echo(ch: Channel) -> None:
    """Echo every chunk; b"boom" makes the handler fail."""
    while data := await ch.read():
        if data == b"boom":
            raise RuntimeError("handler failure")
        ch.write(data)


async def read_n(ch: Channel, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await asyncio.wait_for(ch.read(), LIMIT_S)
        assert chunk, f"the stream ended early: {ch.close_reason}"
        got += chunk
    return got


async def round_trip(ch: Channel, data: bytes) -> bytes:
    ch.write(data)
    return await read_n(ch, len(data))


def with_server(
    tls: ServerTLS,
    body: Callable[[tuple[str, int]], Awaitable[Any]],
    handler: Callable[[Channel], Awaitable[None]] = echo,
    **kw: Any,
) -> Any:
    """Run body(address) against a server on an ephemeral loopback port, bounded in time."""

    async def main() -> Any:
        server = await serve("127.0.0.1", 0, tls, handler, **kw)
        try:
            return await asyncio.wait_for(body(server.address), LIMIT_S)
        finally:
            await asyncio.wait_for(server.close(), LIMIT_S)

    return asyncio.run(main())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_megabyte_round_trips_intact_and_in_order(certs: Certs) -> None:
    blob = bytes(range(256)) * 4096

    async def body(addr: tuple[str, int]) -> bytes:
        ch = await connect(*addr, ClientTLS(pin_sha256=certs.pin))
        for i in range(0, len(blob), 10_000):
            ch.write(blob[i : i + 10_000])
        got = await read_n(ch, len(blob))
        await ch.close()
        return got

    assert with_server(certs.server, body) == blob


def test_two_concurrent_clients_each_get_their_own_data(certs: Certs) -> None:
    def message(tag: bytes, i: int) -> bytes:
        return tag * 100 + b"%d" % i

    async def client(addr: tuple[str, int], tag: bytes) -> bytes:
        ch = await connect(*addr, ClientTLS(pin_sha256=certs.pin))
        got = b"".join([await round_trip(ch, message(tag, i)) for i in range(50)])
        await ch.close()
        return got

    async def body(addr: tuple[str, int]) -> list[bytes]:
        return list(await asyncio.gather(client(addr, b"a"), client(addr, b"b")))

    a, b = with_server(certs.server, body)
    assert a == b"".join(message(b"a", i) for i in range(50))
    assert b == b"".join(message(b"b", i) for i in range(50))


def test_pin_mismatch_names_the_received_fingerprint_and_the_server_keeps_serving(
    certs: Certs,
) -> None:
    async def body(addr: tuple[str, int]) -> bytes:
        with pytest.raises(TransportError, match=f"SHA-256 {certs.pin}.*pinned"):
            await connect(*addr, ClientTLS(pin_sha256=certs.other_pin))
        ch = await connect(*addr, ClientTLS(pin_sha256=certs.pin))
        got = await round_trip(ch, b"ok")
        await ch.close()
        return got

    assert with_server(certs.server, body) == b"ok"


def test_pin_accepts_colons_and_upper_case(certs: Certs) -> None:
    colons = ":".join(certs.pin[i : i + 2] for i in range(0, 64, 2)).upper()
    assert ClientTLS(pin_sha256=colons).pin_sha256 == certs.pin


def test_a_malformed_pin_is_refused() -> None:
    with pytest.raises(ConfigError, match="64-hex-digit"):
        ClientTLS(pin_sha256="abc123")


def test_ca_file_accepts_its_certificate_and_refuses_another(certs: Certs) -> None:
    async def body(addr: tuple[str, int]) -> bytes:
        ch = await connect(*addr, ClientTLS(cafile=str(certs.dir / "cert.pem")))
        got = await round_trip(ch, b"ca")
        await ch.close()
        with pytest.raises(TransportError, match=f"SHA-256 {certs.pin}.*CA file"):
            await connect(*addr, ClientTLS(cafile=str(certs.dir / "other.pem")))
        return got

    assert with_server(certs.server, body) == b"ca"


def test_ca_file_refuses_a_certificate_for_another_name(certs: Certs) -> None:
    async def body(addr: tuple[str, int]) -> None:
        tls = ClientTLS(cafile=str(certs.dir / "cert.pem"), server_name="cloud.example")
        with pytest.raises(TransportError, match=r"cloud\.example"):
            await connect(*addr, tls)

    with_server(certs.server, body)


def test_ip_address_certificate_verifies_for_that_ip(tmp_path: Path) -> None:
    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", host="127.0.0.1")
    server = ServerTLS(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))

    async def body(addr: tuple[str, int]) -> bytes:
        tls = ClientTLS(cafile=str(tmp_path / "cert.pem"), server_name="127.0.0.1")
        ch = await connect(*addr, tls)
        got = await round_trip(ch, b"ip")
        await ch.close()
        return got

    assert with_server(server, body) == b"ip"


def test_client_tls_without_ca_or_pin_is_refused() -> None:
    with pytest.raises(ConfigError, match="exactly one of cafile"):
        ClientTLS()


def test_client_tls_with_both_ca_and_pin_is_refused(certs: Certs) -> None:
    with pytest.raises(ConfigError, match="exactly one of cafile"):
        ClientTLS(cafile=str(certs.dir / "cert.pem"), pin_sha256=certs.pin)


def test_a_failing_handler_does_not_stop_the_server(certs: Certs) -> None:
    async def body(addr: tuple[str, int]) -> bytes:
        bad = await connect(*addr, ClientTLS(pin_sha256=certs.pin))
        bad.write(b"boom")
        assert await asyncio.wait_for(bad.read(), LIMIT_S) == b""  # the server closed it
        good = await connect(*addr, ClientTLS(pin_sha256=certs.pin))
        got = await round_trip(good, b"fine")
        await good.close()
        return got

    assert with_server(certs.server, body) == b"fine"


def test_idle_connection_times_out_and_says_why(certs: Certs) -> None:
    async def body(addr: tuple[str, int]) -> tuple[bytes, bool, str]:
        tls = ClientTLS(pin_sha256=certs.pin)
        ch = await connect(*addr, tls, idle_timeout=0.5, keepalive=None)
        await round_trip(ch, b"x")
        end = await asyncio.wait_for(ch.read(), LIMIT_S)
        return end, ch.closed, ch.close_reason

    assert with_server(certs.server, body, idle_timeout=0.5) == (b"", True, "idle timeout")


def test_keepalive_holds_an_idle_connection_past_the_servers_idle_timeout(certs: Certs) -> None:
    async def body(addr: tuple[str, int]) -> bytes:
        ch = await connect(*addr, ClientTLS(pin_sha256=certs.pin), keepalive=5.0)
        await asyncio.sleep(2.0)  # four server idle timeouts; pings follow the shorter one
        got = await round_trip(ch, b"still here")
        await ch.close()
        return got

    assert with_server(certs.server, body, idle_timeout=0.5) == b"still here"


def test_clean_close_ends_the_servers_read_after_all_data(certs: Certs) -> None:
    received: list[bytes] = []
    ended: asyncio.Future[str] | None = None

    async def sink(ch: Channel) -> None:
        while data := await ch.read():
            received.append(data)
        assert ended is not None
        ended.set_result(ch.close_reason)

    async def body(addr: tuple[str, int]) -> str:
        nonlocal ended
        ended = asyncio.get_running_loop().create_future()
        ch = await connect(*addr, ClientTLS(pin_sha256=certs.pin))
        ch.write(b"last words " * 10_000)  # still in flight when close() is called
        await ch.close("done")
        assert ch.closed and ch.close_reason == "done"
        return await asyncio.wait_for(ended, LIMIT_S)

    reason = with_server(certs.server, body, handler=sink)
    assert b"".join(received) == b"last words " * 10_000
    assert reason == "the peer closed the stream"


def test_write_after_close_raises_a_transport_error(certs: Certs) -> None:
    async def body(addr: tuple[str, int]) -> None:
        ch = await connect(*addr, ClientTLS(pin_sha256=certs.pin))
        await ch.close()
        with pytest.raises(TransportError, match="closed"):
            ch.write(b"late")
        assert await ch.read() == b""

    with_server(certs.server, body)


def test_server_close_tells_its_clients_why(certs: Certs) -> None:
    async def main() -> tuple[bytes, str]:
        server = await serve("127.0.0.1", 0, certs.server, echo)
        ch = await connect(*server.address, ClientTLS(pin_sha256=certs.pin))
        await round_trip(ch, b"hi")
        await asyncio.wait_for(server.close(), LIMIT_S)
        return await asyncio.wait_for(ch.read(), LIMIT_S), ch.close_reason

    assert asyncio.run(main()) == (b"", "the peer closed the connection: server shutting down")


def test_connection_refused_fails_fast_and_says_so(certs: Certs) -> None:
    async def main() -> None:
        with pytest.raises(TransportError, match="refused"):
            await connect("127.0.0.1", free_udp_port(), ClientTLS(pin_sha256=certs.pin))

    asyncio.run(asyncio.wait_for(main(), 5))


def test_a_silent_peer_times_out_and_says_so(certs: Certs) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            port = silent.getsockname()[1]
            tls = ClientTLS(pin_sha256=certs.pin)
            with pytest.raises(TransportError, match="timed out"):
                await connect("127.0.0.1", port, tls, handshake_timeout=0.5)

    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


def test_generated_key_is_private_and_fingerprint_matches(certs: Certs) -> None:
    assert stat.S_IMODE((certs.dir / "key.pem").stat().st_mode) == 0o600
    assert cert_fingerprint(certs.dir / "cert.pem") == certs.pin
    assert certs.pin != certs.other_pin


def test_unacknowledged_bytes_grow_while_the_peer_acknowledges_nothing_then_drain(
    certs: Certs,
) -> None:
    """Channel.pending counts written bytes the peer has not acknowledged (read
    from aioquic's sender buffer, so this fails if aioquic renames it)."""
    from picospec.lab.link import LinkConfig, LinkRelay

    server_side: list[Channel] = []

    async def hold(ch: Channel) -> None:
        server_side.append(ch)
        while await ch.read():
            pass

    async def body(address: tuple[str, int]) -> tuple[int, int, int]:
        fast = LinkConfig(delay_ms=1)
        async with LinkRelay(listen=("127.0.0.1", 0), upstream=address, up=fast, down=fast) as link:
            ch = await connect(*link.address, ClientTLS(pin_sha256=certs.pin))
            ch.write(b"go")
            while not server_side:
                await asyncio.sleep(0.01)
            link.cut(up=False, down=True)  # the client receives, and so acknowledges, nothing
            server_side[0].write(b"x" * 100_000)
            await asyncio.sleep(0.3)
            stuck = server_side[0].pending
            link.restore()
            await asyncio.wait_for(server_side[0].drain(0), LIMIT_S)
            got = len(await read_n(ch, 100_000))
            await ch.close()
            return stuck, server_side[0].pending, got

    stuck, after, got = with_server(certs.server, body, hold)
    assert stuck == 100_000 and after == 0 and got == 100_000


def test_min_rtt_is_the_path_delay_quic_measured(certs: Certs) -> None:
    """Channel.min_rtt reads aioquic's loss recovery (fails if aioquic renames it);
    through a link with 25 ms each way it is at least the 50 ms round trip."""
    from picospec.lab.link import LinkConfig, LinkRelay

    async def echo(ch: Channel) -> None:
        while data := await ch.read():
            ch.write(data)

    async def body(address: tuple[str, int]) -> float | None:
        slow = LinkConfig(delay_ms=25)
        async with LinkRelay(listen=("127.0.0.1", 0), upstream=address, up=slow, down=slow) as link:
            ch = await connect(*link.address, ClientTLS(pin_sha256=certs.pin))
            ch.write(b"ping")
            await read_n(ch, 4)
            rtt = ch.min_rtt
            await ch.close()
            return rtt

    rtt = with_server(certs.server, body, echo)
    assert rtt is not None and 0.05 <= rtt < 0.5
