"""The edge client never loses what it committed, and never leaves the cloud holding
a generation: cancellation, deadlines, a silent cloud, a lost connection, and the
cloud's announced limits, over real QUIC on loopback (Markov models)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from markov import MarkovBackend, MarkovDrafter, sampling
from servers import GREEDY, PROMPT, TOKEN, ServerThread, good_tokens

from picospec.cloud.limits import Limits
from picospec.codec.scheme import Mode, Scheme
from picospec.edge.client import EdgeClient, EdgeError, GenerationError
from picospec.edge.session import LimitError
from picospec.edge.text import TextStream, detokenize


class Slow(MarkovBackend):
    """A target whose every forward takes delay seconds; gate closed: it waits."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__(max_context=100_000)
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def forward(self, session, start, tokens, n_out=None):
        time.sleep(self.delay)
        self.gate.wait(30)
        return super().forward(session, start, tokens, n_out)


def client() -> EdgeClient:
    return EdgeClient(MarkovDrafter(MarkovBackend(seed=5).table))


def open_generations(srv: ServerThread) -> int:
    return srv.call(lambda: srv.service.budget.open)


async def settle(srv: ServerThread, want: int = 0) -> int:
    """Wait (bounded) until the server holds `want` generations; how many it holds."""
    for _ in range(100):
        held = open_generations(srv)
        if held == want:
            return held
        await asyncio.sleep(0.05)
    return open_generations(srv)


def test_cancelling_a_generation_cancels_it_on_the_cloud_and_keeps_the_connection():
    backend = Slow()
    with ServerThread(backend, limits=Limits(max_new_tokens=2000)) as srv:

        async def scenario() -> tuple[list[int], int, list[int]]:
            c = client()
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            got: list[int] = []
            task = asyncio.create_task(
                c.generate(
                    PROMPT,
                    sampling=GREEDY,
                    max_new_tokens=2000,
                    mode="cloud-only",
                    on_tokens=got.extend,
                )
            )
            for _ in range(1000):  # bounded: a task that failed at once ends the wait
                if len(got) >= 5 or task.done():
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            held = await settle(srv)
            again = await c.generate(PROMPT, sampling=GREEDY, max_new_tokens=16, seed=0)
            await c.close()
            return got, held, again.token_ids

        got, held, again = asyncio.run(scenario())
    assert got == good_tokens(len(got))  # what was committed before the cancel
    assert held == 0  # the Cancel freed the cloud's generation
    assert again == good_tokens()


def test_a_deadline_stops_the_generation_with_what_it_committed():
    with ServerThread(Slow(), limits=Limits(max_new_tokens=2000)) as srv:

        async def scenario():
            c = client()
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            deadline = asyncio.get_running_loop().time() + 0.6
            res = await c.generate(
                PROMPT, sampling=GREEDY, max_new_tokens=2000, deadline=deadline, seed=0
            )
            held = await settle(srv)
            await c.close()
            return res, held

        res, held = asyncio.run(scenario())
    assert res.finished == "deadline" and 0 < res.n_tokens < 2000
    assert res.token_ids == good_tokens(res.n_tokens)
    assert held == 0


def test_a_silent_cloud_fails_the_generation_after_the_reply_timeout_with_its_tokens():
    backend = Slow(delay=0.0)
    with ServerThread(backend) as srv:

        async def scenario():
            c = client()
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            got: list[int] = []

            def on_tokens(tokens: list[int]) -> None:
                got.extend(tokens)
                if len(got) >= 3:
                    backend.gate.clear()  # the model hangs from here on

            with pytest.raises(GenerationError) as failed:
                await c.generate(PROMPT, sampling=GREEDY, max_new_tokens=64, mode="cloud-only",
                                 on_tokens=on_tokens, reply_timeout=1.0)  # fmt: skip
            backend.gate.set()
            await c.close()
            return failed.value

        err = asyncio.run(scenario())
    assert "sent nothing for 1 s" in str(err)
    assert len(err.result.token_ids) >= 3 and err.result.token_ids == good_tokens(
        err.result.n_tokens
    )


def test_a_lost_connection_raises_with_the_committed_tokens():
    with ServerThread(Slow(), limits=Limits(max_new_tokens=2000)) as srv:

        async def scenario():
            c = client()
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            got: list[int] = []
            task = asyncio.create_task(
                c.generate(PROMPT, sampling=GREEDY, max_new_tokens=2000, on_tokens=got.extend)
            )
            for _ in range(1000):  # bounded: a task that failed at once ends the wait
                if len(got) >= 5 or task.done():
                    break
                await asyncio.sleep(0.01)
            srv.run(srv.server.close())  # the cloud goes away mid-generation
            with pytest.raises(GenerationError) as failed:
                await asyncio.wait_for(task, 30)
            with pytest.raises(EdgeError, match="lost"):
                await c.generate(PROMPT, sampling=GREEDY, max_new_tokens=4)
            await c.close()
            return failed.value, got

        err, got = asyncio.run(scenario())
    assert "connection lost after" in str(err)
    assert err.result.token_ids == got == good_tokens(len(got))


def test_the_edge_obeys_the_clouds_announced_limits():
    limits = Limits(max_depth=2, max_block=3, max_prompt_tokens=8, max_new_tokens=32)
    with ServerThread(MarkovBackend(), limits=limits) as srv:

        async def scenario():
            c = client()
            welcome = await c.connect(*srv.address, srv.tls, token=TOKEN)
            sent = c.bytes_up
            with pytest.raises(LimitError, match="max_prompt_tokens"):
                await c.generate(list(range(6)) * 2, sampling=GREEDY, max_new_tokens=4)
            with pytest.raises(LimitError, match="limit of 32"):
                await c.generate(PROMPT, sampling=GREEDY, max_new_tokens=33)
            assert c.bytes_up == sent  # refused before anything was sent
            deep = await c.generate(PROMPT, sampling=GREEDY, max_new_tokens=16, depth=12, gamma=8)
            await c.close()
            return welcome, deep

        welcome, deep = asyncio.run(scenario())
    assert (welcome.max_depth, welcome.max_block, welcome.max_prompt_tokens) == (2, 3, 8)
    assert deep.token_ids == good_tokens() and all(n <= 3 for _, n in deep.blocks)


def test_without_a_seed_each_generation_draws_one_and_reports_it():
    with ServerThread(MarkovBackend()) as srv:

        async def scenario():
            c = client()
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            warm = sampling(Scheme.SPARSE_Q, 1.0)
            a = await c.generate(PROMPT, sampling=warm, max_new_tokens=24)
            b = await c.generate(PROMPT, sampling=warm, max_new_tokens=24)
            again = await c.generate(PROMPT, sampling=warm, max_new_tokens=24, seed=a.seed)
            await c.close()
            return a, b, again

        a, b, again = asyncio.run(scenario())
    assert a.seed != b.seed and a.token_ids != b.token_ids
    assert again.token_ids == a.token_ids


def test_streamed_text_equals_the_final_text_with_characters_split_across_tokens():
    pieces = {0: b"na", 1: "ï".encode()[:1], 2: "ï".encode()[1:] + b"ve ", 3: "🤖".encode()[:3],
              4: "🤖".encode()[3:], 5: b""}  # fmt: skip
    tokens = [0, 1, 2, 3, 4, 0, 5]
    stream = TextStream(pieces.__getitem__, lambda t: t == 5)
    chunks = [stream.feed([t]) for t in tokens] + [stream.flush()]
    whole = detokenize(pieces.__getitem__, lambda t: t == 5, tokens)
    assert "".join(chunks) == whole == "naïve 🤖na"
    assert "\ufffd" not in whole and chunks[1] == "" and chunks[3] == ""
    cut = TextStream(pieces.__getitem__, lambda t: False)
    assert cut.feed([0, 3]) == "na" and cut.flush() == "\ufffd"  # an unfinished character


class PerToken(MarkovBackend):
    """A target whose forward costs per_token seconds per token evaluated (a CPU:
    verifying 5 tokens costs 5 decode steps)."""

    def __init__(self, per_token: float = 0.004) -> None:
        super().__init__(max_context=100_000)
        self.per_token = per_token

    def forward(self, session, start, tokens, n_out=None):
        time.sleep(self.per_token * len(tokens))
        return super().forward(session, start, tokens, n_out)


def wrong_estimates(rtt: float | None):
    """Estimates as if measured elsewhere: the decode step right, verifies cheap
    and every draft accepted, both wrong for PerToken and an unrelated drafter."""
    from picospec.edge.plan import Estimates

    est = Estimates(rtt=rtt, draft=0.0005, decode=0.004)
    est.verify = {9: 0.005}
    for scheme in (Scheme.GREEDY, Scheme.SPARSE_Q):
        est.add_blocks(scheme, [(8, 8)] * 8)
    return est


def switching(samp, monkeypatch=None):
    """One auto generation of 96 tokens on PerToken with an unrelated drafter."""
    with ServerThread(PerToken(), limits=Limits(max_new_tokens=2000)) as srv:

        async def scenario():
            c = EdgeClient(MarkovDrafter(MarkovBackend(seed=9).table))
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            c.estimates = wrong_estimates(c.estimates.rtt)
            got: list[int] = []
            res = await c.generate(PROMPT, sampling=samp, max_new_tokens=96, seed=3,
                                   mode="auto", gamma=8, depth=2, on_tokens=got.extend)  # fmt: skip
            held = await settle(srv)
            await c.close()
            return res, got, held

        return asyncio.run(scenario())


def test_auto_switches_mid_generation_when_what_it_measures_says_so():
    """sparse-q: auto plans a pipeline from the wrong estimates; by the first
    revision it has measured the verifies and the acceptance, and switches to
    cloud-only. One generation in two parts: every token streamed once."""
    res, got, held = switching(sampling(Scheme.SPARSE_Q, 1.0))
    assert [p["mode"] for p in res.parts] == ["pipeline", "cloud-only"], res.plan
    assert "| auto switched from pipeline gamma 8 depth 2" in res.plan
    assert sum(p["tokens"] for p in res.parts) == res.n_tokens == 96
    assert res.token_ids == got and held == 0  # the pipeline part was cancelled


def test_a_mid_generation_switch_never_changes_the_greedy_output(monkeypatch):
    """greedy: the first plan forced to a pipeline; the switch (to cloud-led or
    cloud-only, as the measurements say) keeps the output token for token."""
    from picospec.edge import client as client_module
    from picospec.edge.plan import Plan

    pipeline = Plan(Mode.PIPELINE, 8, 2, "auto: pipeline (forced by the test)")
    monkeypatch.setattr(client_module, "choose", lambda *a, **k: pipeline)
    res, got, held = switching(GREEDY)
    modes = [p["mode"] for p in res.parts]
    assert len(modes) == 2 and modes[0] == "pipeline" != modes[1], res.plan
    assert res.token_ids == got == good_tokens(96)  # nothing lost, repeated or changed
    assert held == 0


def test_an_exploration_cut_short_leaves_its_modes_error():
    """sparse-q, acceptance never measured and verifies believed cheap: auto
    explores the plan its hope makes best; the unrelated drafter's drafts fail,
    the exploration runs far below cloud-only's prediction and is cut short, and
    it leaves its mode's error (observed over the model's rate from what it
    measured) beside the acceptance and verify costs it measured."""
    from picospec.edge.plan import Estimates, choose

    with ServerThread(PerToken(), limits=Limits(max_new_tokens=2000)) as srv:

        async def scenario():
            c = EdgeClient(MarkovDrafter(MarkovBackend(seed=9).table))
            await c.connect(*srv.address, srv.tls, token=TOKEN)
            c.estimates = Estimates(rtt=c.estimates.rtt, draft=0.0005, decode=0.004)
            c.estimates.verify = {9: 0.005}
            samp = sampling(Scheme.SPARSE_Q, 1.0)
            res = await c.generate(
                PROMPT, sampling=samp, max_new_tokens=96, seed=3, mode="auto", gamma=8, depth=2
            )
            await c.close()
            return res, c.estimates

        res, est = asyncio.run(scenario())
    explored = Mode.parse(res.parts[0]["mode"])
    assert explored.speculative and "not measured yet: hoping for 1.00" in res.plan
    assert res.parts[-1]["mode"] == "cloud-only" and "| auto switched from" in res.plan
    assert sum(p["tokens"] for p in res.parts) == res.n_tokens == 96
    # the drafts it measured explain the slowness: the model given them is not far
    # off, and the next generation plans from what was measured, without exploring
    assert 0.5 < est.error[explored] < 1.5, est.error
    nxt = choose(Scheme.SPARSE_Q, est, gamma=8, depth=2)
    assert nxt.mode is Mode.CLOUD_ONLY and "not measured" not in nxt.reason, nxt.reason
