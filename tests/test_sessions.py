"""Edge and cloud sessions back to back, without sockets or models.

The target is the Markov backend of test_target; the drafter is another Markov
chain. A tiny scheduler delivers messages in a scripted or seeded random order,
so pipelining, stale verdicts, rollbacks and timing independence are checked
deterministically.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from test_target import MarkovBackend, V

from picospec.cloud.session import CloudSession
from picospec.codec import ops, rng
from picospec.codec.messages import Hello, Verdict
from picospec.codec.rng import Purpose
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Scheme
from picospec.codec.sparse import SparseDist
from picospec.edge.drafter import DraftToken
from picospec.edge.session import Committed, EdgeSession, Failed, Finished, Resume

END = -1  # the Markov vocabulary has no end token


class MarkovDrafter:
    """Drafts from its own Markov table with the production sampling rules."""

    def __init__(self, table: np.ndarray, params: SamplingParams, scheme: Scheme, seed: int):
        self.table, self.params, self.scheme, self.seed = table, params, scheme, seed
        self.tokens: list[int] = []

    def draft(self, n: int) -> list[DraftToken]:
        out = []
        for _ in range(n):
            row, pos = self.table[self.tokens[-1]], len(self.tokens)
            if self.scheme is Scheme.GUMBEL:
                key = rng.key(self.seed, pos, Purpose.GUMBEL)
                d = DraftToken(ops.gumbel_argmax(row, self.params, key), None)
            else:
                q = SparseDist.from_counts(*ops.transform_topk(row, self.params, 4))
                d = DraftToken(q.sample(rng.uniform(self.seed, pos, Purpose.DRAFT)), q)
            self.tokens.append(d.token)
            out.append(d)
        return out


def hello_for(backend, params, scheme, token=b"tok"):
    """The handshake an edge with the backend's vocabulary sends."""
    return Hello(
        session=0,
        epoch=0,
        start=0,
        vocab_fingerprint=backend.fingerprint(),
        params=params,
        scheme=scheme,
        k=4,
        auth_token=token,
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
    cloud_only=False,
):
    """Generate through both sessions; returns (edge session, cloud backend, events)."""
    params = SamplingParams(temperature=t)
    backend = MarkovBackend()
    cloud = CloudSession(backend, token=b"tok")
    edge = EdgeSession(
        1,
        (0, 1),
        seed=seed,
        max_new=max_new,
        scheme=scheme,
        is_end=lambda tok: tok == END,
        mode="cloud-only" if cloud_only else mode,
        gamma=gamma,
        depth=depth,
    )
    table = backend.table if drafter_table is None else drafter_table
    drafter = MarkovDrafter(table, params, scheme, seed)
    hello = hello_for(backend, params, scheme)
    assert [type(m).__name__ for m in cloud.receive(hello)] == ["Welcome"]
    up, down, events = (
        [edge.start_message()],
        [],
        [],
    )
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
                if isinstance(ev, Committed) and len(drafter.tokens) == 0:
                    drafter.tokens = [0, 1, *ev.tokens]
                elif isinstance(ev, Resume):
                    del drafter.tokens[ev.position :]
                    drafter.tokens.append(ev.token)
        if edge.done and not down:
            break
    return edge, backend, events


def greedy_target_tokens(n: int) -> list[int]:
    table, out, prev = MarkovBackend().table, [], 1
    for _ in range(n):
        prev = int(np.argmax(table[prev]))
        out.append(prev)
    return out


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
    assert edge.stats.blocks == [(3, 3)] * 5  # 5 blocks of 3 drafts + 5 bonus tokens
    assert edge.stats.rollbacks == 0
    bonus_positions = [e.position for e in events if isinstance(e, Resume)]
    assert bonus_positions == [2 + 1 + 3, 2 + 1 + 7, 2 + 1 + 11, 2 + 1 + 15]


def test_reject_at_first_position_resumes_from_the_correction():
    wrong = np.roll(MarkovBackend().table, 1, axis=1)  # the drafter's argmax is never right
    edge, _, events = run(Scheme.GREEDY, 0.0, depth=2, max_new=6, drafter_table=wrong)
    assert edge.generated == greedy_target_tokens(6)
    resumes = [e for e in events if isinstance(e, Resume)]
    assert resumes and resumes[0].position == 3  # prompt (2) + the prefill's token
    # every round rejects; the last rejection finishes the generation instead of resuming
    assert edge.stats.accepted == 0 and edge.epoch == edge.stats.rollbacks == len(resumes) + 1


def test_verdict_from_a_rolled_back_epoch_is_dropped():
    edge = EdgeSession(1, (0,), seed=0, max_new=8, scheme=Scheme.GREEDY, is_end=lambda t: False)
    edge.receive(Verdict(session=1, epoch=0, start=1, accepted=0, token=2, target_forwards=1), 0)
    d = [DraftToken(3, None), DraftToken(3, None)]
    edge.block(d, 0.0)  # block 1 at positions 2..3
    edge.block(d, 0.0)  # block 2 at positions 4..5
    edge.receive(Verdict(session=1, epoch=0, start=2, accepted=0, token=5, target_forwards=1), 0)
    assert edge.epoch == 1
    late = Verdict(session=1, epoch=0, start=4, accepted=2, token=None, target_forwards=1)
    assert edge.receive(late, 0.1) == []
    assert edge.stats.stale_dropped == 1 and edge.generated == [2, 5]


def test_rejection_while_the_cloud_precomputes_keeps_kv_consistent():
    wrong = np.roll(MarkovBackend().table, 1, axis=1)
    _, backend, _ = run(Scheme.GREEDY, 0.0, depth=3, max_new=8, drafter_table=wrong, shuffle=5)
    # MarkovBackend asserts every forward continues the KV exactly; after each
    # rejection the correction is evaluated alone (fast verify) before the next block.
    sizes = [n for _, n in backend.forwards[1:]]
    assert 1 in sizes


def test_connection_lost_keeps_committed_tokens_and_says_so():
    edge = EdgeSession(1, (0,), seed=0, max_new=8, scheme=Scheme.GREEDY, is_end=lambda t: False)
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
    cloud = run(Scheme.GUMBEL, 1.0, seed=11, cloud_only=True)[0].generated
    assert pipe == sync == cloud


def test_wrong_token_or_vocabulary_is_refused_and_closes():
    backend = MarkovBackend()
    params = SamplingParams(temperature=1.0)
    hello = hello_for(backend, params, Scheme.SPARSE_Q, token=b"bad")
    cloud = CloudSession(backend, token=b"tok")
    (err,) = cloud.receive(hello)
    assert err.code.name == "AUTH" and cloud.closed


def test_early_send_only_when_the_cloud_would_idle_and_drafting_is_slow():
    def session(early):
        s = EdgeSession(
            1,
            (0,),
            seed=0,
            max_new=32,
            scheme=Scheme.GREEDY,
            is_end=lambda t: False,
            early_send=early,
        )
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


def test_two_connections_may_both_number_their_generation_one():
    """Edges number their own generations; the backend must keep them apart."""
    backend = MarkovBackend()
    params = SamplingParams(temperature=0.0)
    hello = hello_for(backend, params, Scheme.GREEDY)
    ids = iter(range(100, 200))
    clouds = [CloudSession(backend, token=b"tok", backend_ids=ids) for _ in range(2)]
    edges = [
        EdgeSession(1, (0, 1), seed=0, max_new=4, scheme=Scheme.GREEDY, is_end=lambda t: False)
        for _ in range(2)
    ]
    for cloud, edge in zip(clouds, edges, strict=True):
        cloud.receive(hello)
        assert cloud.receive(edge.start_message()) == []
    assert sorted(backend.kv) == [100, 101]
    firsts = [cloud.step() for cloud in clouds]
    assert [type(m).__name__ for out in firsts for m in out] == ["Verdict", "Verdict"]
    assert firsts[0][0].session == firsts[1][0].session == 1
    clouds[0].close()
    assert sorted(backend.kv) == [101]  # closing one connection frees only its generation
