"""The link emulator: the sans-I/O model exactly, then the relay on loopback."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from picospec.codec.errors import ConfigError
from picospec.link import LinkConfig, LinkDirection, LinkRelay


def test_delay_is_exact_without_jitter():
    d = LinkDirection(LinkConfig(delay_ms=25))
    assert d.send(1200, now=1.0) == pytest.approx(1.025)


def test_jitter_never_reorders_packets():
    d = LinkDirection(LinkConfig(delay_ms=10, jitter_ms=30, seed=3))
    arrivals = [d.send(100, now=i * 0.001) for i in range(2000)]
    assert arrivals == sorted(arrivals)
    assert max(a - i * 0.001 for i, a in enumerate(arrivals)) > 0.02  # jitter is there


def test_token_bucket_gives_the_configured_rate():
    d = LinkDirection(LinkConfig(rate_mbit=10, queue_bytes=10**9))
    last = max(d.send(1250, now=0.0) for _ in range(1000))  # 10 Mbit all at once
    assert last == pytest.approx(1.0)


def test_queue_limit_tail_drops():
    d = LinkDirection(LinkConfig(rate_mbit=1, queue_bytes=12_000))
    sent = [d.send(1200, now=0.0) for _ in range(20)]
    assert sent.count(None) == d.overflowed > 0 and sent[0] is not None


def test_loss_rate_and_seed_reproducibility():
    runs = []
    for _ in range(2):
        d = LinkDirection(LinkConfig(loss=0.05, seed=42))
        runs.append([d.send(100, now=i * 1e-4) is None for i in range(10_000)])
    assert runs[0] == runs[1]
    assert abs(sum(runs[0]) / 10_000 - 0.05) < 4 * (0.05 * 0.95 / 10_000) ** 0.5


@pytest.mark.parametrize(
    ("field", "value"), [("delay_ms", -1.0), ("loss", 1.0), ("rate_mbit", float("inf"))]
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        LinkConfig(**{field: value})


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.got: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.got.put_nowait((time.perf_counter(), data))


async def _through_relay(up: LinkConfig, down: LinkConfig, clients: int, body):
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    try:
        async with LinkRelay(
            listen=("127.0.0.1", 0), upstream=echo.get_extra_info("sockname"), up=up, down=down
        ) as relay:
            ends = [
                await loop.create_datagram_endpoint(_Client, remote_addr=relay.address)
                for _ in range(clients)
            ]
            return await asyncio.wait_for(body(ends), 30)
    finally:
        echo.close()


def test_measured_rtt_is_within_ten_percent_of_configured():
    async def body(ends):
        (transport, client), rtts = ends[0], []
        for _ in range(30):
            t0 = time.perf_counter()
            transport.sendto(b"ping")
            t1, _ = await client.got.get()
            rtts.append(t1 - t0)
        return statistics.median(rtts)

    half = LinkConfig(delay_ms=25)
    for _attempt in range(2):  # one retry: the machine may be busy
        rtt = asyncio.run(_through_relay(half, half, 1, body))
        if abs(rtt - 0.050) <= 0.005:
            break
    assert abs(rtt - 0.050) <= 0.005, f"measured RTT {rtt * 1e3:.1f} ms"


def test_two_clients_get_their_own_replies():
    async def body(ends):
        for i, (transport, _) in enumerate(ends):
            transport.sendto(b"client%d" % i)
        return [(await client.got.get())[1] for _, client in ends]

    cfg = LinkConfig(delay_ms=5)
    assert asyncio.run(_through_relay(cfg, cfg, 2, body)) == [b"client0", b"client1"]


class _Sink(asyncio.DatagramProtocol):
    def __init__(self):
        self.arrivals: list[tuple[float, int]] = []

    def datagram_received(self, data, addr):
        self.arrivals.append((time.perf_counter(), len(data)))


def test_measured_throughput_is_within_ten_percent_of_configured():
    async def measure() -> float:
        loop = asyncio.get_running_loop()
        sink_t, sink = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0))
        cfg = LinkConfig(rate_mbit=10, queue_bytes=64 * 1024)
        try:
            async with LinkRelay(
                listen=("127.0.0.1", 0),
                upstream=sink_t.get_extra_info("sockname"),
                up=cfg,
                down=cfg,
            ) as relay:
                out, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=relay.address
                )
                end = time.perf_counter() + 1.5
                while time.perf_counter() < end:  # offer ~2x the link rate
                    for _ in range(25):
                        out.sendto(b"x" * 1200)
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
                out.close()
        finally:
            sink_t.close()
        steady = [(t, n) for t, n in sink.arrivals if t > sink.arrivals[0][0] + 0.2]
        seconds = steady[-1][0] - steady[0][0]
        return sum(n for _, n in steady[1:]) * 8 / seconds / 1e6

    for _attempt in range(2):  # one retry: the machine may be busy
        mbit = asyncio.run(measure())
        if abs(mbit - 10) <= 1:
            break
    assert abs(mbit - 10) <= 1, f"measured {mbit:.2f} Mbit/s"
