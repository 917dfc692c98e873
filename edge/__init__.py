"""picospec.edge: the device side.

The drafter (a small GGUF model run by llama.cpp), the edge session that keeps
drafting while the cloud verifies, the QUIC client, the Python API for robot
applications (``Edge``, ``AsyncEdge``: sync, async, streaming, offline
fallback) and the local OpenAI-compatible service. Imports ``picospec.codec``,
never ``picospec.cloud``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AsyncEdge", "Chunk", "Edge", "QueueFull", "Reply", "ReplyError"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # the API loads aioquic and aiohttp-free modules only when used
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
