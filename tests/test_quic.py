"""The QUIC byte stream: integrity, verification that cannot be turned off, robustness."""

from __future__ import annotations

import asyncio
import stat

import pytest

from picospec.codec.errors import ConfigError
from picospec.quic import (
    Channel,
    ClientTLS,
    ServerTLS,
    TransportError,
    cert_fingerprint,
    connect,
    generate_self_signed,
    serve,
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    pin = generate_self_signed(d / "cert.pem", d / "key.pem")
    other = generate_self_signed(d / "other.pem", d / "other.key")
    return d, pin, other


async def echo(ch: Channel) -> None:
    while data := await ch.read():
        if data == b"boom":
            raise RuntimeError("handler failure")
        ch.write(data)


async def read_n(ch: Channel, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await ch.read()
        assert chunk, "the stream ended early"
        got += chunk
    return got


def with_server(tls, body, handler=echo, **kw):
    d = tls[0]

    async def main():
        server = await serve(
            "127.0.0.1", 0, ServerTLS(str(d / "cert.pem"), str(d / "key.pem")), handler, **kw
        )
        try:
            return await asyncio.wait_for(body(server.address), 20)
        finally:
            await server.close()

    return asyncio.run(main())


def test_one_megabyte_round_trips_intact_and_in_order(tls):
    blob = bytes(range(256)) * 4096

    async def body(addr):
        ch = await connect(*addr, ClientTLS(pin_sha256=tls[1]))
        for i in range(0, len(blob), 10_000):
            ch.write(blob[i : i + 10_000])
        got = await read_n(ch, len(blob))
        await ch.close()
        return got

    assert with_server(tls, body) == blob


def test_pin_mismatch_names_the_received_fingerprint_and_others_still_connect(tls):
    async def body(addr):
        with pytest.raises(TransportError, match=tls[1]):
            await connect(*addr, ClientTLS(pin_sha256=tls[2]))
        ch = await connect(*addr, ClientTLS(pin_sha256=tls[1]))
        ch.write(b"ok")
        got = await read_n(ch, 2)
        await ch.close()
        return got

    assert with_server(tls, body) == b"ok"


def test_ca_verification_accepts_its_certificate_and_refuses_another(tls):
    d = tls[0]

    async def body(addr):
        ch = await connect(*addr, ClientTLS(cafile=str(d / "cert.pem")))
        ch.write(b"ca")
        got = await read_n(ch, 2)
        await ch.close()
        with pytest.raises((TransportError, ConnectionError)):
            await connect(*addr, ClientTLS(cafile=str(d / "other.pem")), timeout=5)
        return got

    assert with_server(tls, body) == b"ca"


def test_verification_cannot_be_turned_off():
    with pytest.raises(ConfigError, match="exactly one of --ca"):
        ClientTLS()


def test_a_failing_handler_does_not_stop_the_server(tls):
    async def body(addr):
        bad = await connect(*addr, ClientTLS(pin_sha256=tls[1]))
        bad.write(b"boom")
        assert await asyncio.wait_for(bad.read(), 10) == b""  # closed by the server
        good = await connect(*addr, ClientTLS(pin_sha256=tls[1]))
        good.write(b"fine")
        got = await read_n(good, 4)
        await good.close()
        return got

    assert with_server(tls, body) == b"fine"


def test_idle_connection_times_out_and_says_why(tls):
    async def body(addr):
        ch = await connect(*addr, ClientTLS(pin_sha256=tls[1]), idle_timeout=0.5, keepalive=None)
        ch.write(b"x")
        await read_n(ch, 1)
        assert await asyncio.wait_for(ch.read(), 10) == b""
        return ch.close_reason

    assert "idle" in with_server(tls, body, idle_timeout=0.5).lower()


def test_key_file_is_private_and_fingerprint_matches(tls):
    d, pin, _ = tls
    assert stat.S_IMODE((d / "key.pem").stat().st_mode) == 0o600
    assert cert_fingerprint(d / "cert.pem") == pin
