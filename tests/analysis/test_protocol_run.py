"""The protocol specs: both compile, and a reduced local variant runs on the real embedded engine
to a bundle that verifies, whose scores `analyze --samples` turns into the same protocol statistics.

The reduced variant is specs/paired_protocol_local.yaml with half the prompts (8 per model and
phase, 64 samples; the full local variant has 128 and took 9 min 40 s on this busy 2-core
machine, 2 min 15 s of CPU), written next to a copy of the quickstart prompt files it ships with.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from batchsafe.cli import main
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.diagnostics import SpecError

ROOT = Path(__file__).resolve().parents[2]
LOCAL, FULL = ROOT / "specs" / "paired_protocol_local.yaml", ROOT / "specs" / "paired_protocol.yaml"
DATA = Path(os.environ.get("BATCHSAFE_DATA") or ROOT.parent / "shared" / "data")
PRIOR = ROOT / "benchmarks" / "gpu" / "results" / "h100_vllm-6fe9151637e9.tar.gz"
PRIOR_ID = "sha256:6fe9151637e9a7e3edef53831c4cfe810b7eba2a1e4edc03aebe737e3f5601b5"


def test_local_variant_compiles_with_its_protocol_and_alignments():
    plan = compile_spec(LOCAL)
    assert plan.analysis["protocol"]["bootstrap_resamples"] == 2000
    assert plan.analysis["protocol"]["discovery"] == ["a1_batch_size", "a4_true_batch"]
    assert {m.name: m.alignment for m in plan.models} == {"qwen2.5-coder-0.5b": "dpo", "smollm2-135m": "dpo"}
    assert len(plan.samples) == 128 and plan.unpinned == []


def test_a_protocol_naming_a_missing_or_unsuitable_phase_is_refused(tmp_path):
    shutil.copytree(ROOT / "specs" / "quickstart", tmp_path / "quickstart")
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"extends: {LOCAL}\nanalysis:\n  protocol:\n    discovery: [a1_batch_sise]\n"
                    "    ablation: [a4_true_batch]\n")
    with pytest.raises(SpecError) as err:
        compile_spec(spec)
    text = str(err.value)
    assert "names phase 'a1_batch_sise'" in text and "did you mean 'a1_batch_size'" in text
    assert "phase 'a4_true_batch' is of kind true_batch; analysis.protocol.ablation takes kernel_ablation" in text


@pytest.mark.skipif(not (DATA / "advbench").is_dir(), reason=f"public datasets not found at {DATA}")
def test_full_protocol_spec_compiles_with_study_d_from_the_h200_bundle(tmp_path):
    from batchsafe.bundles.archive import unpack
    from batchsafe.bundles.store import BundleStore

    store = BundleStore(tmp_path / "store")
    assert unpack(PRIOR, store) == PRIOR_ID
    plan = compile_spec(FULL, DATA, store=store)
    phases = {p.id: (p.kind, p.samples) for p in plan.phases}
    assert phases == {"p1_batch_size": ("batch_size", 3366), "p4_true_batch": ("true_batch", 1122),
                      "b1_cross_model": ("batch_size", 5610), "c1_composition": ("composition", 78),
                      "d1_kernel_ablation": ("kernel_ablation", 18)}
    # Study D: the prior bundle's score flips (1 AdvBench, 2 ARC prompts), under both kernel variants.
    d = [p for p in plan.prompts if p.task in ("d_advbench", "d_arc")]
    assert sorted(p.task for p in d) == ["d_advbench", "d_arc", "d_arc"]
    assert [v["id"] for v in next(p for p in plan.phases if p.id == "d1_kernel_ablation").kernel_variants] == \
        ["default", "batch_invariant"]
    assert len({m.alignment for m in plan.models}) == 4 and all(m.alignment for m in plan.models)
    assert plan.analysis["protocol"]["bootstrap_resamples"] == 9999


pytest.importorskip("llama_cpp", reason="the embedded extra is installed by `make test`'s set-up")


def test_reduced_local_variant_runs_to_a_verifying_bundle(tmp_path, capsys):
    shutil.copytree(ROOT / "specs" / "quickstart", tmp_path / "quickstart")
    spec = tmp_path / "paired_protocol_tiny.yaml"
    spec.write_text(f"extends: {LOCAL}\nexperiment: {{id: paired_protocol_tiny, title: reduced local protocol}}\n"
                    "tasks:\n  advbench_refusal: {select: {count: 3}}\n  borderline: {select: {count: 2}}\n"
                    "  mcq: {select: {count: 3}}\ntargets:\n  - {id: samples, metric: plan.samples, op: eq, value: 64}\n")
    out = tmp_path / "runs"
    assert main(["bundle", "make", str(spec), "--out", str(out), "--no-progress"]) == 0
    bid = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("bundle:"))
    from batchsafe.bundles.store import BundleStore

    store = BundleStore(out / "store")
    stats = json.loads(store.read(bid, "analysis/stats.json"))
    p = stats["protocol"]
    assert set(p) == {"settings", "study_a", "study_b"} and p["study_a"]["candidates"]["full_set"] == 32
    assert sorted(p["study_b"]["models"]) == ["qwen2.5-coder-0.5b", "smollm2-135m"]
    report = store.read(bid, "analysis/report.md").decode()
    assert "### Study A: local discovery" in report and "### Study B: cross-model" in report
    names = {e.name for e in store.manifest(bid).files}
    assert {"analysis/plots/protocol_study_a_flip_rates.png", "analysis/plots/protocol_instability_fragility.png",
            "analysis/plots/protocol_agreement.png"} <= names
    # verify recompiles the spec, recomputes every statistic (the protocol's too) and the figures.
    assert main(["verify", bid, "--store", str(out / "store"), "--spec", str(spec)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    # analyze --samples: the bare scores with the spec give the same statistics, protocol included.
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(store.read(bid, "analysis/scores.jsonl"))
    assert main(["analyze", "--samples", str(scores), "--spec", str(spec), "-o", str(tmp_path / "re"), "--no-plots"]) == 0
    assert json.loads((tmp_path / "re" / "stats.json").read_text())["protocol"] == p
