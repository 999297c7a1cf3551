"""specs/quickstart.yaml compiles with no data directory: its data ships with the spec."""

from __future__ import annotations

from pathlib import Path

from batchsafe.compiler.compile import compile_spec

SPEC = Path(__file__).resolve().parents[2] / "specs" / "quickstart.yaml"


def test_quickstart_needs_no_data_dir_and_is_cwd_independent(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("BATCHSAFE_DATA", raising=False)
    plan = compile_spec(SPEC, "/nonexistent/data/dir")
    assert plan.summary()["phases"] == {"p1_batch_size": 104, "p3_quant": 48, "p5_repeat_floor": 48}
    assert {i.root for i in plan.inputs} == {"spec"} and all(i.pinned for i in plan.inputs)
    monkeypatch.chdir(tmp_path)
    assert compile_spec(SPEC).to_bytes() == plan.to_bytes()
    assert plan.locators.model_sources["qwen2.5-coder-0.5b"][0]["kind"] == "pypi_chunks"
    assert plan.models[0].gguf_sha256 == "sha256:1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
