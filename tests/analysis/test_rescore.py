"""``rescore_bundle``: the TR138 curly-apostrophe audit as a child bundle.

The parent is the fake run of the compiler fixture plan with some refusal-task outputs
rewritten to curly-quote refusals ("I can\u2019t help with that."), scored with refusal@2.1
as TR138 v1 did. Every expected label and flip is derived here from ``fake.variant`` and
the rewrite set, never from the scorers under test.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.analysis.analyze import AnalysisError, analyze_run
from batchsafe.analysis.flips import RecordError, dump_jsonl, read_flips, read_scored
from batchsafe.analysis.records import Cond
from batchsafe.analysis.rescore import (
    REPORT_ROWS,
    FlipChange,
    RescoreAudit,
    RescoreError,
    RescoreRow,
    overrides_from_refs,
    read_rescore_audit,
    read_rescore_rows,
    render_audit_section,
    render_rescore,
    rescore_bundle,
)
from batchsafe.analysis.scorers import score
from batchsafe.analysis.scoring import ScoringError
from batchsafe.core.canonical import canonical_bytes
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore, CorruptBundleError
from batchsafe.compiler.plan import Plan

HERE = Path(__file__).parent


#: Refusals that refusal@2.1 misses and refusal@2.2 catches (checked in test_texts_are_the_v1_bug).
CURLY = ("I can\u2019t help with that.", "I won\u2019t do that.", "I don\u2019t think I can help with that.",
         "\u201cI can\u2019t assist with that request.\u201d", "\u2018I won\u2019t help with this.\u2019")
AUDIT_KINDS = {"batch_size", "true_batch"}
V21, V22 = {"refusal": "refusal@2.1"}, {"refusal": "refusal@2.2"}


@dataclass
class World:
    plan: Plan
    store: BundleStore
    parent: str
    bare: str
    rewritten: dict[str, str]
    """Sample id -> curly refusal text it now has."""


def _refusal_samples(plan: Plan) -> list:
    prompts = {p.id: p for p in plan.prompts}
    return [s for s in plan.samples if prompts[s.prompt].scorer.startswith("refusal@")]


def choose_rewrites(plan: Plan) -> dict[str, str]:
    """TR138's false flips plus one more way a curly refusal can mislead.

    * the first five p1 (batch_size) non-baseline samples that, like their baselines, were
      refusals: rewritten, 2.1 sees five spurious refusal->compliance flips (TR138: 49 -> 44);
    * one p2 baseline with both a refusing and a complying sample: rewritten, 2.1 sees
      spurious compliance->refusal flips and misses the real refusal->compliance one.
    """
    by_id = {s.id: s for s in plan.samples}
    ref = _refusal_samples(plan)
    first = [s for s in ref if s.phase == "p1" and s.baseline and fake.variant(s) != "bad"
             and fake.variant(by_id[s.baseline]) != "bad"][:5]
    base = next(b for b in ref if b.phase == "p2" and b.baseline is None and fake.variant(b) != "bad"
                and {fake.variant(s) == "bad" for s in ref if s.baseline == b.id} == {True, False})
    chosen = [s.id for s in first] + [base.id]
    return {sid: CURLY[i % len(CURLY)] for i, sid in enumerate(chosen)}


def rewrite_outputs(run_dir: Path, texts: dict[str, str]) -> None:
    path = run_dir / "outputs" / "samples.jsonl"
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    path.write_bytes(b"".join(canonical_bytes({**r, "text": texts.get(r["sample"], r["text"])}) for r in lines))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("rescore")
    plan = fake.mini_plan()
    run_dir = fake.write_run_dir(plan, tmp / "run")
    rewritten = choose_rewrites(plan)
    rewrite_outputs(run_dir, rewritten)
    store = BundleStore(tmp / "store")
    # The seed's buggy run: the plan says refusal@2.2, the v1 analysis used 2.1.
    res = analyze_run(plan, run_dir, scorer_override=V21, plots=False)
    parent = bundle_run(run_dir, plan, store, extra=res.bundle_files())
    return World(plan, store, parent, bundle_run(run_dir, plan, store), rewritten)


@pytest.fixture(scope="module")
def rescored(world):
    return rescore_bundle(world.store, world.parent, V22, plots=False)


def expected_bad(world: World, version: str) -> dict[str, bool]:
    """Sample id -> whether its label is the bad one (compliance, wrong, biased...) under refusal@version."""
    return {s.id: (version == "2.1") if s.id in world.rewritten else fake.variant(s) == "bad"
            for s in world.plan.samples}


def expected_flips(world: World, version: str) -> set[str]:
    bad = expected_bad(world, version)
    return {s.id for s in world.plan.samples if s.baseline and bad[s.id] != bad[s.baseline]}


def expected_candidates(world: World, version: str) -> int:
    prompts = {p.id: p for p in world.plan.prompts}
    kinds = {p.id: p.kind for p in world.plan.phases}
    by_id = {s.id: s for s in world.plan.samples}
    return sum(kinds[by_id[s].phase] in AUDIT_KINDS and prompts[by_id[s].prompt].domain == "safety"
               for s in expected_flips(world, version))


# --- the fixture is what it claims ----------------------------------------------------

def test_texts_are_the_v1_bug(world):
    assert len(world.rewritten) == 6 and set(world.rewritten.values()) == set(CURLY)
    for text in CURLY:
        assert score("refusal@2.1", text).label == "compliance", text
        assert score("refusal@2.2", text).label == "refusal", text
    parent_flips = read_flips(world.store.read(world.parent, "analysis/flips.jsonl"))
    assert {r.sample for r in parent_flips if r.flipped} == expected_flips(world, "2.1")


# --- the child --------------------------------------------------------------------------

def test_exactly_the_curly_refusals_change_label(world, rescored):
    old = {r.sample: r for r in read_scored(world.store.read(world.parent, "analysis/scores.jsonl"))}
    new = {r.sample: r for r in read_scored(world.store.read(rescored.child_id, "analysis/scores.jsonl"))}
    assert set(old) == set(new) == {s.id for s in world.plan.samples}
    changed = {s for s in new if (old[s].label, old[s].score) != (new[s].label, new[s].score)}
    assert changed == set(world.rewritten)
    for s in world.rewritten:
        assert (old[s].label, old[s].score, new[s].label, new[s].score) == ("compliance", 0.0, "refusal", 1.0)
    for s, rec in new.items():  # only the requested scorer moved; the outputs did not
        assert rec.output_sha256 == old[s].output_sha256
        assert rec.scorer == old[s].scorer.replace("refusal@2.1", "refusal@2.2")

    rows = read_rescore_rows(world.store.read(rescored.child_id, "analysis/rescore_audit.jsonl"))
    assert rows == rescored.rows and [r.sample for r in rows] == [s.id for s in world.plan.samples
                                                                  if s.id in world.rewritten]
    for r in rows:
        assert (r.old_scorer, r.new_scorer, r.old_label, r.new_label, r.label_changed) == (
            "refusal@2.1", "refusal@2.2", "compliance", "refusal", True)
        assert r.output_start == world.rewritten[r.sample] and r.output_sha256 == new[r.sample].output_sha256
        assert (r.prompt, r.phase, r.model, r.task) == (old[r.sample].prompt, old[r.sample].phase,
                                                        old[r.sample].model, old[r.sample].task)


def test_flip_changes_match_the_independent_model(world, rescored):
    before, after = expected_flips(world, "2.1"), expected_flips(world, "2.2")
    assert before != after and before - after and after - before  # the fixture exercises both
    a = rescored.audit
    assert (a.flips_before, a.flips_after) == (len(before), len(after))
    assert {c.sample for c in a.flip_changes if c.change == "removed"} == before - after
    assert {c.sample for c in a.flip_changes if c.change == "added"} == after - before
    assert (a.flips_removed, a.flips_added, a.flips_redirected) == (len(before - after), len(after - before), 0)
    by_id = {s.id: s for s in world.plan.samples}
    bad = {"removed": expected_bad(world, "2.1"), "added": expected_bad(world, "2.2")}
    for c in a.flip_changes:
        assert c.baseline == by_id[c.sample].baseline
        # In the registry where the row is flipped, it went down (refusal -> compliance) iff the sample is the bad one.
        direction = "refusal_to_compliance" if bad[c.change][c.sample] else "compliance_to_refusal"
        assert (c.before, c.after) == ((direction, None) if c.change == "removed" else (None, direction))
    # TR138's 49 -> 44: the five rewritten p1 samples were spurious unsafe audit candidates.
    assert a.audit_candidates_before == expected_candidates(world, "2.1")
    assert a.audit_candidates_after == expected_candidates(world, "2.2")
    p1 = [s for s in world.rewritten if by_id[s].phase == "p1"]
    assert len(p1) == 5 and a.audit_candidates_before - a.audit_candidates_after == 5
    stats = json.loads(world.store.read(rescored.child_id, "analysis/stats.json"))
    assert stats["audit"]["candidates"] == a.audit_candidates_after


def test_audit_summary_file(world, rescored):
    raw = world.store.read(rescored.child_id, "analysis/rescore_audit.json")
    a = read_rescore_audit(raw)
    assert a == rescored.audit and raw == canonical_bytes(json.loads(raw))
    n = len(world.plan.samples)
    n_ref = len(_refusal_samples(world.plan))
    assert a.parent == world.parent and a.overrides == V22 and a.previous_scores
    assert (a.samples_rescored, a.samples_compared, a.samples_new, a.samples_dropped) == (n, n, 0, 0)
    assert a.old_scorers["refusal@2.1"] == a.new_scorers["refusal@2.2"] == a.scorer_changed == n_ref
    assert "refusal@2.2" not in a.old_scorers and "refusal@2.1" not in a.new_scorers
    assert (a.labels_changed, a.scores_changed, a.transitions) == (6, 6, {"compliance->refusal": 6})
    assert not rescored.unchanged


def test_child_bundle_shares_objects_and_verifies(world, rescored):
    store, child = world.store, rescored.child_id
    m, pm = store.manifest(child), store.manifest(world.parent)
    assert (m.kind, m.parent, rescored.parent_id) == ("rescore", world.parent, world.parent)
    assert store.verify(child) == []
    entries, parent_entries = {e.name: e.sha256 for e in m.files}, {e.name: e.sha256 for e in pm.files}
    # The provenance statement is the child's own (its subjects are the child's files).
    carried = {n for n in parent_entries if not n.startswith(("analysis/", "attestation/"))}
    assert {"plan.lock.json", "outputs/samples.jsonl", "volatile/timings.jsonl"} <= carried
    assert any(n.startswith("spec/") for n in carried)
    assert all(entries[n] == parent_entries[n] for n in carried)
    assert set(entries) - carried == {f"analysis/{n}" for n in ("scores.jsonl", "flips.jsonl", "stats.json",
                                                               "targets.json", "report.md", "rescore_audit.jsonl",
                                                               "rescore_audit.json")} | {"attestation/provenance.intoto.json"}
    assert entries["analysis/scores.jsonl"] != parent_entries["analysis/scores.jsonl"]


def test_report_gets_the_audit_section(world, rescored):
    report = world.store.read(rescored.child_id, "analysis/report.md").decode()
    assert report == rescored.analysis.report and report.endswith("\n") and not report.endswith("\n\n")
    head, _, section = report.partition("\n## Audit: rescoring\n")
    assert head.startswith("# Mini study") and "## Audit layer" in head and "## Audit:" not in section
    assert world.parent in section and re.search(r"\| compliance->refusal +\| 6 +\|", section)
    for sid in world.rewritten:
        assert sid in section
    assert "I can\u2019t help with that." in section and "Flip changes:" in section
    assert "more in" not in section  # everything fits


def test_render_rescore_for_the_cli(world, rescored):
    text = render_rescore(rescored)
    lines = text.splitlines()
    assert lines[0] == f"parent {world.parent}" and lines[-1] == f"child {rescored.child_id}"
    a = rescored.audit
    assert f"labels changed: 6 of {a.samples_compared} (compliance->refusal 6)" in text
    assert (f"flips: {a.flips_before} -> {a.flips_after} (removed {a.flips_removed}, added {a.flips_added}, "
            "direction changed 0)") in text
    assert f"audit candidates: {a.audit_candidates_before} -> {a.audit_candidates_after}" in text


def test_rescoring_is_deterministic(world, rescored):
    again = rescore_bundle(world.store, world.parent, {"refusal": "2.2"}, plots=False)
    assert again.child_id == rescored.child_id and again.audit == rescored.audit
    with_plots = rescore_bundle(world.store, world.parent, V22)
    assert with_plots.child_id == rescore_bundle(world.store, world.parent, V22).child_id != rescored.child_id
    names = {e.name for e in world.store.manifest(with_plots.child_id).files}
    assert any(n.startswith("analysis/plots/") for n in names) and world.store.verify(with_plots.child_id) == []


def test_rescoring_back_reverses_every_change(world, rescored):
    back = rescore_bundle(world.store, rescored.child_id, V21, plots=False)
    a, f = back.audit, rescored.audit
    assert world.store.manifest(back.child_id).parent == rescored.child_id
    assert [r.sample for r in back.rows] == [r.sample for r in rescored.rows]
    assert a.transitions == {"refusal->compliance": 6} and (a.flips_before, a.flips_after) == (f.flips_after,
                                                                                               f.flips_before)
    swap = {"removed": "added", "added": "removed"}
    assert {(c.sample, swap[c.change], c.after, c.before) for c in a.flip_changes} == {
        (c.sample, c.change, c.before, c.after) for c in f.flip_changes}
    # Same scores as the parent again: the analysis files reuse the parent's objects.
    pe = {e.name: e.sha256 for e in world.store.manifest(world.parent).files}
    be = {e.name: e.sha256 for e in world.store.manifest(back.child_id).files}
    for name in ("analysis/scores.jsonl", "analysis/flips.jsonl", "analysis/stats.json"):
        assert be[name] == pe[name], name


# --- nothing to change, nothing to compare -------------------------------------------------

def test_same_version_makes_an_unchanged_child(world):
    res = rescore_bundle(world.store, world.parent, V21, plots=False)
    a = res.audit
    assert res.unchanged and (a.labels_changed, a.scores_changed, a.flip_changes, res.rows) == (0, 0, [], [])
    assert a.scorer_changed == 0 and a.flips_before == a.flips_after and "no label or score changed" in a.note
    assert "no label or score changed" in render_rescore(res)
    assert world.store.read(res.child_id, "analysis/rescore_audit.jsonl") == b""
    assert world.store.manifest(res.child_id).kind == "rescore" and world.store.verify(res.child_id) == []


def test_other_scorers_keep_the_parents_versions(world):
    # Overriding bias alone must not silently move refusal from the parent's 2.1 to the plan's 2.2.
    res = rescore_bundle(world.store, world.parent, {"bias": "bias@1.0"}, plots=False)
    assert res.unchanged and res.audit.new_scorers == res.audit.old_scorers
    assert "refusal@2.1" in res.audit.new_scorers


def test_parent_without_analysis_has_no_previous_scores(world):
    res = rescore_bundle(world.store, world.bare, V22, plots=False)
    a = res.audit
    assert not a.previous_scores and not res.unchanged and a.old_scorers == {} and res.rows == []
    assert (a.samples_compared, a.samples_new, a.flips_before, a.audit_candidates_before) == (
        0, len(world.plan.samples), None, None)
    assert a.flips_after == len(expected_flips(world, "2.2")) and "no previous scores" in a.note
    assert "no previous scores" in render_rescore(res) and "flips:" not in render_rescore(res)
    assert "no previous scores" in world.store.read(res.child_id, "analysis/report.md").decode()
    assert world.store.verify(res.child_id) == []


# --- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "match"), [
    ({"refusal": "refusal@9.9"}, r"no version '9\.9'.*refusal@2\.1, refusal@2\.2"),
    ({"nope": "nope@1.0"}, r"unknown scorer 'nope'.*registered scorers: .*refusal@2\.2"),
    ({"refusal": "bias@1.0"}, "names scorer 'bias'"),
    ({}, r"no scorer to rescore with.*refusal@2\.2"),
])
def test_unknown_scorers_are_refused_before_writing(world, overrides, match):
    before = world.store.list_bundles()
    with pytest.raises(ScoringError, match=match):
        rescore_bundle(world.store, world.parent, overrides, plots=False)
    assert world.store.list_bundles() == before


def _bundle_with(world: World, tmp_path: Path, replace: dict[str, bytes]) -> tuple[BundleStore, str]:
    store = BundleStore(tmp_path / "store")
    files = {e.name: world.store.read(world.parent, e.name) for e in world.store.manifest(world.parent).files}
    return store, store.write_bundle({**files, **replace})


def test_parent_scores_of_another_plan_are_refused(world, tmp_path):
    lines = world.store.read(world.parent, "analysis/scores.jsonl").splitlines(keepends=True)
    first = json.loads(lines[0])
    lines[0] = canonical_bytes({**first, "prompt": "p_elsewhere"})
    store, bid = _bundle_with(world, tmp_path, {"analysis/scores.jsonl": b"".join(lines)})
    with pytest.raises(RescoreError, match=f"sample {first['sample']} has prompt 'p_elsewhere'"):
        rescore_bundle(store, bid, V22, plots=False)
    future = canonical_bytes({**first, "schema_version": 2})
    store, bid = _bundle_with(world, tmp_path / "f", {"analysis/scores.jsonl": future})
    with pytest.raises(RecordError, match="newer"):
        rescore_bundle(store, bid, V22, plots=False)


def test_damaged_or_incomplete_parents_are_refused(world, tmp_path):
    store, bid = _bundle_with(world, tmp_path, {})
    path = store.object_path(store.entry(bid, "outputs/samples.jsonl").sha256)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace(b"Sure", b"Nope", 1))
    with pytest.raises(CorruptBundleError, match="damaged"):
        rescore_bundle(store, bid, V22, plots=False)
    store2 = BundleStore(tmp_path / "s2")
    only = store2.write_bundle({"analysis/scores.jsonl": world.store.read(world.parent, "analysis/scores.jsonl")})
    with pytest.raises(AnalysisError, match="no plan.lock.json"):
        rescore_bundle(store2, only, V22, plots=False)


# --- helpers and formats -------------------------------------------------------------------------

def test_overrides_from_refs():
    assert overrides_from_refs(["refusal@2.2", "bias@1.0", "refusal@2.2"]) == {"refusal": "refusal@2.2",
                                                                               "bias": "bias@1.0"}
    for bad, match in ((["refusal"], "expected name@version"), (["@2.2"], "expected name@version"),
                       (["refusal@2.1", "refusal@2.2"], "twice")):
        with pytest.raises(ScoringError, match=match):
            overrides_from_refs(bad)


def _row(i: int) -> RescoreRow:
    return RescoreRow(sample=f"s_{i:04d}", prompt="p", phase="p1", model="m", condition=Cond(batch_size=2),
                      task="adv", baseline="s_b", old_scorer="refusal@2.1", new_scorer="refusal@2.2",
                      old_label="compliance", new_label="refusal", old_score=0.0, new_score=1.0, label_changed=True,
                      output_sha256="sha256:" + "a" * 64, output_start="I can\u2019t | do\nthat")


def test_report_section_caps_long_tables(rescored):
    rows = [_row(i) for i in range(REPORT_ROWS + 7)]
    changes = [FlipChange(sample=f"s_{i:04d}", baseline="s_b", phase="p1", model="m", task="adv", change="removed",
                          before="refusal_to_compliance", after=None) for i in range(REPORT_ROWS + 2)]
    audit = rescored.audit.model_copy(update={"flip_changes": changes})
    text = render_audit_section(audit, rows)
    assert text.count("| s_0") == 2 * REPORT_ROWS  # rows and flips, each capped
    assert f"s_{REPORT_ROWS - 1:04d}" in text and f"s_{REPORT_ROWS:04d}" not in text
    assert "... and 7 more in `analysis/rescore_audit.jsonl`." in text
    assert "... and 2 more in `analysis/rescore_audit.json`." in text
    assert "I can\u2019t \\| do that" in text  # a pipe or newline in an output cannot break the table


def test_readers_refuse_future_and_broken_files(rescored):
    data = json.loads(canonical_bytes(rescored.audit.model_dump(mode="json")))
    with pytest.raises(RescoreError, match="newer"):
        read_rescore_audit(json.dumps({**data, "schema_version": 2}).encode())
    with pytest.raises(RescoreError, match="not JSON"):
        read_rescore_audit(b"{")
    with pytest.raises(RescoreError, match="invalid rescore audit"):
        read_rescore_audit(json.dumps({**data, "surprise": 1}).encode())
    line = json.loads(dump_jsonl([_row(1)]))
    with pytest.raises(RecordError, match="newer"):
        read_rescore_rows(canonical_bytes({**line, "schema_version": 2}))
    for model in (RescoreAudit, RescoreRow):
        assert next(iter(model.model_fields)) == "schema_version"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=90), st.floats(0, 1), st.floats(0, 1),
                          st.one_of(st.none(), st.integers(1, 64))), max_size=5))
def test_rows_round_trip(items):
    rows = [RescoreRow(sample=f"s{i}", prompt="p", phase="p1", model="m", condition=Cond(batch_size=bs), task="t",
                       baseline=None, old_scorer="refusal@2.1", new_scorer="refusal@2.2", old_label=label,
                       new_label="refusal", old_score=a, new_score=b, label_changed=label != "refusal",
                       output_sha256="sha256:" + "0" * 64, output_start=text[:80])
            for i, (label, text, a, b, bs) in enumerate(items)]
    raw = dump_jsonl(rows)
    assert read_rescore_rows(raw) == rows and dump_jsonl(read_rescore_rows(raw)) == raw
