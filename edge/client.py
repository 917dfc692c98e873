"""The edge client: asyncio glue between a QUIC channel, EdgeSession and the drafter.

One connection serves many generations (one at a time). Messages are applied
to the session only between drafted tokens, so the drafter is never rolled back
while it is drafting; each token is drafted on a worker thread, so verdicts are
read while the drafter works. ``edge-only`` generation needs no cloud at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from picospec.codec.errors import PicospecError
from picospec.codec.framing import FrameParser, encode_frame
from picospec.codec.messages import Bye, Error, Hello, Message, Welcome
from picospec.quic import Channel, ClientTLS, connect

from .drafter import Drafter, DraftToken
from .session import Committed, EdgeSession, Failed, Finished, Resume


def _timed(fn: Callable[..., object], *args: object) -> float:
    """Run fn(*args); the seconds it took."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


class EdgeError(PicospecError):
    """The cloud refused the edge, or the connection failed."""


@dataclass
class GenerationResult:
    """One generation, as ``picospec edge generate --json`` prints it."""

    text: str
    token_ids: list[int]
    n_tokens: int
    mode: str
    scheme: str
    seed: int
    exact: bool
    tok_per_s: float
    ttft_ms: float
    tpot_ms: float
    mean_accept_len: float
    """Tokens emitted per verified block (accepted drafts + correction or bonus)."""
    accept_rate: float
    rounds: int
    rollbacks: int
    bytes_up: int
    bytes_down: int
    target_forwards: int
    blocks: list[tuple[int, int]]
    """(accepted, drafted) per verified block."""
    finished: str
    """Why it stopped: "max tokens", "end of text", or the failure's message."""
    seconds: float = 0.0
    """From the request to the last committed token."""
    drafted: int = 0
    """Tokens drafted, those discarded unverified by a rollback included."""
    draft_ms: float = 0.0
    """Mean wall time of one drafter step as the edge loop waits for it."""
    drafter_prefill_ms: float = 0.0
    """The drafter's forward over the prompt (run while the cloud computes the first
    token, so it costs time only when it takes longer than that round trip)."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EdgeClient:
    def __init__(self, drafter: Drafter) -> None:
        self.drafter = drafter
        self._ch: Channel | None = None
        self._parser = FrameParser(vocab=drafter.vocab_size)
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="picospec-drafter")
        self._next_session = 1
        self.bytes_up = self.bytes_down = 0
        self.welcome: Welcome | None = None
        self.lost = ""

    async def connect(
        self,
        host: str,
        port: int,
        tls: ClientTLS,
        *,
        token: bytes,
        name: str = "picospec-edge",
        timeout: float = 30.0,
    ) -> Welcome:
        """Open the connection and do the handshake (vocabulary, params, scheme, token)."""
        d = self.drafter
        self._ch = await connect(host, port, tls)
        self._reader = asyncio.create_task(self._read())
        self._send(
            Hello(
                session=0,
                epoch=0,
                start=0,
                vocab_fingerprint=d.ctx.weights.vocab_fingerprint,
                params=d.params,
                scheme=d.scheme,
                k=d.k,
                auth_token=token,
                client_name=name,
            )
        )
        reply = await asyncio.wait_for(self._inbox.get(), timeout)
        if isinstance(reply, Welcome):
            self.welcome = reply
            return reply
        if isinstance(reply, Error):
            raise EdgeError(f"the cloud refused the handshake: {reply.message}")
        raise EdgeError(f"no handshake: {self.lost or 'unexpected reply'}")

    def _send(self, msg: Message) -> None:
        if self._ch is None:
            raise EdgeError("not connected")
        frame = encode_frame(msg, self.drafter.vocab_size)
        self.bytes_up += len(frame)
        self._ch.write(frame)

    async def _read(self) -> None:
        assert self._ch is not None
        try:
            while data := await self._ch.read():
                self.bytes_down += len(data)
                for msg in self._parser.feed(data):
                    self._inbox.put_nowait(msg)
            self.lost = self._ch.close_reason or "the cloud closed the connection"
        except PicospecError as e:
            self.lost = str(e)
        finally:
            self._inbox.put_nowait(None)  # wakes a waiting generation

    async def generate(
        self,
        prompt: list[int],
        *,
        seed: int = 0,
        max_new_tokens: int = 64,
        mode: str = "pipeline",
        gamma: int = 4,
        depth: int = 3,
        early_send: bool = False,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> GenerationResult:
        """Generate after prompt; tokens are passed to on_tokens as they are committed."""
        if mode == "edge-only":
            return await self._edge_only(prompt, seed, max_new_tokens, on_tokens)
        d, loop = self.drafter, asyncio.get_running_loop()
        sess = EdgeSession(
            self._next_session,
            tuple(prompt),
            seed=seed,
            max_new=max_new_tokens,
            scheme=d.scheme,
            is_end=d.ctx.weights.is_end,
            mode=mode,
            gamma=gamma,
            depth=depth,
            early_send=early_send,
        )
        self._next_session += 1
        up0, down0, t0 = self.bytes_up, self.bytes_down, time.perf_counter()
        ttft = 0.0
        forwards = 0
        finished = ""
        partial: list[DraftToken] = []
        drafting_since = 0.0
        steps: list[float] = []  # wall time of each drafter step
        self._send(sess.start_message())
        prefill = (
            None
            if mode == "cloud-only"  # the drafter evaluates the prompt while the cloud does
            else loop.run_in_executor(self._pool, _timed, d.prefill, list(prompt))
        )
        prefill_s = 0.0
        while not sess.done:
            waiting = sess.want() == 0
            while waiting or not self._inbox.empty():
                msg = await self._inbox.get()
                if msg is None:
                    self._inbox.put_nowait(None)  # keep later waits from hanging
                    events = sess.connection_lost(self.lost)
                elif msg.session != sess.session:
                    continue  # a late verdict of an earlier generation on this connection
                else:
                    forwards += getattr(msg, "target_forwards", 0)
                    events = sess.receive(msg, time.perf_counter())
                for ev in events:
                    if isinstance(ev, Committed):
                        if not ttft:
                            ttft = time.perf_counter() - t0
                            if prefill is not None:
                                prefill_s = await prefill
                                d.begin(list(prompt) + list(ev.tokens), seed)
                        if on_tokens:
                            on_tokens(list(ev.tokens))
                    elif isinstance(ev, Resume):
                        d.rollback(ev.position)
                        d.push(ev.token)
                        partial = []
                    elif isinstance(ev, (Finished, Failed)):
                        finished = ev.reason if isinstance(ev, Finished) else ev.message
                waiting = not sess.done and sess.want() == 0
            n = sess.want()
            if sess.done or n == 0:
                continue
            if not partial:
                drafting_since = time.perf_counter()
            t_step = time.perf_counter()
            partial += await loop.run_in_executor(self._pool, d.draft, 1)
            steps.append(time.perf_counter() - t_step)
            elapsed = time.perf_counter() - drafting_since
            if len(partial) >= n or sess.send_early(len(partial), elapsed):
                self._send(sess.block(partial, time.perf_counter()))
                partial = []
        if not self.lost:
            self._send(Bye(session=sess.session, epoch=sess.epoch, start=sess.committed_end))
        return self._result(
            sess, mode, seed, t0, ttft, up0, down0, forwards, finished, steps, prefill_s
        )

    def _result(
        self,
        sess: EdgeSession,
        mode: str,
        seed: int,
        t0: float,
        ttft: float,
        up0: int,
        down0: int,
        forwards: int,
        finished: str,
        steps: list[float],
        prefill_s: float,
    ) -> GenerationResult:
        secs = time.perf_counter() - t0
        n = len(sess.generated)
        st = sess.stats
        step = sum(steps) / len(steps) if steps else 0.0
        return GenerationResult(
            text=self.text(sess.generated),
            token_ids=list(sess.generated),
            n_tokens=n,
            mode=mode,
            scheme=sess.scheme.value,
            seed=seed,
            exact=sess.exact,
            tok_per_s=n / secs if secs else 0.0,
            ttft_ms=1e3 * ttft,
            tpot_ms=1e3 * (secs - ttft) / (n - 1) if n > 1 else 0.0,
            mean_accept_len=st.emitted / st.rounds if st.rounds else 0.0,
            accept_rate=st.accepted / st.drafted if st.drafted else 0.0,
            rounds=st.rounds,
            rollbacks=st.rollbacks,
            bytes_up=self.bytes_up - up0,
            bytes_down=self.bytes_down - down0,
            target_forwards=forwards,
            blocks=list(st.blocks),
            finished=finished,
            seconds=secs,
            drafted=len(steps),
            draft_ms=1e3 * step,
            drafter_prefill_ms=1e3 * prefill_s,
        )

    def text(self, tokens: list[int]) -> str:
        """The text of tokens (end-of-generation tokens left out)."""
        w = self.drafter.ctx.weights
        return b"".join(w.piece(t) for t in tokens if not w.is_end(t)).decode(errors="replace")

    async def _edge_only(
        self,
        prompt: list[int],
        seed: int,
        max_new: int,
        on_tokens: Callable[[list[int]], None] | None,
    ) -> GenerationResult:
        d, loop = self.drafter, asyncio.get_running_loop()
        sess = EdgeSession(
            0,
            tuple(prompt),
            seed=seed,
            max_new=max_new,
            scheme=d.scheme,
            is_end=d.ctx.weights.is_end,
        )
        t0, ttft = time.perf_counter(), 0.0
        prefill_s = await loop.run_in_executor(self._pool, _timed, d.begin, list(prompt), seed)
        finished = ""
        steps: list[float] = []
        while not sess.done:
            t_step = time.perf_counter()
            token = await loop.run_in_executor(self._pool, d.sample_own)
            steps.append(time.perf_counter() - t_step)
            ttft = ttft or time.perf_counter() - t0
            for ev in sess.commit([token]):
                if isinstance(ev, Committed) and on_tokens:
                    on_tokens(list(ev.tokens))
                elif isinstance(ev, Finished):
                    finished = ev.reason
        return self._result(
            sess,
            "edge-only",
            seed,
            t0,
            ttft,
            self.bytes_up,
            self.bytes_down,
            0,
            finished,
            steps,
            prefill_s,
        )

    async def close(self) -> None:
        if self._ch is not None and not self._ch.closed:
            await self._ch.close("bye")
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._pool.shutdown(wait=False)
