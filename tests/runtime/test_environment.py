"""The environment record: complete, deterministic in shape, and free of secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from batchsafe.runtime.environment import REDACTED, capture_environment, gpu_info, relevant_env

ROOT = Path(__file__).resolve().parents[2]


def test_keys_and_values():
    env = capture_environment([{"engine": "fake", "b": 1, "a": 2}])
    assert list(env) == sorted(env)
    assert {"python", "packages", "os", "cpu", "memory_total_bytes", "gpu", "batchsafe", "env", "engines"} <= set(env)
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["python"]["implementation"] == "CPython"
    assert "pydantic==2.13.4" in env["packages"]
    assert env["packages"] == sorted(env["packages"], key=str.lower)
    assert env["os"]["system"] == "Linux" and env["os"]["release"] == os.uname().release
    assert env["cpu"]["cores"] == os.cpu_count() and env["cpu"]["model"]
    assert env["cpu"]["flags"] and env["cpu"]["flags"] == sorted(env["cpu"]["flags"])
    assert env["memory_total_bytes"] > 100 * 2**20
    assert env["engines"] == [{"a": 2, "b": 1, "engine": "fake"}] and list(env["engines"][0]) == ["a", "b", "engine"]
    json.dumps(env, allow_nan=False)  # serialisable as is


def test_git_commit_of_this_checkout():
    src = capture_environment([])["batchsafe"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:  # an sdist / export: no checkout to describe
        assert src["git_commit"] is None
        return
    assert src["git_commit"] == head.stdout.strip() and re.fullmatch(r"[0-9a-f]{40}", src["git_commit"])
    porcelain = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    assert src["git_dirty"] is bool(porcelain.stdout.strip())


def test_only_whitelisted_env_vars(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2-very-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-very-secret")
    monkeypatch.setenv("VLLM_API_KEY", "vllm-very-secret")
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")
    monkeypatch.setenv("GGML_NO_BACKTRACE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    env = capture_environment([])
    text = json.dumps(env)
    assert "very-secret" not in text and "SECRET_TOKEN" not in text and "AWS_SECRET" not in text
    assert env["env"]["VLLM_API_KEY"] == REDACTED
    assert env["env"]["VLLM_BATCH_INVARIANT"] == "1" and env["env"]["GGML_NO_BACKTRACE"] == "1"
    assert env["env"]["OMP_NUM_THREADS"] == "3" and env["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert all(k in ("CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "CMAKE_ARGS", "CUDA_VISIBLE_DEVICES",
                     "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")
               or k.startswith(("VLLM_", "OLLAMA_", "GGML_")) for k in env["env"])
    assert relevant_env({"HOME": "/root", "OLLAMA_HOST": "x"}) == {"OLLAMA_HOST": "x"}


def test_gpu_absent_is_null_and_present_is_parsed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_info() is None and capture_environment([])["gpu"] is None
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   'if [ "$1" = "" ]; then echo "| NVIDIA-SMI 550.54  Driver Version: 550.54  CUDA Version: 12.4 |";'
                   ' else echo "NVIDIA H100 80GB HBM3, 550.54.15, 81559, GPU-abc"; fi\n')
    smi.chmod(0o755)
    info = gpu_info()
    assert info == {"cuda": "12.4", "driver": "550.54.15",
                    "gpus": [{"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory_mib": "81559",
                              "uuid": "GPU-abc"}]}


def test_two_captures_agree():
    a, b = capture_environment([]), capture_environment([])
    assert json.dumps(a) == json.dumps(b)
