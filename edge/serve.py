"""``picospec edge serve``: the local OpenAI-compatible service a robot stack talks to.

HTTP by aiohttp, on 127.0.0.1 (or a unix socket), over one ``AsyncEdge``:

* ``POST /v1/chat/completions`` and ``POST /v1/completions``, with and without
  ``stream: true`` (server-sent events ending in ``data: [DONE]``);
* ``GET /v1/models``, ``GET /health`` (ready, cloud connected or offline since
  when, the model; 503 until ready), ``GET /metrics`` (Prometheus text).

Requests take the standard fields (``model``, ``messages`` / ``prompt``,
``max_tokens`` or ``max_completion_tokens``, ``temperature``, ``top_p``,
``seed``, ``stop``, ``stream``) plus ``top_k``, ``min_p``, ``mode`` and
``fallback``. Responses carry ``usage`` and a ``picospec`` object
(``verified_tokens``, ``local_tokens``, ``mode``, ``acceptance``, ``seed``).
A bad request gets a 400 with OpenAI's error object naming the field, a full
queue a 429, a missing or wrong bearer key (when one is configured) a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from picospec.codec.errors import ConfigError, PicospecError
from picospec.runtime.netargs import host_port

from .api import AsyncEdge, QueueFull, Reply, ReplyError
from .config import EdgeConfig
from .sdnotify import notify, watchdog_interval

log = logging.getLogger("picospec.edge.serve")

MAX_BODY = 4 * 2**20
DRAIN_S = 10.0
"""How long a stopping service lets in-flight generations finish before it cancels them."""
_FINISH = {"stop": "stop", "length": "length", "deadline": "length"}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.status = param, status


def _error(message: str, *, status: int, kind: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"'{name}' must be {_names(kinds)}, got {value!r}", name)
    if not isinstance(value, kinds):
        raise BadRequest(f"'{name}' must be {_names(kinds)}, got {value!r}", name)
    return value


def _names(kinds: tuple[type, ...]) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             list: "a list", dict: "an object"}  # fmt: skip
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _params(body: dict[str, Any]) -> dict[str, Any]:
    """The generation parameters of a request body (checked; errors name the field)."""
    if _field(body, "n", (int,), 1) != 1:
        raise BadRequest("only n = 1 is supported", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _field({name: max_tokens}, name, (int,), 128)
    if max_tokens < 1:
        raise BadRequest(f"'{name}' must be >= 1, got {max_tokens}", name)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise BadRequest("'stop' must be a string or a list of strings", "stop")
    params = {
        "max_tokens": max_tokens,
        "temperature": float(_field(body, "temperature", (int, float), 1.0)),
        "top_p": float(_field(body, "top_p", (int, float), 1.0)),
        "top_k": _field(body, "top_k", (int,), 0),
        "min_p": float(_field(body, "min_p", (int, float), 0.0)),
        "seed": _field(body, "seed", (int,), None),
        "stop": stop,
        "mode": _field(body, "mode", (str,), None),
        "fallback": _field(body, "fallback", (str,), None),
    }
    seed = params["seed"]
    if seed is not None and not 0 <= seed < 2**64:
        raise BadRequest("'seed' must be in [0, 2**64)", "seed")
    return params


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of messages", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", "messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text ones
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if not all(isinstance(p, str) for p in parts) or len(parts) != len(content):
                raise BadRequest(f"messages[{i}].content parts must be text parts", "messages")
            content = "".join(parts)  # type: ignore[arg-type]
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string", "messages")
        out.append({"role": m["role"], "content": content})
    return out


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' must be a non-empty string", "prompt")
    return prompt


class Service:
    """The HTTP application over one AsyncEdge."""

    def __init__(self, edge: AsyncEdge, *, api_key: str = "") -> None:
        self.edge, self.api_key = edge, api_key
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        self.app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get("/metrics", self.metrics),
            ]
        )

    @property
    def model(self) -> str:
        d = self.edge.drafter
        return f"picospec/{d.name}" if d is not None else "picospec"

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.api_key and request.path.startswith("/v1/"):
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {self.api_key}".encode()):
                return _error("a valid bearer key is required", status=401,
                              kind="authentication_error")  # fmt: skip
        try:
            return await handler(request)
        except BadRequest as e:
            return _error(str(e), status=e.status, kind="invalid_request_error", param=e.param)
        except QueueFull as e:
            return _error(str(e), status=429, kind="rate_limit_error")
        except ConfigError as e:  # a parameter the edge refuses (out of range, too long)
            return _error(str(e), status=400, kind="invalid_request_error")
        except ReplyError as e:
            return _error(str(e), status=503, kind="server_error")
        except PicospecError as e:
            log.warning("request failed: %s", e)
            return _error(str(e), status=500, kind="server_error")
        except web.HTTPException as e:  # no such route or method: OpenAI's shape too
            if e.status < 400:
                raise
            return _error(f"{request.method} {request.path}: {e.reason}", status=e.status,
                          kind="invalid_request_error")  # fmt: skip
        except Exception as e:  # a bug: this request fails, the service goes on
            log.exception("request %s %s failed", request.method, request.path)
            return _error(f"internal error: {type(e).__name__}", status=500, kind="server_error")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequest("'model' must be a string", "model")
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        """/v1/chat/completions (chat) or /v1/completions: one generation, streamed or not."""
        body = await self._body(request)
        params, prompt = _params(body), _messages(body) if chat else _prompt(body)
        if _field(body, "stream", (bool,), False):
            return await self._stream(request, body, prompt, params, chat=chat)
        reply = await self.edge.generate(prompt, **params)
        choice: dict[str, Any] = {"index": 0, "finish_reason": _FINISH[reply.finish_reason]}
        if chat:
            choice["message"] = {"role": "assistant", "content": reply.text}
        else:
            choice.update(text=reply.text, logprobs=None)
        kind = "chat.completion" if chat else "text_completion"
        return web.json_response(self._envelope(kind, choice, reply))

    def _envelope(self, kind: str, choice: dict[str, Any], reply: Reply) -> dict[str, Any]:
        return {
            "id": f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{secrets.token_hex(12)}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": self._usage(reply),
            "picospec": self._extra(reply),
        }

    @staticmethod
    def _usage(reply: Reply) -> dict[str, int]:
        n, m = reply.prompt_tokens, len(reply.tokens)
        return {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m}

    @staticmethod
    def _extra(reply: Reply) -> dict[str, Any]:
        return {
            "verified_tokens": reply.verified_tokens,
            "local_tokens": reply.local_tokens,
            "mode": reply.mode,
            "acceptance": reply.stats.get("acceptance", 0.0),
            "seed": reply.seed,
            "finish": reply.finish_reason,
            "tok_per_s": reply.stats.get("tok_per_s", 0.0),
            "ttft_ms": reply.stats.get("ttft_ms", 0.0),
        }

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        prompt: Any,
        params: dict[str, Any],
        *,
        chat: bool,
    ) -> web.StreamResponse:
        options = _field(body, "stream_options", (dict,), {})
        kind = "chat.completion.chunk" if chat else "text_completion"
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
        created = int(time.time())
        stream = self.edge.stream(prompt, **params)
        chunks = stream.__aiter__()
        first = await anext(chunks, None)  # errors (queue full, bad values) come before the 200
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(choice: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
            event = {"id": ident, "object": kind, "created": created, "model": self.model,
                     "choices": [choice]}  # fmt: skip
            if extra:
                event.update(extra)
            await response.write(f"data: {json.dumps(event)}\n\n".encode())

        def delta(text: str) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {"content": text}, "finish_reason": None}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": None}

        try:
            if chat:
                await send({"index": 0, "delta": {"role": "assistant"}, "finish_reason": None})
            chunk = first
            while chunk is not None:
                if chunk.text:
                    await send(delta(chunk.text),
                               {"picospec": {"verified": chunk.verified}})  # fmt: skip
                chunk = await anext(chunks, None)
            reply = stream.reply
            assert reply is not None
            end: dict[str, Any] = {"index": 0, "finish_reason": _FINISH[reply.finish_reason]}
            if chat:
                end["delta"] = {}
            else:
                end["text"] = ""
            await send(end, {"picospec": self._extra(reply)})
            if options.get("include_usage"):
                event = {"id": ident, "object": kind, "created": created, "model": self.model,
                         "choices": [], "usage": self._usage(reply)}  # fmt: skip
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            # the client went away: leaving the stream cancels the generation on the cloud
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        except PicospecError as e:  # after the 200: the error travels in the stream
            err = {"error": {"message": str(e), "type": "server_error", "param": None,
                             "code": None}}  # fmt: skip
            with contextlib.suppress(ConnectionResetError):
                await response.write(f"data: {json.dumps(err)}\n\n".encode())
        return response

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "picospec"}]
        return web.json_response({"object": "list", "data": data})

    async def health(self, request: web.Request) -> web.Response:
        h = self.edge.health()
        return web.json_response(h, status=200 if h["ready"] else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.edge.metrics.text(), content_type="text/plain", charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )  # fmt: skip


async def run(config: EdgeConfig, *, token: bytes | None = None) -> None:
    """Serve until SIGTERM or SIGINT, talking to systemd when it runs the service:
    READY=1 once the drafter is loaded and the port is bound, STATUS= as the cloud
    comes and goes, WATCHDOG=1 from the event loop, STOPPING=1 and a bounded drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dog = asyncio.create_task(_watchdog())  # pings while the drafter loads, too
    edge = AsyncEdge(config, token=token)
    api_key = config.api_key()
    notify("STATUS=loading the drafter")
    await edge.start()
    service = Service(edge, api_key=api_key)
    # handler_cancellation: a client that hangs up cancels its generation (and the cloud's)
    runner = web.AppRunner(
        service.app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
    )
    await runner.setup()
    site: web.BaseSite
    if config.unix_socket:
        site = web.UnixSite(runner, config.unix_socket)
        where = f"unix:{config.unix_socket}"
    else:
        host, port = host_port(config.listen)
        site = web.TCPSite(runner, host, port)
        where = f"http://{host}:{port}"
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        await edge.close()
        raise ConfigError(f"cannot listen on {where}: {e.strerror}") from None

    def status(online: bool, why: str = "") -> str:
        cloud = "cloud connected" if online else f"cloud offline ({why or 'connecting'})"
        if not config.cloud:
            cloud = "no cloud: edge-only"
        return f"serving {service.model} on {where}; {cloud}"

    def announce(online: bool, why: str) -> None:
        notify("STATUS=" + status(online, why))

    edge.watch_cloud(announce)
    now = status(edge.health()["cloud"] == "connected")
    notify("READY=1\nSTATUS=" + now)
    log.info("picospec edge: %s", now)
    try:
        await stop.wait()
    finally:
        notify(f"STOPPING=1\nSTATUS=draining (up to {DRAIN_S:g} s)")
        await site.stop()  # no new connections
        drained = await edge.drain(DRAIN_S)
        if not drained:
            log.warning("picospec edge: cancelling what still runs after %g s", DRAIN_S)
        await runner.cleanup()  # cancels what is left: the cloud gets a Cancel
        dog.cancel()
        await edge.close()
        log.info("picospec edge: stopped")


async def _watchdog() -> None:
    interval = watchdog_interval()
    if interval is None:
        return
    while True:  # from the event loop itself: a stuck loop stops the pings
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
