"""BundleStore and Manifest: content addressing, integrity checks, id resolution, strict manifests."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.core.canonical import canonical_bytes, hash_obj, sha256_tag
from batchsafe.bundles.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    build_manifest,
    bundle_id_of,
    load_manifest,
    manifest_bytes,
    media_type_for,
)
from batchsafe.bundles.store import AmbiguousBundleError, BundleNotFoundError, BundleStore, CorruptBundleError

FILES = {
    "plan.lock.json": b'{"plan": 1}\n',
    "outputs/samples.jsonl": b'{"i": 0}\n{"i": 1}\n',
    "report.md": b"# report\n",
}


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "store")


def _objects(store: BundleStore) -> list[Path]:
    return sorted(p for p in store.objects_dir.rglob("*") if p.is_file())


def _tamper(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)  # objects are read-only on purpose
    path.write_bytes(data)


def test_write_read_round_trip(store: BundleStore) -> None:
    bid = store.write_bundle(FILES)
    assert bid.startswith("sha256:") and len(bid) == 71
    m = store.manifest(bid)
    assert [f.name for f in m.files] == sorted(FILES)
    assert m.kind == "run" and m.parent is None and m.schema_version == 1
    for name, data in FILES.items():
        assert store.read(bid, name) == data
        with store.open(bid, name) as fh:
            assert fh.read() == data
    assert {f.name: f.media_type for f in m.files} == {
        "outputs/samples.jsonl": "application/x-ndjson",
        "plan.lock.json": "application/json",
        "report.md": "text/markdown",
    }
    # The id is the sha256 of the stored manifest bytes: checkable with sha256sum alone.
    raw = (store.bundles_dir / bid[7:] / "manifest.json").read_bytes()
    assert sha256_tag(raw) == bid == hash_obj(m.model_dump(mode="json")) == bundle_id_of(m)
    assert store.verify(bid) == []
    assert store.list_bundles() == [bid]


def test_ids_are_reproducible_and_path_inputs_match_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    paths = {}
    for i, (name, data) in enumerate(FILES.items()):
        paths[name] = src / f"f{i}"
        paths[name].write_bytes(data)
    a = BundleStore(tmp_path / "a").write_bundle(FILES)
    b = BundleStore(tmp_path / "b").write_bundle(dict(reversed(list(paths.items()))))
    assert a == b
    assert "tmp" not in (tmp_path / "a" / "bundles" / a[7:] / "manifest.json").read_text()


def test_shared_content_is_stored_once(store: BundleStore) -> None:
    one = store.write_bundle(FILES)
    two = store.write_bundle({**FILES, "report.md": b"# other\n"}, kind="rescore", parent=one)
    assert one != two
    objs = _objects(store)
    assert len(objs) == len(FILES) + 1  # only the changed file added an object
    e1 = {f.name: f for f in store.manifest(one).files}
    e2 = {f.name: f for f in store.manifest(two).files}
    assert e1["plan.lock.json"].sha256 == e2["plan.lock.json"].sha256
    assert store.object_path(e1["plan.lock.json"].sha256) in objs
    assert store.manifest(two).parent == one and store.manifest(two).kind == "rescore"
    for p in objs:
        assert stat.S_IMODE(p.stat().st_mode) == 0o444
        assert p.name == sha256_tag(p.read_bytes())[7:] and p.parent.name == p.name[:2]
    assert store.write_bundle(FILES) == one  # idempotent
    assert len(_objects(store)) == len(objs)
    assert not any(store.tmp_dir.iterdir())


def test_put_bytes_and_put_file(store: BundleStore, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several 1 MiB chunks plus a tail
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert store.put_file(f) == store.put_bytes(data) == sha256_tag(data)
    assert store.object_path(sha256_tag(data)).read_bytes() == data


def test_verify_reports_every_kind_of_damage(store: BundleStore) -> None:
    bid = store.write_bundle(FILES)
    entries = {f.name: f for f in store.manifest(bid).files}
    _tamper(store.object_path(entries["report.md"].sha256), b"# REPORT\n")  # same size, new hash
    _tamper(store.object_path(entries["plan.lock.json"].sha256), b"{}")  # shorter
    store.object_path(entries["outputs/samples.jsonl"].sha256).unlink()
    problems = store.verify(bid)
    assert len(problems) == 4, problems
    assert any(p.startswith("outputs/samples.jsonl: object sha256:") and "missing" in p for p in problems)
    assert f"plan.lock.json: size 2 != manifest size {entries['plan.lock.json'].size}" in problems
    assert sum(p.startswith("report.md: content hashes to sha256:") for p in problems) == 1
    with pytest.raises(CorruptBundleError, match="report.md"):
        store.read(bid, "report.md")
    with pytest.raises(CorruptBundleError, match="report.md"), store.open(bid, "report.md") as fh:
        fh.read()
    with pytest.raises(CorruptBundleError, match="missing"):
        store.read(bid, "outputs/samples.jsonl")


def test_verify_detects_manifest_id_mismatch(store: BundleStore) -> None:
    bid = store.write_bundle(FILES)
    other = store.write_bundle({"x.txt": b"x"})
    path = store.bundles_dir / bid[7:] / "manifest.json"
    _tamper(path, (store.bundles_dir / other[7:] / "manifest.json").read_bytes())
    problems = store.verify(bid)
    assert problems == [f"bundle id mismatch: manifest.json hashes to {other}, not {bid}"]
    with pytest.raises(CorruptBundleError, match="hashes to"):
        store.manifest(bid)


def test_materialize(store: BundleStore, tmp_path: Path) -> None:
    bid = store.write_bundle(FILES)
    dest = store.materialize(bid, tmp_path / "copy")
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert sha256_tag((dest / "manifest.json").read_bytes()) == bid
    (dest / "report.md").write_bytes(b"editable")  # a copy, not the store's objects
    assert store.verify(bid) == []
    with pytest.raises(FileExistsError):
        store.materialize(bid, dest)


def test_resolve(store: BundleStore) -> None:
    bid = store.write_bundle(FILES)
    hexd = bid[7:]
    assert store.resolve(bid) == store.resolve(hexd) == store.resolve(hexd[:8]) == store.resolve(" SHA256:" + hexd[:12].upper()) == bid
    with pytest.raises(BundleNotFoundError, match="too short"):
        store.resolve(hexd[:7])
    with pytest.raises(BundleNotFoundError, match="no bundle matches"):
        store.resolve("0" * 8 if not hexd.startswith("0" * 8) else "f" * 8)
    with pytest.raises(BundleNotFoundError, match="not a bundle id"):
        store.resolve("run-1234567890")
    with pytest.raises(BundleNotFoundError, match="no bundle sha256:"):
        store.resolve("a" * 64)
    # Fabricate a second bundle directory that shares the first 10 hex digits.
    twin = store.bundles_dir / (hexd[:10] + ("0" if hexd[10] != "0" else "1") + hexd[11:])
    twin.mkdir()
    (twin / "manifest.json").write_bytes(b"{}")
    with pytest.raises(AmbiguousBundleError, match="ambiguous: 2 matches"):
        store.resolve(hexd[:10])
    assert store.resolve(hexd[:11]) == bid
    with pytest.raises(BundleNotFoundError):
        store.manifest(hexd[:10])  # API calls take full ids; prefixes go through resolve()


def test_missing_bundle_and_file(store: BundleStore) -> None:
    bid = store.write_bundle(FILES)
    with pytest.raises(BundleNotFoundError, match="no file 'nope.txt'"):
        store.read(bid, "nope.txt")
    with pytest.raises(BundleNotFoundError):
        store.manifest("sha256:" + "0" * 64)
    assert store.verify("sha256:" + "0" * 64) == [f"no bundle sha256:{'0' * 64} in {store.root}"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"/etc/passwd": b""}, "absolute path"),
        ({"../x": b""}, r"'\.\.' traversal"),
        ({"a/../../x": b""}, r"'\.\.' traversal"),
        ({"a\\b": b""}, "backslash"),
        ({"a\x00b": b""}, "NUL byte"),
        ({"a\nb": b""}, "control character"),
        ({"a//b": b""}, "empty path segment"),
        ({"a/": b""}, "empty path segment"),
        ({"./a": b""}, "'.' segment"),
        ({"C:/x": b""}, "drive letter"),
        ({"x" * 256: b""}, "longer than 255 bytes"),
        ({"manifest.json": b""}, "reserved for the manifest"),
        ({"Manifest.JSON/x": b""}, "reserved for the manifest"),
        ({"a": b"", "a/b": b""}, "both a file and a directory"),
        ({"A.txt": b"", "a.txt": b""}, "collide on case-insensitive"),
    ],
)
def test_unsafe_names_are_refused(store: BundleStore, files: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.write_bundle(files)
    assert store.list_bundles() == []


def test_media_types() -> None:
    assert media_type_for("a/b.JSON") == "application/json"
    assert media_type_for("x.yaml") == "application/yaml"
    assert media_type_for("run.log") == media_type_for("n.txt") == "text/plain"
    assert media_type_for("img.png") == "image/png"
    assert media_type_for("dir.d/noext") == media_type_for("bin") == "application/octet-stream"


# -- manifest ------------------------------------------------------------------


def _manifest() -> Manifest:
    entries = [
        FileEntry(name=n, sha256=sha256_tag(d), size=len(d), media_type=media_type_for(n)) for n, d in FILES.items()
    ]
    return build_manifest(entries, kind="run")


def test_manifest_model_config_and_docs() -> None:
    assert list(Manifest.model_fields)[0] == "schema_version"
    assert all(f.description for f in Manifest.model_fields.values())
    assert all(f.description for f in FileEntry.model_fields.values())
    m = _manifest()
    with pytest.raises(Exception):
        m.kind = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="Extra inputs"):
        Manifest.model_validate({**m.model_dump(mode="json"), "created_at": "now"})


def test_manifest_json_round_trip() -> None:
    m = _manifest()
    raw = manifest_bytes(m)
    assert raw == canonical_bytes(json.loads(raw))
    assert load_manifest(raw) == m
    assert Manifest.model_validate_json(raw) == m
    assert bundle_id_of(load_manifest(raw)) == sha256_tag(raw)


def _mutated(**changes) -> bytes:
    return canonical_bytes({**_manifest().model_dump(mode="json"), **changes})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_mutated(schema_version=2), r"^schema_version 2 is newer than this batchsafe understands \(1\)$"),
        (json.dumps(_manifest().model_dump(mode="json"), indent=1).encode(), "not in canonical form"),
        (_mutated(files=list(reversed(_manifest().model_dump(mode="json")["files"]))), "not sorted"),
        (_mutated(parent="sha256:xyz"), r"invalid manifest \(parent\)"),
        (_mutated(files=[{"name": "../x", "sha256": sha256_tag(b""), "size": 0, "media_type": "a/b"}]), "traversal"),
        (_mutated(files=[{"name": "x", "sha256": sha256_tag(b""), "size": -1, "media_type": "a/b"}]), "size"),
        (b"[" * 100 + b"]" * 100, r"nested deeper than max_json_depth \(64\)"),
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nested deeper"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "not an object"),
    ],
)
def test_load_manifest_refuses(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        load_manifest(raw)


def test_load_manifest_size_and_depth_limits() -> None:
    raw = manifest_bytes(_manifest())
    with pytest.raises(ManifestError, match="more than max_json_bytes"):
        load_manifest(raw, max_bytes=len(raw) - 1)
    assert load_manifest(raw, max_depth=3) == _manifest()  # object > files list > entry
    with pytest.raises(ManifestError, match="nested deeper"):
        load_manifest(raw, max_depth=2)
    # A nesting that passes a (silly) configured depth still cannot crash the parser.
    with pytest.raises(ManifestError, match="nested deeper"):
        load_manifest(b"[" * 200_000 + b"]" * 200_000, max_depth=10**9)


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.lists(_segment, min_size=0, max_size=3).map(lambda dirs: "/".join([f"d_{d}" for d in dirs])),
        st.tuples(_segment, st.binary(max_size=64), st.integers(0, 2**40)),
        max_size=6,
    ),
    st.sampled_from(["run", "rescore"]),
    st.none() | st.binary(min_size=1, max_size=8).map(sha256_tag),
)
def test_manifest_round_trip_property(dirs, kind, parent) -> None:
    entries = {}
    for d, (leaf, data, size) in dirs.items():
        name = f"{d}/f_{leaf}" if d else f"f_{leaf}"
        entries[name] = FileEntry(name=name, sha256=sha256_tag(data), size=size, media_type=media_type_for(name))
    m = build_manifest(list(entries.values()), kind=kind, parent=parent)
    raw = manifest_bytes(m)
    again = load_manifest(raw)
    assert again == m and manifest_bytes(again) == raw and bundle_id_of(again) == sha256_tag(raw)
