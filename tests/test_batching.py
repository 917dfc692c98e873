"""Batched verification: many sessions' forwards in one, each verdict as if alone.

On the Markov pair the batched service is checked for what it promises: units
of several connections share turns, and every edge gets exactly the target's
output. On the real pair the llama.cpp backend's batched forward (one context,
a KV sequence per session) is compared with separate contexts on the same
seeded traces: the logits differ by llama.cpp's batch-shape numerics (measured,
bounded here) and the verdicts do not differ at all.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from markov import MarkovBackend
from servers import PROMPT, ServerThread, good_tokens, well_behaved

from picospec.cloud.backend import Forward
from picospec.cloud.target import TargetSequence
from picospec.codec.errors import ConfigError
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Scheme


class BatchingMarkov(MarkovBackend):
    """A Markov target that says it batches and records each batch's sessions."""

    batches = True

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def forward_many(self, requests):
        self.batch_sizes.append(len(requests))
        return super().forward_many(requests)


def test_concurrent_edges_share_turns_and_each_gets_the_targets_output():
    backend = BatchingMarkov()
    prompts = [PROMPT, [1, 2], [3, 3, 3], [5, 0, 4, 2]]
    with ServerThread(backend) as srv:
        assert srv.service.max_batch > 1

        async def all_edges():
            return await asyncio.gather(
                *(
                    well_behaved(srv, n=24, mode=m, prompt=p)
                    for p in prompts
                    for m in ("pipeline", "cloud-only")
                )
            )

        results = asyncio.run(asyncio.wait_for(all_edges(), 60))
        stats = srv.call(lambda: srv.service.stats)
    expected = [good_tokens(24, p) for p in prompts for _ in range(2)]
    assert [toks for toks, _ in results] == expected
    assert max(backend.batch_sizes) > 1, "no turn ever batched two connections"
    assert stats.batched_units > 0 and stats.batches < stats.work_units


def test_an_unbatching_backend_gets_one_connection_per_turn():
    backend = MarkovBackend()
    with ServerThread(backend) as srv:
        assert srv.service.max_batch == 1
        toks, _ = asyncio.run(asyncio.wait_for(well_behaved(srv, n=8), 30))
    assert toks == good_tokens(8)


# ---------------------------------------------------------------------------- real models
PROMPTS = [
    "Explain what a robot arm does in two sentences.",
    "List three uses of a lidar sensor.",
    "What is the capital of France? Answer briefly.",
    "Write a haiku about batteries.",
]


def traces(backend, drafter, sampling, *, batched, rounds=10, gamma=4):
    """Verdicts of four seeded generations, each drafting gamma tokens a round
    from the real drafter; their forwards batched together (batched) or run
    one session at a time. Returns (verdicts per session, logits rows seen)."""
    w = drafter.ctx.weights
    seqs = []
    for i in range(len(PROMPTS)):
        backend.open(100 + i)
        seq = TargetSequence(backend, 100 + i, sampling, seed=7 + i)
        seqs.append(seq)
    verdicts: list[list[tuple[int, int | None]]] = [[] for _ in seqs]
    rows: list[list[np.ndarray]] = [[] for _ in seqs]

    def run(works):
        """Drive works together: each round's requests in one forward_many."""
        pending = {}
        results = [None] * len(works)
        for i, wk in enumerate(works):
            try:
                pending[i] = next(wk)
            except StopIteration as done:  # no forward needed (a kept row)
                results[i] = done.value
        while pending:
            order = sorted(pending)
            reqs = [pending[i] for i in order]
            outs = (
                backend.forward_many(reqs)
                if batched
                else [backend.forward(r.session, r.start, list(r.tokens), r.n_out) for r in reqs]
            )
            for i, out in zip(order, outs, strict=True):
                assert isinstance(out, np.ndarray), out
                rows[i].append(out.copy())
                try:
                    pending[i] = works[i].send(out)
                except StopIteration as done:
                    results[i] = done.value
                    del pending[i]
        return results

    prompts = [w.tokenize(w.chat_prompt(t)) for t in PROMPTS]
    for seq, p in zip(seqs, prompts, strict=True):
        seq.start(p)
    run([seq.prefill_work(1 << 20) for seq in seqs])
    run([seq.decode_work() for seq in seqs])
    for _ in range(rounds):
        works, blocks = [], []
        for i, seq in enumerate(seqs):
            drafter.begin(list(seq.tokens), 7 + i, sampling)
            block = drafter.draft(gamma)
            blocks.append(block)
            works.append(
                seq.verify_work(
                    len(seq.tokens),
                    [x.token for x in block],
                    q=None if block[0].q is None else [x.q for x in block],
                )
            )
        for i, out in enumerate(run(works)):
            verdicts[i].append((out.accepted, out.token))
    for seq in seqs:
        backend.close(seq.session)
    return verdicts, rows


@pytest.mark.models
@pytest.mark.parametrize(
    "scheme,temperature", [(Scheme.GREEDY, 0.0), (Scheme.SPARSE_Q, 1.0), (Scheme.GUMBEL, 1.0)]
)
def test_batched_llama_verdicts_equal_one_session_at_a_time(smollm2, scheme, temperature):
    from picospec.cloud.llama_backend import LlamaBackend
    from picospec.edge.drafter import Drafter

    drafter = Drafter.open(smollm2["drafter"], n_ctx=1024, threads=2)
    sampling = Sampling.of(SamplingParams(temperature=temperature), scheme)
    solo_backend = LlamaBackend(smollm2["target"], n_ctx=1024, threads=2, batched=False)
    batch_backend = LlamaBackend(smollm2["target"], n_ctx=1024, threads=2, max_sessions=4)
    assert batch_backend.batches and not solo_backend.batches
    solo, solo_rows = traces(solo_backend, drafter, sampling, batched=False)
    both, both_rows = traces(batch_backend, drafter, sampling, batched=True)
    assert both == solo
    accepted = sum(a for v in solo for a, _ in v)
    drafted = 4 * 4 * len(solo[0])
    assert 0 < accepted < drafted, "the traces must hold both acceptances and rejections"
    worst = max(
        float(np.max(np.abs(a - b)))
        for ra, rb in zip(solo_rows, both_rows, strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    spread = float(np.ptp(solo_rows[0][0]))
    print(
        f"\n{scheme.value}: largest logit difference batched vs solo {worst:.2e} "
        f"(logit spread {spread:.1f}); verdicts identical over {drafted} drafts"
    )
    assert worst < 0.05 * spread


@pytest.mark.models
def test_the_batched_llama_backend_refuses_what_separate_contexts_refuse(smollm2):
    from picospec.cloud.llama_backend import LlamaBackend

    b = LlamaBackend(smollm2["target"], n_ctx=64, threads=1, max_sessions=2)
    b.open(1)
    b.open(2)
    with pytest.raises(ConfigError, match="at most 2 sessions"):
        b.open(3)
    out = b.forward_many([Forward(1, 0, (1, 2, 3), 1), Forward(2, 5, (1,), 1)])
    assert isinstance(out[0], np.ndarray) and out[0].shape == (1, b.vocab_size)
    first = out[0]
    assert isinstance(out[1], ConfigError) and "must start there" in str(out[1])
    out = b.forward_many([Forward(1, 3, tuple([1] * 70), 1)])
    assert isinstance(out[0], ConfigError) and "context full" in str(out[0])
    b.close(2)
    b.open(3)  # a freed sequence is reused, empty
    out = b.forward_many([Forward(3, 0, (1, 2, 3), 1)])
    assert np.allclose(out[0], first, atol=1e-3)


SYSTEM = (
    "You are the voice of a warehouse robot. Answer in one or two short sentences, "
    "never invent sensor readings, say when you are unsure, and put safety first. "
) * 3


@pytest.mark.models
def test_a_shared_prompt_prefix_is_reused_and_changes_no_logit(smollm2):
    from picospec.cloud.llama_backend import MIN_REUSE, LlamaBackend

    shared = LlamaBackend(smollm2["target"], n_ctx=512, threads=2, max_sessions=3)
    fresh = LlamaBackend(smollm2["target"], n_ctx=512, threads=2, batched=False)
    w = shared.weights
    base = w.tokenize(SYSTEM)
    questions = (" Where is bay 4?", " Is the door shut?", " Lift it.")
    prompts = [base + w.tokenize(q, special=False) for q in questions]
    unrelated = w.tokenize("Completely different words here, nothing shared at all.")

    def first_row(backend, sid, prompt):
        seq = TargetSequence(backend, sid, Sampling.of(SamplingParams(temperature=0.0)), seed=0)
        backend.open(sid)
        seq.start(prompt)
        reused = seq.stats.reused
        while not seq.prefill_step(64):
            pass
        return reused, seq._next, seq

    _, ref_a, _ = first_row(fresh, 1, prompts[0])
    _, ref_b, _ = first_row(fresh, 2, prompts[1])
    _, ref_c, _ = first_row(fresh, 3, prompts[2])
    _, ref_u, _ = first_row(fresh, 4, unrelated)

    reused, a, seq = first_row(shared, 1, prompts[0])
    assert reused == 0
    seq.decode_one()  # session 1 goes on while session 2 starts
    reused, b, _ = first_row(shared, 2, prompts[1])  # copied from the live session 1
    assert reused >= max(MIN_REUSE, len(base) - 2)
    shared.close(1)
    reused, c, _ = first_row(shared, 3, prompts[2])  # takes over session 1's free sequence
    assert reused >= len(base) - 2
    shared.close(2)
    reused, u, _ = first_row(shared, 4, unrelated)  # a free sequence with another's KV, cleared
    assert reused == 0
    for got, ref in ((a, ref_a), (b, ref_b), (c, ref_c), (u, ref_u)):
        assert np.allclose(got, ref, atol=1e-6)
    assert shared.reused_tokens > 2 * MIN_REUSE
