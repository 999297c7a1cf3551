"""bundle pack / unpack / show --check through the CLI, on a small bundle."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from batchsafe.cli import main
from batchsafe.bundles.store import BundleStore


def _bundle(store_dir: Path) -> str:
    store = BundleStore(store_dir)
    return store.write_bundle({"outputs/samples.jsonl": b'{"sample":"s_1","text":"I can\xe2\x80\x99t help"}\n',
                               "plan.lock.json": b'{"schema_version":1}\n'})


def test_pack_unpack_show_round_trip(tmp_path: Path, capsys) -> None:
    bundle_id = _bundle(tmp_path / "a")
    prefix = bundle_id.split(":")[1][:10]
    archive = tmp_path / "b.tar"
    assert main(["bundle", "pack", prefix, "-o", str(archive), "--store", str(tmp_path / "a")]) == 0
    assert main(["bundle", "unpack", str(archive), "--store", str(tmp_path / "b")]) == 0
    assert f"unpacked {bundle_id}" in capsys.readouterr().out
    assert main(["bundle", "show", bundle_id, "--check", "--store", str(tmp_path / "b")]) == 0
    assert "PASS" in capsys.readouterr().err
    assert main(["bundle", "list", "--store", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip() == bundle_id


def test_tampered_object_fails_the_check(tmp_path: Path, capsys) -> None:
    bundle_id = _bundle(tmp_path / "a")
    store = BundleStore(tmp_path / "a")
    entry = next(f for f in store.manifest(bundle_id).files if f.name == "outputs/samples.jsonl")
    obj = store.object_path(entry.sha256)
    os.chmod(obj, 0o644)
    obj.write_bytes(obj.read_bytes().replace(b"can", b"cam"))
    assert main(["bundle", "show", bundle_id, "--check", "--store", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "FAIL" in err and "outputs/samples.jsonl" in err


def test_hostile_archive_is_refused_with_exit_2(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info, io.BytesIO())
    assert main(["bundle", "unpack", str(archive), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "link" in err
    assert not any((tmp_path / "s").glob("bundles/*"))


def test_compile_creates_the_output_directory(tmp_path: Path, capsys) -> None:
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "runs" / "nested" / "mini.plan.lock.json"
    assert main(["compile", str(root / "tests/compiler/test_compile/mini.yaml"), "--data-dir",
                 str(root / "tests/compiler/test_compile/data"), "-o", str(out)]) == 0
    assert out.is_file() and b'"plan_hash":"sha256:' in out.read_bytes()
