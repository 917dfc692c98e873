"""cloud-led: the cloud decodes continuously and takes the drafts waiting for its
next positions; the output is the cloud-only output for the seed, whatever the
timing, the drafter or the number of drafts a forward takes."""

from __future__ import annotations

import numpy as np
import pytest
from markov import MarkovBackend, V, sampling
from test_sessions import cloud_for, edge_session, hello, run, start

from picospec.cloud.led import DraftStore, ForwardCosts, LedPolicy
from picospec.cloud.session import CloudSession
from picospec.codec.draft import DraftToken
from picospec.codec.errors import ConfigError, ProtocolError
from picospec.codec.messages import DraftBlock, Error, ErrorCode, Verdict
from picospec.codec.scheme import Mode, Scheme
from picospec.edge.session import Committed, Failed, Resume


def block(epoch: int, at: int, tokens, session: int = 1) -> DraftBlock:
    return DraftBlock(
        session=session,
        epoch=epoch,
        start=at,
        scheme=Scheme.GREEDY,
        bonus=False,
        tokens=tuple(tokens),
    )


@pytest.mark.parametrize("scheme", [Scheme.GUMBEL, Scheme.GREEDY])
def test_cloud_led_output_is_the_cloud_only_output_whatever_the_timing(scheme):
    t = 0.0 if scheme is Scheme.GREEDY else 1.0
    cloud_only = run(scheme, t, seed=5, mode="cloud-only", max_new=40)[0].generated
    rng = np.random.default_rng(2)
    good = MarkovBackend().table  # the target's own table: most drafts match
    bad = rng.normal(size=(V, V)).astype(np.float32)  # an unrelated drafter
    accepted = []
    for table in (good, bad):
        for depth, gamma, shuffle in ((1, 1, None), (3, 3, None), (2, 4, 1), (3, 2, 7), (4, 3, 3)):
            edge, _, events = run(
                scheme, t, seed=5, mode="cloud-led", max_new=40, depth=depth, gamma=gamma,
                shuffle=shuffle, drafter_table=table,
            )  # fmt: skip
            assert edge.generated == cloud_only, (depth, gamma, shuffle)
            assert not any(isinstance(e, Failed) for e in events)
            accepted.append(edge.stats.accepted)
    assert sum(accepted[:5]) > 0  # the matching drafter's drafts were taken and committed


def test_cloud_led_takes_drafts_so_it_needs_fewer_forwards_than_cloud_only():
    table = MarkovBackend().table
    led = run(Scheme.GREEDY, 0.0, mode="cloud-led", max_new=40, gamma=4, depth=3,
              drafter_table=table)[0]  # fmt: skip
    only = run(Scheme.GREEDY, 0.0, mode="cloud-only", max_new=40)[0]
    assert led.generated == only.generated
    assert led.stats.target_forwards < only.stats.target_forwards
    assert led.stats.accepted > 0 and led.stats.rollbacks == 0


def test_cloud_led_is_refused_for_schemes_whose_acceptance_depends_on_q():
    cloud = cloud_for(MarkovBackend())
    (err,) = cloud.receive(start(samp=sampling(Scheme.SPARSE_Q), mode=Mode.CLOUD_LED))
    assert isinstance(err, Error) and err.code is ErrorCode.PARAMS
    assert "cloud-led runs under the gumbel or greedy scheme, not sparse-q" in err.message
    with pytest.raises(ConfigError, match="cloud-led runs under"):
        edge_session(sampling(Scheme.SPLIT), mode="cloud-led")


def test_store_checks_late_drafts_against_committed_tokens():
    store = DraftStore(capacity=8)
    committed = [9, 9, 1, 2, 3]  # prompt 9 9, then 1 2 3 committed
    store.add(block(0, 2, [1, 2]), committed)  # both already committed: they agree
    assert store.matched == 2 and not store.dead and store.ready(5) == []
    store.add(block(0, 4, [3, 4, 5]), committed)  # 3 agrees, 4 and 5 are ahead
    assert store.ready(5) == [4, 5]
    store.add(block(0, 7, [6]), committed)
    assert store.ready(5) == [4, 5, 6]
    assert store.advance([*committed, 4, 0]) == [True, False]  # the cloud chose 0, not 5
    assert store.dead and store.ready(7) == []
    store.add(block(0, 8, [7]), committed)  # the rest of a dead chain is dropped
    assert len(store) == 0
    store.add(block(1, 7, [1]), [*committed, 4, 0])  # a new epoch starts a new chain
    assert not store.dead and store.ready(7) == [1]


def test_store_refuses_gaps_chains_from_the_future_and_overflow():
    store = DraftStore(capacity=4)
    store.add(block(0, 2, [1, 2]), [9, 9])
    with pytest.raises(ProtocolError, match="starts at 5; the drafts of epoch 0 end at 4"):
        store.add(block(0, 5, [1]), [9, 9])
    with pytest.raises(ProtocolError, match="starts at 6, after the 2 positions"):
        store.add(block(1, 6, [1]), [9, 9])
    with pytest.raises(Exception, match="more than 4 drafts waiting"):
        store.add(block(0, 4, [1, 2, 3]), [9, 9])
    store.add(block(1, 2, [5]), [9, 9])  # a new chain replaces the old one
    store.add(block(0, 4, [1]), [9, 9])  # and a block of the old one is stale: dropped
    assert store.epoch == 1 and store.ready(2) == [5]


def test_a_bad_block_ends_the_cloud_led_generation_with_an_error_naming_it():
    cloud = cloud_for(MarkovBackend(), max_block=4, max_depth=2)
    assert cloud.receive(start(mode=Mode.CLOUD_LED)) == []
    cloud.step()  # prefill and the first token
    (err,) = cloud.receive(block(0, 9, [1, 2]))
    assert isinstance(err, Error) and err.code is ErrorCode.PROTOCOL
    assert "starts at 9, after the 3 positions" in err.message


def test_edge_commits_every_verdict_and_rolls_back_only_on_a_contradiction():
    edge = edge_session(sampling(Scheme.GREEDY), mode="cloud-led", gamma=2, depth=2, max_new=20)
    first = Verdict(session=1, epoch=0, start=2, accepted=0, token=5, target_forwards=1)
    assert edge.receive(first, 0.0) == [Committed((5,))]  # no Resume: the drafter begins
    assert edge.want() == 2
    edge.block([DraftToken(1, None), DraftToken(2, None)], 0.0)
    edge.block([DraftToken(3, None), DraftToken(4, None)], 0.0)
    assert edge.want() == 0  # gamma x depth drafts ahead
    # the cloud took 1 and chose 2 itself: the chain goes on without a Resume
    v = Verdict(session=1, epoch=0, start=3, accepted=1, token=2, target_forwards=1)
    assert edge.receive(v, 0.1) == [Committed((1, 2))]
    assert edge.in_flight == 2 and edge.epoch == 0
    # an old-epoch verdict may commit the cloud's own token, never drafts it did not see
    v = Verdict(session=1, epoch=0, start=5, accepted=0, token=7, target_forwards=1)
    assert edge.receive(v, 0.2) == [Committed((7,)), Resume(5, 7)]
    assert edge.epoch == 1 and edge.stats.rollbacks == 1 and edge.stats.discarded == 2
    v = Verdict(session=1, epoch=0, start=6, accepted=1, token=7, target_forwards=1)
    (failed,) = edge.receive(v, 0.3)
    assert (
        isinstance(failed, Failed)
        and "1 drafts of epoch 0 accepted at position 6" in failed.message
    )
    assert edge.generated == [5, 1, 2, 7]


def test_policy_takes_drafts_where_they_pay_and_not_where_they_do_not():
    cheap = LedPolicy(lambda n: 1.0)  # a GPU: a few more tokens cost nothing
    assert cheap.choose(5) == 5
    dear = LedPolicy(lambda n: 1.0 + 0.45 * (n - 1))  # this CPU: a 5-token verify ~2.8x
    for _ in range(50):
        dear.record(4, 0)  # nothing is ever accepted
    assert dear.choose(4) == 0
    for _ in range(200):
        dear.record(4, 4)  # everything is
    assert dear.choose(4) == 4
    assert LedPolicy(None).choose(3) == 3
    costs = ForwardCosts()
    costs.observe(1, 0.01)
    costs.observe(1, 0.02)
    assert costs(1) == pytest.approx(0.012) and costs(3) is None
    unknown = LedPolicy(costs)
    assert unknown.choose(4) == 1  # a size never timed is tried, then known


def test_late_drafts_that_agree_teach_the_policy_to_take_drafts():
    """Drafts arriving for positions the cloud has committed are checked on arrival;
    their outcome reaches the policy, so a cloud that decodes alone (a draft costs
    more than it saves at the prior's acceptance) learns that they match."""
    only = run(Scheme.GREEDY, 0.0, mode="cloud-only", max_new=40)[0].generated

    def dear(n: int) -> float:  # a draft costs almost a forward
        return 1.0 + 0.9 * (n - 1)

    assert LedPolicy(dear).choose(1) == 0  # from the prior alone: decode alone
    cloud = CloudSession(MarkovBackend(), token=b"tok", forward_cost=dear)
    cloud.receive(hello())
    prompt, late = (0, 1), 20
    assert cloud.receive(start(prompt=prompt, max_new=40, mode=Mode.CLOUD_LED)) == []
    verdicts: list[Verdict] = []
    for _ in range(late):  # no draft has arrived
        verdicts += [m for m in cloud.step() if isinstance(m, Verdict)]
    assert len(verdicts) == late and all(v.accepted == 0 for v in verdicts)
    # the drafts arrive late, each agreeing with what the cloud committed, and one
    # more for the cloud's next position
    assert cloud.receive(block(0, len(prompt), only[: late + 1])) == []
    (nxt,) = [m for m in cloud.step() if isinstance(m, Verdict)]
    assert nxt.start == len(prompt) + late and nxt.accepted == 1  # it was taken


def test_a_draft_the_forward_did_not_take_is_checked_against_its_token_and_taught():
    """A forward that decodes alone (m = 0) still checks the waiting draft at its
    position against the token it chose, and one that took m drafts and accepted
    them all checks the next waiting one against its own token: both outcomes
    reach the policy, at offsets 0 and m, so it learns where it takes no drafts."""
    only = run(Scheme.GREEDY, 0.0, mode="cloud-only", max_new=40)[0].generated

    def dear(n: int) -> float:
        return 1.0 + 0.9 * (n - 1)

    cloud = CloudSession(MarkovBackend(), token=b"tok", forward_cost=dear)
    cloud.receive(hello())
    prompt = (0, 1)
    assert cloud.receive(start(prompt=prompt, max_new=40, mode=Mode.CLOUD_LED)) == []
    cloud.step()  # prefill and the first token
    policy = cloud._gens[1].policy
    assert policy is not None
    # four drafts for the next positions, all agreeing with the cloud's output
    assert cloud.receive(block(0, len(prompt) + 1, only[1:5])) == []
    (v,) = [m for m in cloud.step() if isinstance(m, Verdict)]
    assert v.accepted == 0  # at the prior's acceptance a draft does not pay here
    assert (policy.tried[0], policy.ok[0]) == (1, 1)  # but its check was recorded
    # a forward of up to 3 tokens is cheap, more is dear: of four waiting drafts it
    # takes two, accepts both, and checks the third against its own token
    capped = CloudSession(
        MarkovBackend(), token=b"tok", forward_cost=lambda n: 1.0 if n <= 3 else 100.0
    )
    capped.receive(hello())
    assert capped.receive(start(prompt=prompt, max_new=40, mode=Mode.CLOUD_LED)) == []
    capped.step()
    taught = capped._gens[1].policy
    assert taught is not None
    assert capped.receive(block(0, len(prompt) + 1, only[1:5])) == []
    (v,) = [m for m in capped.step() if isinstance(m, Verdict)]
    assert v.accepted == 2 and v.token == only[3]
    assert taught.tried[:3] == [1, 1, 1] and taught.ok[:3] == [1, 1, 1]
