"""What the verifier allows its clients: every limit it announces and enforces.

One frozen dataclass, a docstring per field (aioquic's configuration style).
The Welcome carries the limits an edge must respect; the rest protect the
server from a peer that misbehaves. Every refusal names the limit it hit and is
counted by error code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from picospec.codec.errors import ConfigError
from picospec.codec.framing import MAX_FRAME
from picospec.codec.messages import MAX_BLOCK
from picospec.codec.sampling import MAX_K

MIN_PREFILL_CHUNK = 16
"""The smallest prefill chunk the server shrinks to (smaller batches waste the model)."""


@dataclass(frozen=True)
class Limits:
    """The verifier service's limits (``picospec cloud serve --limit NAME=VALUE``)."""

    max_connections: int = 256
    """Connections open at once; one more is answered with a BUSY Error and closed."""
    max_generations_per_connection: int = 4
    """Generations open at once on one connection (announced)."""
    max_generations: int = 16
    """Generations open at once on the whole server (a Start over it gets BUSY)."""
    max_prompt_tokens: int = 0
    """Longest prompt (announced); 0: the backend's context size minus one."""
    max_new_tokens: int = 1024
    """Most tokens one generation may ask for (announced)."""
    max_depth: int = 8
    """Draft blocks queued per generation (announced: the edge's pipeline depth)."""
    max_block: int = MAX_BLOCK
    """Drafted tokens per block (announced)."""
    max_k: int = 64
    """Entries of a generation's sparse records (announced)."""
    max_queued_bytes: int = 4 * MAX_FRAME
    """Bytes received on one connection and not yet processed; a peer that sends
    more than that ahead of the model is closed with a LIMIT Error."""
    max_send_buffer: int = 256 * 1024
    """Bytes written to one connection and not yet acknowledged by its peer; over
    this the connection gets no model time (a cloud-only generation pauses) until
    its peer has read half of it."""
    max_refusals: int = 64
    """Requests refused on one connection (unknown generations, blocks over a limit)
    before the connection itself is closed: a peer that keeps asking for what it
    is told it cannot have is misbehaving, and each refusal costs the server."""
    hello_timeout_s: float = 10.0
    """Seconds a new connection has to send its Hello."""
    prefill_chunk: int = 256
    """Most prompt tokens evaluated per unit of model work, so one long prompt
    cannot hold the model while other connections' blocks wait."""
    prefill_unit_s: float = 0.1
    """How long one prefill unit should take while other connections have
    generations open: the server shrinks the chunk (down to MIN_PREFILL_CHUNK
    tokens) when the model is slower than that, since a verify that arrives
    during a unit waits for it to end."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if f.type == "float":
                if not (number and math.isfinite(value) and value > 0):
                    raise ConfigError(f"limit {f.name} must be a number > 0, got {value!r}")
                continue
            floor = 0 if f.name == "max_prompt_tokens" else 1
            if not (number and isinstance(value, int) and value >= floor):
                raise ConfigError(f"limit {f.name} must be an integer >= {floor}, got {value!r}")
        if self.max_block > MAX_BLOCK:
            raise ConfigError(f"limit max_block must be <= {MAX_BLOCK}, got {self.max_block}")
        if self.max_k > MAX_K:
            raise ConfigError(f"limit max_k must be <= {MAX_K}, got {self.max_k}")
        if self.max_generations_per_connection > self.max_generations:
            raise ConfigError(
                "limit max_generations_per_connection must not exceed max_generations "
                f"({self.max_generations_per_connection} > {self.max_generations})"
            )

    def prompt_limit(self, context_size: int) -> int:
        """The longest prompt for a backend holding context_size tokens per session."""
        fit = context_size - 1
        return fit if self.max_prompt_tokens == 0 else min(self.max_prompt_tokens, fit)

    def max_frame(self, context_size: int) -> int:
        """The largest frame an authenticated peer may send: a Start with the
        longest prompt, or the protocol's default, whichever is larger."""
        return max(MAX_FRAME, 4 * self.prompt_limit(context_size) + 1024)

    @classmethod
    def parse(cls, items: list[str], base: Limits | None = None) -> Limits:
        """Limits from NAME=VALUE strings (the command line), over base's values."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, int | float] = {}
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in known:
                choices = ", ".join(known)
                raise ConfigError(f"unknown limit {item!r}; limits are NAME=VALUE with {choices}")
            try:
                values[name] = float(text) if known[name].type == "float" else int(text)
            except ValueError:
                raise ConfigError(f"limit {name} takes a number, got {text!r}") from None
        return replace(base, **values) if base is not None else cls(**values)  # type: ignore[arg-type]


class GenerationBudget:
    """Generations open on the whole server, shared by every connection's session."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.closed = ""
        """Why no generation may start any more (the server drains), or ""."""

    def close(self, why: str) -> None:
        self.closed = why

    def acquire(self) -> bool:
        if self.closed or self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open = max(0, self.open - 1)
