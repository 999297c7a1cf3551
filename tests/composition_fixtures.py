"""A tiny composition (seed 003 Study C) spec on the quickstart data, shared by the compiler,
runtime and real-server tests; ``composition_spec`` writes it (and the data) into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

QUICKSTART_DATASETS = """\
datasets:
  harmful:
    format: advbench_csv
    root: spec
    files: [{path: quickstart/advbench/harmful_behaviors.csv}]
  borderline:
    format: xstest_csv
    root: spec
    files: [{path: quickstart/xstest/xstest_prompts.csv}]
"""
"""The quickstart's AdvBench and XSTest files as a spec's ``datasets`` block (copied next to the spec: ``root: spec``)."""

SPEC = """\
schema_version: 1
experiment: {id: study_c_tiny, title: "tiny composition phase"}
seed: SEED
decoding: {temperature: 0.0, max_tokens: MAXTOK, warmup: 0}
""" + QUICKSTART_DATASETS + """tasks:
  targets:
    dataset: harmful
    domain: safety
    render: {kind: chat, template: "{goal}"}
    scorer: refusal@2.2
    select: {count: NTARGETS}
  background:
    dataset: borderline
    domain: safety
    render: {kind: chat, template: "{prompt}"}
    scorer: refusal@2.2
    select: {count: 6}
models:
  smollm2-135m:
    family: smollm
    hf: {repo: HuggingFaceTB/SmolLM2-135M-Instruct, weights_sha256: "WEIGHTS"}
engines:
  vllm:
    kind: vllm
    version: "0.32.0"
    flags: [--max-model-len, "2048", --dtype, bfloat16, --enforce-eager, --seed, "42", --max-num-seqs, "16"]
    env: {VLLM_TARGET_DEVICE: cpu, VLLM_CPU_KVCACHE_SPACE: "2", HF_HUB_OFFLINE: "1"}
    launch: {kind: process, python: "PYTHON", model_dir: "MODEL_DIR", ready_timeout_s: 300}
phases:
  - id: c1
    kind: composition
    models: [smollm2-135m]
    engine: vllm
    tasks: [targets]
    dispatch: concurrent
    axes: {}
    composition:
      load_levels: LEVELS
      schedule: SCHEDULE
      rate_per_s: RATE
      start_s: START
      background: {tasks: [background]}
"""

WEIGHTS0 = "sha256:" + "0" * 64


def composition_spec(folder: Path, *, seed: int = 42, levels: str = "[0, 2]", schedule: str = "poisson",
                     rate: float = 4.0, start: float = 0.2, n_targets: int = 4, max_tokens: int = 8,
                     weights: str = WEIGHTS0, python: str = "/nonexistent/python", model_dir: str = "/nonexistent",
                     text: str | None = None) -> Path:
    """Write the tiny spec (with the quickstart data beside it) into ``folder``; its path."""
    shutil.copytree(REPO / "specs" / "quickstart", folder / "quickstart", dirs_exist_ok=True)
    body = text if text is not None else SPEC
    for key, val in (("SEED", seed), ("LEVELS", levels), ("SCHEDULE", schedule), ("RATE", rate), ("START", start),
                     ("NTARGETS", n_targets), ("MAXTOK", max_tokens), ("WEIGHTS", weights), ("PYTHON", python),
                     ("MODEL_DIR", model_dir)):
        body = body.replace(key, str(val))
    path = folder / "study_c.yaml"
    path.write_text(body)
    return path
