"""The llama.cpp verifier backend against the shared backend contract."""

from __future__ import annotations

import pytest
from backend_contract import BackendContract

from picospec.cloud.llama_backend import LlamaBackend

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def backend(smollm2):
    return LlamaBackend(smollm2["target"], n_ctx=256, threads=2)


@pytest.fixture(scope="module")
def prompt(backend):
    return backend.weights.tokenize("A robot arm picks up a red cube and")


class TestLlamaBackend(BackendContract):
    pass
