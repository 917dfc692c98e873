"""The edge's configuration: one TOML file (``/etc/picospec/edge.toml``), flags on top.

``[edge]`` says how to reach the cloud and which drafter to run; ``[serve]``
says where ``picospec edge serve`` listens. Every key is a field below with its
type and meaning; an unknown key, a wrong type or a bad value is refused with
the file, the key and what was expected. The auth token never lives in the
file itself: ``token_file`` names a file (systemd's ``LoadCredential=`` puts
one in ``$CREDENTIALS_DIRECTORY``, found there by default), or ``$PICOSPEC_TOKEN``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError
from picospec.runtime.netargs import token_from
from picospec.runtime.tomlconfig import load_sections, overridden

from .plan import parse_mode

FALLBACKS = ("local", "wait", "fail")
"""What a generation does when the cloud is unreachable or lost: continue on the
drafter alone (and return to the cloud when it is back), wait for it up to the
deadline, or fail with the tokens committed so far."""


@dataclass(frozen=True)
class EdgeConfig:
    """Everything an edge needs to run (``[edge]`` and ``[serve]`` of edge.toml)."""

    cloud: str = ""
    """The verifier's HOST:PORT; empty: no cloud (every generation runs locally)."""
    pin: str = ""
    """SHA-256 fingerprint of the cloud's certificate (this or ``ca``)."""
    ca: str = ""
    """CA certificate file that signed the cloud's certificate (this or ``pin``)."""
    server_name: str = "localhost"
    """The name in the cloud's certificate (with ``ca``)."""
    token_file: str = ""
    """File holding the shared token; default: $CREDENTIALS_DIRECTORY/token, else
    $PICOSPEC_TOKEN."""
    name: str = "picospec-edge"
    """How this edge introduces itself to the cloud (its logs)."""
    pair: str = "smollm2"
    """Model pair whose drafter to run (prepared in the model cache)."""
    drafter: str = ""
    """A drafter GGUF file instead of ``pair``."""
    threads: int = 0
    """llama.cpp threads for the drafter; 0: half the cores."""
    gpu_layers: int = 0
    """Drafter layers a GPU build of llama.cpp offloads (-1: all; a Jetson's CUDA)."""
    n_ctx: int = 2048
    """Drafter context tokens (prompt and generated)."""
    mode: str = "auto"
    """Default mode of a generation: auto (chosen from what the edge measured),
    pipeline, sync, cloud-only, cloud-led or edge-only."""
    fallback: str = "local"
    """Default fallback: local, wait or fail."""
    queue_size: int = 8
    """Requests that may wait for the drafter; one more is refused (HTTP 429)."""
    offline_after_s: float = 2.0
    """Silence from the cloud (while a reply is due) after which it counts as lost."""
    reconnect_max_s: float = 5.0
    """Longest wait between reconnection attempts (exponential backoff with jitter)."""
    listen: str = "127.0.0.1:8080"
    """[serve] HOST:PORT of the local HTTP service."""
    unix_socket: str = ""
    """[serve] a unix socket path to listen on instead of ``listen``."""
    api_key_file: str = ""
    """[serve] a file holding a bearer key the HTTP service then requires."""

    def __post_init__(self) -> None:
        parse_mode(self.mode)
        if self.fallback not in FALLBACKS:
            raise ConfigError(
                f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}"
            )
        if self.pin and self.ca:
            raise ConfigError("give the cloud's pin or its ca, not both")
        if self.gpu_layers < -1:
            raise ConfigError(f"gpu_layers must be >= -1 (-1: all), got {self.gpu_layers}")
        for name in ("threads", "n_ctx", "queue_size"):
            if getattr(self, name) < (0 if name == "threads" else 1):
                raise ConfigError(f"{name} must be >= {0 if name == 'threads' else 1}")
        for name in ("offline_after_s", "reconnect_max_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds")

    def with_overrides(self, **values: Any) -> EdgeConfig:
        """The configuration with the given fields replaced (flags over the file);
        None values are left as they were."""
        return overridden(self, values)

    def token(self) -> bytes:
        """The shared token: token_file, else the systemd credential, else $PICOSPEC_TOKEN."""
        return token_from(self.token_file)

    def api_key(self) -> str:
        """The HTTP service's bearer key ("" when none is required)."""
        if not self.api_key_file:
            return ""
        try:
            return Path(self.api_key_file).read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"cannot read the api key file {self.api_key_file}: {e.strerror}"
            ) from None


_SERVE = frozenset({"listen", "unix_socket", "api_key_file"})
_EDGE = frozenset(f.name for f in fields(EdgeConfig)) - _SERVE


def load(path: str | Path) -> EdgeConfig:
    """An EdgeConfig from a TOML file; errors name the file, the key and what was expected."""
    sections = load_sections(path, {"edge": (EdgeConfig, _EDGE), "serve": (EdgeConfig, _SERVE)})
    try:
        return EdgeConfig(**sections["edge"], **sections["serve"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
