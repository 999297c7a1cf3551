"""Forged and malformed bundles (issue 15): every class is a FAIL line naming what is wrong, never an abort.

Each edit is *consistent* (the manifest is rewritten after it, as a forger would), so
integrity passes and the semantic stages must find it.  Classes: inconsistent records,
files no stage accounts for (unknown files, fillers, figures, logs), JSON lines not in
canonical bytes, and messages that say what is wrong.  Start-up: bad input is rejected
before the analysis stack is imported, and nothing is written under ``$HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest

from batchsafe import cli
from batchsafe.bundles.manifest import FileEntry, build_manifest, manifest_bytes, media_type_for
from batchsafe.core.canonical import canonical_bytes, sha256_tag
from batchsafe.verification.verify import verify

ROOT = Path(__file__).resolve().parents[2]
OUT, SCORES, FLIPS, FILLERS = "outputs/samples.jsonl", "analysis/scores.jsonl", "analysis/flips.jsonl", "outputs/fillers.jsonl"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fake.make_bundle(tmp_path_factory.mktemp("hostile"), plots=True)


def forge(base, tmp_path: Path, edit) -> tuple[Path, object]:
    """Materialize the bundle, apply ``edit`` and rewrite the manifest over whatever is there now."""
    store, bid, _ = base
    d = store.materialize(bid, tmp_path / "b")
    returned = edit(d)
    old = json.loads((d / "manifest.json").read_text())
    entries = [FileEntry(name=p.relative_to(d).as_posix(), sha256=sha256_tag(p.read_bytes()), size=p.stat().st_size,
                         media_type=media_type_for(p.relative_to(d).as_posix()))
               for p in sorted(d.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    (d / "manifest.json").write_bytes(manifest_bytes(build_manifest(entries, kind=old["kind"], parent=old["parent"])))
    return d, returned


def rows(d: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (d / name).read_bytes().splitlines() if x.strip()]


def put(d: Path, name: str, records: list[dict]) -> None:
    (d / name).write_bytes(b"".join(canonical_bytes(r) for r in records))


def stage(rep, name):
    return next(s for s in rep.stages if s.name == name)


def problems(rep, name) -> str:
    return "\n".join(stage(rep, name).problems)


# -- 8. internally inconsistent records --------------------------------------------------------

def _inconsistent(pick):
    """Rescore one sample whose output is byte-identical to its baseline's (``pick`` chooses which)."""
    def edit(d: Path) -> str:
        recs = rows(d, SCORES)
        by = {r["sample"]: r for r in recs}
        same = [r for r in recs if r.get("baseline") and r["output_sha256"] == by[r["baseline"]]["output_sha256"]]
        target = pick(same, by)
        target["score"] = 1.0 - target["score"]
        put(d, SCORES, recs)
        return target["sample"]
    return edit


INCONSISTENT = {
    "first-refusal": _inconsistent(lambda same, by: next(r for r in same if r["scorer"].startswith("refusal"))),
    "first-mcq": _inconsistent(lambda same, by: next(r for r in same if r["scorer"].startswith("mcq_letter"))),
    "the-baseline": _inconsistent(lambda same, by: by[same[-1]["baseline"]]),
}


@pytest.mark.parametrize("kind", sorted(INCONSISTENT))
def test_inconsistent_record_is_a_statistics_fail_naming_the_sample(base, tmp_path, kind) -> None:
    d, sample = forge(base, tmp_path, INCONSISTENT[kind])
    rep = verify(d)  # must not raise
    assert not rep.ok
    st = stage(rep, "statistics")
    assert st.status == "FAIL" and "byte-identical to its baseline" in problems(rep, "statistics")
    assert str(sample) in problems(rep, "statistics") + problems(rep, "rescoring")
    assert stage(rep, "targets").status == "SKIP"


def test_inconsistent_record_exits_1_with_a_full_report(base, tmp_path, capsys) -> None:
    d, sample = forge(base, tmp_path, INCONSISTENT["first-refusal"])
    assert cli.main(["verify", str(d)]) == 1
    out = capsys.readouterr().out
    assert "FAIL statistics" in out and "Traceback" not in out and "FAILED:" in out


# -- 9. every listed file accounted for --------------------------------------------------------

def _drop_filler(d: Path) -> str:
    recs = rows(d, FILLERS)
    gone = recs.pop(5)
    put(d, FILLERS, recs)
    return f"filler at group {gone['group']} position {gone['position']} missing from {FILLERS}"


def _move_filler(d: Path) -> str:
    recs = rows(d, FILLERS)
    recs[0]["position"] = 0
    put(d, FILLERS, recs)
    return f"{FILLERS}:1: group {recs[0]['group']} position 0 is not a filler member of the plan"


def _filler_key(d: Path) -> str:
    recs = rows(d, FILLERS)
    recs[2]["score"] = 1
    put(d, FILLERS, recs)
    return f"{FILLERS}:3: keys differ from a filler record's; unexpected score"


def _plot_bytes(d: Path) -> str:
    p = sorted((d / "analysis/plots").glob("*.png"))[0]
    p.write_bytes(p.read_bytes() + b"\0")
    return f"analysis/plots/{p.name}: differs from the figure re-rendered"


def _plot_deleted(d: Path) -> str:
    p = sorted((d / "analysis/plots").glob("*.png"))[-1]
    p.unlink()
    return f"analysis/plots/{p.name}: missing; the recomputed statistics give this figure"


def _plot_extra(d: Path) -> str:
    (d / "analysis/plots/p9_bonus.png").write_bytes(b"\x89PNG\r\n")
    return "analysis/plots/p9_bonus.png: no such figure is recomputed from the statistics"


def _output_field(key, value):
    def edit(d: Path) -> str:
        recs = rows(d, OUT)
        recs[4][key] = value
        put(d, OUT, recs)
        return f"{OUT}: sample {recs[4]['sample']}: {key} recorded"
    return edit


def _output_extra_key(d: Path) -> str:
    recs = rows(d, OUT)
    recs[9]["verified_by"] = "me"
    put(d, OUT, recs)
    return f"{OUT}:10: unexpected key(s) verified_by"


FILES = {
    "unknown-root-file": (lambda d: (d / "notes.txt").write_text("trust me"),
                          "notes.txt: listed in the manifest, but no verify stage knows this file"),
    "unknown-analysis-file": (lambda d: (d / "analysis/extra.json").write_text("{}"),
                              "analysis/extra.json: listed in the manifest, but no verify stage knows this file"),
    "unknown-output-file": (lambda d: (d / "outputs/more.jsonl").write_bytes(b'{"a":1}\n'),
                            "outputs/more.jsonl: listed in the manifest, but no verify stage knows this file"),
    "launch-record-without-launch": (lambda d: ((d / "launch").mkdir(), (d / "launch/0-x.json").write_text("{}")),
                                     "launch/0-x.json: a launch record, but the plan launches no server"),
    "filler-deleted": (_drop_filler, None), "filler-moved": (_move_filler, None), "filler-extra-key": (_filler_key, None),
    "output-phase": (_output_field("phase", "p6"), None), "output-model": (_output_field("model", "m9"), None),
    "output-condition": (_output_field("condition", {"batch_size": 64}), None), "output-extra-key": (_output_extra_key, None),
    "plot-edited": (_plot_bytes, None), "plot-deleted": (_plot_deleted, None), "plot-unknown": (_plot_extra, None),
}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_listed_file_is_accounted_for(base, tmp_path, kind) -> None:
    edit, want = FILES[kind]
    d, returned = forge(base, tmp_path, edit)
    rep = verify(d)
    assert stage(rep, "integrity").status == "PASS"
    assert stage(rep, "files").status == "FAIL" and not rep.ok, rep.lines()
    assert (want or returned) in problems(rep, "files"), (want or returned, rep.lines())


def test_logs_are_listed_as_unchecked_and_strict_fails_on_them(base, tmp_path, capsys) -> None:
    def add_logs(d: Path) -> None:
        (d / "logs").mkdir()
        (d / "logs/run.log").write_text("session start\n")
        (d / "logs/server-0-vllm.log").write_text("INFO started\n")
        (d / "volatile/engines.jsonl").write_text('{"engine": "x"}\n')
    d, _ = forge(base, tmp_path, add_logs)
    rep = verify(d)
    files = stage(rep, "files")
    assert files.status == "PASS", rep.lines()
    assert "3 unchecked: logs/run.log, logs/server-0-vllm.log, volatile/engines.jsonl" in files.summary
    strict = verify(d, strict=True)
    assert stage(strict, "files").status == "FAIL"
    assert "logs/run.log: not checked by any stage (--strict)" in problems(strict, "files")
    assert cli.main(["verify", str(d), "--strict"]) == 1
    assert "not checked by any stage" in capsys.readouterr().out


def test_untouched_bundle_accounts_for_every_file(base, tmp_path) -> None:
    d, _ = forge(base, tmp_path, lambda d: None)
    rep = verify(d)
    assert rep.ok, rep.lines()
    n = len(json.loads((d / "manifest.json").read_text())["files"])
    assert stage(rep, "files").summary == f"{n} of {n} listed files checked by a stage"


# -- 10. canonical JSON lines ------------------------------------------------------------------

def _crlf(name: str):
    def edit(d: Path) -> None:
        p = d / name
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    return edit


def _respaced(d: Path) -> None:
    recs = rows(d, FILLERS)
    (d / FILLERS).write_bytes(b"".join(canonical_bytes(r) for r in recs[:3]) + json.dumps(recs[3]).encode() + b"\n"
                              + b"".join(canonical_bytes(r) for r in recs[4:]))


CANONICAL = {
    "crlf-outputs": (_crlf(OUT), f"{OUT}:1: CRLF or CR line ending"),
    "crlf-scores": (_crlf(SCORES), f"{SCORES}:1: CRLF or CR line ending"),
    "no-final-newline": (lambda d: (d / FLIPS).write_bytes((d / FLIPS).read_bytes().rstrip(b"\n")),
                         f"{FLIPS}:{{n}}: the last line has no final newline"),
    "json-dumps-spacing": (_respaced, f"{FILLERS}:4: not canonical JSON"),
    "blank-line": (lambda d: (d / OUT).write_bytes((d / OUT).read_bytes() + b"\n"), f"{OUT}:253: blank line"),
}


@pytest.mark.parametrize("kind", sorted(CANONICAL))
def test_jsonl_must_be_canonical_bytes(base, tmp_path, kind) -> None:
    edit, want = CANONICAL[kind]
    d, _ = forge(base, tmp_path, edit)
    want = want.format(n=len(rows(d, FLIPS)))
    rep = verify(d)
    assert stage(rep, "integrity").status == "PASS" and not rep.ok
    assert want in problems(rep, "files"), (want, rep.lines())


# -- 11. messages that say what is wrong -------------------------------------------------------

def _delete_output(d: Path) -> str:
    recs = rows(d, OUT)
    gone = recs.pop(7)
    put(d, OUT, recs)
    return gone["sample"]


def _bad_utf8(name: str, marker: bytes):
    def edit(d: Path) -> int:
        raw = (d / name).read_bytes()
        i = raw.index(marker) + len(marker)
        (d / name).write_bytes(raw[:i] + b"\xed\xa0\x80" + raw[i:])  # a UTF-8-encoded surrogate
        return i
    return edit


def test_deleted_output_line_is_named_as_missing(base, tmp_path) -> None:
    d, sample = forge(base, tmp_path, _delete_output)
    rep = verify(d)
    assert f"sample {sample} missing from {OUT}" in problems(rep, "coverage")
    resc = problems(rep, "rescoring")
    assert f"sample {sample} is scored, but its output is missing from {OUT}" in resc
    assert "canonical serialisation" not in resc


@pytest.mark.parametrize("name,marker,stage_name", [(OUT, b'"text":"', "schemas"), (SCORES, b'"scorer":"', "schemas"),
                                                     ("analysis/stats.json", b'{"', "schemas")])
def test_invalid_utf8_is_named_by_byte(base, tmp_path, name, marker, stage_name) -> None:
    d, at = forge(base, tmp_path, _bad_utf8(name, marker))
    rep = verify(d)
    text = problems(rep, stage_name)
    assert f"invalid UTF-8 at byte {at}" in text, rep.lines()
    assert "surrogates" not in text


# -- 12. start-up: reject before the analysis stack loads; nothing under $HOME ----------------

PROBE = """
import sys, time
t = time.perf_counter()
from batchsafe.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("scipy", "pandas", "matplotlib", "statsmodels", "jsonschema") if m in sys.modules)
print("RESULT", rc, ",".join(heavy) or "-", file=sys.stderr)
"""


@pytest.mark.parametrize("args,code", [(["verify", "{g}"], 1), (["verify", "{g}", "--json"], 1),
                                       (["validate", "{g}"], 2)])
def test_garbage_is_rejected_before_heavy_imports(tmp_path, args, code) -> None:
    g = tmp_path / "garbage.bin"
    g.write_bytes(os.urandom(4096))
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    env.pop("MPLCONFIGDIR", None)
    r = subprocess.run([sys.executable, "-c", PROBE, *[a.format(g=g) for a in args]], capture_output=True, text=True,
                       env=env, timeout=120)
    result = [ln for ln in r.stderr.splitlines() if ln.startswith("RESULT")]
    assert result == [f"RESULT {code} -"], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert list((tmp_path / "home").iterdir()) == []


def test_verify_writes_nothing_under_home(base, tmp_path) -> None:
    store, bid, _ = base
    d = store.materialize(bid, tmp_path / "b")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    r = subprocess.run([sys.executable, "-m", "batchsafe.cli", "verify", str(d)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS files" in r.stdout
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []


def test_light_refusal_report_prints_what_the_full_report_would() -> None:
    from batchsafe.verification.entry import UnopenedReport

    light = UnopenedReport("/tmp/b\u202e.tar", "sha256:" + "a" * 64, 'b.tar: not a "bundle" archive')
    full = light.full()
    assert light.lines() == full.lines() and not light.ok and not full.ok
    assert light.model_dump_json() == full.model_dump_json()
    assert light.model_dump_json(indent=2) == full.model_dump_json(indent=2)
    assert light.stages[0].problems == full.stages[0].problems  # other attributes come from the full report


def test_filler_keys_are_the_keys_the_runtime_writes(base) -> None:
    from batchsafe.runtime.bindings import group_records
    from batchsafe.runtime.engine import GenResult
    from batchsafe.verification.completeness import FILLER_KEYS

    plan = base[2]
    g = next(g for g in plan.groups if any(m.sample is None for m in g.members))
    results = [GenResult(key=f"k{i}", text="x", finish_reason="stop", prompt_tokens=1, completion_tokens=1)
               for i, _ in enumerate(g.members)]
    _, fillers = group_records(plan, g, results)
    assert fillers and all(set(f) == FILLER_KEYS for f in fillers)
    assert set(fake.fake_fillers(plan)[0]) == FILLER_KEYS  # the fixture bundle writes what the runtime writes


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("sample"), OverflowError("int too large")])
def test_a_stage_meeting_unforeseen_data_fails_instead_of_aborting(base, tmp_path, monkeypatch, exc) -> None:
    from batchsafe.verification import recheck

    def boom(ctx):
        raise exc
    monkeypatch.setattr(recheck, "check_targets", boom)
    store, bid, _ = base
    rep = verify(store.materialize(bid, tmp_path / "b"))
    st = stage(rep, "targets")
    assert st.status == "FAIL" and not rep.ok
    assert st.problems == [f"the targets stage could not finish on this bundle: {type(exc).__name__}: {exc}"]
    assert stage(rep, "files").status == "PASS"  # later stages still ran
