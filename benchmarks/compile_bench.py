"""Compile-time benchmarks: tr138_v2 against the real datasets, and a synthetic
15-model spec whose tasks select from the full datasets (every record eligible)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from batchsafe.compiler.compile import compile_spec

ROOT = Path(__file__).resolve().parents[1]


def synthetic_spec(models: int = 15) -> dict[str, Any]:
    """tr138_v2 scaled to 15 models on every phase, loading every file of every dataset.

    Tasks keep tr138's per-model counts (plus XSTest and HarmBench tasks), but their
    datasets list every original file (all MMLU test+dev subjects, all ARC splits, both
    TruthfulQA versions, both jailbreak files, ...), so the compiler hashes and parses the
    full datasets and selects from full pools.
    """
    yaml = YAML(typ="safe")
    spec = yaml.load((ROOT / "specs/tr138_v2.yaml").read_text())
    spec["experiment"]["id"] = "synthetic_15_models"
    names = [f"model-{i:02d}" for i in range(models)]
    template = spec["models"]["qwen2.5-1.5b"]
    spec["models"] = {n: template for n in names}
    files = {
        "advbench": ["advbench/harmful_behaviors.csv"],
        "jailbreak_templates": ["jailbreak_llms/jailbreak_prompts_2023_05_07.csv", "jailbreak_llms/jailbreak_prompts_2023_12_25.csv"],
        "truthfulqa": ["truthfulqa/TruthfulQA.csv"],
        "bbq": ["bbq/*.jsonl"],
        "mmlu": ["mmlu/test/*_test.csv", "mmlu/dev/*_dev.csv"],
        "arc_challenge": ["arc_challenge/ARC-Challenge-Test.jsonl", "arc_challenge/ARC-Challenge-Dev.jsonl", "arc_challenge/ARC-Challenge-Train.jsonl"],
    }
    for name, paths in files.items():
        spec["datasets"][name]["files"] = [{"path": p} for p in paths]
    spec["datasets"]["truthfulqa_v1"] = {"format": "truthfulqa_csv", "files": [{"path": "truthfulqa/data/v1/TruthfulQA.csv"}]}
    spec["datasets"]["xstest"] = {"format": "xstest_csv", "files": [{"path": "xstest/xstest_prompts.csv"}]}
    spec["datasets"]["harmbench"] = {"format": "harmbench_csv", "files": [{"path": "harmbench/harmbench_behaviors_text_all.csv"}]}
    spec["datasets"]["forbidden"] = {"format": "forbidden_question_csv", "files": [{"path": "jailbreak_llms/forbidden_question_set.csv"}]}
    spec["tasks"]["xstest"] = {"dataset": "xstest", "domain": "safety", "render": {"template": "{prompt}"},
                               "scorer": "refusal@2.2", "select": {"count": 25, "stratify_by": "type"}}
    spec["tasks"]["harmbench"] = {"dataset": "harmbench", "domain": "safety", "render": {"template": "{behavior}"},
                                  "scorer": "refusal@2.2", "select": {"count": 25, "where": {"functional_category": "standard"}}}
    spec["tasks"]["truthfulqa_v1"] = {"dataset": "truthfulqa_v1", "domain": "safety", "render": {"template": "{question}"},
                                      "scorer": "truthfulness@1.0", "select": {"count": 25}}
    spec["tasks"]["forbidden"] = {"dataset": "forbidden", "domain": "safety", "render": {"template": "{question}"},
                                  "scorer": "refusal@2.2", "select": {"count": 25, "stratify_by": "content_policy_name"}}
    extra = ["xstest", "harmbench", "truthfulqa_v1", "forbidden"]
    for phase in spec["phases"]:
        phase["models"] = names
        if phase["id"] in ("p1_batch_size", "p4_true_batch"):
            phase["tasks"] = phase["tasks"] + extra
    spec["targets"] = []
    return spec


def time_calls(fn, repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn``."""
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
    times = time_calls(lambda: compile_spec(ROOT / "specs/tr138_v2.yaml", data_dir), repeat)
    results["tr138_v2"] = {"samples": len(plan.samples), "plan_bytes": len(plan.to_bytes()),
                           "median_s": statistics.median(times), "min_s": min(times), "target_s": 0.5}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.yaml"
        YAML().dump(synthetic_spec(), path)
        big = compile_spec(path, data_dir)
        times = time_calls(lambda: compile_spec(path, data_dir), max(1, repeat // 2))
        results["synthetic_15_models"] = {"samples": len(big.samples), "prompts": len(big.prompts),
                                          "median_s": statistics.median(times), "min_s": min(times), "target_s": 10.0}
    return results
