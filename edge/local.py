"""Generation by the drafter alone: ``edge-only`` mode, and the offline fallback.

The drafter samples each token from its own full distribution, keyed by (seed,
position) like every other random number, and the edge session trims at max
tokens and after an end token. ``should_yield`` is asked between tokens: the
offline fallback stops as soon as the cloud is back, and the rest of the
generation continues verified from the tokens committed so far.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from picospec.codec.sampling import Sampling
from picospec.codec.scheme import Mode

from .model import DraftModel
from .session import Committed, EdgeSession, Finished

Call = Callable[..., Awaitable[Any]]
"""Runs a drafter call on the drafter's thread."""


@dataclass
class LocalRun:
    """What a local run committed, and why it stopped."""

    seed: int
    scheme: str
    tokens: list[int] = field(default_factory=list)
    finished: str = ""
    """"max tokens", "end of text", "stopped", "deadline", or "yielded" (the cloud is back)."""
    seconds: float = 0.0
    ttft: float = 0.0
    prefill_s: float = 0.0
    steps: list[float] = field(default_factory=list)


async def generate_local(
    drafter: DraftModel,
    call: Call,
    context: list[int],
    seed: int,
    sampling: Sampling,
    max_new: int,
    on_tokens: Callable[[list[int]], bool | None] | None = None,
    *,
    should_yield: Callable[[], bool] | None = None,
    deadline: float | None = None,
) -> LocalRun:
    """Up to max_new tokens after context from the drafter alone (on_tokens returning
    True stops there)."""
    loop = asyncio.get_running_loop()
    run = LocalRun(seed, sampling.scheme.value)
    t0 = time.perf_counter()
    sess = EdgeSession(
        0,
        tuple(context),
        seed=seed,
        max_new=max_new,
        sampling=sampling,
        is_end=drafter.is_end,
        mode=Mode.EDGE_ONLY,
    )
    await call(drafter.begin, list(context), seed, sampling)
    run.prefill_s = time.perf_counter() - t0
    while not sess.done and not run.finished:
        if should_yield is not None and should_yield():
            run.finished = "yielded"
            break
        if deadline is not None and loop.time() >= deadline:
            run.finished = "deadline"
            break
        t_step = time.perf_counter()
        token = await call(drafter.sample_own)
        run.steps.append(time.perf_counter() - t_step)
        run.ttft = run.ttft or time.perf_counter() - t0
        for ev in sess.commit([token]):
            if isinstance(ev, Committed):
                run.tokens += ev.tokens
                if on_tokens is not None and on_tokens(list(ev.tokens)):
                    run.finished = "stopped"
            elif isinstance(ev, Finished) and not run.finished:
                run.finished = ev.reason
    run.seconds = time.perf_counter() - t0
    return run
