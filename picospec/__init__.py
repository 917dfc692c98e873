"""picospec: edge-cloud speculative decoding with exact output.

Subpackages: ``picospec.codec`` (the shared contract), ``picospec.edge`` (the
device side), ``picospec.cloud`` (the verifier side). The ``picospec`` command
is ``picospec.cli``. ``from picospec import Edge`` is the robot app's API
(``picospec.edge.api``).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["AsyncEdge", "Edge", "__version__"]


def __getattr__(name: str) -> Any:
    """``from picospec import Edge``: the robot app's API, loaded when first used."""
    if name in ("Edge", "AsyncEdge"):
        from picospec.edge import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
