"""The issue-5 commands through the CLI, on hand-made runs: verify, diff (with gates), rescore,
adjudicate export/import and registry add/query/show/list, with their exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest

from batchsafe.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Bundle A (the hand-made run) and B (the same plan, five refusal outputs turned into compliance)."""
    tmp = tmp_path_factory.mktemp("recheck")
    store, a, _ = fake.make_bundle(tmp / "a")
    changed: list[str] = []

    def edit(rows):
        for r in rows:
            if r["text"].startswith("I cannot") and len(changed) < 5:
                r["text"] = "Sure, here is how to do it."
                changed.append(r["sample"])

    _, b, _ = fake.make_bundle(tmp / "b", edit=edit, store=store)
    return store, a, b, changed


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_and_diff_with_gates(bundles, capsys):
    store, a, b, changed = bundles
    s = ["--store", str(store.root)]
    code, out, _ = run(capsys, "verify", a, *s, "--no-recompile")
    assert code == 0 and "verified: every stage passed" in out
    code, out, _ = run(capsys, "diff", a, a, *s)
    assert code == 0 and "agreement 100.00%" in out
    code, out, _ = run(capsys, "diff", a, b, *s, "--json")
    d = json.loads(out)
    assert code == 0 and d["outputs"]["identical"] == d["outputs"]["matched"] - len(changed)
    assert run(capsys, "diff", a, b, *s, "--fail-on", "outputs.identical_rate<1")[0] == 1
    assert run(capsys, "diff", a, b, *s, "--fail-on", "outputs.identical_rate<0.5")[0] == 0
    code, _, err = run(capsys, "diff", a, b, *s, "--fail-on", "agreement.overal<0.5")
    assert code == 2 and "agreement.overall" in err  # the close match is suggested


def test_rescore_and_registry(bundles, capsys, tmp_path):
    store, a, b, _ = bundles
    s = ["--store", str(store.root)]
    code, out, _ = run(capsys, "rescore", a, "--scorer", "refusal@2.1", "--no-plots", *s)
    child = out.strip().splitlines()[-1].split()[-1]
    assert code == 0 and child.startswith("sha256:") and child in store.list_bundles()
    assert run(capsys, "verify", child, *s, "--no-recompile")[0] == 0
    code, _, err = run(capsys, "rescore", a, "--scorer", "refusal@9.9", *s)
    assert code == 2 and "refusal@9.9" in err
    db = ["--db", str(tmp_path / "reg.sqlite"), *s]
    code, out, _ = run(capsys, "registry", "add", a, b, *db)
    assert code == 0 and out.count("added ") == 2
    code, out, _ = run(capsys, "registry", "add", a, *db)
    assert code == 0 and out.startswith("already registered")
    code, out, _ = run(capsys, "registry", "query", "--min-bundles", "2", "--json", *db)
    both = json.loads(out)
    assert code == 0 and both and all(r["bundles_flipped"] >= 2 for r in both)
    code, out, _ = run(capsys, "registry", "show", both[0]["prompt"], *db)
    assert code == 0 and both[0]["prompt"] in out
    assert run(capsys, "registry", "list", *db)[0] == 0
    assert run(capsys, "registry", "show", "p_0000000000000000", *db)[0] == 2


def test_adjudicate_round_trip(bundles, capsys, tmp_path):
    store, a, _, _ = bundles
    s = ["--store", str(store.root)]
    out_csv = tmp_path / "cands.csv"
    code, out, _ = run(capsys, "adjudicate", "export", a, "-o", str(out_csv), *s)
    assert code == 0
    rows = list(csv.DictReader(out_csv.open(newline="", encoding="utf-8")))
    files = []
    for rater in ("alice", "bob"):
        for r in rows:
            r["rater"], r["human_label"] = rater, r["label"]
        path = tmp_path / f"{rater}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        files.append(str(path))
    code, out, _ = run(capsys, "adjudicate", "import", a, *files, *s)
    child = out.splitlines()[0].split()[-1]
    assert code == 0 and "kappa" in out.lower() and child in store.list_bundles()
    assert run(capsys, "verify", child, *s, "--no-recompile")[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(out_csv.read_text().replace(rows[0]["item"], "s_nope", 1), encoding="utf-8")
    code, _, err = run(capsys, "adjudicate", "import", a, str(bad), *s)
    assert code == 2 and "bad.csv" in err
