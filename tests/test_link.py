"""The link emulator: the sans-I/O model exactly, then the relay on 127.0.0.1.

Socket tests measure real time on a shared machine: each measures over many packets,
retries once when outside its tolerance, and is bounded in packets and seconds.
"""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import statistics
import sys
from collections.abc import Awaitable, Callable

import pytest

from picospec.cli import main
from picospec.codec.errors import ConfigError
from picospec.lab.link import LinkConfig, LinkDirection, LinkRelay

LOCAL = ("127.0.0.1", 0)

# --- the model, no sockets ---------------------------------------------------------------------


def test_delay_is_exact_without_jitter():
    d = LinkDirection(LinkConfig(delay_ms=25))
    for now in (0.0, 1.0, 1.0005, 7.25):
        assert d.send(1200, now) == pytest.approx(now + 0.025, abs=1e-12)


def test_jitter_stays_in_its_range_and_never_reorders():
    d = LinkDirection(LinkConfig(delay_ms=10, jitter_ms=30, seed=3))
    sent = [i * 0.001 for i in range(2000)]
    arrivals = [d.send(100, now) for now in sent]
    assert arrivals == sorted(arrivals)
    extra = [a - now for a, now in zip(arrivals, sent, strict=True)]
    assert min(extra) >= 0.010 - 1e-12 and max(extra) <= 0.040 + 1e-12
    assert statistics.pstdev(extra) > 0.003  # the jitter is there


def test_token_bucket_gives_the_configured_rate_over_a_long_burst():
    d = LinkDirection(LinkConfig(rate_mbit=10, burst_bytes=15_000, queue_bytes=10**9))
    arrivals = [d.send(1250, now=0.0) for _ in range(2000)]
    assert None not in arrivals
    # The full bucket lets 15 kB through at once; the rest leaves at 10 Mbit/s.
    assert arrivals[11] == 0.0 and arrivals[12] == pytest.approx(0.001)
    assert (2000 * 1250 - 15_000) * 8 / arrivals[-1] / 1e6 == pytest.approx(10, rel=1e-9)


def test_bucket_refills_at_the_rate_while_idle():
    d = LinkDirection(LinkConfig(rate_mbit=8, burst_bytes=3000))  # 1 byte per microsecond
    assert [d.send(1500, 0.0), d.send(1500, 0.0)] == [0.0, 0.0]
    assert d.send(1500, 0.001) == pytest.approx(0.0015)  # 1000 bytes refilled, 500 to wait
    assert d.send(1500, 1.0) == 1.0  # full again after a long pause


def test_without_a_bucket_every_packet_is_serialised_at_the_rate():
    d = LinkDirection(LinkConfig(rate_mbit=8, burst_bytes=0, delay_ms=10))  # 1 byte per us
    assert d.send(500, 0.0) == pytest.approx(0.0005 + 0.010)  # its own 500 us, then the delay
    assert d.send(500, 0.0) == pytest.approx(0.0010 + 0.010)  # behind the first
    assert d.send(100, 1.0) == pytest.approx(1.0001 + 0.010)  # an idle link: no credit saved


def test_queue_limit_tail_drops_then_drains():
    d = LinkDirection(LinkConfig(rate_mbit=1, burst_bytes=1200, queue_bytes=12_000))
    sent = [d.send(1200, now=0.0) for _ in range(20)]
    # One packet leaves on the burst, ten wait (12 kB), the other nine are dropped.
    assert sent[:11] == sorted(sent[:11]) and None not in sent[:11]
    assert sent[11:] == [None] * 9
    assert d.stats() == {
        "packets": 20,
        "bytes": 24_000,
        "delivered": 11,
        "lost": 0,
        "queue_drops": 9,
        "cut_drops": 0,
    }
    assert d.send(1200, now=sent[10]) is not None  # the queue has drained


def test_a_cut_direction_drops_everything_until_restored():
    d = LinkDirection(LinkConfig(delay_ms=10))
    d.cut = True
    assert [d.send(100, now=0.0) for _ in range(3)] == [None] * 3
    d.cut = False
    assert d.send(100, now=1.0) == 1.01
    assert d.stats()["cut_drops"] == 3 and d.stats()["delivered"] == 1


def test_loss_rate_is_near_configured_and_the_seed_repeats_it():
    def drops(seed: int) -> list[bool]:
        d = LinkDirection(LinkConfig(loss=0.05, seed=seed))
        return [d.send(100, now=i * 1e-4) is None for i in range(10_000)]

    first, again, other = drops(42), drops(42), drops(43)
    assert first == again and first != other
    sigma = math.sqrt(0.05 * 0.95 / 10_000)
    assert abs(sum(first) / 10_000 - 0.05) < 4 * sigma


def test_seed_argument_overrides_the_config_seed():
    cfg = LinkConfig(loss=0.5, seed=1)
    a, b = LinkDirection(cfg), LinkDirection(cfg, seed=2)
    assert [a.send(1, 0.0) for _ in range(64)] != [b.send(1, 0.0) for _ in range(64)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("delay_ms", -1.0),
        ("delay_ms", "25"),
        ("jitter_ms", math.nan),
        ("rate_mbit", math.inf),
        ("loss", 1.0),
        ("loss", -0.01),
        ("burst_bytes", -1),
        ("queue_bytes", -1),
        ("queue_bytes", 1.5),
        ("seed", "x"),
    ],
)
def test_bad_config_is_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"link {field} must be"):
        LinkConfig(**{field: value})


def test_relay_refuses_a_non_positive_idle_timeout():
    with pytest.raises(ConfigError, match="idle_timeout"):
        LinkRelay(listen=LOCAL, upstream=LOCAL, up=LinkConfig(), down=LinkConfig(), idle_timeout=0)


# --- the relay on loopback ---------------------------------------------------------------------


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class _Sink(asyncio.DatagramProtocol):
    """Counts what reaches the upstream: (loop time, size) per datagram."""

    def __init__(self):
        self.arrivals: list[tuple[float, int]] = []

    def datagram_received(self, data, addr):
        self.arrivals.append((asyncio.get_running_loop().time(), len(data)))


class _Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.got: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.got.put_nowait((asyncio.get_running_loop().time(), data))


Body = Callable[[LinkRelay, list, asyncio.DatagramProtocol], Awaitable[object]]


def _through_relay(body: Body, *, up=None, down=None, server=_Echo, clients=1, **kw):
    """Run body(relay, [(transport, _Client)] * clients, server protocol), 10 s at most."""
    up, down = up or LinkConfig(), down or LinkConfig()

    async def run():
        loop = asyncio.get_running_loop()
        upstream, proto = await loop.create_datagram_endpoint(server, local_addr=LOCAL)
        ends = []
        try:
            async with LinkRelay(
                listen=LOCAL, upstream=upstream.get_extra_info("sockname"), up=up, down=down, **kw
            ) as relay:
                for _ in range(clients):
                    ends.append(
                        await loop.create_datagram_endpoint(_Client, remote_addr=relay.address)
                    )
                return await asyncio.wait_for(body(relay, ends, proto), 10)
        finally:
            for transport, _ in ends:
                transport.close()
            upstream.close()

    return asyncio.run(run())


def _measure_twice(measure: Callable[[], float], ok: Callable[[float], bool]) -> float:
    """measure(), again once if outside tolerance: the machine may be busy."""
    value = measure()
    return value if ok(value) else measure()


def test_measured_rtt_is_within_ten_percent_of_twice_the_delay():
    async def median_rtt(relay, ends, _):
        (transport, client), rtts = ends[0], []
        loop = asyncio.get_running_loop()
        for i in range(30):
            t0 = loop.time()
            transport.sendto(b"ping %d" % i)
            t1, data = await client.got.get()
            assert data == b"ping %d" % i
            rtts.append(t1 - t0)
        return statistics.median(rtts)

    def ok(rtt):
        return abs(rtt - 0.050) <= 0.005

    half = LinkConfig(delay_ms=25)
    rtt = _measure_twice(lambda: _through_relay(median_rtt, up=half, down=half), ok)
    assert ok(rtt), f"median RTT {rtt * 1e3:.1f} ms, configured 50 ms"


def test_measured_throughput_is_within_ten_percent_of_the_rate():
    size, seconds, warmup = 1200, 1.5, 0.25
    cfg = LinkConfig(rate_mbit=10, queue_bytes=32 * 1024)
    offered = 2 * cfg.rate_mbit * 1e6 / 8 / size  # packets per second, twice the rate

    async def saturate(relay, ends, sink):
        transport, _ = ends[0]
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while (now := loop.time()) < start + seconds:
            due = int((now - start) * offered) + 1  # catch up after a slow wake-up
            for _ in range(due - sent):
                transport.sendto(b"x" * size)
            sent = due
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert relay.up.queue_drops > 0  # the link was saturated
        steady = [(t, n) for t, n in sink.arrivals if start + warmup <= t <= start + seconds]
        span = steady[-1][0] - steady[0][0]
        return sum(n for _, n in steady[1:]) * 8 / span / 1e6

    def ok(mbit):
        return abs(mbit - 10) <= 1

    mbit = _measure_twice(lambda: _through_relay(saturate, up=cfg, server=_Sink), ok)
    assert ok(mbit), f"measured {mbit:.2f} Mbit/s, configured 10"


def test_delivered_fraction_matches_the_loss_rate():
    n, loss = 2000, 0.05

    async def count(relay, ends, sink):
        transport, _ = ends[0]
        for i in range(n):
            transport.sendto(b"%d" % i)
            if i % 50 == 49:
                await asyncio.sleep(0.002)  # paced: no drops in the kernel's buffers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        while len(sink.arrivals) < relay.up.delivered and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert relay.up.delivered + relay.up.lost == relay.up.packets
        # what the emulator passed on reached the sink, and what the kernel dropped before
        # the relay (a loaded machine's loopback buffers) does not count against the model
        assert len(sink.arrivals) == relay.up.delivered and relay.up.packets >= 0.9 * n
        return relay.up.delivered / relay.up.packets

    tolerance = 4 * math.sqrt(loss * (1 - loss) / n)

    def ok(fraction):
        return abs(fraction - (1 - loss)) <= tolerance

    up = LinkConfig(loss=loss, seed=7)
    fraction = _measure_twice(lambda: _through_relay(count, up=up, server=_Sink), ok)
    assert ok(fraction), f"delivered {fraction:.4f}, expected {1 - loss} ± {tolerance:.4f}"


def test_two_clients_each_get_their_own_replies():
    async def exchange(relay, ends, _):
        for round_ in range(5):
            for i, (transport, _) in enumerate(ends):
                transport.sendto(b"client %d round %d" % (i, round_))
        replies = [[(await c.got.get())[1] for _ in range(5)] for _, c in ends]
        return replies, relay.clients

    cfg = LinkConfig(delay_ms=5, jitter_ms=2)
    replies, clients = _through_relay(exchange, up=cfg, down=cfg, clients=2)
    assert clients == 2
    assert replies == [[b"client %d round %d" % (i, r) for r in range(5)] for i in range(2)]


def test_relay_keeps_the_order_under_jitter():
    async def stream(relay, ends, _):
        transport, client = ends[0]
        for i in range(300):
            transport.sendto(b"%d" % i)
            if i % 50 == 49:
                await asyncio.sleep(0.001)
        return [int((await client.got.get())[1]) for _ in range(300)]

    cfg = LinkConfig(delay_ms=2, jitter_ms=5, seed=11)
    assert _through_relay(stream, up=cfg, down=cfg) == list(range(300))


def test_idle_client_mapping_expires_and_a_new_one_opens():
    async def idle(relay, ends, _):
        transport, client = ends[0]
        loop = asyncio.get_running_loop()
        transport.sendto(b"one")
        await client.got.get()
        assert relay.clients == 1
        t0 = loop.time()
        while relay.clients and loop.time() < t0 + 3:
            await asyncio.sleep(0.02)
        idle_for = loop.time() - t0
        transport.sendto(b"two")
        reply = (await client.got.get())[1]
        return idle_for, relay.clients, reply

    idle_for, clients, reply = _through_relay(idle, idle_timeout=0.3)
    assert 0.25 <= idle_for < 3 and clients == 1 and reply == b"two"


def test_closing_cancels_deliveries_still_due_and_frees_the_port():
    async def run():
        loop = asyncio.get_running_loop()
        sink_t, sink = await loop.create_datagram_endpoint(_Sink, local_addr=LOCAL)
        try:
            async with LinkRelay(
                listen=LOCAL,
                upstream=sink_t.get_extra_info("sockname"),
                up=LinkConfig(delay_ms=300),
                down=LinkConfig(),
            ) as relay:
                client, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=relay.address
                )
                client.sendto(b"never")
                while relay.up.packets == 0:
                    await asyncio.sleep(0.005)
            client.close()
            await asyncio.sleep(0.4)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(relay.address)  # the listening socket is closed
            return sink.arrivals
        finally:
            sink_t.close()

    assert asyncio.run(asyncio.wait_for(run(), 10)) == []


def test_cli_relays_and_prints_its_address_and_counters():
    async def run():
        loop = asyncio.get_running_loop()
        echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=LOCAL)
        host, port = echo.get_extra_info("sockname")
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "picospec", "link", "--listen", "127.0.0.1:0"),
            *("--upstream", f"{host}:{port}", "--delay-ms", "5"),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            address = first.split()[2]
            relay_host, _, relay_port = address.rpartition(":")
            client_t, client = await loop.create_datagram_endpoint(
                _Client, remote_addr=(relay_host, int(relay_port))
            )
            client_t.sendto(b"hello")
            reply = (await asyncio.wait_for(client.got.get(), 5))[1]
            client_t.close()
            proc.send_signal(signal.SIGINT)
            rest = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()
            return first, reply, rest, await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            echo.close()

    first, reply, rest, rc = asyncio.run(run())
    assert "5 ms each way (RTT 10 ms)" in first and reply == b"hello" and rc == 0
    assert "up: 1 packets (5 bytes), 1 delivered, 0 lost, 0 queue drops" in rest
    assert "down: 1 packets" in rest


def test_cli_refuses_a_bad_loss_in_one_line(capsys):
    argv = ["link", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--loss", "2"]
    assert main(argv) == 2
    assert "link loss must be a probability" in capsys.readouterr().err
