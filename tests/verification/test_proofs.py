"""verification.proofs: scores and flips proven by recomputation, and only then left unparsed."""

from __future__ import annotations

import math

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest
from test_verify import edit_flip_row, edit_score, materialize, remanifest, stage

from batchsafe.analysis.analyze import analyze_scored
from batchsafe.analysis.flips import dump_jsonl, read_flips, read_scored
from batchsafe.analysis.records import ScoredSample
from batchsafe.core import layout
from batchsafe.verification import checks, proofs
from batchsafe.verification.columns import all_finite, rows_json
from batchsafe.verification.source import open_bundle
from batchsafe.verification.verify import verify


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fake.make_bundle(tmp_path_factory.mktemp("proofs"))


def _schemas(d):
    with open_bundle(d) as src:
        ctx = checks.Context(src)
        checks.check_integrity(ctx)
        st = checks.check_schemas(ctx)
        return ctx, st


def test_a_clean_bundle_is_proven_and_rescored_once(base, tmp_path, monkeypatch):
    d = materialize(base, tmp_path / "b")
    ctx, st = _schemas(d)
    assert st.status == "PASS" and ctx.proven == {layout.SCORES, layout.FLIPS}
    raw = (d / layout.SCORES).read_bytes()
    assert dump_jsonl(ctx.scored) == raw and ctx.score_samples == [r.sample for r in read_scored(raw)]
    assert dump_jsonl(ctx.flips) == (d / layout.FLIPS).read_bytes()

    calls = []
    real = proofs.rescore
    monkeypatch.setattr(proofs, "rescore", lambda *a, **k: calls.append(1) or real(*a, **k))
    rep = verify(d, recompile=False)
    assert rep.ok and len(calls) == 1  # the schemas stage's rescoring is the rescoring stage's
    assert "byte-identical" in stage(rep, "rescoring").summary


@pytest.mark.parametrize("edit, failing", [(edit_score, "rescoring"), (edit_flip_row, "statistics")])
def test_an_edited_file_is_not_proven_and_its_stage_names_the_edit(base, tmp_path, edit, failing):
    d = materialize(base, tmp_path / "b")
    sample = edit(d)
    remanifest(d)
    ctx, st = _schemas(d)
    assert st.status == "PASS"
    assert ctx.proven == (set() if edit is edit_score else {layout.SCORES})
    rep = verify(d, recompile=False)
    assert stage(rep, failing).status == "FAIL" and sample in "\n".join(stage(rep, failing).problems)


def test_same_jsonl_compares_chunk_by_chunk(base, tmp_path, monkeypatch):
    d = materialize(base, tmp_path / "b")
    raw = (d / layout.SCORES).read_bytes()
    rows = read_scored(raw)
    monkeypatch.setattr(proofs, "CHUNK", 3)
    assert proofs.same_jsonl(rows, raw)
    assert not proofs.same_jsonl(rows, raw + b"\n")
    assert not proofs.same_jsonl(rows[:-1], raw)
    last = raw.rstrip(b"\n").rfind(b"\n") + 1
    assert not proofs.same_jsonl(rows, raw[:last] + raw[last:].replace(b'"score":', b'"score": ', 1))


def test_non_finite_floats_take_the_exact_path(base, tmp_path):
    d = materialize(base, tmp_path / "b")
    rows = read_scored((d / layout.SCORES).read_bytes())
    assert all_finite(rows_json(rows), ScoredSample)
    for bad in (math.nan, math.inf):
        odd = [rows[0].model_copy(update={"score": bad}), *rows[1:]]
        assert not all_finite(rows_json(odd), ScoredSample)
        with pytest.raises(ValueError):  # what dump_jsonl (the exact path) says; orjson would write null
            proofs.same_jsonl(odd, (d / layout.SCORES).read_bytes())


def test_analyze_scored_with_the_callers_flips_is_the_same_analysis(base, tmp_path):
    d = materialize(base, tmp_path / "b")
    scored = read_scored((d / layout.SCORES).read_bytes())
    flips = read_flips((d / layout.FLIPS).read_bytes())
    a = analyze_scored(scored, plots=False)
    b = analyze_scored(scored, plots=False, flips=flips)
    assert a.stats == b.stats and a.flips == b.flips and a.report == b.report
