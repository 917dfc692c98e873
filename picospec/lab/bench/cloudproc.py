"""``picospec cloud serve`` in a child process, on a free loopback port, for benchmarks.

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
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from picospec.codec.errors import PicospecError
from picospec.runtime.quic import generate_self_signed


class CloudProcess:
    """``picospec cloud serve`` in a child process (SIGTERM on ``stop``)."""

    def __init__(
        self,
        target: Path,
        tmp: Path,
        *,
        threads: int = 1,
        args: Sequence[str] = ("--limit", "hello_timeout_s=5", "--limit", "max_send_buffer=65536"),
        metrics: bool = False,
    ) -> None:
        """args: more ``cloud serve`` flags; metrics: serve /metrics on a free port."""
        self.token = secrets.token_hex(16)
        self.pin = generate_self_signed(tmp / "cert.pem", tmp / "key.pem", host="localhost")
        self.metrics_address = ""
        extra = list(args)
        if metrics:
            self.metrics_address = f"127.0.0.1:{_free_tcp_port()}"
            extra += ["--metrics", self.metrics_address]
        cmd = [
            sys.executable, "-m", "picospec", "cloud", "serve", "--listen", "127.0.0.1:0",
            "--model", str(target), "--cert", str(tmp / "cert.pem"), "--key", str(tmp / "key.pem"),
            "--threads", str(threads), "--n-ctx", "2048", *extra,
        ]  # fmt: skip
        env = dict(os.environ, PICOSPEC_TOKEN=self.token)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving" not in line:
            self.proc.kill()
            raise PicospecError(f"the cloud did not start: {line.strip() or 'no output'}")
        host_port = line.split(" on ", 1)[1].split(",", 1)[0].strip()
        host, _, port = host_port.rpartition(":")
        self.address = (host, int(port))

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

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
