"""The GPU run's CPU-side pieces: the converter's digest is the launcher's, the spec and driver are sound."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchsafe.runtime.launch.weights import weights_digest, weights_files

ROOT = Path(__file__).resolve().parents[2]


def _converter():
    spec = importlib.util.spec_from_file_location("convert_gguf", ROOT / "benchmarks" / "gpu" / "convert_gguf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_converter_digest_is_the_launchers(tmp_path: Path) -> None:
    """convert_gguf.folder_digest (stdlib only, runs on the GPU image) == weights.weights_digest,
    including the ignored bookkeeping file, hidden files and a nested file."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 7)
    (tmp_path / "sub" / "tok.json").write_text("ünïcode")
    (tmp_path / "batchsafe-model.json").write_text("{}")
    (tmp_path / ".hidden").write_text("x")
    digest, files = _converter().folder_digest(tmp_path)
    assert files == weights_files(tmp_path)
    assert digest == weights_digest(weights_files(tmp_path))
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert _converter().folder_digest(tmp_path)[0] != digest


def test_driver_script_parses_and_refuses_unknown_modes(tmp_path: Path) -> None:
    """h100.sh is valid bash and an unknown mode exits 2 without touching anything."""
    script = ROOT / "benchmarks" / "gpu" / "h100.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    proc = subprocess.run(["bash", str(script), "nonsense"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")}, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown mode" in proc.stderr


def test_h100_spec_validates() -> None:
    """specs/h100_vllm.yaml is a valid spec (compiling it needs ../shared/data; see its README)."""
    proc = subprocess.run([sys.executable, "-m", "batchsafe.cli", "validate", str(ROOT / "specs" / "h100_vllm.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 phases" in proc.stdout


@pytest.mark.parametrize("phase", ["p1_batch_size", "p6_batch_invariant"])
def test_h100_plan_pins_the_stack(phase: str) -> None:
    """The compiled plan pins vLLM 0.26.0, the weights digest, and VLLM_BATCH_INVARIANT per phase."""
    data = ROOT.parent / "shared" / "data"
    if not (data / "advbench").is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI has shared/data beside the checkout; it is missing")
        pytest.skip("the public datasets (../shared/data) are not beside this checkout")
    from batchsafe.compiler.compile import compile_spec

    plan = compile_spec(ROOT / "specs" / "h100_vllm.yaml", data)
    eng = next(e for e in plan.engines if e.kind == "vllm")
    assert eng.config["version"] == "0.26.0" and eng.config["env"]["VLLM_BATCH_INVARIANT"] == "0"
    assert plan.models[0].hf_weights_sha256.startswith("sha256:942f3119")  # what convert_gguf.py printed
    groups = [g for g in plan.groups if g.phase == phase]
    assert sorted({len(g.members) for g in groups}) == [1, 2, 4, 8, 16, 32]
    kernels = {g.condition.kernel for g in groups}
    assert kernels == ({"batch_invariant"} if phase == "p6_batch_invariant" else {None})


def test_the_gpu_bundle_verifies_here(tmp_path: Path) -> None:
    """The H200 bundle (benchmarks/gpu/results) verifies on this CPU machine: integrity, plan,
    coverage, stack (launch records vs plan), rescoring and statistics all PASS; only the
    target the run disproved fails, naming its number (exit 1)."""
    archive = ROOT / "benchmarks" / "gpu" / "results" / "h100_vllm-6fe9151637e9.tar.gz"
    proc = subprocess.run([sys.executable, "-m", "batchsafe.cli", "verify", str(archive), "--no-recompile", "--json"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    import json

    report = json.loads(proc.stdout)
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert status["targets"] == "FAIL", status
    failing = {n for n, st in status.items() if st == "FAIL"}
    assert failing == {"targets"}, status
    for stage in ("integrity", "schemas", "plan", "coverage", "stack", "rescoring", "statistics"):
        assert status[stage] == "PASS", (stage, status)
    assert "batch_invariant_identical" in json.dumps(report) and "0.99545" in json.dumps(report)
