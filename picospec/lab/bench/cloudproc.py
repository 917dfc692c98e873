"""``picospec cloud serve`` in a child process, on a loopback port, for the
benchmarks and for the tests that kill and restart it.

The benchmarks measure the verifier as an operator runs it: its own process,
its own cores' worth of threads, reached over QUIC. ``metrics()`` reads the
service's Prometheus endpoint when it was started with one.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from picospec.codec.errors import PicospecError
from picospec.runtime.quic import generate_self_signed

DEFAULT_ARGS = ("--limit", "hello_timeout_s=5", "--limit", "max_send_buffer=65536")


class CloudProcess:
    """``picospec cloud serve`` in a child process on loopback: ``stop()`` is
    SIGTERM (a graceful drain), ``kill()`` is SIGKILL (no Bye, no close: the edge
    finds out by silence), and ``start()`` again restarts it at the same address."""

    def __init__(
        self,
        target: Path,
        tmp: Path,
        *,
        threads: int = 1,
        n_ctx: int = 2048,
        args: Sequence[str] = DEFAULT_ARGS,
        metrics: bool = False,
        start: bool = True,
    ) -> None:
        """args: more ``cloud serve`` flags; metrics: serve /metrics on a free port;
        start: start it now (else its address is reserved, and nothing listens
        there until ``start()``)."""
        self.target, self.threads, self.n_ctx = target, threads, n_ctx
        self.token = secrets.token_hex(16)
        self.cert, self.key = tmp / "cert.pem", tmp / "key.pem"
        self.pin = generate_self_signed(self.cert, self.key, host="localhost")
        self.metrics_address = ""
        self.extra = list(args)
        if metrics:
            self.metrics_address = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
            self.extra += ["--metrics", self.metrics_address]
        self.address = ("127.0.0.1", 0 if start else free_port(socket.SOCK_DGRAM))
        self._proc: subprocess.Popen[str] | None = None
        if start:
            self.start()

    @property
    def endpoint(self) -> str:
        """The address as ``cloud serve`` and the edge's config write it."""
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def proc(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise PicospecError("the cloud process is not running")
        return self._proc

    def start(self) -> CloudProcess:
        """Start the server (again, at the address it had, after ``kill``/``stop``)."""
        cmd = [
            sys.executable, "-m", "picospec", "cloud", "serve", "--listen", self.endpoint,
            "--model", str(self.target), "--cert", str(self.cert), "--key", str(self.key),
            "--threads", str(self.threads), "--n-ctx", str(self.n_ctx), *self.extra,
        ]  # fmt: skip
        env = dict(os.environ, PICOSPEC_TOKEN=self.token)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "serving" not in line:
            proc.kill()
            proc.wait(5)
            raise PicospecError(f"the cloud did not start: {line.strip() or 'no output'}")
        host_port = line.split(" on ", 1)[1].split(",", 1)[0].strip()
        host, _, port = host_port.rpartition(":")
        self.address, self._proc = (host, int(port)), proc
        return self

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM of the server process, in bytes."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus samples now, by name (labelled samples summed)."""
        from prometheus_client.parser import text_string_to_metric_families

        if not self.metrics_address:
            raise PicospecError("this cloud process was started without metrics")
        url = f"http://{self.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    def kill(self) -> None:
        """SIGKILL: no Bye, no close."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None
            time.sleep(0.1)  # let the port go

    def stop(self) -> None:
        """SIGTERM: the server drains and exits."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """A loopback port nothing is bound to now (UDP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
