"""The README's main job, end to end on the real embedded engine and model.

`batchsafe bundle make specs/quickstart.yaml` (what `make bundle` runs) twice: the
outputs file must hash the same, every bundle file must match its manifest hash, the
repeat floor must be byte-identical, and the bundle must survive pack/unpack with the
same id. This takes about 10 minutes on 2 cores (two full quickstart runs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from batchsafe.cli import main
from bundles.archive import pack, unpack
from bundles.store import BundleStore

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("llama_cpp", reason="the embedded extra is installed by `make test`'s set-up")


def _make(out: Path, capsys, *extra: str) -> dict[str, str]:
    code = main(["bundle", "make", str(ROOT / "specs/quickstart.yaml"), "--out", str(out), "--no-progress", *extra])
    text = capsys.readouterr().out
    assert code == 0, text
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("run", "outputs", "bundle", "stored"):
            fields[key] = value.strip()
    return fields


def test_quickstart_bundle_twice_same_outputs_and_verifiable(tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs"
    first = _make(out, capsys)
    second = _make(out, capsys, "--fresh")
    assert first["run"] != second["run"]
    assert first["outputs"] == second["outputs"], "two runs of the same plan must give byte-identical outputs"

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
