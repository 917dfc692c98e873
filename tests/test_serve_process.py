"""``picospec edge serve`` as a real process, as systemd would run it, against a
real ``picospec cloud serve`` through the link emulator; the clients are the
official ``openai`` package and ``curl``.

One scenario, in order: READY=1 arrives on a real $NOTIFY_SOCKET only once
/health answers; WATCHDOG=1 pings keep coming; chat, completion and streaming
through ``openai`` (the pipeline's greedy text equals cloud-only's); an error
that names its field; ``curl`` streams to ``data: [DONE]`` and reads /metrics;
the link goes dark (STATUS= says offline, /health "degraded", a request is
answered locally) and comes back (STATUS= connected, verified again); SIGTERM
in the middle of a stream: STOPPING=1, the stream still finishes, exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from picospec.lab.bench.cloudproc import CloudProcess
from picospec.lab.link import LinkConfig, LinkRelay
from picospec.runtime.netargs import host_port

openai = pytest.importorskip("openai")
pytestmark = [pytest.mark.models, pytest.mark.slow]

CHAT = [{"role": "user", "content": "Name three parts of a mobile robot."}]
GREEDY = dict(temperature=0, seed=0)


class Notifications:
    """The datagrams a service sends to its $NOTIFY_SOCKET, as systemd receives them."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.seen: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.seen.append((time.monotonic(), data.decode()))

    async def wait_for(self, text: str, timeout: float, after: int = 0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for _, msg in self.seen[after:]:
                if text in msg:
                    return msg
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout} s; got {[m for _, m in self.seen]}")

    def count(self, text: str) -> int:
        return sum(text in m for _, m in self.seen)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sock.close()


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def curl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "60", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture
def cloud(smollm2, tmp_path):
    proc = CloudProcess(smollm2["target"], tmp_path, n_ctx=1024, args=())
    yield proc
    proc.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_edge_serve_with_openai_curl_systemd_notifications_an_outage_and_sigterm(cloud, tmp_path):
    port = free_tcp_port()
    config = tmp_path / "edge.toml"
    # the file's values, and flags over them (--listen replaces the file's)
    config.write_text(
        '[edge]\nname = "robot-test"\noffline_after_s = 1.0\nreconnect_max_s = 0.5\n'
        'threads = 1\nn_ctx = 1024\n[serve]\nlisten = "127.0.0.1:1"\n'
    )

    async def scenario() -> dict[str, object]:
        fast = LinkConfig(delay_ms=2)
        up = host_port(cloud.endpoint)
        notes = Notifications(tmp_path / "notify")
        notes.start()
        async with LinkRelay(listen=("127.0.0.1", 0), upstream=up, up=fast, down=fast) as link:
            env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"),
                       WATCHDOG_USEC="1000000", PICOSPEC_TOKEN=cloud.token)  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "picospec", "edge", "serve", "--config", str(config),
                "--cloud", f"127.0.0.1:{link.address[1]}", "--pin", cloud.pin,
                "--pair", "smollm2", "--listen", f"127.0.0.1:{port}",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                return await steps(proc, link, notes)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                notes.close()

    async def steps(proc, link: LinkRelay, notes: Notifications) -> dict[str, object]:
        base = f"http://127.0.0.1:{port}"
        out: dict[str, object] = {}
        ready = await notes.wait_for("READY=1", 120)
        out["health_at_ready"] = json.loads(await curl(f"{base}/health"))  # bound by then
        out["ready_status"] = ready
        oa = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        models = await oa.models.list()
        model = models.data[0].id
        chat = await oa.chat.completions.create(model=model, messages=CHAT, max_tokens=24, **GREEDY)
        ref = await oa.chat.completions.create(
            model=model, messages=CHAT, max_tokens=24, extra_body={"mode": "cloud-only"},
            **GREEDY,
        )  # fmt: skip
        out["chat"], out["ref"] = chat, ref
        out["completion"] = await oa.completions.create(
            model=model, prompt="A robot arm has", max_tokens=12, **GREEDY
        )
        pieces = []
        async for event in await oa.chat.completions.create(
            model=model, messages=CHAT, max_tokens=24, stream=True, **GREEDY
        ):
            pieces.append(event.choices[0].delta.content or "" if event.choices else "")
        out["streamed"] = "".join(pieces)
        with pytest.raises(openai.BadRequestError) as bad:
            await oa.chat.completions.create(model=model, messages=[], max_tokens=4)
        out["bad"] = bad.value
        body = json.dumps(
            {"model": model, "messages": CHAT, "max_tokens": 8, "stream": True, "temperature": 0}
        )
        out["curl_stream"] = await curl(
            "-N", "-H", "Content-Type: application/json", "-d", body, f"{base}/v1/chat/completions"
        )
        out["metrics"] = await curl(f"{base}/metrics")

        # the link goes dark: the service notices, says so, and answers locally
        n = len(notes.seen)
        link.cut()
        dark = await oa.completions.create(
            model=model, prompt="A robot arm has", max_tokens=24, **GREEDY
        )
        out["dark"] = dark
        out["offline_status"] = await notes.wait_for("offline", 30, after=n)
        out["health_dark"] = json.loads(await curl(f"{base}/health"))
        n = len(notes.seen)
        link.restore()
        out["back_status"] = await notes.wait_for("cloud connected", 60, after=n)
        out["back"] = await oa.completions.create(
            model=model, prompt="A robot arm has", max_tokens=12, **GREEDY
        )
        out["watchdogs"] = notes.count("WATCHDOG=1")

        # SIGTERM during a stream: STOPPING=1, the stream finishes, the process exits 0
        stream = await oa.chat.completions.create(
            model=model, messages=CHAT, max_tokens=32, stream=True,
            stream_options={"include_usage": True}, **GREEDY,
        )  # fmt: skip
        events = [await anext(aiter(stream))]
        proc.send_signal(signal.SIGTERM)
        out["stopping"] = await notes.wait_for("STOPPING=1", 10)
        events += [e async for e in stream]
        out["drained"] = events
        out["rc"] = await asyncio.wait_for(proc.wait(), 30)
        out["stderr"] = (await proc.stderr.read()).decode()
        return out

    out = asyncio.run(scenario())
    assert out["health_at_ready"]["ready"] and out["health_at_ready"]["cloud"] == "connected"
    assert "cloud connected" in out["ready_status"]
    chat, ref = out["chat"], out["ref"]
    assert chat.choices[0].message.content == ref.choices[0].message.content  # exact: greedy
    assert chat.model_extra["picospec"]["verified_tokens"] == chat.usage.completion_tokens > 0
    # the default mode is auto: the reply names the mode it ran (cloud-led, first time)
    assert chat.model_extra["picospec"]["mode"] in ("cloud-led", "cloud-only", "pipeline", "sync")
    assert ref.model_extra["picospec"]["mode"] == "cloud-only"
    assert out["streamed"] == chat.choices[0].message.content
    comp = out["completion"]
    assert comp.choices[0].text and comp.usage.completion_tokens == 12
    bad = out["bad"]
    assert bad.status_code == 400 and "messages" in str(bad)
    curled = out["curl_stream"]
    assert curled.endswith("data: [DONE]\n\n") and '"finish_reason": "length"' in curled
    assert 'picospec_edge_tokens_total{kind="verified"}' in out["metrics"]
    dark = out["dark"]
    assert dark.usage.completion_tokens == 24 and dark.model_extra["picospec"]["local_tokens"] > 0
    assert out["health_dark"]["status"].startswith("degraded: offline since")
    back = out["back"]
    assert back.model_extra["picospec"]["verified_tokens"] == 12
    assert back.choices[0].text == comp.choices[0].text  # verified again: the same greedy text
    assert out["watchdogs"] >= 3
    drained = out["drained"]
    assert drained[-1].usage is not None, out["stderr"]
    assert drained[-1].usage.completion_tokens == 32, out["stderr"]
    assert out["rc"] == 0, out["stderr"]


def test_edge_serve_on_a_unix_socket_without_a_cloud_is_edge_only(smollm2, tmp_path):
    """No cloud configured: every generation is the drafter's, served on a unix socket."""
    path = tmp_path / "edge.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "picospec", "edge", "serve", "--pair", "smollm2", "--threads", "1",
         "--n-ctx", "512", "--unix-socket", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):  # bounded: the drafter loads, then the socket is bound
            if path.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert path.exists(), proc.stderr.read() if proc.poll() is not None else "no socket"
        got = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "--unix-socket", str(path),
             "-H", "Content-Type: application/json",
             "-d", json.dumps({"prompt": "A robot", "max_tokens": 6, "temperature": 0}),
             "http://edge/v1/completions"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        health = subprocess.run(
            ["curl", "-sS", "--unix-socket", str(path), "http://edge/health"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        proc.terminate()
        rc = proc.wait(30)
    reply = json.loads(got.stdout)
    assert reply["usage"]["completion_tokens"] == 6
    assert reply["picospec"]["local_tokens"] == 6 and reply["picospec"]["mode"] == "edge-only"
    assert json.loads(health.stdout)["cloud"] == "none"
    assert rc == 0
