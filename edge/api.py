"""The Python API a robot app uses: ``Edge`` (blocking) and ``AsyncEdge`` (asyncio).

    from picospec import Edge
    edge = Edge.from_config("/etc/picospec/edge.toml")   # or Edge(cloud="host:4433", pin=...)
    reply = edge.chat([{"role": "user", "content": "Which shelf has the red box?"}], max_tokens=64)
    print(reply.text, reply.finish_reason, reply.stats)
    for chunk in edge.stream("Describe the scene:", temperature=0.7, stop=["\\n\\n"]):
        print(chunk.text, end="", flush=True)

A prompt is text, chat messages (the drafter's own chat template) or token ids.
Per request: ``max_tokens``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
``seed`` (none: a fresh one, reported), ``stop`` strings, ``mode``, ``fallback``,
``deadline_s``. Generations run one at a time on the drafter, in arrival order;
at most ``queue_size`` wait (one more raises ``QueueFull``). ``Edge`` may be
called from several threads.

It keeps talking when the network does not. If the cloud is unreachable at the
start, or is lost, falls silent for ``offline_after_s`` or fails mid-generation,
the drafter continues the same generation from the committed tokens with the
same sampling (``fallback="local"``, the default), while ``CloudLink``
reconnects in the background; when the cloud is back, the rest of the
generation is verified again (the cloud evaluates prompt + committed tokens).
``fallback="wait"`` holds for the cloud up to the deadline; ``"fail"`` raises
``ReplyError`` with the committed tokens. No committed token is ever lost or
repeated, and every chunk and reply says how many tokens the cloud verified and
how many came from the drafter alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from picospec.codec.errors import ConfigError
from picospec.codec.messages import ErrorCode
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode
from picospec.runtime.netargs import host_port
from picospec.runtime.quic import ClientTLS

from . import config as config_file
from .client import EdgeError, GenerationError, GenerationResult
from .cloudlink import CloudLink
from .config import FALLBACKS, EdgeConfig
from .local import generate_local
from .metrics import EdgeMetrics
from .model import DraftModel
from .plan import parse_mode
from .text import StopMatcher, TextStream

T = TypeVar("T")
Prompt = str | Sequence[int] | Sequence[Mapping[str, str]]
REFUSED = frozenset({ErrorCode.LIMIT, ErrorCode.PARAMS, ErrorCode.PROTOCOL, ErrorCode.AUTH})
"""Cloud errors that refuse the request itself: falling back would not help."""


class TextModel(DraftModel, Protocol):
    """A drafter that also turns text and chats into token ids."""

    @property
    def name(self) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]: ...


@dataclass(frozen=True)
class Chunk:
    """Tokens just committed, and the text they complete."""

    text: str
    tokens: tuple[int, ...]
    verified: bool
    """True when the cloud's target checked these tokens; False when the drafter
    produced them alone (offline fallback, or edge-only)."""


@dataclass
class Reply:
    """One generation's result."""

    text: str
    tokens: list[int]
    finish_reason: str
    """"stop" (an end token or a stop string), "length" (max_tokens) or "deadline"."""
    verified_tokens: int
    local_tokens: int
    mode: str
    seed: int
    prompt_tokens: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    """tok_per_s, ttft_ms, seconds, acceptance (accepted / drafted), rounds,
    bytes_up, bytes_down, fallback_s (time spent generating locally)."""


class QueueFull(EdgeError):
    """Too many requests already wait for the drafter."""


class ReplyError(EdgeError):
    """A generation that could not finish; ``reply`` holds what was committed."""

    def __init__(self, message: str, reply: Reply) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass
class _Request:
    prompt: list[int]
    sampling: Sampling
    seed: int
    max_new: int
    mode: Mode | None
    """None: auto (``edge/plan.py`` chooses per generation)."""
    fallback: str
    stop: tuple[str, ...]
    gamma: int
    depth: int
    deadline: float | None


@dataclass
class _Tally:
    """What the parts of one generation (cloud runs and local runs) add up to."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    fallback_s: float = 0.0

    def add(self, r: GenerationResult) -> None:
        self.rounds += r.rounds
        self.drafted += sum(n for _, n in r.blocks)
        self.accepted += sum(a for a, _ in r.blocks)
        self.bytes_up += r.bytes_up
        self.bytes_down += r.bytes_down


_FINISH = {"max tokens": "length", "end of text": "stop", "stopped": "stop", "deadline": "deadline"}


class AsyncEdge:
    """The edge as an asyncio object: ``async with AsyncEdge(...) as edge``."""

    def __init__(
        self,
        config: EdgeConfig | None = None,
        *,
        drafter: TextModel | None = None,
        token: bytes | str | None = None,
        **overrides: Any,
    ) -> None:
        """config: the edge.toml settings (``EdgeConfig``), with overrides by field
        name; drafter: an opened drafter (default: the config's, opened on start);
        token: the shared token (default: the config's token file, the systemd
        credential, or $PICOSPEC_TOKEN)."""
        self.config = (config or EdgeConfig()).with_overrides(**overrides)
        self._token = token.encode() if isinstance(token, str) else token
        self.drafter: TextModel | None = drafter
        self.metrics = EdgeMetrics()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="picospec-drafter")
        self._link: CloudLink | None = None
        self._lock: asyncio.Lock | None = None
        self._waiting = 0
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._watchers: list[Callable[[bool, str], None]] = []

    @classmethod
    def from_config(cls, path: str | Path, **overrides: Any) -> AsyncEdge:
        return cls(config_file.load(path), **overrides)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the drafter and connect to the cloud (in the background if it is not
        reachable now). Idempotent; the first request calls it too."""
        self._start_lock = self._start_lock or asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            cfg = self.config
            self._lock = asyncio.Lock()
            if self.drafter is None:
                self.drafter = await self._call(_open_drafter, cfg)
            if cfg.cloud:
                host, port = host_port(cfg.cloud)
                if not (cfg.pin or cfg.ca):
                    raise ConfigError("the cloud needs a pin or a ca to be verified by")
                tls = ClientTLS(
                    cafile=cfg.ca or None, pin_sha256=cfg.pin or None, server_name=cfg.server_name
                )
                token = self._token or cfg.token()
                self._link = CloudLink(
                    self.drafter, self._executor, (host, port), tls, token, name=cfg.name,
                    max_backoff_s=cfg.reconnect_max_s, on_change=self._cloud_changed,
                )  # fmt: skip
                await self._link.start()
            self._started = True

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncEdge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _cloud_changed(self, online: bool, why: str) -> None:
        self.metrics.cloud_up.set(1 if online else 0)
        for watcher in self._watchers:
            watcher(online, why)

    def watch_cloud(self, callback: Callable[[bool, str], None]) -> None:
        """Call ``callback(online, why)`` on the event loop whenever the cloud
        connection comes up or goes down (the service's STATUS= lines)."""
        self._watchers.append(callback)

    @property
    def busy(self) -> bool:
        """A generation runs or waits for the drafter."""
        return bool(self._waiting) or (self._lock is not None and self._lock.locked())

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for the generations in progress and in the queue to
        finish; True if they did."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while self.busy and loop.time() < end:
            await asyncio.sleep(0.05)
        return not self.busy

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ requests
    async def generate(self, prompt: Prompt, **params: Any) -> Reply:
        """Generate after prompt (text, chat messages or token ids); see the module."""
        await self.start()
        return await self._serve(self._request(prompt, **params), None)

    async def chat(self, messages: Sequence[Mapping[str, str]], **params: Any) -> Reply:
        """A reply to chat messages, in the drafter's chat template."""
        return await self.generate(list(messages), **params)

    def stream(self, prompt: Prompt, **params: Any) -> AsyncStream:
        """``async for chunk in edge.stream(...)``; the stream's ``reply`` is the result.
        Leaving the loop early (or cancelling) cancels the generation on the cloud."""
        return AsyncStream(self, prompt, params)

    def health(self) -> dict[str, Any]:
        """Ready, cloud connected or offline since when, the model, the queue."""
        link, d = self._link, self.drafter
        out: dict[str, Any] = {
            "ready": self._started,
            "model": d.name if d is not None else None,
            "queue": self._waiting,
            "cloud": "none" if not self.config.cloud else "offline",
            "offline_since": None,
        }
        if link is not None:
            out["cloud"] = "connected" if link.online else "offline"
            if link.offline_since is not None and not link.online:
                out["offline_since"] = _iso(link.offline_since)
                out["last_error"] = link.last_error
        if not self._started:
            out["status"] = "loading"
        elif out["cloud"] == "offline":
            out["status"] = f"degraded: offline since {out['offline_since'] or 'start'}"
        else:
            out["status"] = "ok"
        return out

    def _request(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        mode: str | None = None,
        fallback: str | None = None,
        scheme: str | None = None,
        k: int = 8,
        gamma: int = 4,
        depth: int = 3,
        deadline_s: float | None = None,
    ) -> _Request:
        assert self.drafter is not None
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        params = SamplingParams(temperature, top_k, top_p, min_p)
        name = self.config.mode if mode is None else mode
        if parse_mode(name) is None and not self.config.cloud:
            name = Mode.EDGE_ONLY.value  # no cloud configured: the drafter alone
        fb = fallback or self.config.fallback
        if fb not in FALLBACKS:
            raise ConfigError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fb!r}")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if not all(isinstance(s, str) for s in stops) or len(stops) > 4:
            raise ConfigError("stop must be a string or up to 4 strings")
        loop = asyncio.get_running_loop()
        if deadline_s is not None and not deadline_s > 0:
            raise ConfigError(f"deadline_s must be > 0 seconds, got {deadline_s!r}")
        return self._fits(
            _Request(
                prompt=self._tokens(prompt),
                sampling=Sampling.of(params, scheme, k),
                seed=secrets.randbits(64) if seed is None else seed,
                max_new=max_tokens,
                mode=parse_mode(name),
                fallback=fb,
                stop=stops,
                gamma=gamma,
                depth=depth,
                deadline=None if deadline_s is None else loop.time() + deadline_s,
            )
        )

    def _tokens(self, prompt: Prompt) -> list[int]:
        d = self.drafter
        assert d is not None
        if isinstance(prompt, str):
            tokens = d.tokenize(prompt)
        elif prompt and all(isinstance(m, Mapping) for m in prompt):
            tokens = d.chat(prompt)  # type: ignore[arg-type]
        elif prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            tokens = [int(t) for t in prompt]  # type: ignore[arg-type]
        else:
            raise ConfigError("a prompt is text, chat messages or token ids, and not empty")
        if not tokens:
            raise ConfigError("the prompt has no tokens")
        return tokens

    def _fits(self, req: _Request) -> _Request:
        assert self.drafter is not None
        if len(req.prompt) + req.max_new > self.drafter.n_ctx:
            raise ConfigError(
                f"{len(req.prompt)} prompt tokens + max_tokens {req.max_new} do not fit the "
                f"drafter's context of {self.drafter.n_ctx} tokens"
            )
        return req

    async def _serve(self, req: _Request, emit: Callable[[Chunk], None] | None) -> Reply:
        """Queue for the drafter (bounded), then generate."""
        assert self._lock is not None
        if self._waiting >= self.config.queue_size:
            self.metrics.requests.labels("queue_full").inc()
            raise QueueFull(f"{self._waiting} requests already wait for the drafter (queue_size)")
        self._waiting += 1
        self.metrics.queue_depth.set(self._waiting)
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
            self.metrics.queue_depth.set(self._waiting)
        try:
            reply = await self._generate(req, emit)
        except asyncio.CancelledError:
            self.metrics.requests.labels("cancelled").inc()
            raise
        except Exception:
            self.metrics.requests.labels("failed").inc()
            raise
        finally:
            self._lock.release()
        self.metrics.requests.labels(reply.finish_reason).inc()
        return reply

    # ------------------------------------------------------------------ one generation
    async def _generate(self, req: _Request, emit: Callable[[Chunk], None] | None) -> Reply:
        d, loop, link, m = self.drafter, asyncio.get_running_loop(), self._link, self.metrics
        assert d is not None
        t0 = time.perf_counter()
        committed: list[int] = []
        counts = {True: 0, False: 0}
        text, stopper = TextStream(d.piece, d.is_end), StopMatcher(req.stop)
        shown: list[str] = []
        tally = _Tally()
        first = [0.0]
        chosen = [req.mode.value if req.mode is not None else "auto"]  # the mode that ran

        def on_tokens(tokens: list[int], verified: bool) -> bool:
            committed.extend(tokens)
            counts[verified] += len(tokens)
            m.tokens.labels("verified" if verified else "local").inc(len(tokens))
            if not first[0]:
                first[0] = time.perf_counter() - t0
                m.ttft.observe(first[0])
            piece = stopper.feed(text.feed(tokens))
            shown.append(piece)
            if emit is not None:
                emit(Chunk(piece, tuple(tokens), verified))
            return stopper.matched

        def reply(finish: str) -> Reply:
            secs = time.perf_counter() - t0
            n = len(committed)
            return Reply(
                text="".join(shown),
                tokens=list(committed),
                finish_reason=finish,
                verified_tokens=counts[True],
                local_tokens=counts[False],
                mode=chosen[0],
                seed=req.seed,
                prompt_tokens=len(req.prompt),
                stats={
                    "tok_per_s": n / secs if secs else 0.0,
                    "ttft_ms": 1e3 * first[0],
                    "seconds": secs,
                    "acceptance": tally.accepted / tally.drafted if tally.drafted else 0.0,
                    "rounds": tally.rounds,
                    "bytes_up": tally.bytes_up,
                    "bytes_down": tally.bytes_down,
                    "fallback_s": tally.fallback_s,
                },
            )

        finish: str | None = None
        cloud_failed = False  # the cloud failed this generation: finish it locally
        while finish is None:
            left = req.max_new - len(committed)
            if left <= 0:
                finish = "length"
                break
            if req.deadline is not None and loop.time() >= req.deadline:
                finish = "deadline"
                break
            context = req.prompt + committed
            client = None
            if link is not None and req.mode is not Mode.EDGE_ONLY and not cloud_failed:
                client = link.client
            if client is not None:
                try:
                    res = await client.generate(
                        context, sampling=req.sampling, seed=req.seed, max_new_tokens=left,
                        mode=req.mode, gamma=req.gamma, depth=req.depth,
                        on_tokens=lambda t: on_tokens(t, True),
                        reply_timeout=self.config.offline_after_s, deadline=req.deadline,
                    )  # fmt: skip
                except GenerationError as e:
                    tally.add(e.result)
                    self._observe(e.result, m)
                    if e.code in REFUSED:
                        raise ReplyError(str(e), reply("error")) from e
                    if e.code is None:
                        link.lost(str(e))  # type: ignore[union-attr]
                    else:
                        cloud_failed = True  # the cloud is up but failed this generation
                    if req.fallback == "fail":
                        raise ReplyError(str(e), reply("error")) from e
                    continue
                except EdgeError as e:  # the link went down between the check and the start
                    link.lost(str(e))  # type: ignore[union-attr]
                    continue
                tally.add(res)
                self._observe(res, m)
                chosen[0] = res.mode
                finish = _FINISH.get(res.finished, "stop")
                continue
            local_only = req.mode is Mode.EDGE_ONLY or link is None or cloud_failed
            if not local_only and req.fallback == "fail":
                why = link.last_error if link is not None else "no cloud"
                raise ReplyError(f"the cloud is unreachable: {why}", reply("error"))
            if not local_only and req.fallback == "wait":
                wait = None if req.deadline is None else req.deadline - loop.time()
                if not await link.wait_online(wait):  # type: ignore[union-attr]
                    finish = "deadline"
                continue
            t_local = time.perf_counter()
            run = await generate_local(
                d, self._call, context, req.seed, req.sampling, left,
                lambda t: on_tokens(t, False),
                should_yield=None if local_only else (lambda: link is not None and link.online),
                deadline=req.deadline,
            )  # fmt: skip
            for step in run.steps:
                m.draft_step.observe(step)
            if req.mode is not Mode.EDGE_ONLY:
                spent = time.perf_counter() - t_local
                tally.fallback_s += spent
                m.fallback_seconds.inc(spent)
            finish = None if run.finished == "yielded" else _FINISH.get(run.finished, "stop")
        tail = stopper.feed(text.flush()) + stopper.flush()
        if tail:
            shown.append(tail)
            if emit is not None:
                emit(Chunk(tail, (), True))
        return reply(finish)

    @staticmethod
    def _observe(res: GenerationResult, m: EdgeMetrics) -> None:
        drafted = sum(n for _, n in res.blocks)
        m.drafted.inc(drafted)
        m.accepted.inc(sum(a for a, _ in res.blocks))
        if res.drafted:
            m.draft_step.observe(res.draft_ms / 1e3)


class AsyncStream:
    """The chunks of one generation, as they are committed; ``reply`` once done."""

    def __init__(self, edge: AsyncEdge, prompt: Prompt, params: dict[str, Any]) -> None:
        self._edge, self._prompt, self._params = edge, prompt, params
        self.reply: Reply | None = None

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        edge = self._edge
        await edge.start()
        req = edge._request(self._prompt, **self._params)
        chunks: asyncio.Queue[Chunk | None] = asyncio.Queue()
        task = asyncio.ensure_future(edge._serve(req, chunks.put_nowait))
        task.add_done_callback(lambda _: chunks.put_nowait(None))
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            self.reply = await task
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


class Edge:
    """The blocking edge: an ``AsyncEdge`` on an event loop of its own thread.

    Safe to call from several threads; generations queue for the drafter.
    """

    def __init__(self, config: EdgeConfig | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="picospec-edge", daemon=True
        )
        self._thread.start()
        self.aio = AsyncEdge(config, **options)
        try:
            self._run(self.aio.start())
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, path: str | Path, **options: Any) -> Edge:
        return cls(config_file.load(path), **options)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, prompt: Prompt, **params: Any) -> Reply:
        return self._run(self.aio.generate(prompt, **params))

    def chat(self, messages: Sequence[Mapping[str, str]], **params: Any) -> Reply:
        return self._run(self.aio.chat(messages, **params))

    def stream(self, prompt: Prompt, **params: Any) -> Iterator[Chunk]:
        """Chunks as they are committed; breaking out cancels the generation (the
        tokens committed so far are kept by the cloud's Cancel, never lost)."""
        out: queue.Queue[Chunk | BaseException | None] = queue.Queue()

        async def pump() -> None:
            try:
                async for chunk in self.aio.stream(prompt, **params):
                    out.put(chunk)
            except BaseException as e:  # handed to the caller's thread
                out.put(e)
                raise
            finally:
                out.put(None)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not future.done():
                self._loop.call_soon_threadsafe(future.cancel)
                with contextlib.suppress(BaseException):
                    future.result(30)

    def health(self) -> dict[str, Any]:
        return self._run(_now(self.aio.health))

    def close(self) -> None:
        if self._loop.is_running():
            with contextlib.suppress(BaseException):
                self._run(self.aio.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Edge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _now(fn: Callable[[], T]) -> T:
    return fn()


def _open_drafter(cfg: EdgeConfig) -> TextModel:
    from picospec.runtime.models import prepare

    from .drafter import Drafter

    path = cfg.drafter or str(prepare(cfg.pair)["drafter"])
    return Drafter.open(path, n_ctx=cfg.n_ctx, threads=cfg.threads or None,
                        gpu_layers=cfg.gpu_layers)  # fmt: skip


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
