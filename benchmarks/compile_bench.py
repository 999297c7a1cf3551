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


MODELS_300K = 86
"""The synthetic spec at 86 models: 301,516 samples, 139,062 groups."""


def run(data_dir: Path, repeat: int = 5, big: bool = True) -> dict[str, Any]:
    """Median and min wall time (s) of compile_spec for tr138_v2, the 15-model synthetic spec and
    (``big``) the 300k one, each in a fresh process for its peak RSS, with the issue-16 targets."""
    import sys

    from benchmarks.measure import run_child

    results = _in_process(data_dir, repeat)
    runs = [("tr138_v2", ROOT / "specs/tr138_v2.yaml", repeat, 0.5, None)]
    with tempfile.TemporaryDirectory() as tmp:
        if big:
            path = Path(tmp) / "synthetic_300k.yaml"
            YAML().dump(synthetic_spec(MODELS_300K), path)
            runs.append(("synthetic_300k", path, 1, 10.0, 2048.0))
        for name, spec, n, target_s, target_rss in runs:
            r = run_child("compile", str(spec), str(data_dir), repeat=n)
            results.setdefault(name, {}).update({
                "samples": r["samples"], "groups": r["groups"], "fresh_process_median_s": r["compile_median_s"],
                "fresh_process_min_s": r["compile_min_s"], "target_s": target_s, "peak_rss_mb": r["peak_rss_mb"],
                "target_rss_mb": target_rss})
            print(f"compile {name} ({r['samples']:,} samples): {r['compile_median_s']:.3f} s (target {target_s} s), "
                  f"peak RSS {r['peak_rss_mb']:.0f} MiB" + (f" (target {target_rss:.0f})" if target_rss else ""),
                  file=sys.stderr)
    return results


def _in_process(data_dir: Path, repeat: int) -> dict[str, Any]:
    """Median and min wall time (s) of compile_spec for both specs, plus sizes (warm, in this process)."""
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
