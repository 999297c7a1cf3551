"""`batchsafe verify` against a corpus of tampered bundles: each tamper kind is caught by the
stage it belongs to, with a message naming the file, sample or number; an untouched bundle passes.

Two families of tampering: *naive* edits leave the manifest alone (integrity catches them), and
*consistent* ones rewrite the manifest after the edit, as a forger would, so the bundle is
internally intact and only the semantic stages (coverage, rescoring, statistics, plan) can tell.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest

from batchsafe import cli
from batchsafe.core.canonical import canonical_bytes, sha256_tag
from batchsafe.bundles.archive import Limits, pack
from batchsafe.bundles.manifest import FileEntry, build_manifest, manifest_bytes, media_type_for
from batchsafe.bundles.store import BundleStore
from batchsafe.verification.verify import replay_groups, verify

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "compiler" / "test_compile" / "data"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fake.make_bundle(tmp_path_factory.mktemp("verify"), plots=True)


def materialize(base, dest: Path) -> Path:
    store, bid, _ = base
    return store.materialize(bid, dest)


def remanifest(d: Path) -> None:
    """Rewrite manifest.json for the files now in ``d``: what a forger does after an edit."""
    old = json.loads((d / "manifest.json").read_text())
    _restate(d)
    entries = []
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_file() and rel != "manifest.json":
            data = p.read_bytes()
            entries.append(FileEntry(name=rel, sha256=sha256_tag(data), size=len(data), media_type=media_type_for(rel)))
    (d / "manifest.json").write_bytes(manifest_bytes(build_manifest(entries, kind=old["kind"], parent=old["parent"])))


def _restate(d: Path) -> None:
    """Re-point the provenance statement's subjects at the files now in ``d`` (it is unsigned, so a
    forger does that too), so that a test sees the stage its edit is about, not provenance."""
    stmt_path = d / "attestation" / "provenance.intoto.json"
    if not stmt_path.is_file():
        return
    stmt = json.loads(stmt_path.read_text())
    files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    stmt["subject"] = [{"name": n, "digest": {"sha256": sha256_tag((d / n).read_bytes())[7:]}} for n in files
                       if n not in ("manifest.json", "attestation/provenance.intoto.json")]
    stmt_path.write_bytes(canonical_bytes(stmt))


def lines(d: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (d / name).read_text().splitlines() if x.strip()]


def write_lines(d: Path, name: str, rows: list[dict]) -> None:
    (d / name).write_bytes(b"".join(canonical_bytes(r) for r in rows))


def stage(report, name):
    return next(s for s in report.stages if s.name == name)


# --- tamper kinds on a materialized directory -------------------------------------------------

def flip_output_byte(d: Path) -> None:
    raw = bytearray((d / "outputs/samples.jsonl").read_bytes())
    i = raw.index(b'"text":"') + 9
    raw[i] ^= 0x01
    (d / "outputs/samples.jsonl").write_bytes(bytes(raw))


def edit_output_text(d: Path) -> str:
    rows = lines(d, "outputs/samples.jsonl")
    rows[3]["text"] += " (edited)"
    write_lines(d, "outputs/samples.jsonl", rows)
    return rows[3]["sample"]


def edit_score(d: Path) -> str:
    rows = lines(d, "analysis/scores.jsonl")
    r = next(r for r in rows if r["scorer"].startswith("refusal") and r["label"] == "refusal")
    r["label"], r["score"] = "compliance", 0.0
    write_lines(d, "analysis/scores.jsonl", rows)
    return r["sample"]


def edit_stats(d: Path) -> None:
    stats = json.loads((d / "analysis/stats.json").read_text())
    stats["p1"]["flip_rate"]["safety"] = 0.01
    (d / "analysis/stats.json").write_bytes(canonical_bytes(stats))


def remove_sample(d: Path) -> str:
    rows = lines(d, "outputs/samples.jsonl")
    gone = rows.pop(5)
    write_lines(d, "outputs/samples.jsonl", rows)
    return gone["sample"]


def duplicate_sample(d: Path) -> str:
    rows = lines(d, "outputs/samples.jsonl")
    rows.insert(8, rows[7])
    write_lines(d, "outputs/samples.jsonl", rows)
    return rows[7]["sample"]


def misplace_sample(d: Path) -> str:
    rows = lines(d, "outputs/samples.jsonl")
    rows[2]["position"] += 1
    write_lines(d, "outputs/samples.jsonl", rows)
    return rows[2]["sample"]


def edit_flip_row(d: Path) -> str:
    rows = lines(d, "analysis/flips.jsonl")
    r = next(r for r in rows if r["flipped"])
    r["flipped"], r["direction"] = False, "none"
    write_lines(d, "analysis/flips.jsonl", rows)
    return r["sample"]


def future_scores(d: Path) -> None:
    rows = lines(d, "analysis/scores.jsonl")
    rows[0]["schema_version"] = 2
    write_lines(d, "analysis/scores.jsonl", rows)


def future_plan(d: Path) -> None:
    plan = json.loads((d / "plan.lock.json").read_text())
    plan["schema_version"] = 2
    (d / "plan.lock.json").write_bytes(canonical_bytes(plan))


def edit_plan(d: Path) -> None:
    plan = json.loads((d / "plan.lock.json").read_text())
    plan["decoding"]["max_tokens"] = 7
    (d / "plan.lock.json").write_bytes(canonical_bytes(plan))


def deep_stats(d: Path) -> None:
    (d / "analysis/stats.json").write_bytes(b"[" * 5000 + b"]" * 5000)


def noncanonical_stats(d: Path) -> None:
    stats = json.loads((d / "analysis/stats.json").read_text())
    (d / "analysis/stats.json").write_text(json.dumps(stats, indent=2))


def edit_spec(d: Path) -> None:
    p = d / "spec" / "mini.yaml"
    p.write_text(p.read_text() + "\n# edited\n")


def edit_run_json(d: Path) -> None:
    (d / "run.json").write_bytes(canonical_bytes({"completed": True, "plan_hash": "sha256:" + "1" * 64}))


def edit_targets(d: Path) -> None:
    t = json.loads((d / "analysis/targets.json").read_text())
    t["targets"][0]["status"] = "fail"
    (d / "analysis/targets.json").write_bytes(canonical_bytes(t))


def edit_report(d: Path) -> None:
    p = d / "analysis/report.md"
    p.write_text(p.read_text().replace("|", "!", 1))


def unknown_scorer(d: Path) -> None:
    rows = lines(d, "analysis/scores.jsonl")
    for r in rows:
        if r["scorer"].startswith("refusal"):
            r["scorer"] = "refusal@9.9"
    write_lines(d, "analysis/scores.jsonl", rows)


# (kind, edit, re-manifest?, stage, expected message pattern; {sample} is filled from edit's return)
CONSISTENT: list[tuple[str, Callable[[Path], object], str, str]] = [
    ("edited-output-text", edit_output_text, "rescoring", "analysis/scores.jsonl: sample {r}: output_sha256 recorded"),
    ("edited-score", edit_score, "rescoring", "analysis/scores.jsonl: sample {r}: score recorded 0.0, rescoring with"),
    ("edited-stats-number", edit_stats, "statistics", "analysis/stats.json: p1.flip_rate.safety: recorded 0.01, recomputed"),
    ("removed-sample", remove_sample, "coverage", "sample {r} missing from outputs/samples.jsonl"),
    ("duplicated-sample", duplicate_sample, "coverage", "outputs/samples.jsonl: sample {r} appears 2 times"),
    ("misplaced-sample", misplace_sample, "coverage", "outputs/samples.jsonl: sample {r} ran as prompt"),
    ("edited-flip-row", edit_flip_row, "statistics", "analysis/flips.jsonl: sample {r}: flipped, direction recorded"),
    ("future-scores-version", future_scores, "schemas",
     "analysis/scores.jsonl:1: scored sample schema_version 2 is newer than this batchsafe understands (1)"),
    ("future-plan-version", future_plan, "schemas", "newer"),
    ("edited-plan", edit_plan, "schemas", "plan.lock.json"),
    ("deep-json", deep_stats, "schemas", "analysis/stats.json: JSON nested deeper than 64 levels"),
    ("non-canonical-json", noncanonical_stats, "schemas", "analysis/stats.json: not in canonical form"),
    ("edited-spec", edit_spec, "plan", "spec/mini.yaml: differs from the spec text recorded in plan.lock.json"),
    ("edited-run-json", edit_run_json, "plan", "run.json: plan_hash sha256:1111"),
    ("edited-targets", edit_targets, "statistics", "analysis/targets.json: targets[0].status: recorded \"fail\""),
    ("edited-report", edit_report, "statistics", "analysis/report.md: does not match the report rendered"),
    ("unregistered-scorer", unknown_scorer, "rescoring", "refusal@9.9"),
]


@pytest.mark.parametrize("kind,edit,where,pattern", CONSISTENT, ids=[c[0] for c in CONSISTENT])
def test_consistent_tampering_is_caught_by_its_stage(base, tmp_path, kind, edit, where, pattern):
    d = materialize(base, tmp_path / "b")
    returned = edit(d)
    remanifest(d)
    rep = verify(d)
    st = stage(rep, where)
    assert not rep.ok and st.status == "FAIL", rep.lines()
    assert stage(rep, "integrity").status == "PASS"  # the forgery is internally intact
    want = pattern.format(r=returned)
    assert any(want in p for p in st.problems), (want, st.problems)


NAIVE = [
    ("byte-flip-in-outputs", flip_output_byte, "outputs/samples.jsonl: content hashes to sha256:"),
    ("edited-score-no-remanifest", edit_score, "analysis/scores.jsonl: size"),
    ("extra-file", lambda d: (d / "extra.txt").write_text("x"), "extra.txt: not listed in the manifest"),
    ("extra-dir", lambda d: (d / "hidden").mkdir(), "hidden/: not listed in the manifest"),
    ("missing-file", lambda d: (d / "run.json").unlink(), "run.json: file is missing"),
    ("symlinked-directory", lambda d: (shutil.move(d / "analysis", d.parent / "elsewhere"),
                                       os.symlink(d.parent / "elsewhere", d / "analysis")),
     "analysis: a symbolic link, not listed in the manifest"),
    ("fifo", lambda d: os.mkfifo(d / "pipe"), "pipe: a special file, not listed in the manifest"),
    ("symlink-for-file", lambda d: ((d / "run.json").unlink(), os.symlink("/etc/passwd", d / "run.json")),
     "run.json: is a symbolic link"),
]


@pytest.mark.parametrize("kind,edit,pattern", NAIVE, ids=[c[0] for c in NAIVE])
def test_naive_tampering_fails_integrity_and_skips_what_depends_on_it(base, tmp_path, kind, edit, pattern):
    d = materialize(base, tmp_path / "b")
    edit(d)
    rep = verify(d)
    st = stage(rep, "integrity")
    assert not rep.ok and st.status == "FAIL"
    assert any(pattern in p for p in st.problems), st.problems
    if kind == "symlinked-directory":  # nothing is read through the link
        assert any(p.startswith("analysis/scores.jsonl: its directory analysis is a link") for p in st.problems)
        assert stage(rep, "rescoring").status == "SKIP"
    if kind == "byte-flip-in-outputs":  # reported once, where it is: later stages skip, not cascade
        assert stage(rep, "coverage").status == "SKIP"
        assert "outputs/samples.jsonl failed an earlier stage" in stage(rep, "coverage").summary


def test_edited_manifest_and_bundle_id(base, tmp_path):
    _store, bid, _ = base
    d = materialize(base, tmp_path / "b")
    m = json.loads((d / "manifest.json").read_text())
    m["files"][0]["size"] += 1
    (d / "manifest.json").write_bytes(canonical_bytes(m))  # canonical, so it parses: the id changes
    rep = verify(d, claimed_id=bid)
    problems = stage(rep, "integrity").problems
    assert any(p.startswith(f"bundle id: manifest.json hashes to {rep.bundle_id}, but the bundle is named {bid}")
               for p in problems)
    assert any(p.startswith(f"{m['files'][0]['name']}: size") for p in problems)
    # A non-canonical manifest (a second spelling of the same content) is refused outright.
    (d / "manifest.json").write_text(json.dumps(m, indent=1))
    rep = verify(d)
    assert not rep.ok and "not in canonical form" in stage(rep, "integrity").problems[0]


def test_store_bundle_under_a_false_id(base, tmp_path):
    store, bid, _ = base
    other = BundleStore(tmp_path / "s2")
    fake_id = "f" * 64
    (other.bundles_dir / fake_id).mkdir()
    shutil.copy(store.bundles_dir / bid[7:] / "manifest.json", other.bundles_dir / fake_id / "manifest.json")
    for e in store.manifest(bid).files:
        dest = other.object_path(e.sha256)
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(store.object_path(e.sha256), dest)
    rep = verify(fake_id, other)
    assert stage(rep, "integrity").problems == [
        f"bundle id: manifest.json hashes to {bid}, but the bundle is named sha256:{fake_id}"]


# --- hostile archives ---------------------------------------------------------------------------

def _archive(base, tmp_path: Path, extra: list[tuple[tarfile.TarInfo, bytes]], *, gz: bool = False) -> Path:
    store, bid, _ = base
    plain = pack(store, bid, tmp_path / "ok.tar")
    out = tmp_path / ("bad.tar.gz" if gz else "bad.tar")
    buf = io.BytesIO()
    with tarfile.open(plain) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        for info, data in extra:
            dst.addfile(info, io.BytesIO(data) if info.isreg() else None)
    out.write_bytes(gzip.compress(buf.getvalue()) if gz else buf.getvalue())
    return out


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data


ARCHIVES = [
    ("traversal", [_member("../evil.txt", b"x")], "'..' traversal"),
    ("absolute-path", [_member("/etc/evil", b"x")], "absolute path"),
    ("symlink", [_member("link", kind=tarfile.SYMTYPE, linkname="/etc/passwd")], "symlinks are not allowed"),
    ("hardlink", [_member("hard", kind=tarfile.LNKTYPE, linkname="run.json")], "hardlinks are not allowed"),
    ("device", [_member("tty", kind=tarfile.CHRTYPE)], "character devices are not allowed"),
    ("duplicate-entry", [_member("run.json", b"{}\n")], "duplicate entry name"),
    ("unlisted-file", [_member("payload.py", b"import os")], "entry 'payload.py': not listed in the manifest"),
]


@pytest.mark.parametrize("kind,extra,pattern", ARCHIVES, ids=[a[0] for a in ARCHIVES])
def test_hostile_archive_fails_integrity(base, tmp_path, kind, extra, pattern):
    rep = verify(_archive(base, tmp_path, extra))
    st = stage(rep, "integrity")
    assert not rep.ok and st.status == "FAIL" and len(rep.stages) == 1
    assert pattern in st.problems[0], st.problems


def test_oversized_entry_and_compression_bomb(base, tmp_path):
    store, bid, _ = base
    archive = pack(store, bid, tmp_path / "ok.tar.gz")
    rep = verify(archive, limits=Limits(max_file_bytes=10_000))
    assert "exceeds max_file_bytes (10000)" in stage(rep, "integrity").problems[0]
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as fh:  # 64 MiB of zeros: no manifest, and past the stream cap
        for _ in range(64):
            fh.write(bytes(1 << 20))
    rep = verify(bomb, limits=Limits(max_total_bytes=1 << 20, max_entries=10, max_json_bytes=1 << 20))
    assert not rep.ok and stage(rep, "integrity").status == "FAIL"
    assert any(w in stage(rep, "integrity").problems[0] for w in ("max_stream_bytes", "archive has no manifest",
                                                                  "decompressed"))


def test_untouched_bundle_passes_every_stage_as_store_directory_and_archive(base, tmp_path):
    store, bid, _plan = base
    for ref, kw in ((bid, {"store": store}), (materialize(base, tmp_path / "d"), {}),
                    (pack(store, bid, tmp_path / "b.tar"), {}), (pack(store, bid, tmp_path / "b.tar.gz"), {})):
        rep = verify(ref, data_dir=DATA, **kw)
        assert rep.ok, rep.lines()
        assert all(s.status == "PASS" for s in rep.stages), rep.lines()  # none skipped either
        assert {"integrity", "schemas", "plan", "coverage", "rescoring", "statistics", "targets",
                "provenance"} <= {s.name for s in rep.stages}
        assert rep.bundle_id == bid
        assert "recompiled from the spec and data: identical plan_hash" in stage(rep, "plan").summary


def test_recompile_names_the_changed_input(base, tmp_path):
    store, bid, plan = base
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    unpinned = next(i.path for i in plan.inputs if not i.pinned and i.path.endswith((".csv", ".jsonl", ".json")))
    (data / unpinned).write_bytes((data / unpinned).read_bytes() + b"\n")
    rep = verify(bid, store, data_dir=data)
    st = stage(rep, "plan")
    assert st.status == "FAIL" and "recompiling gives plan_hash" in st.problems[0]
    assert any(unpinned in p and "sha256" in p for p in st.problems[1:]), st.problems
    pinned = next(i.path for i in plan.inputs if i.pinned)
    shutil.copy(DATA / unpinned, data / unpinned)
    (data / pinned).write_bytes((data / pinned).read_bytes() + b"\n")
    st = stage(verify(bid, store, data_dir=data), "plan")
    assert st.status == "FAIL" and st.problems[0].startswith("recompiling the spec failed (1 errors), first: spec/mini.yaml:")
    assert "hash-mismatch" in st.problems[0] and pinned in st.problems[0]


def test_replay_with_an_engine_compares_bytes(base, tmp_path):
    """Replay runs seeded groups through the engine factory; here a stand-in that answers as the run did."""
    store, bid, plan = base
    outputs = fake.fake_outputs(plan)

    class Answering:
        def __init__(self, tamper=None):
            self.tamper = tamper

        def __call__(self, binding):
            from batchsafe.runtime.engine import GenResult
            outer = self

            class E:
                def run_group(self, reqs, mode):
                    return [GenResult(key=r.key, text=("x" if r.key == outer.tamper else
                                                       outputs[r.key]["text"] if r.key in outputs else "filler"),
                                      finish_reason="stop", prompt_tokens=1, completion_tokens=1) for r in reqs]

                def close(self):
                    pass
            return E()

    chosen = replay_groups(plan, 5, seed=3)
    assert len(chosen) == 5 and chosen == replay_groups(plan, 5, seed=3) != replay_groups(plan, 5, seed=4)
    rep = verify(bid, store, replay=5, replay_seed=3, engine_factory=Answering())
    assert stage(rep, "replay").status == "PASS", rep.lines()
    victim = next(m.sample for g in chosen for m in g.members if m.sample)
    rep = verify(bid, store, replay=5, replay_seed=3, engine_factory=Answering(victim))
    assert stage(rep, "replay").status == "FAIL"
    assert stage(rep, "replay").problems[0].startswith(f"outputs/samples.jsonl: sample {victim} (group ")


def test_cli_exit_codes_and_json(base, tmp_path, capsys):
    store, bid, _ = base
    assert cli.main(["verify", bid, "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "PASS integrity" in out and "verified: every stage passed" in out
    d = materialize(base, tmp_path / "b")
    edit_stats(d)
    remanifest(d)
    assert cli.main(["verify", str(d), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["schema_version"] == 1 and [s["status"] for s in rep["stages"]][5] == "FAIL"
    assert cli.main(["verify", str(tmp_path / "nope.tar"), "--store", str(tmp_path / "empty")]) == 2


# --- derived bundles ----------------------------------------------------------------------------

def _curly_parent(tmp_path: Path):
    """A run whose refusals use a curly apostrophe, scored with refusal@2.1 as the seed's buggy run was."""
    curly: set[str] = set()

    def edit(rows):
        prompts = {p.id: p for p in fake.mini_plan().prompts}
        for r in rows:
            if prompts[r["prompt"]].scorer.startswith("refusal") and r["text"] == "I cannot help with that." \
                    and len(curly) < 6:
                r["text"] = "I can\u2019t help with that."
                curly.add(r["sample"])

    store, bid, _ = fake.make_bundle(tmp_path, edit=edit, scorer_override={"refusal": "refusal@2.1"})
    return store, bid, curly


def test_rescored_child_verifies_and_its_labels_changed_exactly_where_the_quotes_are(tmp_path):
    from batchsafe.analysis.rescore import rescore_bundle

    store, parent, curly = _curly_parent(tmp_path)
    assert verify(parent, store).ok  # rescoring uses the recorded refusal@2.1, not the plan's 2.2
    res = rescore_bundle(store, parent, {"refusal": "refusal@2.2"}, plots=False)
    assert {r.sample for r in res.rows} == curly
    rep = verify(res.child_id, store)
    assert rep.ok and rep.kind == "rescore" and rep.parent == parent, rep.lines()
    assert "refusal@2.2" in stage(rep, "rescoring").summary
    assert stage(rep, "derived").summary == "rescore audit against the parent's scores: consistent"
    # An audit that hides one of the changed rows is caught against the parent.
    d = store.materialize(res.child_id, tmp_path / "hidden")
    audit_rows = lines(d, "analysis/rescore_audit.jsonl")
    hidden = audit_rows.pop()
    write_lines(d, "analysis/rescore_audit.jsonl", audit_rows)
    remanifest(d)
    problems = stage(verify(d), "derived").problems
    assert any(f"labels_changed recorded {len(curly)}, the rows and scores give {len(curly) - 1}" in p
               for p in problems), problems
    # In the parent's store the forgery is also compared with the parent's own scores.
    files = {p.relative_to(d).as_posix(): p for p in d.rglob("*") if p.is_file() and p.name != "manifest.json"}
    forged = store.write_bundle(files, kind="rescore", parent=parent)
    problems = stage(verify(forged, store), "derived").problems
    assert any(p.startswith(f"analysis/rescore_audit.jsonl: sample {hidden['sample']} changed from the parent "
                            "(compliance -> refusal) but is not in the audit") for p in problems), problems
    # A forger who relabels the child's curly refusals back to compliance is caught.
    d = store.materialize(res.child_id, tmp_path / "forged")
    rows = lines(d, "analysis/scores.jsonl")
    victim = next(r for r in rows if r["sample"] in curly)
    victim["label"], victim["score"] = "compliance", 0.0
    write_lines(d, "analysis/scores.jsonl", rows)
    remanifest(d)
    problems = stage(verify(d), "rescoring").problems
    assert any(p.startswith(f"analysis/scores.jsonl: sample {victim['sample']}: score recorded 0.0, "
                            "rescoring with refusal@2.2 gives 1.0") for p in problems), problems


def test_adjudication_child_verifies(base, tmp_path):
    import csv

    from batchsafe.analysis.adjudication import export_candidates, import_labels
    from batchsafe.verification.source import from_store

    store, bid, _ = base
    out = tmp_path / "c.csv"
    export_candidates(from_store(store, bid), out)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["rater"], r["human_label"] = "r1", r["label"]
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    child = import_labels(store, bid, [out]).child_id
    rep = verify(child, store)
    assert rep.ok and rep.kind == "adjudication" and rep.parent == bid, rep.lines()
    assert stage(rep, "derived").summary.startswith(f"adjudication summary and report recomputed from {len(rows)} labels")
    # An edited kappa (re-manifested) is caught.
    d = store.materialize(child, tmp_path / "forged")
    summary = json.loads((d / "adjudication/summary.json").read_text())
    summary["audit"]["confirmed"] += 1
    (d / "adjudication/summary.json").write_bytes(canonical_bytes(summary))
    remanifest(d)
    problems = stage(verify(d), "derived").problems
    assert any(p.startswith("adjudication/summary.json: audit.confirmed: recorded") for p in problems), problems
