"""Timing profiles: what one edge, one link and one cloud cost, as the simulator reads them.

A profile is one of three kinds, each a small JSON object with a ``kind`` field:

* ``edge``: ``draft_ms`` (one drafter step, drafting one token) and
  ``prefill_ms`` (the drafter evaluating the prompt once per generation);
* ``cloud``: ``verify_ms`` (one target forward over n tokens, for n = 1, 2, ...;
  the first entry is one decode step), ``prefill_ms`` (the prompt and the first
  token), ``round_ms`` (work per verify round outside the forward: verification
  maths, framing) and optionally ``batched_round_ms`` (sessions -> milliseconds
  of one batched verify round over that many sessions);
* ``link``: ``rtt_ms``, ``rate_mbit`` (0 = unlimited), ``packet_overhead_bytes``
  (UDP, QUIC and TLS bytes added to each message) and ``loss``.

Every profile says where its figures come from (``source``): measured here, by
which command, or a published figure used as a simulator input. Profiles are
loaded from files or by the name of a built-in (``BUILTIN``); bad fields are
refused with a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError
from picospec.runtime.timemodel import Costs, extend


def _number(kind: str, name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{kind} profile: {name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{kind} profile: {name} must be {bound}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class EdgeProfile:
    """The device that drafts."""

    name: str
    draft_ms: float
    """One drafter step (one drafted token), as the edge loop experiences it."""
    prefill_ms: float = 0.0
    """The drafter evaluating the prompt, from the request on (while the cloud
    computes the first token)."""
    source: str = ""
    """Where the figures come from."""
    kind: str = field(default="edge", init=False)

    def __post_init__(self) -> None:
        _number("edge", "draft_ms", self.draft_ms, positive=True)
        _number("edge", "prefill_ms", self.prefill_ms)


@dataclass(frozen=True)
class CloudProfile:
    """The verifier."""

    name: str
    verify_ms: tuple[float, ...]
    """verify_ms[n - 1]: one target forward over n tokens (n = 1 is a decode step)."""
    prefill_ms: float = 0.0
    """The prompt's forward and the first token."""
    round_ms: float = 0.0
    """Per verify round, outside the forward (verification maths, framing)."""
    batched_round_ms: dict[int, float] = field(default_factory=dict)
    """Sessions -> milliseconds of one verify round batched over that many sessions."""
    source: str = ""
    kind: str = field(default="cloud", init=False)

    def __post_init__(self) -> None:
        if not self.verify_ms:
            raise ConfigError("cloud profile: verify_ms needs at least one entry (n = 1)")
        object.__setattr__(
            self,
            "verify_ms",
            tuple(
                _number("cloud", f"verify_ms[{i}]", v, positive=True)
                for i, v in enumerate(self.verify_ms)
            ),
        )
        _number("cloud", "prefill_ms", self.prefill_ms)
        _number("cloud", "round_ms", self.round_ms)
        batched = {}
        for k, v in self.batched_round_ms.items():
            try:
                sessions = int(k)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"cloud profile: batched_round_ms key {k!r} is not a count"
                ) from None
            if sessions < 1:
                raise ConfigError(f"cloud profile: batched_round_ms key {k!r} must be >= 1")
            batched[sessions] = _number("cloud", f"batched_round_ms[{k}]", v, positive=True)
        object.__setattr__(self, "batched_round_ms", batched)

    def forward_ms(self, n: int) -> float:
        """One forward over n tokens; past the table, linear in its last two entries."""
        return extend(self.verify_ms, n)


@dataclass(frozen=True)
class LinkProfile:
    """The network between them."""

    name: str
    rtt_ms: float
    rate_mbit: float = 0.0
    """Each direction's rate; 0 = unlimited."""
    packet_overhead_bytes: int = 60
    """Bytes each message gains on the wire (UDP/IP, QUIC short header, AEAD tag, frame header)."""
    loss: float = 0.0
    """Recorded with the profile; the simulator does not model loss."""
    source: str = ""
    kind: str = field(default="link", init=False)

    def __post_init__(self) -> None:
        _number("link", "rtt_ms", self.rtt_ms)
        _number("link", "rate_mbit", self.rate_mbit)
        _number("link", "packet_overhead_bytes", self.packet_overhead_bytes)
        if not (isinstance(self.loss, int | float) and 0 <= self.loss < 1):
            raise ConfigError(f"link profile: loss must be in [0, 1), got {self.loss!r}")


Profile = EdgeProfile | CloudProfile | LinkProfile
_KINDS: dict[str, type[EdgeProfile] | type[CloudProfile] | type[LinkProfile]] = {
    "edge": EdgeProfile,
    "cloud": CloudProfile,
    "link": LinkProfile,
}


def to_dict(profile: Profile) -> dict[str, Any]:
    d = asdict(profile)
    if isinstance(profile, CloudProfile):
        d["verify_ms"] = list(profile.verify_ms)
        d["batched_round_ms"] = {str(k): v for k, v in profile.batched_round_ms.items()}
    return d


def from_dict(d: dict[str, Any], *, where: str = "profile") -> Profile:
    """A profile from its JSON object; refuses unknown kinds and fields by name."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: a profile is a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"{where}: kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    fields = {k: v for k, v in d.items() if k != "kind"}
    allowed = {f for f in cls.__dataclass_fields__ if f != "kind"}
    unknown = set(fields) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown {kind} profile field(s): {', '.join(sorted(unknown))}")
    missing = {
        f
        for f, spec in cls.__dataclass_fields__.items()
        if f != "kind"
        and f not in fields
        and spec.default is MISSING
        and spec.default_factory is MISSING
    }
    if missing:
        raise ConfigError(f"{where}: {kind} profile needs {', '.join(sorted(missing))}")
    if kind == "cloud" and isinstance(fields.get("verify_ms"), list):
        fields["verify_ms"] = tuple(fields["verify_ms"])
    return cls(**fields)


def save(profile: Profile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(profile), indent=2) + "\n")


def load(spec: str | Path, kind: str | None = None) -> Profile:
    """A profile by built-in name or from a JSON file; kind, if given, must match."""
    if isinstance(spec, str) and spec in BUILTIN:
        profile = BUILTIN[spec]
    else:
        path = Path(spec)
        if not path.is_file():
            names = ", ".join(n for n, p in BUILTIN.items() if kind is None or p.kind == kind)
            raise ConfigError(f"no profile file {spec!r} and no built-in of that name ({names})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not JSON ({e})") from None
        profile = from_dict(data, where=str(path))
    if kind is not None and profile.kind != kind:
        raise ConfigError(f"{spec}: a {profile.kind} profile where a {kind} profile is needed")
    return profile


_ISSUE = (
    "figure given in the evaluation issue for the paper's regime "
    "(a simulator input, not measured here)"
)
_ASSUMED = "assumed for the projection (not a published figure, not measured here)"

BUILTIN: dict[str, Profile] = {
    p.name: p
    for p in (
        EdgeProfile(
            "jetson-agx-orin-llama3.2-1b", draft_ms=97.0 / 4, source=f"97 ms per 4 tokens: {_ISSUE}"
        ),
        CloudProfile(
            "4xa100-llama3.1-70b",
            verify_ms=(87.0,) * 8,
            prefill_ms=87.0,
            source=f"87 ms per verify round: {_ISSUE}; the round cost is taken as flat in n",
        ),
        LinkProfile(
            "wan-20ms-100mbit", rtt_ms=20.0, rate_mbit=100.0, source=f"20 ms, 100 Mbit/s: {_ISSUE}"
        ),
        EdgeProfile(
            "jetson-agx-orin-qwen3-0.6b",
            draft_ms=97.0 / 4 * 0.6,
            source=f"0.6x the 1B drafter's step (parameter ratio): {_ASSUMED}",
        ),
        CloudProfile(
            "4xa100-qwen3-32b",
            verify_ms=(87.0 * 32 / 70,) * 8,
            prefill_ms=87.0 * 32 / 70,
            source=f"32/70 of the 70B round (parameter ratio, memory-bound): {_ASSUMED}",
        ),
    )
}


def costs_of(edge: EdgeProfile, link: LinkProfile, cloud: CloudProfile, sizes: int) -> Costs:
    """The time model's costs from the simulator's profiles, in seconds (forwards up
    to sizes tokens)."""
    return Costs(
        draft=edge.draft_ms / 1e3,
        verify=tuple(cloud.forward_ms(n) / 1e3 for n in range(1, sizes + 1)),
        rtt=link.rtt_ms / 1e3,
        prefill=cloud.prefill_ms / 1e3,
        draft_prefill=edge.prefill_ms / 1e3,
        round_overhead=cloud.round_ms / 1e3,
    )
