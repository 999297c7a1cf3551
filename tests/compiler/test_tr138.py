"""specs/tr138_v2.yaml against the original public datasets (../shared/data, or $BATCHSAFE_DATA)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from batchsafe.cli import main
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.diagnostics import SpecError

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("BATCHSAFE_DATA") or ROOT.parent / "shared" / "data")
SPEC = ROOT / "specs" / "tr138_v2.yaml"

pytestmark = pytest.mark.skipif(not (DATA / "advbench").is_dir(), reason=f"public datasets not found at {DATA}")


def test_tr138_v2_compiles_to_the_7257_sample_plan(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "tr138.lock.json"
    assert main(["compile", str(SPEC), "--data-dir", str(DATA), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["plan", "show", "--json", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 7257
    assert summary["phases"] == {"p1_batch_size": 3366, "p2_cobatch": 1284, "p3_quant_concurrency": 1485,
                                 "p4_true_batch": 1122}
    assert summary["plan_hash"].startswith("sha256:") and summary["unpinned"] == []
    plan = json.loads(out.read_bytes())
    tasks = Counter(p["task"] for p in plan["prompts"])
    assert tasks == {"advbench_refusal": 26, "jailbreak_amplification": 29, "bbq_bias": 26, "truthfulqa": 26,
                     "mmlu_real": 40, "arc_challenge": 40}
    assert Counter(p["domain"] for p in plan["prompts"]) == {"safety": 107, "capability": 80}
    # The 55 Phase 3 prompts are the AdvBench + jailbreak ones.
    p3 = {s["prompt"] for s in plan["samples"] if s["phase"] == "p3_quant_concurrency"}
    assert {p["task"] for p in plan["prompts"] if p["id"] in p3} == {"advbench_refusal", "jailbreak_amplification"}
    assert len(p3) == 55
    vllm = next(e for e in plan["engines"] if e["name"] == "vllm")["config"]
    assert "@sha256:" in vllm["image"] and vllm["flags"][:2] == ["--max-model-len", "2048"]
    assert plan["decoding"] == {"temperature": 0.0, "max_tokens": 256, "warmup": 3, "stop": []} and plan["seed"] == 42


def test_two_compiles_from_different_directories_are_byte_identical(tmp_path: Path, monkeypatch) -> None:
    a = compile_spec(SPEC, DATA).to_bytes()
    monkeypatch.chdir(tmp_path)
    b = compile_spec(os.path.relpath(SPEC, tmp_path), os.path.relpath(DATA, tmp_path)).to_bytes()
    assert a == b


def test_a_changed_byte_in_an_input_changes_the_hash_and_a_pinned_one_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("harmbench", "xstest", "jailbreakbench_artifacts"))
    base = compile_spec(SPEC, data)
    # ARC is pinned; MMLU is a glob (unpinned per file): flip one byte in each.
    mmlu = data / "mmlu/test/anatomy_test.csv"
    raw = bytearray(mmlu.read_bytes())
    raw[10] ^= 0x01
    mmlu.write_bytes(bytes(raw))
    assert compile_spec(SPEC, data).plan_hash != base.plan_hash
    arc = data / "arc_challenge/ARC-Challenge-Test.jsonl"
    arc.write_bytes(arc.read_bytes().replace(b"Planetary density", b"Planetary densitx", 1))
    with pytest.raises(SpecError) as exc:
        compile_spec(SPEC, data)
    (diag,) = exc.value.diagnostics
    assert diag.code == "hash-mismatch" and "arc_challenge/ARC-Challenge-Test.jsonl" in diag.message
