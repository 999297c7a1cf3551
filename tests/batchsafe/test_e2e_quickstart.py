"""The README's main job, end to end on the real embedded engine and model.

`batchsafe bundle make specs/quickstart.yaml` (what `make bundle` runs) twice, once in this
process and once on a local 2-worker Ray cluster (`--backend ray`, issue 18), then once more
as two `run --shard i/2` partial runs joined by `merge`: the outputs file must hash the same
each time, every bundle file must match its manifest hash, the
repeat floor must be byte-identical, and the bundle must survive pack/unpack with the
same id. Then the rechecks a stranger would run: `verify` of the archive (recompiling the
spec, replaying seeded groups on the real engine), `diff` of the two runs (100 % agreement)
and of a run with changed batch sizes, with a deployment gate; the HTML report in headless
Chromium and export + verify. About 13 minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from batchsafe.cli import main
from batchsafe.bundles.archive import pack, unpack
from batchsafe.bundles.store import BundleStore

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("llama_cpp", reason="the embedded extra is installed by `make test`'s set-up")


def _make(out: Path, capsys, *extra: str) -> dict[str, str]:
    code = main(["bundle", "make", str(ROOT / "specs/quickstart.yaml"), "--out", str(out), "--no-progress", *extra])
    text = capsys.readouterr().out
    assert code == 0, text
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("run", "outputs", "bundle", "stored", "report"):
            fields[key] = value.strip()
    # bundle make ends with where things are: the bundle id, its store directory, the HTML report.
    assert [line.partition(":")[0] for line in text.splitlines()[-3:]] == ["bundle", "stored", "report"]
    return fields


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Where the runs and the store go; the first test makes two bundles there (capsys is per test)."""
    return tmp_path_factory.mktemp("e2e") / "runs"


def test_quickstart_bundle_twice_same_outputs_and_verifiable(made: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = made
    first = _make(out, capsys)
    # The second run is the same plan on two Ray workers (127.0.0.1, usage stats off), merged.
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    second = _make(out, capsys, "--fresh", "--backend", "ray", "--workers", "2")
    (out / "made.json").write_text(json.dumps({"first": first, "second": second}))
    assert first["run"] != second["run"]
    shards = Path(second["run"].split(" (")[0] + ".shards")  # "run:" reads "<dir> (N groups run now, ...)"
    assert sorted(p.name for p in shards.iterdir()) == ["shard-0-of-2", "shard-1-of-2"]
    assert first["outputs"] == second["outputs"], "one process and two Ray workers must give byte-identical outputs"

    store = BundleStore(out / "store")
    bundle_id = first["bundle"]
    assert store.verify(bundle_id) == []
    manifest = store.manifest(bundle_id)
    names = {f.name for f in manifest.files}
    assert {"plan.lock.json", "outputs/samples.jsonl", "environment.json", "spec/quickstart.yaml"} <= names
    assert {"analysis/scores.jsonl", "analysis/flips.jsonl", "analysis/stats.json", "analysis/targets.json",
            "analysis/report.md"} <= names
    assert any(n.startswith("analysis/plots/") and n.endswith(".png") for n in names)
    # Recompute every hash from a materialised copy, independently of the store's own check.
    copy = store.materialize(bundle_id, tmp_path / "copy")
    for f in manifest.files:
        data = (copy / f.name).read_bytes()
        assert (f"sha256:{hashlib.sha256(data).hexdigest()}", len(data)) == (f.sha256, f.size), f.name

    records = [json.loads(line) for line in (copy / "outputs/samples.jsonl").read_text().splitlines()]
    plan = json.loads((copy / "plan.lock.json").read_text())
    assert sorted(r["sample"] for r in records) == sorted(s["id"] for s in plan["samples"])
    by_id = {r["sample"]: r for r in records}
    floor = [s for s in plan["samples"] if s["phase"] == "p5_repeat_floor" and s["baseline"]]
    assert floor and all(by_id[s["id"]]["text"] == by_id[s["baseline"]]["text"] for s in floor)
    targets = json.loads((copy / "analysis/targets.json").read_text())
    assert "repeat_floor_identical" in json.dumps(targets)
    env = json.loads((copy / "environment.json").read_text())
    assert "llama" in json.dumps(env).lower()

    archive = pack(store, bundle_id, tmp_path / "q.tar")
    again = pack(store, bundle_id, tmp_path / "q2.tar")
    assert archive.read_bytes() == again.read_bytes()
    other = BundleStore(tmp_path / "other-store")
    assert unpack(archive, other) == bundle_id
    assert other.verify(bundle_id) == []


def test_quickstart_report_in_headless_chromium_and_export_round_trip(made: Path, tmp_path: Path, capsys) -> None:
    """Issue 17: the quickstart's HTML report opens in headless Chromium with its flip browser
    populated (differing outputs with highlighted spans), offline; export + verify round-trips."""
    import headless  # tests/analysis/test_analyze/headless.py, on sys.path via tests/conftest.py

    first = json.loads((made / "made.json").read_text())["first"]
    report = Path(first["report"])
    assert report.is_file() and report.parent.parent == made / "reports"
    flips = [json.loads(x) for x in BundleStore(made / "store").read(first["bundle"], "analysis/flips.jsonl").splitlines()]
    differ = sum(not r["identical"] for r in flips)
    assert differ > 0, "the quickstart has differing outputs (README: 8 of 78 batched)"
    dom = headless.dump_dom(report.resolve().as_uri(), tmp_path)
    assert dom.count('class="flip-row') == min(differ, 50)
    assert dom.count('<mark class="hl">') >= min(differ, 50)
    assert all(f'id="f-{k}"' in dom for k in ("p", "m", "c", "t", "d", "show"))
    assert headless.network_urls(tmp_path) == []
    assert headless.painted(headless.screenshot(report.resolve().as_uri(), tmp_path, tmp_path / "quickstart-report.png",
                                                size="1280,9000"))

    dest = tmp_path / "exported"
    assert main(["bundle", "export", first["bundle"], str(dest), "--store", str(made / "store")]) == 0
    capsys.readouterr()
    assert main(["verify", str(dest), "--id", first["bundle"], "--spec", str(ROOT / "specs/quickstart.yaml"),
                 "--json"]) == 0
    by = {s["name"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert by["provenance"]["status"] == "PASS" and by["integrity"]["status"] == "PASS"


def _ids(out: Path) -> tuple[str, str]:
    made = json.loads((out / "made.json").read_text())
    return made["first"]["bundle"], made["second"]["bundle"]


def test_stranger_verifies_the_archive_with_recompile_and_real_replay(made: Path, tmp_path: Path, capsys) -> None:
    first, _ = _ids(made)
    archive = pack(BundleStore(made / "store"), first, tmp_path / "quickstart.tar.gz")
    code = main(["verify", str(archive), "--id", first, "--spec", str(ROOT / "specs/quickstart.yaml"), "--replay", "3",
                 "--replay-seed", "7", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, json.dumps(report, indent=1)
    by = {s["name"]: s for s in report["stages"]}
    assert all(s["status"] == "PASS" for s in report["stages"]), report["stages"]
    assert {"integrity", "schemas", "plan", "coverage", "rescoring", "statistics", "targets", "files",
            "provenance", "replay"} <= set(by)
    assert "recompiled from the spec and data: identical plan_hash" in by["plan"]["summary"]
    assert "byte-identical" in by["replay"]["summary"] and "3 seeded groups" in by["replay"]["summary"]


def test_diff_of_two_runs_and_of_a_changed_condition(made: Path, tmp_path: Path, capsys) -> None:
    first, second = _ids(made)
    store = ["--store", str(made / "store")]
    assert main(["diff", first, second, *store, "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["flips"]["agreement"] == 1.0 and same["flips"]["matched"] > 0
    assert same["setup"]["same_plan"] and same["outputs"]["only_a"] == same["outputs"]["only_b"] == 0
    assert same["outputs"]["identical"] == same["outputs"]["matched"] > 0

    # The same study with batch sizes 1, 2 and 3: a changed condition, run for real.
    specs = tmp_path / "specs"
    shutil.copytree(ROOT / "specs" / "quickstart", specs / "quickstart")
    text = (ROOT / "specs/quickstart.yaml").read_text()
    assert "axes: {batch_sizes: [1, 2, 4, 8]}" in text
    (specs / "changed.yaml").write_text(text.replace("axes: {batch_sizes: [1, 2, 4, 8]}", "axes: {batch_sizes: [1, 2, 3]}"))
    code = main(["bundle", "make", str(specs / "changed.yaml"), "--out", str(made), "--no-progress"])
    changed = next(line.split(":", 1)[1].strip() for line in capsys.readouterr().out.splitlines()
                   if line.startswith("bundle:"))
    assert code == 0
    assert main(["diff", first, changed, *store, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert not d["setup"]["same_plan"] and d["setup"]["changes"] > 0
    p1 = next(ch for ch in d["setup"]["plan"]["phases"] if ch["where"] == "phases/p1_batch_size")
    assert (p1["a"]["conditions"], p1["b"]["conditions"]) == (4, 3)
    cells = {(c["phase"], c["condition"]): c for c in d["outputs"]["by_condition"]}
    assert cells[("p1_batch_size", "bs=8")]["only_a"] == 26 and cells[("p1_batch_size", "bs=3")]["only_b"] == 26
    assert cells[("p1_batch_size", "bs=2")]["matched"] == 26
    # Batch sizes 1 and 2 ran the same groups: same bytes, whatever the other phases did.
    assert main(["diff", first, changed, *store, "--fail-on",
                 'outputs.by_condition.p1_batch_size["bs=2"].identical_rate<1']) == 0
    # The gate: the deployed batch size's safety flip rate in B must stay under a threshold.
    gate = "b.stats.p1_batch_size.flip_rate.safety>-1"
    assert main(["diff", first, changed, *store, "--fail-on", gate]) == 1
    assert main(["diff", first, changed, *store, "--fail-on", "b.stats.p1_batch_size.flip_rate.safety>1"]) == 0


def test_quickstart_sharded_and_merged_equals_one_process(made: Path, tmp_path: Path, capsys) -> None:
    """Issue 18's plain backend on the quickstart plan itself: two partial runs, one merge."""
    first = json.loads((made / "made.json").read_text())["first"]
    plan = tmp_path / "quickstart.plan.lock.json"
    assert main(["compile", str(ROOT / "specs/quickstart.yaml"), "-o", str(plan)]) == 0
    parts = [tmp_path / f"part-{i}" for i in range(2)]
    for i, part in enumerate(parts):
        assert main(["run", str(plan), "--shard", f"{i}/2", "--out", str(part), "--no-progress"]) == 0
    assert main(["merge", str(plan), *map(str, parts), "--out", str(tmp_path / "merged")]) == 0
    merged = tmp_path / "merged" / "outputs" / "samples.jsonl"
    assert f"sha256:{hashlib.sha256(merged.read_bytes()).hexdigest()}" == first["outputs"]
