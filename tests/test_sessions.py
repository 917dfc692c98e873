"""Edge and cloud sessions back to back, without sockets or models.

The target and the drafter are Markov chains (tests/markov.py). A tiny
scheduler delivers messages in a scripted or seeded random order, so
pipelining, stale verdicts, rollbacks and timing independence are checked
deterministically; the cloud session's limits and failures are checked on
their own.
"""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest
from markov import MarkovBackend, MarkovDrafter, V, markov_fingerprint, sampling

from picospec.cloud.limits import GenerationBudget, Limits
from picospec.cloud.session import CloudSession
from picospec.codec.draft import DraftToken
from picospec.codec.errors import ConfigError
from picospec.codec.messages import (
    Bye,
    Cancel,
    DraftBlock,
    Error,
    ErrorCode,
    Hello,
    Message,
    Start,
    Verdict,
    Welcome,
)
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode, Scheme
from picospec.codec.sparse import SparseDist
from picospec.edge.session import (
    Committed,
    EdgeSession,
    Failed,
    Finished,
    LimitError,
    Resume,
    fit,
)

GREEDY = sampling(Scheme.GREEDY, 0.0)


def hello(token: bytes = b"tok", vocab: int = V) -> Hello:
    """The handshake an edge with the Markov vocabulary sends."""
    return Hello(
        session=0, epoch=0, start=0, vocab_fingerprint=markov_fingerprint(vocab), auth_token=token
    )


def cloud_for(backend: MarkovBackend, **limits: int) -> CloudSession:
    cloud = CloudSession(backend, token=b"tok", limits=Limits(**limits))
    (welcome,) = cloud.receive(hello())
    assert isinstance(welcome, Welcome)
    return cloud


def edge_session(
    samp: Sampling = GREEDY, *, session: int = 1, prompt=(0, 1), max_new: int = 24, **kw
) -> EdgeSession:
    return EdgeSession(
        session, tuple(prompt), seed=kw.pop("seed", 0), max_new=max_new, sampling=samp,
        is_end=lambda tok: False, **kw,
    )  # fmt: skip


def start(session: int = 1, prompt=(0, 1), max_new: int = 8, samp: Sampling = GREEDY, **kw):
    return Start(
        session=session,
        epoch=0,
        start=len(prompt),
        seed=kw.pop("seed", 0),
        max_new_tokens=max_new,
        mode=kw.pop("mode", Mode.PIPELINE),
        scheme=samp.scheme,
        params=samp.params,
        k=kw.pop("k", samp.k),
        allow_inexact=samp.allow_inexact,
        prompt=tuple(prompt),
    )


def run(
    scheme=Scheme.SPARSE_Q,
    t=1.0,
    *,
    mode="pipeline",
    depth=3,
    gamma=3,
    seed=0,
    max_new=24,
    shuffle: int | None = None,
    drafter_table=None,
    backend: MarkovBackend | None = None,
):
    """Generate through both sessions; returns (edge session, cloud backend, events)."""
    backend = backend or MarkovBackend()
    cloud = cloud_for(backend)
    samp = sampling(scheme, t)
    edge = edge_session(samp, seed=seed, max_new=max_new, mode=mode, gamma=gamma, depth=depth)
    drafter = MarkovDrafter(backend.table if drafter_table is None else drafter_table)
    up: list[Message] = [edge.start_message()]
    down: list[Message] = []
    events: list = []
    order = random.Random(shuffle)
    now = 0.0
    for _ in range(10_000):
        now += 0.001
        # The edge drafts whenever the session asks for a block.
        if not edge.done and (n := edge.want()):
            up.append(edge.block(drafter.draft(n), now))
        # Deliver in a seeded random interleaving (or in order).
        choices = [c for c, q in (("up", up), ("down", down), ("step", cloud.has_work)) if q]
        if not choices:
            break
        what = order.choice(choices) if shuffle is not None else choices[0]
        if what == "up":
            down += cloud.receive(up.pop(0))
        elif what == "step":
            down += cloud.step()
        else:
            for ev in edge.receive(down.pop(0), now):
                events.append(ev)
                if isinstance(ev, Committed) and not drafter.tokens:
                    drafter.begin([*edge.prompt, *ev.tokens], seed, samp)
                elif isinstance(ev, Resume):
                    drafter.rollback(ev.position)
                    drafter.push(ev.token)
        if edge.done and not down:
            break
    return edge, backend, events


def greedy_target_tokens(n: int) -> list[int]:
    table, out, prev = MarkovBackend().table, [], 1
    for _ in range(n):
        prev = int(np.argmax(table[prev]))
        out.append(prev)
    return out


# --- pipelining --------------------------------------------------------------------


def test_all_blocks_accepted_with_depth_three():
    edge, _, events = run(Scheme.GREEDY, 0.0, depth=3, max_new=20)
    assert edge.generated == greedy_target_tokens(20)
    assert edge.stats.rollbacks == 0 and edge.stats.accepted == edge.stats.drafted
    assert isinstance(events[-1], Finished)


def test_sync_drafts_after_the_bonus_token():
    """Stop-and-wait with a perfect drafter: every block is accepted whole, because
    the drafter is handed each bonus token before it drafts the next block."""
    edge, _, events = run(Scheme.GREEDY, 0.0, mode="sync", gamma=3, max_new=20)
    assert edge.generated == greedy_target_tokens(20)
    assert edge.stats.blocks == [(3, 3)] * 5  # 5 blocks of 3 drafts + 4 bonus tokens
    assert edge.stats.rollbacks == 0
    bonus_positions = [e.position for e in events if isinstance(e, Resume)]
    assert bonus_positions == [2 + 1 + 3, 2 + 1 + 7, 2 + 1 + 11, 2 + 1 + 15]


def test_no_block_asks_for_a_bonus_that_cannot_be_kept():
    """The pipeline verifies the next position with the next block, never a bonus;
    sync asks for one only while a generated token is still left for it."""
    pipe = edge_session(max_new=7, mode="pipeline", gamma=3)
    pipe.receive(Verdict(session=1, epoch=0, start=2, accepted=0, token=4, target_forwards=1), 0)
    blocks = [pipe.block([DraftToken(1, None)] * pipe.want(), 0.0) for _ in range(2)]
    assert [len(b.tokens) for b in blocks] == [3, 3] and not any(b.bonus for b in blocks)
    sync = edge_session(max_new=4, mode="sync", gamma=3)
    sync.receive(Verdict(session=1, epoch=0, start=2, accepted=0, token=4, target_forwards=1), 0)
    last = sync.block([DraftToken(1, None)] * 3, 0.0)  # fills the generation exactly
    assert not last.bonus
    sync2 = edge_session(max_new=5, mode="sync", gamma=3)
    sync2.receive(Verdict(session=1, epoch=0, start=2, accepted=0, token=4, target_forwards=1), 0)
    assert sync2.block([DraftToken(1, None)] * 3, 0.0).bonus  # one token left for the bonus


def test_reject_at_first_position_resumes_from_the_correction():
    wrong = np.roll(MarkovBackend().table, 1, axis=1)  # the drafter's argmax is never right
    edge, _, events = run(Scheme.GREEDY, 0.0, depth=2, max_new=6, drafter_table=wrong)
    assert edge.generated == greedy_target_tokens(6)
    resumes = [e for e in events if isinstance(e, Resume)]
    assert resumes and resumes[0].position == 3  # prompt (2) + the prefill's token
    # every round rejects; the last rejection finishes the generation instead of resuming
    assert edge.stats.accepted == 0 and edge.epoch == edge.stats.rollbacks == len(resumes) + 1


def test_verdict_from_a_rolled_back_epoch_is_dropped():
    edge = edge_session(prompt=(0,), max_new=8)
    edge.receive(Verdict(session=1, epoch=0, start=1, accepted=0, token=2, target_forwards=1), 0)
    d = [DraftToken(3, None), DraftToken(3, None)]
    edge.block(d, 0.0)  # block 1 at positions 2..3
    edge.block(d, 0.0)  # block 2 at positions 4..5
    first = Verdict(session=1, epoch=0, start=2, accepted=0, token=5, target_forwards=1)
    assert edge.voids(first)
    edge.receive(first, 0)
    assert edge.epoch == 1
    late = Verdict(session=1, epoch=0, start=4, accepted=2, token=None, target_forwards=1)
    assert not edge.voids(late) and edge.receive(late, 0.1) == []
    assert edge.stats.stale_dropped == 1 and edge.generated == [2, 5]


def test_rejection_while_the_cloud_precomputes_keeps_kv_consistent():
    wrong = np.roll(MarkovBackend().table, 1, axis=1)
    _, backend, _ = run(Scheme.GREEDY, 0.0, depth=3, max_new=8, drafter_table=wrong, shuffle=5)
    # MarkovBackend asserts every forward continues the KV exactly; after each
    # rejection the correction is evaluated alone (fast verify) before the next block.
    sizes = [n for _, n in backend.forwards[1:]]
    assert 1 in sizes


def test_connection_lost_keeps_committed_tokens_and_says_so():
    edge = edge_session(prompt=(0,), max_new=8)
    edge.receive(Verdict(session=1, epoch=0, start=1, accepted=0, token=2, target_forwards=1), 0)
    edge.block([DraftToken(3, None)], 0.0)
    (event,) = edge.connection_lost("idle timeout")
    assert isinstance(event, Failed) and "after 1 committed tokens: idle timeout" in event.message
    assert edge.generated == [2]


@pytest.mark.parametrize("scheme", [Scheme.SPARSE_Q, Scheme.SPLIT, Scheme.GUMBEL])
def test_tokens_do_not_depend_on_timing_or_depth(scheme):
    drafter = np.random.default_rng(9).normal(size=(V, V)).astype(np.float32)
    runs = [
        run(scheme, 1.0, depth=d, shuffle=s, seed=3, drafter_table=drafter)[0].generated
        for d, s in ((1, None), (3, None), (3, 1), (2, 2), (3, 7))
    ]
    assert all(r == runs[0] for r in runs) and len(runs[0]) == 24


def test_gumbel_pipeline_sync_and_cloud_only_agree():
    drafter = np.random.default_rng(4).normal(size=(V, V)).astype(np.float32)
    pipe = run(Scheme.GUMBEL, 1.0, seed=11, drafter_table=drafter)[0].generated
    sync = run(Scheme.GUMBEL, 1.0, seed=11, mode="sync", drafter_table=drafter)[0].generated
    cloud = run(Scheme.GUMBEL, 1.0, seed=11, mode="cloud-only")[0].generated
    assert pipe == sync == cloud


def test_a_split_distribution_for_a_fully_accepted_block_fails_clearly():
    edge = edge_session(sampling(Scheme.SPLIT), prompt=(0,), max_new=8)
    edge.receive(Verdict(session=1, epoch=0, start=1, accepted=0, token=2, target_forwards=1), 0)
    q = SparseDist.from_counts(np.array([3]), np.array([65536]))
    edge.block([DraftToken(3, q)], 0.0)
    p = SparseDist(np.array([1]), np.array([1.0]))
    bad = Verdict(session=1, epoch=0, start=2, accepted=1, token=None, target_forwards=1, p=p)
    (event,) = edge.receive(bad, 0.0)
    assert isinstance(event, Failed) and "fully accepted" in event.message


def test_early_send_only_when_the_cloud_would_idle_and_drafting_is_slow():
    def session(early):
        s = edge_session(prompt=(0,), max_new=32, early_send=early)
        s.receive(Verdict(session=1, epoch=0, start=1, accepted=0, token=2, target_forwards=1), 0)
        s.block([DraftToken(3, None)], now=0.0)
        v = Verdict(session=1, epoch=0, start=2, accepted=1, token=None, target_forwards=1)
        s.receive(v, now=0.05)  # that round trip took 50 ms
        return s

    s = session(early=True)
    assert not s.send_early(1, drafting_s=0.01)  # drafting is still faster than a round trip
    assert s.send_early(1, drafting_s=0.08)  # the cloud has idled longer than a round trip
    assert not session(early=False).send_early(1, drafting_s=0.08)
    s.block([DraftToken(4, None)], now=0.1)
    assert not s.send_early(1, drafting_s=0.08)  # a block is in flight: the cloud is busy


def test_first_gamma_shortens_the_first_block_and_the_first_after_each_rejection():
    s = edge_session(prompt=(0,), max_new=40, gamma=4, depth=3, first_gamma=1)
    s.receive(Verdict(session=1, epoch=0, start=1, accepted=0, token=2, target_forwards=1), 0)
    assert s.want() == 1  # the generation's first block
    s.block([DraftToken(3, None)], now=0.0)
    assert s.want() == 4  # then whole blocks, while the chain holds
    s.block([DraftToken(t, None) for t in (4, 5, 6, 7)], now=0.0)
    v = Verdict(session=1, epoch=0, start=2, accepted=1, token=None, target_forwards=1)
    s.receive(v, now=0.01)  # the first block was accepted: no rejection, no short block
    assert s.want() == 4
    v = Verdict(session=1, epoch=0, start=3, accepted=2, token=9, target_forwards=1)
    assert Resume(5, 9) in s.receive(v, now=0.02)  # a rejection
    assert s.want() == 1
    assert edge_session(prompt=(0,), gamma=4).first_gamma == 0  # off by default
    with pytest.raises(ConfigError, match=r"first_gamma must be in 0\.\.64"):
        edge_session(prompt=(0,), first_gamma=65)


# --- per-generation sampling -------------------------------------------------------


def test_one_connection_serves_greedy_sparse_q_and_gumbel_back_to_back():
    """Sampling travels in each Start: the same cloud session serves each
    generation with its own parameters, and each keeps its contract."""
    backend = MarkovBackend()
    drafts = np.random.default_rng(2).normal(size=(V, V)).astype(np.float32)

    def through(cloud, samp, mode, seed, sid):
        edge = edge_session(samp, session=sid, seed=seed, max_new=16, mode=mode)
        drafter = MarkovDrafter(drafts)
        pending = list(cloud.receive(edge.start_message()))
        while not edge.done:
            while pending and not edge.done:
                for ev in edge.receive(pending.pop(0), 0.0):
                    if isinstance(ev, Committed) and not drafter.tokens:
                        drafter.begin([*edge.prompt, *ev.tokens], seed, samp)
                    elif isinstance(ev, Resume):
                        drafter.rollback(ev.position)
                        drafter.push(ev.token)
            if (n := edge.want()) and not edge.done:
                pending += cloud.receive(edge.block(drafter.draft(n), 0.0))
            elif not edge.done:
                pending += cloud.step()
        cloud.receive(edge.bye())
        return edge.generated

    cloud = cloud_for(backend)
    greedy = through(cloud, GREEDY, "pipeline", 0, 1)
    warm = sampling(Scheme.SPARSE_Q, 0.7, k=V)
    first = through(cloud, warm, "pipeline", 5, 2)
    gumbel = sampling(Scheme.GUMBEL, 1.0)
    gum = through(cloud, gumbel, "pipeline", 9, 3)
    again = through(cloud, warm, "sync", 5, 4)
    alone = through(cloud_for(backend), GREEDY, "cloud-only", 0, 1)
    gum_alone = through(cloud_for(backend), gumbel, "cloud-only", 9, 1)
    assert greedy == alone  # greedy: the cloud-only tokens
    assert first == again  # a seed repeats, whatever the mode
    assert gum == gum_alone  # gumbel: the cloud-only tokens for the seed
    assert cloud.generations == 0 and not backend.kv  # every generation was freed


# --- the cloud's limits and failures -------------------------------------------------


def refusal(cloud: CloudSession, msg: Message) -> Error:
    (err,) = cloud.receive(msg)
    assert isinstance(err, Error), err
    assert not cloud.closed  # a refused request never ends the connection
    return err


def test_a_start_over_an_announced_limit_is_refused_by_name():
    backend = MarkovBackend(max_context=64)
    cloud = cloud_for(backend, max_new_tokens=32, max_k=8, max_prompt_tokens=40)
    err = refusal(cloud, start(prompt=[0] * 41))
    assert err.code is ErrorCode.LIMIT and "max_prompt_tokens (40)" in err.message
    err = refusal(cloud, start(max_new=33))
    assert err.code is ErrorCode.LIMIT and "outside 1..32" in err.message
    err = refusal(cloud, start(prompt=[0] * 40, max_new=30))
    assert err.code is ErrorCode.LIMIT and "context of 64" in err.message
    err = refusal(cloud, start(k=9))
    assert err.code is ErrorCode.LIMIT and "max_k (8)" in err.message
    wide = Sampling(SamplingParams(temperature=1.0), Scheme.SPLIT, 4, allow_inexact=True)
    strict = start(samp=wide)
    err = refusal(cloud, Start(**{**strict.__dict__, "allow_inexact": False}))
    assert err.code is ErrorCode.PARAMS and "split is exact only" in err.message
    err = refusal(cloud, start(mode=Mode.EDGE_ONLY))
    assert err.code is ErrorCode.PARAMS
    assert cloud.refusals[ErrorCode.LIMIT] == 4 and cloud.refusals[ErrorCode.PARAMS] == 2
    assert cloud.receive(start()) == [] and cloud.has_work  # a request that fits is taken


def test_generations_are_limited_per_connection_and_in_total():
    backend = MarkovBackend()
    budget = GenerationBudget(3)
    limits = Limits(max_generations_per_connection=2, max_generations=3)
    a = CloudSession(backend, token=b"tok", limits=limits, budget=budget)
    b = CloudSession(backend, token=b"tok", limits=limits, budget=budget)
    for cloud in (a, b):
        cloud.receive(hello())
    assert a.receive(start(1)) == [] and a.receive(start(2)) == []
    err = refusal(a, start(3))
    assert err.code is ErrorCode.BUSY and "on this connection" in err.message
    assert b.receive(start(1)) == []
    err = refusal(b, start(2))
    assert err.code is ErrorCode.BUSY and "the server runs 3 generations" in err.message
    a.receive(Bye(session=1, epoch=0, start=2))  # one ends: its place is free again
    assert b.receive(start(2)) == []


def test_cancel_frees_the_generation_and_answers_with_a_bye():
    backend = MarkovBackend()
    cloud = cloud_for(backend)
    cloud.receive(start(1))
    cloud.step()  # opens it and prefills
    assert list(backend.kv) != []
    (bye,) = cloud.receive(Cancel(session=1, epoch=0, start=3, reason="deadline"))
    assert isinstance(bye, Bye) and bye.reason == "cancelled"
    assert not backend.kv and cloud.generations == 0
    late = DraftBlock(session=1, epoch=0, start=3, scheme=Scheme.GREEDY, bonus=False, tokens=(1,))
    assert cloud.receive(late) == []  # a block that crossed the Cancel is dropped quietly


class Exploding(MarkovBackend):
    """A target whose transform fails for one session (a bug, a CUDA OOM)."""

    def __init__(self, bad_session: int) -> None:
        super().__init__()
        self.bad, self.current = bad_session, -1

    def forward(self, session, start, tokens, n_out=None):
        self.current = session
        return super().forward(session, start, tokens, n_out)

    def distributions(self, logits, params):
        if self.current == self.bad:
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().distributions(logits, params)


def test_an_exception_in_model_work_ends_only_that_generation_and_names_it():
    backend = Exploding(bad_session=2)
    cloud = CloudSession(backend, token=b"tok", backend_ids=iter(range(1, 100)))
    cloud.receive(hello())
    cloud.receive(start(1))  # backend session 1
    cloud.receive(start(2, max_new=4))  # backend session 2: its model work raises
    out: list[Message] = []
    while cloud.has_work:
        out += cloud.step()
    errors = [m for m in out if isinstance(m, Error)]
    assert [(e.session, e.code) for e in errors] == [(2, ErrorCode.INTERNAL)]
    assert "RuntimeError: CUDA out of memory (simulated)" in errors[0].message
    (failure,) = cloud.failures
    assert failure[0] == 2 and isinstance(failure[1], RuntimeError)
    assert any(isinstance(m, Verdict) and m.session == 1 for m in out)  # the other goes on
    assert not cloud.closed and cloud.generations == 1


def test_a_long_prompt_is_chunked_so_another_generations_work_interleaves():
    backend = MarkovBackend()
    cloud = cloud_for(backend, prefill_chunk=8)
    cloud.receive(start(1, prompt=[0] * 40, max_new=4))
    cloud.receive(start(2, prompt=[1, 2], max_new=4))
    order = []
    while cloud.has_work and len(order) < 20:
        before = len(backend.forwards)
        cloud.step()
        order += [n for _, n in backend.forwards[before:]]
    # generation 1's 40-token prompt went in chunks of 8, and generation 2's prompt
    # was evaluated before generation 1's last chunk
    assert order[:3] == [8, 2, 8]


def test_the_cloud_ends_a_finished_generation_itself():
    backend = MarkovBackend()
    cloud = cloud_for(backend)
    cloud.receive(start(1, max_new=1, mode=Mode.CLOUD_ONLY))
    verdict, bye = cloud.step()
    assert isinstance(verdict, Verdict) and isinstance(bye, Bye)
    assert cloud.generations == 0 and not backend.kv


def test_wrong_token_or_a_second_hello_closes_the_connection():
    cloud = CloudSession(MarkovBackend(), token=b"tok")
    (err,) = cloud.receive(hello(token=b"bad"))
    assert err.code.name == "AUTH" and cloud.closed
    cloud = cloud_for(MarkovBackend())
    (err,) = cloud.receive(hello())
    assert err.code is ErrorCode.PROTOCOL and "second Hello" in err.message and cloud.closed


def test_two_connections_may_both_number_their_generation_one():
    """Edges number their own generations; the backend must keep them apart."""
    backend = MarkovBackend()
    ids = iter(range(100, 200))
    clouds = [CloudSession(backend, token=b"tok", backend_ids=ids) for _ in range(2)]
    edges = [edge_session(max_new=4) for _ in range(2)]
    for cloud, edge in zip(clouds, edges, strict=True):
        cloud.receive(hello())
        assert cloud.receive(edge.start_message()) == []
    firsts = [cloud.step() for cloud in clouds]
    assert sorted(backend.kv) == [100, 101]
    assert [type(m).__name__ for out in firsts for m in out] == ["Verdict", "Verdict"]
    assert firsts[0][0].session == firsts[1][0].session == 1
    clouds[0].close()
    assert sorted(backend.kv) == [101]  # closing one connection frees only its generation


# --- the edge obeys the Welcome --------------------------------------------------------


def welcome(**kw: int) -> Welcome:
    fields = dict(
        max_block=4, max_depth=2, max_k=8, max_prompt_tokens=100, max_new_tokens=50,
        context_size=120,
    )  # fmt: skip
    return Welcome(session=0, epoch=0, start=0, **(fields | kw))  # type: ignore[arg-type]


def test_the_edge_clamps_gamma_and_depth_to_the_clouds_limits():
    assert fit(welcome(), prompt_tokens=10, max_new=20, gamma=8, depth=12, k=8) == (4, 2)
    assert fit(welcome(), prompt_tokens=10, max_new=20, gamma=3, depth=1, k=8) == (3, 1)


@pytest.mark.parametrize(
    ("prompt", "new", "k", "says"),
    [
        (101, 10, 8, "at most 100 (max_prompt_tokens)"),
        (10, 51, 8, "over the cloud's limit of 50"),
        (90, 40, 8, "context of 120 tokens"),
        (10, 10, 9, "max_k"),
    ],
)
def test_the_edge_refuses_what_the_cloud_would_before_sending_it(prompt, new, k, says):
    with pytest.raises(LimitError, match=re.escape(says)):
        fit(welcome(), prompt_tokens=prompt, max_new=new, gamma=4, depth=2, k=k)


def test_bad_session_parameters_are_refused():
    with pytest.raises(ConfigError, match="gamma"):
        edge_session(gamma=0)
    with pytest.raises(ConfigError, match="edge-only generation has nothing"):
        edge_session(mode="edge-only").start_message()
    with pytest.raises(ConfigError, match="greedy scheme needs temperature 0"):
        Sampling(SamplingParams(temperature=0.5), Scheme.GREEDY)
    with pytest.raises(ConfigError, match="split is exact only"):
        Sampling(SamplingParams(temperature=0.5), Scheme.SPLIT, 8)
    assert Sampling(SamplingParams(temperature=0.5, top_k=8), Scheme.SPLIT, 8).exact


def test_refusals_are_counted_in_a_shared_counter():
    shared: Counter[ErrorCode] = Counter()
    for _ in range(3):
        cloud = CloudSession(MarkovBackend(), token=b"tok", refusals=shared)
        cloud.receive(hello(token=b"no"))
    assert shared[ErrorCode.AUTH] == 3


def test_a_connection_that_keeps_asking_for_what_it_cannot_have_is_closed():
    cloud = cloud_for(MarkovBackend(), max_refusals=5)
    stray = DraftBlock(session=9, epoch=0, start=3, scheme=Scheme.GREEDY, bonus=False, tokens=(1,))
    for _ in range(5):
        (err,) = cloud.receive(stray)
        assert err.code is ErrorCode.UNKNOWN_SESSION and not cloud.closed
    cloud.receive(stray)
    assert cloud.closed and "6 requests refused, over max_refusals (5)" in cloud.close_reason
