"""The robot app's API on Markov models over real QUIC: stop strings, cancellation
by leaving a stream, the bounded queue in arrival order, several threads on one
``Edge``, and the configuration file's errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from markov import MarkovBackend, MarkovDrafter
from servers import TOKEN, ServerThread, good_tokens
from test_client import Slow

from picospec.codec.errors import ConfigError
from picospec.edge.api import AsyncEdge, Edge, QueueFull
from picospec.edge.config import EdgeConfig, load
from picospec.edge.text import detokenize

PROMPT = "abcd"  # Markov tokens 0, 1, 2, 3: the servers' PROMPT


def edge_config(srv: ServerThread, **kw) -> EdgeConfig:
    return EdgeConfig(cloud=f"{srv.address[0]}:{srv.address[1]}", pin=srv.tls.pin_sha256 or "",
                      offline_after_s=5.0, **kw)  # fmt: skip


def drafter() -> MarkovDrafter:
    return MarkovDrafter(MarkovBackend(seed=5).table)


def text_of(tokens: list[int]) -> str:
    d = drafter()
    return detokenize(d.piece, d.is_end, tokens)


def test_a_stop_string_ends_the_generation_and_is_not_part_of_the_text():
    with ServerThread(MarkovBackend()) as srv:

        async def run():
            async with AsyncEdge(edge_config(srv), drafter=drafter(), token=TOKEN) as edge:
                # sparse-q: the same seed repeats the sample in the same mode (auto may
                # choose another mode once it has measured more)
                warm = dict(max_tokens=40, temperature=1.0, seed=3, mode="pipeline")
                full = (await edge.generate(PROMPT, **warm)).text
                at = next(
                    i for i in range(6, len(full) - 2) if full[i : i + 2] not in full[: i + 1]
                )
                stop = full[at : at + 2]
                chunks = []
                stream = edge.stream(PROMPT, stop=[stop], **warm)
                async for c in stream:
                    chunks.append(c.text)
                return full, at, stream.reply, chunks

        full, at, reply, chunks = asyncio.run(run())
    assert reply.text == full[:at] == "".join(chunks)
    assert reply.finish_reason == "stop" and reply.verified_tokens == len(reply.tokens) < 40


def test_leaving_a_stream_early_cancels_the_clouds_generation():
    backend = Slow()
    with (
        ServerThread(backend) as srv,
        Edge(edge_config(srv), drafter=drafter(), token=TOKEN) as edge,
    ):
        got = []
        for chunk in edge.stream(PROMPT, max_tokens=500, mode="cloud-only"):
            got += chunk.tokens
            if len(got) >= 5:
                break
        for _ in range(100):
            if srv.call(lambda: srv.service.budget.open) == 0:
                break
            time.sleep(0.05)
        held = srv.call(lambda: srv.service.budget.open)
        again = edge.generate(PROMPT, max_tokens=16, seed=0)
    assert got[:5] == good_tokens(5) and held == 0
    assert again.tokens == good_tokens() and again.verified_tokens == 16


def test_the_queue_is_bounded_and_served_in_arrival_order():
    backend = Slow(delay=0.01)
    with ServerThread(backend) as srv:

        async def run():
            async with AsyncEdge(
                edge_config(srv, queue_size=2), drafter=drafter(), token=TOKEN
            ) as edge:
                done: list[int] = []

                async def one(i: int) -> None:
                    await edge.generate(PROMPT, max_tokens=12, seed=i)
                    done.append(i)

                backend.gate.clear()  # the first generation holds the drafter until we open it
                tasks = [asyncio.create_task(one(i)) for i in range(3)]
                for _ in range(200):  # one runs, two wait
                    if edge.health()["queue"] == 2:
                        break
                    await asyncio.sleep(0.01)
                with pytest.raises(QueueFull, match="2 requests already wait"):
                    await edge.generate(PROMPT, max_tokens=4)
                backend.gate.set()
                await asyncio.gather(*tasks)
                return done, edge.metrics.text().decode()

        done, metrics = asyncio.run(run())
    assert done == [0, 1, 2]
    assert 'picospec_edge_requests_total{outcome="queue_full"} 1.0' in metrics
    assert 'picospec_edge_tokens_total{kind="verified"} 36.0' in metrics


def test_several_threads_share_one_edge():
    with (
        ServerThread(MarkovBackend()) as srv,
        Edge(edge_config(srv), drafter=drafter(), token=TOKEN) as edge,
    ):
        out: dict[int, list[int]] = {}

        def worker(i: int) -> None:
            out[i] = edge.generate(PROMPT, max_tokens=16, seed=0).tokens

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(out) == [0, 1, 2, 3] and all(v == good_tokens() for v in out.values())


def test_request_errors_name_what_was_wrong():
    with (
        ServerThread(MarkovBackend()) as srv,
        Edge(edge_config(srv), drafter=drafter(), token=TOKEN) as edge,
    ):
        with pytest.raises(ConfigError, match="max_tokens must be an integer"):
            edge.generate(PROMPT, max_tokens=0)
        with pytest.raises(ConfigError, match="fallback must be one of"):
            edge.generate(PROMPT, fallback="sometimes")
        with pytest.raises(ConfigError, match="temperature"):
            edge.generate(PROMPT, temperature=-1)
        with pytest.raises(ConfigError, match="do not fit the drafter's context"):
            edge.generate(PROMPT, max_tokens=5000)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[edge]\ncloud = 4433\n", "edge.cloud must be a string, got int 4433"),
        ("[edge]\nclod = 'x'\n", "unknown key edge.clod"),
        ("[robot]\n", "unknown section [robot]"),
        ("[edge]\nfallback = 'maybe'\n", "fallback must be one of local, wait, fail"),
        ("[edge\n", "not valid TOML"),
        ("[serve]\nlisten = 8080\n", "serve.listen must be a string"),
    ],
)
def test_config_errors_name_the_file_the_key_and_what_was_expected(tmp_path, text, says):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}.*{_re(says)}"):
        load(path)


def test_a_config_file_and_the_token_from_a_systemd_credential(tmp_path, monkeypatch):
    path = tmp_path / "edge.toml"
    path.write_text("[edge]\ncloud = 'c:1'\npin = 'ab'\nthreads = 2\noffline_after_s = 1\n"
                    "[serve]\nlisten = '127.0.0.1:9000'\n")  # fmt: skip
    cfg = load(path)
    assert (cfg.cloud, cfg.threads, cfg.offline_after_s, cfg.listen) == (
        "c:1",
        2,
        1.0,
        "127.0.0.1:9000",
    )
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "token").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert cfg.token() == b"s3cret"
    assert cfg.with_overrides(cloud="d:2", threads=None).cloud == "d:2"


def _re(text: str) -> str:
    import re

    return re.escape(text)
