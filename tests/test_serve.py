"""The local OpenAI-compatible service in process: a Markov drafter and a real
verifier over QUIC on loopback, HTTP through aiohttp's test server. The real
``picospec edge serve`` process, the ``openai`` package and ``curl`` are in
``test_serve_process.py``."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from markov import MarkovBackend, MarkovDrafter
from servers import TOKEN, ServerThread, good_tokens
from test_client import Slow

from picospec.edge.api import AsyncEdge
from picospec.edge.config import EdgeConfig
from picospec.edge.serve import Service
from picospec.edge.text import detokenize

GREEDY = dict(temperature=0, seed=0, max_tokens=16)


def drafter() -> MarkovDrafter:
    return MarkovDrafter(MarkovBackend(seed=5).table)


def text_of(tokens: list[int]) -> str:
    d = drafter()
    return detokenize(d.piece, d.is_end, tokens)


@asynccontextmanager
async def http(srv: ServerThread | None, api_key: str = "", **kw: Any):
    cloud = {} if srv is None else dict(cloud=f"127.0.0.1:{srv.address[1]}",
                                        pin=srv.tls.pin_sha256 or "")  # fmt: skip
    cfg = EdgeConfig(offline_after_s=5.0, **(cloud | kw))  # type: ignore[arg-type]
    async with AsyncEdge(cfg, drafter=drafter(), token=TOKEN) as edge:
        client = TestClient(TestServer(Service(edge, api_key=api_key).app))
        await client.start_server()
        try:
            yield client
        finally:
            await client.close()


def events(raw: str) -> list[Any]:
    """The data of each server-sent event; "[DONE]" stays a string."""
    out = []
    for block in raw.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_chat_and_completion_answer_with_the_verified_tokens_usage_and_picospec_fields():
    want = text_of(good_tokens(16))
    with ServerThread(MarkovBackend()) as srv:

        async def run():
            async with http(srv) as c:
                msgs = [{"role": "user", "content": "abcd"}]
                chat = await c.post(
                    "/v1/chat/completions", json={"model": "any", "messages": msgs, **GREEDY}
                )
                comp = await c.post("/v1/completions", json={"prompt": "abcd", **GREEDY})
                models = await c.get("/v1/models")
                health = await c.get("/health")
                metrics = await c.get("/metrics")
                return (chat.status, await chat.json(), comp.status, await comp.json(),
                        await models.json(), health.status, await health.json(),
                        await metrics.text())  # fmt: skip

        cs, chat, ps, comp, models, hs, health, metrics = asyncio.run(run())
    assert cs == ps == 200 and hs == 200
    assert comp["object"] == "text_completion" and comp["choices"][0]["text"] == want
    assert comp["choices"][0]["finish_reason"] == "length"
    assert comp["usage"] == {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}
    extra = comp["picospec"]
    assert extra["verified_tokens"] == 16 and extra["local_tokens"] == 0
    # auto's choice (greedy: the same tokens whichever mode ran them)
    assert extra["mode"] in ("pipeline", "sync", "cloud-only", "cloud-led"), extra
    assert 0 <= extra["acceptance"] <= 1 and extra["seed"] == 0
    # the Markov drafter's chat template is the last message's text: the same prompt
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": want}
    assert models["data"][0]["id"] == chat["model"] == comp["model"]
    assert health["ready"] and health["cloud"] == "connected" and health["status"] == "ok"
    assert 'picospec_edge_tokens_total{kind="verified"} 32.0' in metrics
    assert 'picospec_edge_requests_total{outcome="length"} 2.0' in metrics


def test_streaming_sends_the_same_text_in_events_ending_with_done():
    want = text_of(good_tokens(16))
    with ServerThread(MarkovBackend()) as srv:

        async def run():
            async with http(srv) as c:
                body = {"messages": [{"role": "user", "content": "abcd"}], "stream": True,
                        "stream_options": {"include_usage": True}, **GREEDY}  # fmt: skip
                chat = await c.post("/v1/chat/completions", json=body)
                comp = await c.post("/v1/completions", json={"prompt": "abcd", "stream": True,
                                                              **GREEDY})  # fmt: skip
                return chat.headers["Content-Type"], await chat.text(), await comp.text()

        kind, chat, comp = asyncio.run(run())
    assert kind.startswith("text/event-stream")
    ev = events(chat)
    assert ev[-1] == "[DONE]" and ev[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in ev[1:-3])
    assert text == want and all(e["picospec"]["verified"] for e in ev[1:-3])
    assert ev[-3]["choices"][0]["finish_reason"] == "length"
    assert ev[-3]["picospec"]["verified_tokens"] == 16
    assert ev[-2]["choices"] == [] and ev[-2]["usage"]["completion_tokens"] == 16
    ev = events(comp)
    assert ev[-1] == "[DONE]" and "usage" not in ev[-2]
    assert "".join(e["choices"][0]["text"] for e in ev[:-1]) == want


def test_bad_requests_get_openai_errors_that_name_the_field():
    cases = [
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "messages"),
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": "ab", "temperature": "hot"}, "temperature"),
        ("/v1/completions", {"prompt": "ab", "max_tokens": 0}, "max_tokens"),
        (
            "/v1/completions",
            {"prompt": "ab", "max_completion_tokens": 1.5},
            "max_completion_tokens",
        ),
        ("/v1/completions", {"prompt": "ab", "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": "ab", "seed": -1}, "seed"),
        ("/v1/completions", {"prompt": "ab", "stop": [1]}, "stop"),
        ("/v1/completions", {"prompt": "ab", "n": 2}, "n"),
        ("/v1/completions", {"prompt": "ab", "model": 7}, "model"),
    ]

    async def run():
        out = []
        async with http(None) as c:
            for path, body, _ in cases:
                r = await c.post(path, json=body)
                out.append((r.status, await r.json()))
            r = await c.post("/v1/completions", data=b"{not json")
            out.append((r.status, await r.json()))
            r = await c.post("/v1/completions", json={"prompt": "ab", "mode": "warp"})
            out.append((r.status, await r.json()))
            r = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 10**6})
            out.append((r.status, await r.json()))
            r = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 4})
            out.append((r.status, await r.json()))
            r = await c.get("/v1/embeddings")
            out.append((r.status, await r.json()))
            r = await c.get("/v1/completions")
            out.append((r.status, await r.json()))
        return out

    got = asyncio.run(run())
    for (_, _, param), (status, body) in zip(cases, got, strict=False):
        assert status == 400, (param, body)
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["param"] == param and param in body["error"]["message"]
    (bad_json, warp, too_long, fine, missing, method) = got[len(cases) :]
    assert missing[0] == 404 and "/v1/embeddings" in missing[1]["error"]["message"]
    assert method[0] == 405 and method[1]["error"]["type"] == "invalid_request_error"
    assert bad_json[0] == 400 and "JSON" in bad_json[1]["error"]["message"]
    assert warp[0] == 400 and "warp" in warp[1]["error"]["message"]
    assert too_long[0] == 400 and "context" in too_long[1]["error"]["message"]
    # no cloud configured: edge-only, every token local
    assert fine[0] == 200 and fine[1]["picospec"]["local_tokens"] == 4
    assert fine[1]["picospec"]["mode"] == "edge-only"


def test_a_full_queue_gets_429_and_a_bearer_key_is_required_when_configured():
    backend = Slow(delay=0.05)
    with ServerThread(backend) as srv:

        async def run():
            async with http(srv, api_key="sesame", queue_size=1) as c:
                key = {"Authorization": "Bearer sesame"}
                none = await c.post("/v1/completions", json={"prompt": "abcd"})
                wrong = await c.post("/v1/completions", json={"prompt": "abcd"},
                                     headers={"Authorization": "Bearer nope"})  # fmt: skip
                health = await c.get("/health")  # open: systemd and probes need no key
                body = {"prompt": "abcd", "max_tokens": 30, "mode": "cloud-only"}
                backend.gate.clear()  # the first request holds the drafter until it opens
                first = asyncio.ensure_future(c.post("/v1/completions", json=body, headers=key))
                second = asyncio.ensure_future(c.post("/v1/completions", json=body, headers=key))
                for _ in range(300):  # one runs, one waits
                    if (await (await c.get("/health")).json())["queue"] == 1:
                        break
                    await asyncio.sleep(0.01)
                third = await c.post("/v1/completions", json=body, headers=key)
                backend.gate.set()
                done = [await first, await second]
                return (none.status, wrong.status, health.status, third.status,
                        await third.json(), [r.status for r in done])  # fmt: skip

        none, wrong, health, third, body, done = asyncio.run(run())
    assert none == wrong == 401 and health == 200
    assert third == 429 and body["error"]["type"] == "rate_limit_error"
    assert done == [200, 200]


def test_a_client_that_hangs_up_mid_stream_cancels_the_clouds_generation():
    backend = Slow(delay=0.05)
    with ServerThread(backend) as srv:

        async def run():
            async with http(srv) as c:
                body = {"prompt": "abcd", "max_tokens": 400, "mode": "cloud-only", "stream": True}
                r = await c.post("/v1/completions", json=body)
                await r.content.readuntil(b"\n\n")
                r.close()  # hang up
                for _ in range(100):
                    if srv.call(lambda: srv.service.budget.open) == 0:
                        break
                    await asyncio.sleep(0.05)
                held = srv.call(lambda: srv.service.budget.open)
                after = await c.post("/v1/completions", json={"prompt": "abcd", **GREEDY})
                return held, await after.json()

        held, after = asyncio.run(run())
    assert held == 0
    assert after["choices"][0]["text"] == text_of(good_tokens(16))


def test_concurrent_requests_queue_for_the_drafter_and_each_gets_its_text():
    want = text_of(good_tokens(16))
    with ServerThread(MarkovBackend()) as srv:

        async def run():
            async with http(srv) as c:
                posts = [c.post("/v1/completions", json={"prompt": "abcd", **GREEDY})
                         for _ in range(5)]  # fmt: skip
                return [await r.json() for r in await asyncio.gather(*posts)]

        results = asyncio.run(run())
    assert [r["choices"][0]["text"] for r in results] == [want] * 5
    assert all(r["picospec"]["verified_tokens"] == 16 for r in results)


def test_a_failure_inside_one_request_is_a_500_and_the_service_goes_on():
    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    async def run():
        async with AsyncEdge(EdgeConfig(), drafter=drafter()) as edge:
            service = Service(edge)
            async with TestClient(TestServer(service.app)) as c:
                real, edge.generate = edge.generate, broken  # type: ignore[method-assign]
                bad = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 2})
                edge.generate = real  # type: ignore[method-assign]
                good = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 2})
                return bad.status, await bad.json(), good.status

    status, body, after = asyncio.run(run())
    assert status == 500 and body["error"] == {
        "message": "internal error: RuntimeError", "type": "server_error", "param": None,
        "code": None,
    }  # fmt: skip
    assert after == 200
