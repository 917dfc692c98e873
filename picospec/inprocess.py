"""Generation with the edge and the cloud in one process (no network).

The reference loop the networked client is measured against: stop-and-wait
speculative decoding (``sync``) for every scheme, and the two baselines,
``edge-only`` (the drafter alone) and ``cloud-only`` (the target alone). Each
returns a ``Generation`` with the tokens, the text and the counters. The
loop encodes the DraftBlock and Verdict frames it would send, so its byte
counts are the real wire cost of each scheme (QUIC and TLS overhead aside).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from picospec.cloud.backend import Backend
from picospec.cloud.target import TargetSequence
from picospec.codec.errors import ConfigError
from picospec.codec.framing import encode_frame
from picospec.codec.messages import DraftBlock, Verdict
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import Q_ONE
from picospec.codec.verify import split_correction
from picospec.edge.drafter import Drafter

MODES = ("sync", "edge-only", "cloud-only")


@dataclass
class Generation:
    mode: str
    scheme: str
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
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
    """DraftBlock frames, edge to cloud."""
    bytes_down: int = 0
    """Verdict frames, cloud to edge."""

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


def _finish(gen: Generation, drafter: Drafter, max_new: int, t0: float) -> Generation:
    """Trim at max_new or just after the first end-of-generation token."""
    out = gen.token_ids[:max_new]
    for i, t in enumerate(out):
        if drafter.ctx.weights.is_end(t):
            out = out[: i + 1]
            break
    gen.token_ids = out
    gen.text = b"".join(
        drafter.ctx.weights.piece(t) for t in out if not drafter.ctx.weights.is_end(t)
    ).decode(errors="replace")
    gen.seconds = time.perf_counter() - t0
    return gen


def _done(gen: Generation, drafter: Drafter, max_new: int) -> bool:
    return len(gen.token_ids) >= max_new or any(
        drafter.ctx.weights.is_end(t) for t in gen.token_ids[-8:]
    )


def generate(
    drafter: Drafter,
    backend: Backend,
    prompt: list[int],
    *,
    mode: str = "sync",
    max_new_tokens: int = 64,
    seed: int = 0,
    gamma: int = 4,
    session: int = 1,
) -> Generation:
    """Generate up to max_new_tokens after prompt; drafter and backend share
    the sampling parameters and scheme held by the drafter."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if gamma < 1:
        raise ConfigError(f"gamma must be >= 1, got {gamma}")
    differs = drafter.ctx.weights.vocab_fingerprint.difference(backend.fingerprint())
    if differs:
        raise ConfigError(f"the drafter and the target have different vocabularies: {differs}")
    scheme = drafter.scheme
    gen = Generation(mode, scheme.value, len(prompt))
    t0 = time.perf_counter()

    if mode == "edge-only":
        drafter.begin(prompt, seed)
        gen.ttft_s = 0.0
        while not _done(gen, drafter, max_new_tokens):
            gen.token_ids.append(drafter.sample_own())
            gen.ttft_s = gen.ttft_s or time.perf_counter() - t0
        return _finish(gen, drafter, max_new_tokens, t0)

    backend.open(session)
    try:
        seq = TargetSequence(backend, session, drafter.params, scheme, seed, k=drafter.k)
        gen.token_ids.append(seq.prefill(prompt))
        gen.ttft_s = time.perf_counter() - t0
        if mode == "cloud-only":
            while not _done(gen, drafter, max_new_tokens):
                gen.token_ids.append(seq.decode_one())
        else:
            drafter.begin(prompt + gen.token_ids, seed)
            vocab = backend.vocab_size
            correction: int | None = None  # an edge-decided token the next block carries
            while not _done(gen, drafter, max_new_tokens):
                start = len(prompt) + len(gen.token_ids)
                n = min(gamma, max_new_tokens - len(gen.token_ids))
                drafts = drafter.draft(n)
                tokens = [d.token for d in drafts]
                block = DraftBlock(
                    session=session,
                    epoch=0,
                    start=start,
                    scheme=scheme,
                    bonus=True,
                    correction=correction,
                    tokens=tuple(tokens),
                    q=tuple(d.q for d in drafts) if scheme is Scheme.SPARSE_Q else (),
                    q_counts=tuple(int(d.q.prob(d.token) * Q_ONE) for d in drafts)
                    if scheme is Scheme.SPLIT
                    else (),
                )
                gen.bytes_up += len(encode_frame(block, vocab))
                if block.correction is not None:
                    seq.commit(block.correction)
                out = seq.verify(
                    start,
                    tokens,
                    q=block.q or None,
                    q_x=[c / Q_ONE for c in block.q_counts] or None,
                )
                gen.bytes_down += len(
                    encode_frame(
                        Verdict(
                            session=session,
                            epoch=0,
                            start=start,
                            accepted=out.accepted,
                            token=out.token,
                            target_forwards=1,
                            p=out.p_topk,
                            p_exact=out.p_exact,
                        ),
                        vocab,
                    )
                )
                a, token, correction = out.accepted, out.token, None
                if token is None:  # a split rejection: the edge samples the correction
                    token = correction = split_correction(
                        out.p_topk, drafts[a].q, seq.rand, start + a
                    )
                    gen.exact &= out.p_exact
                    gen.truncated_mass.append(out.truncated_mass)
                drafter.rollback(start + a)
                drafter.push(token)
                gen.token_ids += [*tokens[:a], token]
                gen.rounds += 1
                gen.drafted += n
                gen.accepted += a
                gen.accepted_at.append(a)
                gen.gamma_at.append(n)
        gen.target_forwards = seq.stats.forwards
    finally:
        backend.close(session)
    return _finish(gen, drafter, max_new_tokens, t0)
