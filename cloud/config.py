"""The verifier's configuration: one TOML file (``cloud.toml``), flags on top.

``[cloud]`` says what to serve and where; ``[limits]`` sets any of the
service's limits (``Limits``: the same names as ``--limit NAME=VALUE``). An
unknown key, a wrong type or a bad value is refused with the file, the key and
what was expected. The token never lives in the file: ``token_file`` names one
(default: the systemd credential ``$CREDENTIALS_DIRECTORY/token``, else
``$PICOSPEC_TOKEN``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError
from picospec.runtime.netargs import token_from
from picospec.runtime.tomlconfig import load_sections, overridden

from .limits import Limits

BACKENDS = ("llama", "torch", "ort", "trtllm")


@dataclass(frozen=True)
class CloudConfig:
    """Everything ``picospec cloud serve`` needs ([cloud] of cloud.toml)."""

    listen: str = "127.0.0.1:4433"
    """HOST:PORT the QUIC server binds (UDP)."""
    backend: str = "llama"
    """Verifier backend: llama (llama.cpp, CPU), torch, ort, trtllm (not verified)."""
    model: str = ""
    """The target model for the backend; empty: the ``pair``'s target GGUF (llama)."""
    pair: str = "smollm2"
    """Model pair whose target to serve when ``model`` is empty."""
    device: str = ""
    """torch: cuda or cpu (default: cuda if present); ort: cpu or cuda."""
    gpus: int = 1
    """GPUs one target spans: torch places its layers across them, trtllm runs
    tensor parallel over them (neither verified on more than one GPU)."""
    cert: str = ""
    """TLS certificate (PEM)."""
    key: str = ""
    """TLS private key (PEM)."""
    token_file: str = ""
    """File holding the shared token (default: the systemd credential, else $PICOSPEC_TOKEN)."""
    threads: int = 0
    """Backend CPU threads; 0: half the cores."""
    n_ctx: int = 2048
    """Context tokens per session."""
    max_sessions: int = 16
    """Generations the backend holds at once."""
    batch: bool = True
    """Batch the forwards of many sessions into one where the backend can."""
    prefix_cache: bool = True
    """Reuse the KV of a prompt prefix another session evaluated (llama, batched)."""
    idle_timeout_s: float = 60.0
    """A QUIC connection silent this long is closed."""
    metrics: str = ""
    """HOST:PORT of the HTTP endpoints /metrics, /health and /ready; empty: none."""
    drain_s: float = 10.0
    """On SIGTERM, how long open generations may finish before they get a Bye."""
    limits: Limits = field(default_factory=Limits)
    """[limits]: the service's limits."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("n_ctx", "max_sessions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.threads < 0:
            raise ConfigError("threads must be >= 0")
        for name in ("idle_timeout_s", "drain_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds")

    def with_overrides(self, **values: Any) -> CloudConfig:
        """The configuration with the given fields replaced (flags over the file);
        None values are left as they were."""
        return overridden(self, values)

    def token(self) -> bytes:
        return token_from(self.token_file)


_CLOUD = frozenset(f for f in CloudConfig.__dataclass_fields__ if f != "limits")


def load(path: str | Path) -> CloudConfig:
    """A CloudConfig from a TOML file; errors name the file, the key and what was expected."""
    sections = load_sections(path, {"cloud": (CloudConfig, _CLOUD), "limits": (Limits, None)})
    try:
        return CloudConfig(**sections["cloud"], limits=Limits(**sections["limits"]))
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None
