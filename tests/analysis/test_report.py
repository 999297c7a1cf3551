"""report.md and plots: rounding only at the edge, degenerate data, byte-reproducible PNGs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

from batchsafe.analysis.analyze import analyze_run, analyze_scored
from batchsafe.analysis.plots import render_plots
from batchsafe.analysis.report import (
    NOT_ENOUGH,
    fnum,
    levels,
    pct,
    pval,
    render_report,
    table,
    targets_section,
    value,
)

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("batchsafe_test_fake_run", HERE / "test_analyze" / "fake_run.py")
fake = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules.setdefault("batchsafe_test_fake_run", fake)
_spec.loader.exec_module(fake)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def result():
    plan = fake.mini_plan()
    return analyze_run(plan, fake.fake_outputs(plan))


def test_formatting_helpers():
    assert (pct(0.016822), pct(0.016822, 2), pct(None)) == ("1.7%", "1.68%", "--")
    assert (fnum(9.90987), fnum(None), pval(0.03316)) == ("9.910", "--", "0.0332")
    assert (value(252.0), value(7257), value(0.98667), value(None), value(True)) == ("252", "7,257", "0.9867", "--",
                                                                                       "True")
    assert levels(["16", "2", "32", "4"]) == ["2", "4", "16", "32"] and levels(["solo", "benign"]) == ["benign", "solo"]
    assert table(["a"], []) == [NOT_ENOUGH]
    assert table(["a", "b"], [["0.50", "007"]])[2] == "| 0.50 | 007 |"  # strings printed as given


def test_numbers_are_rounded_only_in_the_report(result):
    rate = result.stats["p1"]["flip_rate"]["safety"]
    assert rate == 12 / 36  # full precision in stats.json
    assert "Safety = 33.33% (12/36)" in result.report


def test_plots_are_byte_identical_across_renders_and_processes(result, tmp_path):
    first = render_plots(result.stats)
    assert first == render_plots(result.stats)
    assert set(first) == set(result.plots) and len(first) >= 10
    for png in first.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"Software" not in png and b"matplotlib" not in png.lower()
    # A user's rcParams do not leak into the figures.
    with matplotlib.rc_context({"lines.linewidth": 7.0, "font.size": 20.0, "axes.grid": False}):
        assert render_plots(result.stats) == first
    # A fresh interpreter draws the same bytes.
    (tmp_path / "stats.json").write_text(json.dumps(result.stats))
    code = ("import json, hashlib, sys; from analysis.plots import render_plots; "
            "p = render_plots(json.load(open(sys.argv[1]))); "
            "print(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in p.items()}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "stats.json")], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out) == {k: hashlib.sha256(v).hexdigest() for k, v in first.items()}


def test_degenerate_stats_give_not_enough_data_not_a_crash():
    assert render_report({}).startswith("# batchsafe analysis\n")
    assert render_plots({}) == {}
    broken = {"meta": {"phases": {"p1": "batch_size", "p2": "cobatch", "p3": "quant_concurrency",
                                  "p4": "true_batch", "p9": "mystery"}},
              "p1": {"n_flip_rows": 3, "identity": {}, "flip_cells": {"by_model": {"m": {"2": {}}}}},
              "p2": {"means": None}, "p3": {"grid": {"m": {"Q2_K": {}}}}, "p4": {"n_flip_rows": 1},
              "audit": {"candidates": 1}, "cross_phase": {"variance_sources": {"p1": {"x": {}}}}}
    md = render_report(broken, {"targets": [], "summary": {}})
    for head in ("## Phase p1 (batch_size)", "## Phase p2 (cobatch)", "## Phase p3 (quant_concurrency)",
                 "## Phase p9 (mystery)", "## Audit layer", "## Cross-phase variance sources"):
        assert head in md
    assert md.count(NOT_ENOUGH) >= 10
    assert render_plots(broken) == {}


def test_degenerate_runs_analyse_without_crashing(result):
    # Only baselines: no flip rows anywhere.
    baselines = [s for s in result.scored if s.baseline is None]
    res = analyze_scored(baselines)
    assert res.flips == [] and "audit" not in res.stats and NOT_ENOUGH in res.report
    # One phase of constant scores (zero variance in every ANOVA cell).
    p3 = [s for s in result.scored if s.phase == "p3"]
    p3 = [s.model_copy(update={"score": 1.0, "label": "refusal", "output_sha256": "sha256:" + "0" * 64}) for s in p3]
    res = analyze_scored(p3)
    assert "### Safety score grid" in res.report and "plots/p3_heatmap.png" in res.plots
    assert res.stats["p3"]["flip_rate"]["safety"] == 0.0
    assert "no flipped safety rows" in res.report


def test_targets_table_statuses():
    md = "\n".join(targets_section({"targets": [
        {"id": "a", "metric": "plan.samples", "op": "eq", "value": 7257.0, "actual": 7257, "status": "pass"},
        {"id": "b", "metric": "stats.x", "op": "between", "low": 0.0, "high": 0.5, "actual": 0.75,
         "status": "fail"},
        {"id": "c", "metric": "stats.y", "op": "approx", "value": 0.0168, "tolerance": 0.01, "actual": None,
         "status": "not_available", "reason": "no metric stats.y"}],
        "summary": {"pass": 1, "fail": 1, "not_available": 1}}))
    row_a = next(line for line in md.splitlines() if line.startswith("| a "))
    assert [c.strip() for c in row_a.strip("|").split("|")][:6] == ["a", "plan.samples", "eq", "7,257", "7,257", "PASS"]
    assert "[0, 0.5000]" in md and "0.0168 +/- 0.01" in md
    assert [s in md for s in ("PASS", "FAIL", "N/A", "no metric stats.y")] == [True] * 4
    assert md.endswith("1 passed, 1 failed, 1 not available.")
    assert targets_section(None) == ["No targets."]
