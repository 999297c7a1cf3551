"""The protocol's statistics in a bundle: verify recomputes them (stats.json, report, figures) and the
adjudication child's corrected rates (adjudication/protocol.json); a forged number is caught.

Built on the hand-made run of the compiler's fixture plan (fake_run: no model), with the
plan's analysis set to the protocol: Study A = p1 (batch size) + p4 (true batch), Study
B = p1 (two models with alignment types), Study C = p2 (co-batch, as a composition stand-in),
Study D = p5 (kernel ablation).
"""

from __future__ import annotations

import csv
import io
import json

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest

from batchsafe.analysis.adjudication import export_candidates, import_labels
from batchsafe.analysis.adjudication_csv import COLUMNS, dump_csv, restore
from batchsafe.analysis.analyze import analyze_run
from batchsafe.analysis.stats.protocol_stats import corrected_rate
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.core import layout
from batchsafe.verification.source import from_store
from batchsafe.verification.verify import verify

PROTOCOL = {"discovery": ["p1", "p4"], "cross_model": ["p1"], "composition": ["p2"], "ablation": ["p5"],
            "bootstrap_resamples": 500, "bootstrap_seed": 3}


def _plan():
    plan = fake.mini_plan()
    models = [m.model_copy(update={"alignment": a}) for m, a in zip(plan.models, ("sft", "dpo"))]
    return plan.model_copy(update={"analysis": {**plan.analysis, "protocol": PROTOCOL}, "models": models}).with_hash()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocol")
    plan = _plan()
    rd = fake.write_run_dir(plan, tmp / "run")
    res = analyze_run(plan, rd, plots=True)
    store = BundleStore(tmp / "store")
    return store, bundle_run(rd, plan, store, extra=res.bundle_files()), plan, res


def _stage(rep, name):
    return next(s for s in rep.stages if s.name == name)


def test_a_protocol_bundle_verifies_and_verify_recomputes_the_protocol(made):
    store, bid, plan, res = made
    p = res.stats["protocol"]
    assert set(p) == {"settings", "study_a", "study_b", "study_c", "study_d"}
    assert p["study_b"]["models"]["m1"]["alignment"] == "sft" and p["study_b"]["correlation"]["resamples"] == 500
    assert any(n.startswith("plots/protocol_") for n in res.plots)
    rep = verify(bid, store)
    assert _stage(rep, "statistics").status == "PASS", rep.lines()
    assert _stage(rep, "files").status == "PASS", rep.lines()
    # A forged protocol number in stats.json (manifest made consistent) is a statistics FAIL.
    files = {e.name: store.read(bid, e.name) for e in store.manifest(bid).files}
    stats = json.loads(files[layout.STATS])
    stats["protocol"]["study_b"]["correlation"]["ci_low"] = -0.5
    from batchsafe.core.canonical import canonical_bytes

    files[layout.STATS] = canonical_bytes(stats)
    forged = store.write_bundle(files, kind="run")
    bad = _stage(verify(forged, store), "statistics")
    assert bad.status == "FAIL" and any("protocol" in x and "ci_low" in x for x in bad.problems), bad.problems


def test_adjudication_child_carries_the_corrected_rates_and_verify_rechecks_them(made, tmp_path):
    store, bid, plan, res = made
    out = tmp_path / "candidates.csv"
    export_candidates(from_store(store, bid), out)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    disc = [f for f in res.flips if f.phase in ("p1", "p4")]
    cands = [f for f in disc if f.flipped]
    assert cands, "the fake run must have flips in the discovery phases"
    # One rater confirms every other discovery candidate (keeps the flipped label) and rejects the rest.
    by = {f.sample: f for f in res.flips}
    labels = {f.sample: (f.label if i % 2 == 0 else f.baseline_label) for i, f in enumerate(cands)}
    table = [[*(r[c] for c in COLUMNS[:-3]), "r1" if r["item"] in labels else "", labels.get(r["item"], ""), ""]
             for r in rows]
    filled = tmp_path / "r1.csv"
    filled.write_bytes(dump_csv([[restore(c) for c in row] for row in table], COLUMNS))
    child = import_labels(store, bid, [filled]).child_id
    got = json.loads(store.read(child, layout.ADJ_PROTOCOL))
    confirmed = sum(labels[s] != by[s].baseline_label for s in labels)
    assert got["overall"] == json.loads(json.dumps(corrected_rate(len(cands), len(cands), confirmed, len(disc))))
    assert got["phases"] == ["p1", "p4"]
    assert got["overall"]["full_set_rate"] == pytest.approx(confirmed / len(disc))
    rep = verify(child, store)
    assert _stage(rep, "derived").status == "PASS", rep.lines()
    # A forged corrected rate is caught by the derived stage.
    files = {e.name: store.read(child, e.name) for e in store.manifest(child).files}
    got["overall"]["full_set_rate"] = 0.5
    from batchsafe.core.canonical import canonical_bytes

    files[layout.ADJ_PROTOCOL] = canonical_bytes(got)
    forged = store.write_bundle(files, kind="adjudication", parent=bid)
    bad = _stage(verify(forged, store), "derived")
    assert bad.status == "FAIL" and any(layout.ADJ_PROTOCOL in x for x in bad.problems), bad.problems
