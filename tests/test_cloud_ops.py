"""Operating the verifier: cloud.toml, the metrics, health and readiness endpoints,
structured connection logs, and the graceful drain on SIGTERM (in process on a
Markov target, and as a real ``cloud serve`` process with a real edge)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from aiohttp.test_utils import TestClient, TestServer
from markov import MarkovBackend
from servers import GREEDY, PROMPT, TOKEN, ServerThread, good_tokens
from test_client import Slow, client

from picospec.cloud.config import CloudConfig, load
from picospec.cloud.limits import Limits
from picospec.cloud.metrics import CloudMetrics, application
from picospec.codec.errors import ConfigError
from picospec.edge.client import EdgeClient, EdgeError, GenerationError
from picospec.lab.bench.cloudproc import free_port
from picospec.runtime.quic import generate_self_signed


def test_cloud_toml_sets_the_service_and_its_limits_and_refuses_bad_keys(tmp_path):
    good = tmp_path / "cloud.toml"
    good.write_text(
        '[cloud]\nlisten = "0.0.0.0:4433"\nthreads = 2\ndrain_s = 5\nmetrics = "127.0.0.1:9464"\n'
        "[limits]\nmax_new_tokens = 300\nhello_timeout_s = 2\n"
    )
    cfg = load(good)
    assert cfg.listen == "0.0.0.0:4433" and cfg.threads == 2 and cfg.drain_s == 5.0
    assert cfg.limits.max_new_tokens == 300 and cfg.limits.hello_timeout_s == 2.0
    assert cfg.limits.max_connections == Limits().max_connections
    over = Limits.parse(["max_connections=3"], base=cfg.limits)  # a --limit over the file
    assert over.max_connections == 3 and over.max_new_tokens == 300
    cases = [
        ("[cloud]\nlisten = 4433\n", "cloud.listen must be a string"),
        ("[cloud]\nbackend = 'vllm'\n", "backend must be one of"),
        ("[cloud]\nport = 1\n", "unknown key cloud.port"),
        ("[limits]\nmax_conections = 3\n", "unknown key limits.max_conections"),
        ("[limits]\nmax_connections = 0\n", "limit max_connections must be an integer >= 1"),
        ("[server]\n", "unknown section [server]"),
        ("[cloud\n", "not valid TOML"),
    ]
    for text, message in cases:
        good.write_text(text)
        with pytest.raises(ConfigError) as e:
            load(good)
        assert message in str(e.value) and str(good) in str(e.value), e.value
    assert CloudConfig().with_overrides(listen=None).listen == "127.0.0.1:4433"


def test_drain_lets_nothing_new_in_and_ends_open_generations_with_a_bye():
    backend = Slow(delay=0.02)
    with ServerThread(backend, limits=Limits(max_new_tokens=2000)) as srv:

        async def scenario():
            c = client()
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            got: list[int] = []
            task = asyncio.create_task(
                c.generate(
                    PROMPT,
                    sampling=GREEDY,
                    max_new_tokens=2000,
                    mode="cloud-only",
                    on_tokens=got.extend,
                )
            )
            for _ in range(500):
                if len(got) >= 5 or task.done():
                    break
                await asyncio.sleep(0.01)
            drain = asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(srv.service.drain(0.2), srv.loop)
            )
            with pytest.raises(GenerationError, match="the server is shutting down") as failed:
                await task
            ended = await drain
            late = client()
            with pytest.raises(EdgeError, match="shutting down"):
                await late.connect(*srv.address, srv.tls, token=TOKEN)
            await c.close()
            return failed.value.result.token_ids, got, ended

        committed, got, ended = asyncio.run(scenario())
        refused_busy = srv.call(lambda: srv.service.stats.refusals.copy())
    assert ended == 1 and committed == got and committed == good_tokens(len(committed))
    assert len(committed) >= 5
    assert refused_busy[next(c for c in refused_busy if c.name == "BUSY")] >= 1


def test_metrics_count_what_the_service_did_and_ready_turns_503_on_drain():
    metrics = CloudMetrics()
    with ServerThread(MarkovBackend()) as srv:
        srv.call(lambda: metrics.attach(srv.service))

        async def scenario():
            c = client()
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            res = await c.generate(PROMPT, sampling=GREEDY, max_new_tokens=16, seed=0)
            await c.close()
            bad = EdgeClient(c.drafter)
            with pytest.raises(EdgeError, match="auth token was refused"):
                await bad.connect(*srv.address, srv.tls, token=b"not-the-token")
            async with TestClient(TestServer(application(metrics))) as http:
                text = await (await http.get("/metrics")).text()
                ready = (await http.get("/ready")).status
                health = (await http.get("/health")).status
                await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(srv.service.drain(0.1), srv.loop)
                )
                after = (await http.get("/ready")).status
                text_after = await (await http.get("/metrics")).text()
            return res, text, ready, health, after, text_after

        res, text, ready, health, after, text_after = asyncio.run(scenario())
    assert res.token_ids == good_tokens()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(values["picospec_cloud_committed_tokens_total"]) == 16
    assert float(values["picospec_cloud_generations_total"]) == 1
    assert float(values["picospec_cloud_connections_total"]) == 2
    assert float(values['picospec_cloud_refusals_total{code="AUTH"}']) == 1
    drafted = float(values["picospec_cloud_drafted_tokens_total"])
    assert 0 <= float(values["picospec_cloud_accepted_tokens_total"]) <= drafted
    assert drafted > 0 and float(values["picospec_cloud_sent_bytes_total"]) > 0
    assert float(values["picospec_cloud_received_bytes_total"]) > 0
    assert ready == 200 and health == 200 and after == 503
    assert "picospec_cloud_ready 0.0" in text_after


def test_connection_events_are_key_value_lines_and_never_carry_a_token(caplog):
    with caplog.at_level(logging.INFO, logger="picospec.cloud"):
        with ServerThread(MarkovBackend()) as srv:

            async def scenario():
                c = client()
                await c.connect(*srv.address, srv.tls, token=TOKEN)
                await c.generate(PROMPT, sampling=GREEDY, max_new_tokens=4, seed=0)
                await c.close()
                bad = client()
                with pytest.raises(EdgeError):
                    await bad.connect(*srv.address, srv.tls, token=b"guess-0123456789")

            asyncio.run(scenario())
            for _ in range(100):  # the closed lines come as the connections end
                if sum("event=closed" in r.getMessage() for r in caplog.records) >= 2:
                    break
                time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "picospec.cloud"]
    assert any(line.startswith("event=joined peer=127.0.0.1:") for line in lines), lines
    assert any("event=refused" in x and "code=AUTH" in x for x in lines), lines
    assert any("event=closed" in x and "generations=1" in x for x in lines), lines
    text = "\n".join(lines)
    assert TOKEN.decode() not in text and "guess-0123456789" not in text


@pytest.mark.models
@pytest.mark.slow
def test_sigterm_drains_a_real_cloud_and_the_edge_finishes_locally(smollm2, tmp_path):
    from picospec.edge.api import Edge
    from picospec.edge.config import EdgeConfig

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    pin = generate_self_signed(cert, key, host="localhost")
    port, mport = free_port(), free_port(socket.SOCK_STREAM)
    token = secrets.token_hex(16)
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "cloud.toml").write_text(
        f'[cloud]\nlisten = "127.0.0.1:{port}"\nmodel = "{smollm2["target"]}"\n'
        f'cert = "{cert}"\nkey = "{key}"\ntoken_file = "{tmp_path / "token"}"\nthreads = 1\n'
        f'n_ctx = 1024\nmetrics = "127.0.0.1:{mport}"\ndrain_s = 1.0\n'
        "[limits]\nmax_new_tokens = 1000\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PICOSPEC_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "picospec", "cloud", "serve", "--config",
         str(tmp_path / "cloud.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and "serving" in proc.stdout.readline()
        cfg = EdgeConfig(cloud=f"127.0.0.1:{port}", pin=pin, threads=1, n_ctx=1024,
                         offline_after_s=1.0, reconnect_max_s=0.5)  # fmt: skip
        with Edge(cfg, token=token) as edge:
            chunks = []
            story = [{"role": "user", "content": "Write a long story about a robot."}]
            sent = False
            for chunk in edge.stream(story, max_tokens=120, mode="cloud-only", seed=0):
                chunks.append(chunk)
                if not sent and sum(len(c.tokens) for c in chunks) >= 8:
                    sent = True
                    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/ready") as r:
                        ready_before = r.status
                    proc.send_signal(signal.SIGTERM)
            tokens = [t for c in chunks for t in c.tokens]
            flags = [c.verified for c in chunks for _ in c.tokens]
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert ready_before == 200 and rc == 0, stderr
    assert "event=draining" in stderr and "event=stopped ended_with_bye=1" in stderr
    assert len(tokens) == 120 and flags[0] and not flags[-1]  # verified, then local
    assert flags == sorted(flags, reverse=True)  # one switch: nothing verified after the Bye


def test_the_token_comes_from_the_file_the_credential_the_secret_or_the_environment(
    tmp_path, monkeypatch
):
    from picospec.runtime.netargs import token_from

    for name in ("CREDENTIALS_DIRECTORY", "PICOSPEC_TOKEN_FILE", "PICOSPEC_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="an auth token is required"):
        token_from("")
    monkeypatch.setenv("PICOSPEC_TOKEN", "from-env")
    assert token_from("") == b"from-env"
    secret = tmp_path / "secret"
    secret.write_text("from-secret\n")
    monkeypatch.setenv("PICOSPEC_TOKEN_FILE", str(secret))
    assert token_from("") == b"from-secret"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "token").write_text("from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert token_from("") == b"from-credential"
    named = tmp_path / "named"
    named.write_text("from-file")
    assert token_from(str(named)) == b"from-file"
    named.write_text("  \n")
    with pytest.raises(ConfigError, match=f"the token file {named} is empty"):
        token_from(str(named))
    with pytest.raises(ConfigError, match="cannot read the token file"):
        token_from(str(tmp_path / "missing"))
