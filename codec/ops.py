"""Backend selection for the kernels: the C extension or its numpy reference.

``PICOSPEC_KERNELS`` chooses: ``native`` (the cffi extension; failing to import
it is an error), ``reference`` (numpy only) or ``auto`` (the default: native if
the extension imports, else the reference). Both backends compute the same
definitions bit for bit and raise the same exceptions; this module re-exports
the chosen one's functions, so callers never import a backend directly.
"""

from __future__ import annotations

import os

from .errors import ConfigError

_CHOICES = ("auto", "native", "reference")


def _select() -> tuple[str, object]:
    choice = os.environ.get("PICOSPEC_KERNELS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"PICOSPEC_KERNELS must be one of {', '.join(_CHOICES)}, got {choice!r}")
    if choice != "reference":
        try:
            from . import native
        except ImportError as exc:
            if choice == "native":
                raise ImportError(
                    "PICOSPEC_KERNELS=native but the C kernels are not built "
                    f"({exc}); build them with `pip install -e .` in the repository root"
                ) from exc
        else:
            return "native", native
    from . import reference

    return "reference", reference


BACKEND, _impl = _select()
"""Which backend is in use: "native" or "reference"."""

transform_topk = _impl.transform_topk  # type: ignore[attr-defined]
transform_dense = _impl.transform_dense  # type: ignore[attr-defined]
sparse_encode = _impl.sparse_encode  # type: ignore[attr-defined]
sparse_decode = _impl.sparse_decode  # type: ignore[attr-defined]
sparse_size = _impl.sparse_size  # type: ignore[attr-defined]
key = _impl.key  # type: ignore[attr-defined]
uniforms = _impl.uniforms  # type: ignore[attr-defined]
gumbel_argmax = _impl.gumbel_argmax  # type: ignore[attr-defined]
pico_exp = _impl.pico_exp  # type: ignore[attr-defined]

__all__ = [
    "BACKEND",
    "gumbel_argmax",
    "key",
    "pico_exp",
    "sparse_decode",
    "sparse_encode",
    "sparse_size",
    "transform_dense",
    "transform_topk",
    "uniforms",
]
