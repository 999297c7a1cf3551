"""A spec with a tensor_parallel phase, shared by the compiler, runtime and analysis TP tests."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "specs" / "vllm_cpu.yaml"

TP_PHASE = """phases:
  - id: p_tp
    kind: tensor_parallel
    models: [smollm2-135m]
    engine: vllm
    tasks: [advbench_refusal, borderline]
    dispatch: synchronized
    axes: {AXES}
targets: []
"""


def tp_spec(tmp_path: Path, axes: str = "{tensor_parallel: [1, 2], batch_sizes: [1, 4]}",
            edit=lambda t: t) -> Path:
    """specs/vllm_cpu.yaml with its phases replaced by one TP phase (its data copied beside it)."""
    shutil.copytree(REPO / "specs" / "quickstart", tmp_path / "quickstart", dirs_exist_ok=True)
    head = BASE.read_text().split("\nphases:\n")[0]
    path = tmp_path / "tp.yaml"
    path.write_text(edit(head + "\n" + TP_PHASE.replace("{AXES}", axes)))
    return path
