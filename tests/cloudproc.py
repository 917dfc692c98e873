"""A real ``picospec cloud serve`` process for tests that kill and restart it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from picospec.runtime.quic import generate_self_signed

TOKEN = "cloud-proc-token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CloudProcess:
    """The verifier in a child process on a fixed loopback port (so a restart is
    reachable at the same address); ``kill()`` is SIGKILL, ``start()`` again restarts."""

    def __init__(self, target: Path, tmp: Path, port: int | None = None) -> None:
        self.target, self.port = target, port or free_port()
        self.cert, self.key = tmp / "cert.pem", tmp / "key.pem"
        self.pin = generate_self_signed(self.cert, self.key, host="localhost")
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> CloudProcess:
        cmd = [
            sys.executable, "-m", "picospec", "cloud", "serve", "--listen", self.address,
            "--model", str(self.target), "--cert", str(self.cert), "--key", str(self.key),
            "--threads", "1", "--n-ctx", "1024",
        ]  # fmt: skip
        env = dict(os.environ, PICOSPEC_TOKEN=TOKEN)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving" not in line:
            self.proc.kill()
            raise RuntimeError(f"the cloud did not start: {line!r}")
        return self

    def kill(self) -> None:
        """SIGKILL: no Bye, no close; the edge finds out by silence."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
