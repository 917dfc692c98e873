"""Shared fixtures: the real model pair, prepared once per test session.

Tests marked ``models`` need llama-cpp-python and the smollm2 pair. Without
them they are skipped, unless PICOSPEC_REQUIRE_MODELS=1 (set by the test
command of setup.sh), where a missing model fails the run instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _unavailable(why: str) -> None:
    if os.environ.get("PICOSPEC_REQUIRE_MODELS") == "1":
        pytest.fail(f"PICOSPEC_REQUIRE_MODELS=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def smollm2() -> dict[str, Path]:
    """Paths of the smollm2 pair: {'target': Q4_1 GGUF, 'drafter': Q2_K GGUF}."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        _unavailable("llama-cpp-python is not installed")
    from picospec.runtime.models import ProvisioningError, prepare

    try:
        return prepare("smollm2", say=lambda _msg: None)
    except ProvisioningError as e:
        _unavailable(str(e))
        raise
