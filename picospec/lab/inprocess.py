"""Generation with the edge and the cloud in one process (no network).

The real ``EdgeSession`` and ``CloudSession`` back to back, driven by a loop
that delivers every message at once: the edge drafts whatever its session asks
for (up to ``depth`` blocks in ``pipeline``), then the cloud works through what
arrived, one unit at a time, and each of its messages goes straight to the
edge. Every message is encoded as the frame it would be, so the byte counts are
the real wire cost of each scheme (QUIC and TLS overhead aside). The tokens are
those of the networked client for the same seed; the timings are not (drafting
and verifying never overlap here).

Modes: ``sync``, ``pipeline``, ``cloud-only`` and ``edge-only`` (the drafter
alone, no cloud session).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from picospec.cloud.backend import Backend
from picospec.cloud.limits import Limits
from picospec.cloud.session import CloudSession
from picospec.codec.errors import ConfigError
from picospec.codec.framing import encode_frame
from picospec.codec.messages import MAX_BLOCK, DraftBlock, Hello, Message, Verdict, Welcome
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode
from picospec.edge.model import DraftModel
from picospec.edge.session import Committed, EdgeSession, Event, Failed, Finished, Resume
from picospec.edge.text import detokenize

MAX_STEPS = 1_000_000
"""Loop iterations before a generation that makes no progress is an error."""


@dataclass
class Generation:
    mode: str
    scheme: str
    prompt_tokens: int
    seed: int = 0
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finished: str = ""
    seconds: float = 0.0
    ttft_s: float = 0.0
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    accepted_at: list[int] = field(default_factory=list)
    """Per round: how many drafted tokens were accepted."""
    gamma_at: list[int] = field(default_factory=list)
    """Per round: how many tokens were drafted."""
    target_forwards: int = 0
    exact: bool = True
    truncated_mass: list[float] = field(default_factory=list)
    """``split``, per rejection: the probability of p left out of the top-K that
    travelled (0 when p's support fitted in K and the correction was exact)."""
    bytes_up: int = 0
    """Start, DraftBlock and Bye frames, edge to cloud."""
    bytes_down: int = 0
    """Verdict frames (and the cloud's Bye), cloud to edge."""
    sent: list[tuple[int, int, int]] = field(default_factory=list)
    """(epoch, start, drafted) of every DraftBlock, in the order sent."""
    verdicts: list[tuple[int, int, int]] = field(default_factory=list)
    """(epoch, start, accepted) of every Verdict on a block, in the order received."""

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tok_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else 0.0

    @property
    def mean_accept_len(self) -> float:
        """Tokens emitted per verify round: accepted drafts plus the one
        correction or bonus token (so 1.0 means every draft was rejected)."""
        return (self.accepted + self.rounds) / self.rounds if self.rounds else 0.0

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def generate(
    drafter: DraftModel,
    backend: Backend,
    prompt: list[int],
    *,
    mode: Mode | str = Mode.SYNC,
    sampling: Sampling | None = None,
    max_new_tokens: int = 64,
    seed: int = 0,
    gamma: int = 4,
    depth: int = 3,
    session: int = 1,
) -> Generation:
    """Generate up to max_new_tokens after prompt through both sessions."""
    mode = Mode.parse(mode)
    sampling = sampling or Sampling.of(SamplingParams(temperature=0.0))
    differs = drafter.fingerprint().difference(backend.fingerprint())
    if differs:
        raise ConfigError(f"the drafter and the target have different vocabularies: {differs}")
    edge = EdgeSession(
        session,
        tuple(prompt),
        seed=seed,
        max_new=max_new_tokens,
        sampling=sampling,
        is_end=drafter.is_end,
        mode=mode,
        gamma=gamma,
        depth=depth,
    )
    gen = Generation(mode.value, sampling.scheme.value, len(prompt), seed)
    t0 = time.perf_counter()
    if mode is Mode.EDGE_ONLY:
        drafter.begin(list(prompt), seed, sampling)
        while not edge.done:
            _record(gen, edge.commit([drafter.sample_own()]), t0)
    else:
        _run(edge, drafter, backend, gen, t0)
    st = edge.stats
    gen.token_ids = list(edge.generated)
    gen.text = detokenize(drafter.piece, drafter.is_end, gen.token_ids)
    gen.seconds = time.perf_counter() - t0
    gen.rounds, gen.drafted, gen.accepted = st.rounds, st.drafted, st.accepted
    gen.accepted_at = [a for a, _ in st.blocks]
    gen.gamma_at = [n for _, n in st.blocks]
    gen.target_forwards = st.target_forwards
    gen.exact = edge.exact
    if gen.finished not in ("max tokens", "end of text"):
        raise ConfigError(f"the in-process generation failed: {gen.finished}")
    return gen


def _run(
    edge: EdgeSession, drafter: DraftModel, backend: Backend, gen: Generation, t0: float
) -> None:
    vocab = backend.vocab_size
    room = len(edge.prompt) + edge.max_new
    limits = Limits(
        max_new_tokens=edge.max_new,
        max_depth=max(edge.depth, 1),
        max_block=min(MAX_BLOCK, max(edge.gamma, 1)),
        max_k=edge.sampling.k,
        max_prompt_tokens=min(backend.max_context - 1, room),
    )
    cloud = CloudSession(backend, limits=limits)
    hello = Hello(session=0, epoch=0, start=0, vocab_fingerprint=drafter.fingerprint())
    reply = cloud.receive(hello)
    if not (reply and isinstance(reply[0], Welcome)):
        raise ConfigError(f"the cloud session refused the handshake: {reply}")
    up: deque[Message] = deque([edge.start_message()])
    down: deque[Message] = deque()
    begun = False
    try:
        for _ in range(MAX_STEPS):
            while up:
                msg = up.popleft()
                gen.bytes_up += len(encode_frame(msg, vocab))
                if isinstance(msg, DraftBlock):
                    gen.sent.append((msg.epoch, msg.start, len(msg.tokens)))
                down += cloud.receive(msg)
            if edge.done:
                break
            if begun and (n := edge.want()):
                up.append(edge.block(drafter.draft(n), 0.0))
            elif down:
                msg = down.popleft()
                gen.bytes_down += len(encode_frame(msg, vocab))
                if isinstance(msg, Verdict) and edge.in_flight and msg.epoch == edge.epoch:
                    gen.verdicts.append((msg.epoch, msg.start, msg.accepted))
                    if msg.p is not None:
                        gen.truncated_mass.append(max(0.0, 1.0 - msg.p.mass))
                events = edge.receive(msg, 0.0)
                for ev in events:
                    if isinstance(ev, Committed) and not begun:
                        drafter.begin(list(edge.prompt) + list(ev.tokens), edge.seed, edge.sampling)
                        begun = edge.mode.speculative
                    elif isinstance(ev, Resume):
                        drafter.rollback(ev.position)
                        drafter.push(ev.token)
                _record(gen, events, t0)
            elif cloud.has_work:
                down += cloud.step()
            else:
                raise ConfigError("the in-process generation stalled: nobody has work")
        else:
            raise ConfigError(f"the in-process generation made no end in {MAX_STEPS} steps")
    finally:
        if not edge.closed_by_cloud:
            cloud.receive(edge.bye())
        cloud.close()


def _record(gen: Generation, events: list[Event], t0: float) -> None:
    for ev in events:
        if isinstance(ev, Committed) and not gen.ttft_s:
            gen.ttft_s = time.perf_counter() - t0
        elif isinstance(ev, Finished):
            gen.finished = ev.reason
        elif isinstance(ev, Failed):
            gen.finished = ev.message
