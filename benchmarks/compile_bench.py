"""Compile-time benchmarks: tr138_v2 against the real datasets, and a synthetic
15-model spec whose tasks select from the full datasets (every record eligible)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from compiler.compile import compile_spec

ROOT = Path(__file__).resolve().parents[1]


def synthetic_spec(models: int = 15) -> dict[str, Any]:
    """tr138_v2 scaled up: 15 models, every phase, selections of the whole (filtered) datasets."""
    yaml = YAML(typ="safe")
    spec = yaml.load((ROOT / "specs/tr138_v2.yaml").read_text())
    spec["experiment"]["id"] = "synthetic_15_models"
    names = [f"model-{i:02d}" for i in range(models)]
    template = spec["models"]["qwen2.5-1.5b"]
    spec["models"] = {n: template for n in names}
    # Full datasets: every eligible record becomes a prompt.
    counts = {"advbench_refusal": 520, "jailbreak_amplification": 300, "bbq_bias": 5000,
              "truthfulqa": 790, "mmlu_real": 14000, "arc_challenge": 1172}
    for task, count in counts.items():
        spec["tasks"][task]["select"]["count"] = count
        spec["tasks"][task]["select"].pop("stratify_by", None)
    for phase in spec["phases"]:
        phase["models"] = names
    spec["targets"] = []
    return spec


def _time(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run(data_dir: Path, repeat: int = 5) -> dict[str, Any]:
    """Median and min wall time (s) of compile_spec for both specs, plus sizes."""
    results: dict[str, Any] = {}
    plan = compile_spec(ROOT / "specs/tr138_v2.yaml", data_dir)
    times = _time(lambda: compile_spec(ROOT / "specs/tr138_v2.yaml", data_dir), repeat)
    results["tr138_v2"] = {"samples": len(plan.samples), "plan_bytes": len(plan.to_bytes()),
                           "median_s": statistics.median(times), "min_s": min(times), "target_s": 0.5}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.yaml"
        YAML().dump(synthetic_spec(), path)
        big = compile_spec(path, data_dir)
        times = _time(lambda: compile_spec(path, data_dir), max(1, repeat // 2))
        results["synthetic_15_models"] = {"samples": len(big.samples), "prompts": len(big.prompts),
                                          "median_s": statistics.median(times), "min_s": min(times), "target_s": 10.0}
    return results
