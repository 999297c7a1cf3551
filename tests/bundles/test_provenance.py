"""The in-toto / SLSA provenance statement every bundle carries, verify's provenance stage,
the verification summary attestation, and ``bundle export`` + verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fake_run
import pytest

from batchsafe.bundles.provenance import BUILD_TYPE, PREDICATE_TYPE, STATEMENT_NAME, STATEMENT_TYPE
from batchsafe.bundles.store import BundleStore
from batchsafe.cli import main
from batchsafe.core.canonical import canonical_bytes
from batchsafe.verification.provenance import statement_problems
from batchsafe.verification.verify import verify


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    store, bid, plan = fake_run.make_bundle(root)
    return root, store, bid, plan


def _statement(store: BundleStore, bid: str) -> dict:
    return json.loads(store.read(bid, STATEMENT_NAME))


def _stage(report, name: str):
    return next(s for s in report.stages if s.name == name)


def test_statement_has_the_required_in_toto_and_slsa_fields(made) -> None:
    _, store, bid, plan = made
    st = _statement(store, bid)
    assert statement_problems(st) == []
    assert st["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    # Subjects: every other file of the bundle with the manifest's sha256, nothing else.
    listed = {e.name: e.sha256[7:] for e in store.manifest(bid).files if e.name != STATEMENT_NAME}
    assert {s["name"]: s["digest"]["sha256"] for s in st["subject"]} == listed
    assert len(st["subject"]) == len(listed)
    bd = st["predicate"]["buildDefinition"]
    assert bd["buildType"] == BUILD_TYPE
    ext = bd["externalParameters"]
    assert ext["plan_hash"] == plan.plan_hash and ext["kind"] == "run"
    assert [f["path"] for f in ext["spec"]["files"]] == [f.path for f in plan.spec.files]
    assert {e["name"] for e in bd["internalParameters"]["engines"]} == {e.name for e in plan.engines}
    names = {d["name"] for d in bd["resolvedDependencies"]}
    assert {f"data:{i.dataset}" for i in plan.inputs} <= names
    assert {f"scorer:{p.scorer}" for p in plan.prompts} <= names and "batchsafe" in names
    assert all({"uri", "digest"} & set(d) for d in bd["resolvedDependencies"])
    rd = st["predicate"]["runDetails"]
    assert rd["builder"]["id"].startswith("urn:batchsafe:")
    assert rd["metadata"]["invocationId"].startswith("urn:batchsafe:invocation:")


def test_statement_adds_no_volatility_to_the_bundle_id(made, tmp_path) -> None:
    # Bundling the same run again (another store, later) gives the same id.
    root, store, bid, plan = made
    from batchsafe.analysis.analyze import analyze_run
    from batchsafe.bundles.from_run import bundle_run

    res = analyze_run(plan, root / "run", plots=False)  # as fake_run.make_bundle
    again = bundle_run(root / "run", plan, BundleStore(tmp_path / "s2"), extra=res.bundle_files())
    assert again == bid


def test_run_times_come_from_the_run_and_launches_are_recorded(tmp_path) -> None:
    plan = fake_run.mini_plan()
    rd = fake_run.write_run_dir(plan, tmp_path / "run")
    (rd / "volatile" / "timings.jsonl").write_text(
        '{"group":"g1","started":"2026-12-07T10:00:00+00:00","wall_s":2.5}\n'
        '{"group":"g2","started":"2026-12-07T10:00:05+00:00","wall_s":1.0}\n')
    (rd / "launch").mkdir()
    (rd / "launch" / "001-vllm.json").write_text(json.dumps({"engine": "vllm", "kernel": None, "argv": ["x", "--dtype", "bf16"],
                                                             "env": {"VLLM_X": "1"}}))
    from batchsafe.bundles.from_run import bundle_run

    store = BundleStore(tmp_path / "s")
    st = _statement(store, bundle_run(rd, plan, store))
    meta = st["predicate"]["runDetails"]["metadata"]
    assert (meta["startedOn"], meta["finishedOn"]) == ("2026-12-07T10:00:00Z", "2026-12-07T10:00:06Z")
    launches = st["predicate"]["buildDefinition"]["internalParameters"]["launches"]
    assert launches[0]["argv"] == ["x", "--dtype", "bf16"] and launches[0]["env"] == {"VLLM_X": "1"}


def test_verify_passes_the_provenance_stage(made) -> None:
    _, store, bid, _ = made
    rep = verify(bid, store, recompile=False)
    assert rep.ok, rep.lines()
    st = _stage(rep, "provenance")
    assert st.status == "PASS" and "subjects match the manifest" in st.summary


def _forge(store: BundleStore, bid: str, edit) -> str:
    """A bundle identical to ``bid`` but with an edited statement, re-hashed consistently
    (so integrity passes and only the provenance stage can tell)."""
    files = {e.name: store.read(bid, e.name) for e in store.manifest(bid).files}
    st = json.loads(files[STATEMENT_NAME])
    edit(st)
    files[STATEMENT_NAME] = canonical_bytes(st)
    return store.write_bundle(files, kind="run")


def test_verify_fails_when_a_subject_digest_is_edited(made) -> None:
    _, store, bid, _ = made

    def edit(st):
        s = next(x for x in st["subject"] if x["name"] == "outputs/samples.jsonl")
        s["digest"]["sha256"] = "0" * 64

    forged = _forge(store, bid, edit)
    rep = verify(forged, store, recompile=False)
    assert not rep.ok
    assert _stage(rep, "integrity").status == "PASS"
    st = _stage(rep, "provenance")
    assert st.status == "FAIL"
    assert any("subject outputs/samples.jsonl has sha256 000" in p for p in st.problems), st.problems


@pytest.mark.parametrize("edit, needle", [
    (lambda st: st["subject"].pop(), "is in the manifest but not a subject"),
    (lambda st: st["predicate"]["buildDefinition"]["externalParameters"].update(plan_hash="sha256:" + "1" * 64),
     "predicate.buildDefinition.externalParameters.plan_hash"),
    (lambda st: st.update(predicateType="https://slsa.dev/provenance/v0.2"), "predicateType"),
    (lambda st: st["predicate"]["runDetails"].pop("builder"), "runDetails.builder.id"),
])
def test_verify_names_what_was_edited(made, edit, needle) -> None:
    _, store, bid, _ = made
    rep = verify(_forge(store, bid, edit), store, recompile=False)
    st = _stage(rep, "provenance")
    assert st.status == "FAIL" and any(needle in p for p in st.problems), st.problems


def test_vsa_for_a_pass_and_a_fail(made, tmp_path, capsys) -> None:
    _, store, bid, _ = made
    out = tmp_path / "vsa.json"
    assert main(["verify", bid, "--store", str(store.root), "--no-recompile", "--vsa", str(out)]) == 0
    v = json.loads(out.read_text())
    assert v["_type"] == STATEMENT_TYPE and v["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert v["subject"] == [{"name": "manifest.json", "digest": {"sha256": bid[7:]}}]
    p = v["predicate"]
    assert p["verificationResult"] == "PASSED" and p["verifiedLevels"] == ["SLSA_BUILD_LEVEL_1"]
    assert {"verifier", "timeVerified", "resourceUri", "policy"} <= set(p) and p["verifier"]["id"]

    forged = _forge(store, bid, lambda st: st["subject"].pop())
    assert main(["verify", forged, "--store", str(store.root), "--no-recompile", "--vsa", str(out)]) == 1
    v = json.loads(out.read_text())
    assert v["predicate"]["verificationResult"] == "FAILED" and v["predicate"]["verifiedLevels"] == []
    capsys.readouterr()


def test_child_bundles_carry_their_own_statement(made) -> None:
    _, store, bid, _ = made
    from batchsafe.analysis.rescore import rescore_bundle

    child = rescore_bundle(store, bid, {"refusal": "refusal@2.1"}).child_id
    st = _statement(store, child)
    assert st["predicate"]["buildDefinition"]["externalParameters"]["parent"] == bid
    assert _stage(verify(child, store, recompile=False), "provenance").status == "PASS"


def test_export_then_verify_round_trips_and_never_overwrites(made, tmp_path, capsys) -> None:
    _, store, bid, _ = made
    dest = tmp_path / "exported"
    assert main(["bundle", "export", bid[:16], str(dest), "--store", str(store.root)]) == 0
    assert str(dest) in capsys.readouterr().out
    names = {e.name for e in store.manifest(bid).files}
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == names | {"manifest.json"}
    assert main(["verify", str(dest), "--no-recompile", "--id", bid]) == 0
    assert "verified: every stage passed" in capsys.readouterr().out
    before = (dest / "manifest.json").read_bytes()
    assert main(["bundle", "export", bid, str(dest), "--store", str(store.root)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (dest / "manifest.json").read_bytes() == before
    # An edited subject file in the exported tree fails verify.
    target = dest / "outputs" / "samples.jsonl"
    target.write_bytes(target.read_bytes().replace(b"I cannot", b"I can"))
    assert main(["verify", str(dest), "--no-recompile"]) == 1
    shutil.rmtree(dest)
