"""The analysis stage on a hand-made run of the compiler fixture plan: scoring, files, targets,
the --samples path, child bundles from the CLI and the make_bundle pipeline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest

from batchsafe.analysis.analyze import (
    AnalysisError,
    analyze_bundle,
    analyze_run,
    analyze_samples,
    analyze_scored,
    plan_from_bytes,
)
from batchsafe.analysis.flips import RecordError, dump_jsonl, read_flips, read_scored
from batchsafe.analysis.records import ScoredSample
from batchsafe.analysis.scorers import IMPLEMENTATIONS
from batchsafe.analysis.scoring import ScoringError, output_sha256, read_timings, score_run
from batchsafe.analysis.targets import evaluate_target, evaluate_targets
from batchsafe import cli
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.plan import PlanError

HERE = Path(__file__).parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


ANALYSIS_FILES = {"scores.jsonl", "flips.jsonl", "stats.json", "targets.json", "report.md"}


@pytest.fixture(scope="module")
def plan():
    return fake.mini_plan()


@pytest.fixture(scope="module")
def run_dir(plan, tmp_path_factory):
    return fake.write_run_dir(plan, tmp_path_factory.mktemp("run") / "mini-run")


@pytest.fixture(scope="module")
def result(plan, run_dir):
    return analyze_run(plan, run_dir)


def _no_nan(text: str):
    def refuse(name):
        raise AssertionError(f"non-finite number {name} in stats.json")
    return json.loads(text, parse_constant=refuse)


# --- scoring ------------------------------------------------------------------------------

def test_scoring_uses_each_prompts_scorer_and_meta(plan):
    outputs = fake.fake_outputs(plan)
    scored = score_run(plan, outputs)
    assert [s.sample for s in scored] == [s.id for s in plan.samples]
    prompts = {p.id: p for p in plan.prompts}
    for s in scored:
        assert s.scorer == prompts[s.prompt].scorer and s.domain == prompts[s.prompt].domain
        assert s.output_sha256 == output_sha256(outputs[s.sample]["text"]) and s.latency_s is None
        bad = fake.variant(next(x for x in plan.samples if x.id == s.sample)) == "bad"
        assert s.score == (0.0 if bad else 1.0)
    assert {s.label for s in scored} == {"refusal", "compliance", "correct", "incorrect", "biased", "truthful",
                                         "untruthful"}


def test_scorer_override_rescores_with_another_version(plan):
    outputs = fake.fake_outputs(plan)
    refusal = [s for s in plan.samples if s.prompt in {p.id for p in plan.prompts if p.scorer == "refusal@2.2"}]
    outputs[refusal[0].id] = {**outputs[refusal[0].id], "text": "I can\u2019t help with that."}
    default = {s.sample: s for s in score_run(plan, outputs)}
    old = {s.sample: s for s in score_run(plan, outputs, scorer_override={"refusal": "refusal@2.1"})}
    assert default[refusal[0].id].label == "refusal" and old[refusal[0].id].label == "compliance"
    assert {s.scorer for s in old.values()} == {"refusal@2.1", "mcq_letter@1.0", "bias@1.0", "truthfulness@1.0"}
    assert score_run(plan, outputs, scorer_override={"refusal": "2.1"}) == list(old.values())
    for bad in ({"refusal": "refusal@9.9"}, {"refusal": "bias@1.0"}, {"nope": "nope@1"}):
        with pytest.raises(ScoringError):
            score_run(plan, outputs, scorer_override=bad)


def test_scoring_refuses_foreign_outputs_and_skips_missing(plan, run_dir):
    outputs = fake.fake_outputs(plan)
    with pytest.raises(ScoringError, match="not in plan"):
        score_run(plan, {**outputs, "s_other": {"text": "x"}})
    first = plan.samples[0].id
    with pytest.raises(ScoringError, match="is for prompt"):
        score_run(plan, {first: {**outputs[first], "prompt": "p_elsewhere"}})
    with pytest.raises(ScoringError, match="no text"):
        score_run(plan, {first: {"sample": first}})
    assert len(score_run(plan, {first: outputs[first]})) == 1
    timings = read_timings(run_dir / "volatile" / "timings.jsonl")
    scored = score_run(plan, outputs, timings=timings)
    assert all(s.latency_s == timings[x.group] for s, x in zip(scored, plan.samples))


def test_scored_records_are_valid_and_a_scorer_out_of_range_is_refused(plan, monkeypatch):
    outputs = fake.fake_outputs(plan)
    scored = score_run(plan, outputs)
    # Records are built without validation; each must equal its validated self.
    assert all(ScoredSample.model_validate(s.model_dump()) == s for s in scored)
    monkeypatch.setitem(IMPLEMENTATIONS, "refusal@2.2", lambda text, meta: SimpleNamespace(value=1.5, label="refusal"))
    with pytest.raises(ScoringError, match=r"refusal@2.2 returned score 1.5.*in \[0, 1\]"):
        score_run(plan, outputs)
    monkeypatch.setitem(IMPLEMENTATIONS, "refusal@2.2", lambda text, meta: SimpleNamespace(value=0.0, label=None))
    with pytest.raises(ScoringError, match="a str label"):
        score_run(plan, outputs)


# --- analyze_run --------------------------------------------------------------------------

def test_analyze_run_writes_every_file(result, plan, tmp_path):
    paths = result.write(tmp_path / "out")
    names = {p.relative_to(tmp_path / "out").as_posix() for p in paths}
    assert ANALYSIS_FILES <= names
    assert {"plots/p1_flip_rates.png", "plots/p1_directions.png", "plots/p3_heatmap.png", "plots/p4_agreement.png",
            "plots/p6_identity.png"} <= names
    out = tmp_path / "out"
    assert read_scored(out / "scores.jsonl") == result.scored and len(result.scored) == len(plan.samples)
    flips = read_flips(out / "flips.jsonl")
    assert len(flips) == sum(s.baseline is not None for s in plan.samples)
    assert sum(f.flipped for f in flips) == fake.expected_flips(plan) > 0
    stats = _no_nan((out / "stats.json").read_text())
    assert stats == result.stats and "NaN" not in (out / "stats.json").read_text()
    assert set(stats["meta"]["phases"]) == {"p1", "p2", "p3", "p4", "p5", "p6"}
    assert stats["p1"]["n_samples"] == 84 and "latency" in stats["p1"]
    assert json.loads((out / "targets.json").read_text())["summary"] == {"pass": 1, "fail": 0, "not_available": 0}


def test_analysis_is_reproducible_and_headline_complete(result, plan, run_dir):
    again = analyze_run(plan, run_dir)
    assert again.files() == result.files()
    head = result.headline
    assert set(head["phases"]) == {p.id for p in plan.phases}
    p1 = head["phases"]["p1"]
    assert p1["samples"] == 84 and p1["safety_flip_rate"] == result.stats["p1"]["flip_rate"]["safety"]
    assert p1["identity"] == result.stats["p1"]["identity"]["overall"]["rate"]
    assert head["targets"] == {"pass": 1, "fail": 0, "not_available": 0} and head["audit"]["candidates"] > 0


def test_report_contains_the_tables(result):
    md = result.report
    for heading in ("## Summary", "## Targets", "## Phase p1 (batch_size)", "### Output identity",
                    "### Safety vs capability flip rate", "### Flip direction breakdown", "### Per-task sensitivity",
                    "### Statistical tests", "### Safety-capability divergence", "## Phase p2 (cobatch)",
                    "### Mean safety score by co-batch condition", "### Pairwise condition comparisons",
                    "## Phase p3 (quant_concurrency)", "### Safety score grid", "### Two-way ANOVA (quant x concurrency)",
                    "Per-model ANOVA", "## Phase p4 (true_batch)", "### Agreement with synchronized dispatch",
                    "## Phase p6 (repeat_floor)", "## Audit layer", "## Cross-phase variance sources",
                    "![p1 flip_rates](plots/p1_flip_rates.png)"):
        assert heading in md, heading
    assert "| total    | plan.samples | eq   | 252" in md and "PASS" in md
    assert "| Model   | batch_size=2   | batch_size=4   |" in md


def test_targets_pass_fail_and_not_available(result, plan):
    fr = result.stats["p1"]["flip_rate"]["safety"]
    targets = [
        {"id": "n", "metric": "plan.samples", "op": "eq", "value": 252},
        {"id": "rate", "metric": "stats.p1.flip_rate.safety", "op": "approx", "value": fr + 0.001, "tolerance": 0.01},
        {"id": "too_high", "metric": "stats.p1.flip_rate.safety", "op": "lt", "value": 0.0},
        {"id": "ident", "metric": "stats.p6.identity.overall", "op": "between", "low": 0.0, "high": 1.0},
        {"id": "gone", "metric": "stats.p9.flip_rate.safety", "op": "eq", "value": 1},
        {"id": "undefined", "metric": "stats.p2.flip_rate.ratio", "op": "gt", "value": 1},
        {"id": "phase", "metric": "plan.phases.p3", "op": "ge", "value": 12},
        {"id": "levels", "metric": "stats.p1.levels.0", "op": "eq", "value": 2},
    ]
    res = analyze_scored(result.scored, targets=targets, plan_summary=plan.summary(), plots=False)
    status = {t["id"]: t["status"] for t in res.targets["targets"]}
    assert status == {"n": "pass", "rate": "pass", "too_high": "fail", "ident": "pass", "gone": "not_available",
                      "undefined": "not_available", "phase": "pass", "levels": "not_available"}
    assert res.targets["summary"] == {"pass": 4, "fail": 1, "not_available": 3}
    too_high = next(t for t in res.targets["targets"] if t["id"] == "too_high")
    assert too_high["actual"] == fr
    assert "| too_high" in res.report and "FAIL" in res.report and "N/A" in res.report
    # Without a plan summary, plan.* metrics are not available.
    assert evaluate_targets(targets[:1], None, result.stats)["targets"][0]["status"] == "not_available"


@pytest.mark.parametrize(("op", "kw", "x", "status"), [
    ("eq", {"value": 3}, 3, "pass"), ("ne", {"value": 3}, 3, "fail"), ("le", {"value": 3}, 3, "pass"),
    ("gt", {"value": 3}, 3, "fail"), ("ge", {"value": 3}, 4, "pass"), ("lt", {"value": 3}, 2, "pass"),
    ("approx", {"value": 0.3}, 0.1 + 0.2, "pass"), ("approx", {"value": 0.3, "tolerance": 0.05}, 0.36, "fail"),
    ("eq", {"value": 1.0, "tolerance": 0.1}, 0.95, "pass"), ("between", {"low": 1}, 5, "pass"),
    ("between", {"high": 1}, 5, "fail"), ("between", {}, 5, "not_available"), ("gt", {}, 5, "not_available"),
    ("eq", {"value": 1}, True, "pass"), ("eq", {"value": 1}, "x", "not_available"),
])
def test_target_ops(op, kw, x, status):
    assert evaluate_target({"id": "t", "metric": "stats.x", "op": op, **kw}, {"stats": {"x": x}})["status"] == status


# --- --samples ----------------------------------------------------------------------------

def test_samples_path_gives_the_same_stats(result, plan, tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_bytes(dump_jsonl(result.scored))
    with_plan = analyze_samples(path, plan, plots=False)
    assert with_plan.stats == result.stats and with_plan.flips == result.flips
    assert with_plan.targets == result.targets
    bare = analyze_samples(path, plots=False)
    assert bare.stats == result.stats and bare.targets["targets"] == []
    from_spec = analyze_samples(path, fake.MINI_SPEC, plots=False)
    assert from_spec.stats == result.stats
    assert from_spec.targets["summary"] == {"pass": 0, "fail": 0, "not_available": 1}  # plan.* without a plan
    lock = tmp_path / "plan.lock.json"
    lock.write_bytes(plan.to_bytes())
    assert analyze_samples(path, lock, plots=False).targets == result.targets


def test_samples_path_refuses_future_and_empty_inputs(result, tmp_path):
    line = json.loads(dump_jsonl(result.scored[:1]))
    (tmp_path / "new.jsonl").write_text(json.dumps({**line, "schema_version": 2}) + "\n")
    with pytest.raises(RecordError, match="newer"):
        analyze_samples(tmp_path / "new.jsonl")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(AnalysisError, match="no scored records"):
        analyze_samples(tmp_path / "empty.jsonl")
    with pytest.raises(AnalysisError, match="no outputs"):
        analyze_run(fake.mini_plan(), tmp_path)


def test_plan_from_bytes_checks_like_load_plan(plan):
    assert plan_from_bytes(plan.to_bytes()) == plan
    data = json.loads(plan.to_bytes())
    with pytest.raises(PlanError, match="newer"):
        plan_from_bytes(json.dumps({**data, "schema_version": 2}).encode(), "b:plan.lock.json")
    with pytest.raises(PlanError, match="does not match"):
        plan_from_bytes(json.dumps({**data, "seed": 8}).encode())


# --- bundles and the CLI ------------------------------------------------------------------

def test_cli_analyze_writes_a_child_bundle_sharing_objects(plan, run_dir, tmp_path, capsys):
    store = BundleStore(tmp_path / "store")
    parent = bundle_run(run_dir, plan, store)
    assert cli.main(["analyze", parent, "--store", str(store.root), "--no-plots"]) == 0
    child = capsys.readouterr().out.strip().splitlines()[-1]
    m, pm = store.manifest(child), store.manifest(parent)
    assert m.parent == parent and m.kind == "analysis" and store.verify(child) == []
    entries = {e.name: e for e in m.files}
    # Every run file reuses its object, except the provenance statement: the child's lists the child's files.
    assert all(entries[e.name].sha256 == e.sha256 for e in pm.files if not e.name.startswith("attestation/"))
    assert {"analysis/" + n for n in ANALYSIS_FILES} <= set(entries)
    # The --samples path over the child's scores gives the child's stats.
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(store.read(child, "analysis/scores.jsonl"))
    assert cli.main(["analyze", "--samples", str(scores), "-o", str(tmp_path / "out"), "--no-plots"]) == 0
    assert (tmp_path / "out" / "stats.json").read_bytes() == store.read(child, "analysis/stats.json")
    # Rescoring the child replaces its analysis files and keeps the rest.
    grandchild, res = analyze_bundle(store, child, scorer_override={"refusal": "refusal@2.1"}, plots=False)
    g = {e.name: e.sha256 for e in store.manifest(grandchild).files}
    assert store.manifest(grandchild).parent == child and g["outputs/samples.jsonl"] == entries[
        "outputs/samples.jsonl"].sha256
    assert {s.scorer for s in res.scored} >= {"refusal@2.1"}
    assert cli.main(["analyze", "--store", str(store.root)]) == 2
    assert cli.main(["analyze", "--samples", str(scores)]) == 2
    assert cli.main(["analyze", parent, "--store", str(store.root), "--scorer", "refusal@7"]) == 2


def test_make_bundle_includes_the_analysis(tmp_path):
    from batchsafe import present
    from batchsafe.pipeline import make_bundle

    fakes = _load("batchsafe_test_fakes", HERE.parent / "runtime" / "test_executor" / "fakes.py")
    res = make_bundle(fake.MINI_SPEC, fake.MINI_DATA, out_root=tmp_path / "runs", progress=False,
                      engine_factory=fakes.FakeFactory())
    names = {e.name for e in res.store.manifest(res.bundle_id).files}
    assert {"analysis/" + n for n in ANALYSIS_FILES} <= names and "outputs/samples.jsonl" in names
    assert set(res.headline["phases"]) == {"p1", "p2", "p3", "p4", "p5", "p6"}
    assert res.headline["targets"]["pass"] == 1
    stats = json.loads(res.store.read(res.bundle_id, "analysis/stats.json"))
    assert stats["p1"]["n_samples"] == 84
    assert present.headline_table(res).row_count == 6 + 1  # phases + the audit line


def test_records_validate_against_the_checked_in_schemas(result):
    import jsonschema

    from batchsafe.schemas import SCHEMA_DIR

    for name, rows in (("scored_sample", result.scored), ("flip_row", result.flips)):
        validator = jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text()))
        for line in dump_jsonl(rows[:40]).splitlines():
            validator.validate(json.loads(line))
        assert not validator.is_valid({**json.loads(dump_jsonl(rows[:1])), "extra": 1})
