"""Archives: deterministic packing, round trips, and a hostile corpus that unpack must refuse."""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import io
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.core.canonical import canonical_bytes, sha256_tag
from batchsafe.bundles.archive import Limits, UnsafeArchiveError, pack, unpack
from batchsafe.bundles.manifest import FileEntry, build_manifest, manifest_bytes, media_type_for
from batchsafe.bundles.store import BundleStore, CorruptBundleError

FILES = {
    "plan.lock.json": b'{"plan": 1}\n',
    "outputs/samples.jsonl": b'{"i": 0}\n' * 1000,
    "outputs/deep/x.txt": b"x",
    "notes/" + "n" * 120 + ".md": b"long name, needs a pax record",
    "résumé.txt": "non-ASCII name".encode(),
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "store")


# -- packing -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_round_trip_keeps_bundle_id_and_bytes(store: BundleStore, tmp_path: Path, suffix: str) -> None:
    bid = store.write_bundle(FILES)
    out = pack(store, bid, tmp_path / f"b{suffix}")
    other = BundleStore(tmp_path / "other")
    assert unpack(out, other) == bid
    assert other.verify(bid) == []
    for name, data in FILES.items():
        assert other.read(bid, name) == data
    assert unpack(out, other) == bid  # importing again is a no-op
    assert not any(other.tmp_dir.iterdir())


def test_pack_is_deterministic_across_runs_and_stores(tmp_path: Path) -> None:
    a = BundleStore(tmp_path / "a")
    bid = a.write_bundle(FILES)
    src = tmp_path / "src"
    src.mkdir()
    paths = {}
    for i, (name, data) in enumerate(reversed(FILES.items())):
        (src / f"{i}").write_bytes(data)
        paths[name] = src / f"{i}"
    b = BundleStore(tmp_path / "b")
    assert b.write_bundle(paths) == bid  # same bundle built a different way
    for suffix in (".tar", ".tgz"):
        first = digest(pack(a, bid, tmp_path / f"1{suffix}"))
        time.sleep(0.01)
        assert digest(pack(a, bid, tmp_path / f"2{suffix}")) == first
        assert digest(pack(b, bid, tmp_path / f"3{suffix}")) == first


def test_archive_layout(store: BundleStore, tmp_path: Path) -> None:
    bid = store.write_bundle(FILES)
    out = pack(store, bid, tmp_path / "b.tar.gz")
    raw = out.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # deflate, no FNAME/FEXTRA/FCOMMENT flags
    assert raw[4:8] == bytes(4)  # gzip mtime 0
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["manifest.json", *sorted(FILES)]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
    with tarfile.open(out) as tar:
        manifest = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
    assert sha256_tag(manifest) == bid
    plain = pack(store, bid, tmp_path / "b.tar")
    assert gzip.decompress(raw) == plain.read_bytes()
    assert len(plain.read_bytes()) % 10240 == 0


def test_pack_refuses_a_damaged_store(store: BundleStore, tmp_path: Path) -> None:
    bid = store.write_bundle(FILES)
    obj = store.object_path(sha256_tag(FILES["plan.lock.json"]))
    obj.chmod(0o644)
    obj.write_bytes(b'{"plan": 2}\n')
    with pytest.raises(CorruptBundleError, match="plan.lock.json"):
        pack(store, bid, tmp_path / "b.tar")
    assert list(tmp_path.glob("*.tar*")) == []  # no partial archive left behind


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=10).filter(
    lambda s: s not in (".", "..")
)
_names = st.lists(_segment, min_size=1, max_size=4).map(lambda segs: "/".join([*(f"d{s}" for s in segs[:-1]), f"f{segs[-1]}"]))


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(_names, st.binary(max_size=3000), max_size=8), st.booleans())
def test_random_bundles_round_trip(files: dict[str, bytes], compress: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = BundleStore(root / "src")
        bid = src.write_bundle(files)
        out = pack(src, bid, root / "b.tar", compress=compress)
        dst = BundleStore(root / "dst")
        assert unpack(out, dst) == bid
        assert {n: dst.read(bid, n) for n in files} == files
        assert digest(pack(dst, bid, root / "c.tar", compress=compress)) == digest(out)


# -- the hostile corpus ---------------------------------------------------------

OK = {"a.txt": b"hello\n", "dir/b.jsonl": b'{"x":1}\n'}


def manifest_for(files: dict[str, bytes], **changes) -> bytes:
    entries = [FileEntry(name=n, sha256=sha256_tag(d), size=len(d), media_type=media_type_for(n)) for n, d in files.items()]
    m = manifest_bytes(build_manifest(entries))
    return canonical_bytes({**__import__("json").loads(m), **changes}) if changes else m


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data


def build(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], *, fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def good(files: dict[str, bytes] = OK) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [member("manifest.json", manifest_for(files))] + [member(n, d) for n, d in files.items()]


def test_crafted_but_valid_archive_is_accepted(store: BundleStore, tmp_path: Path) -> None:
    # tarfile's own ustar and GNU output, with parent directory entries, is fine.
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        members = [member("dir", kind=tarfile.DIRTYPE), *good()]
        bid = unpack(build(tmp_path / f"{fmt}.tar", members, fmt=fmt), store)
        assert store.read(bid, "dir/b.jsonl") == OK["dir/b.jsonl"]


CASES = [
    ("absolute", good() + [member("/etc/passwd", b"x")], Limits(), r"entry '/etc/passwd': unsafe name: absolute path"),
    ("dotdot", good() + [member("../evil", b"x")], Limits(), r"entry '\.\./evil': unsafe name: '\.\.' traversal"),
    ("dotdot-mid", good() + [member("dir/../../e", b"x")], Limits(),
     r"entry 'dir/\.\./\.\./e': unsafe name: '\.\.' traversal"),
    ("backslash", good() + [member("dir\\..\\e", b"x")], Limits(), r"unsafe name: backslash"),
    ("drive", good() + [member("C:/Windows/x", b"x")], Limits(), r"entry 'C:/Windows/x': unsafe name: drive letter"),
    ("nul", good() + [member("a.txt", b"x", pax_headers={"path": "a.txt\x00.sh"})], Limits(), r"unsafe name: NUL byte"),
    ("empty-seg", good() + [member("dir//b", b"x")], Limits(), r"entry 'dir//b': unsafe name: empty path segment"),
    ("symlink", good() + [member("link", kind=tarfile.SYMTYPE, linkname="/etc/passwd")], Limits(),
     r"entry 'link': symlinks are not allowed"),
    ("hardlink", good() + [member("hard", kind=tarfile.LNKTYPE, linkname="a.txt")], Limits(),
     r"entry 'hard': hardlinks are not allowed"),
    ("chardev", good() + [member("tty", kind=tarfile.CHRTYPE)], Limits(),
     r"entry 'tty': character devices are not allowed"),
    ("blockdev", good() + [member("sda", kind=tarfile.BLKTYPE)], Limits(),
     r"entry 'sda': block devices are not allowed"),
    ("fifo", good() + [member("pipe", kind=tarfile.FIFOTYPE)], Limits(), r"entry 'pipe': FIFOs are not allowed"),
    ("stray-dir", good() + [member("other", kind=tarfile.DIRTYPE)], Limits(),
     r"entry 'other': directory is not a parent of any manifest file"),
    ("stray-dir-first", [member("other", kind=tarfile.DIRTYPE), *good()], Limits(),
     r"entry 'other': directory is not a parent"),
    ("duplicate", good() + [member("a.txt", OK["a.txt"])], Limits(), r"entry 'a.txt': duplicate entry name"),
    ("duplicate-manifest", good() + [member("manifest.json", manifest_for(OK))], Limits(),
     r"entry 'manifest.json': duplicate entry name"),
    ("too-many", [member(d, kind=tarfile.DIRTYPE) for d in ("dir", "dir2", "dir3")] + good(), Limits(max_entries=2),
     r"entry 'dir3': archive has more than max_entries \(2\)"),
    ("too-many-listed", good(), Limits(max_entries=2),
     r"entry 'manifest.json': lists 2 files, more than max_entries \(2\)"),
    ("file-too-big", good(), Limits(max_file_bytes=7), r"entry 'dir/b.jsonl': size 8 exceeds max_file_bytes \(7\)"),
    ("total-too-big", good(), Limits(max_total_bytes=len(manifest_for(OK)) + 10),
     r"entry 'dir/b.jsonl': total size exceeds max_total_bytes"),
    ("too-deep", good() + [member("/".join("d" * 17), b"x")], Limits(),
     r"entry 'd/d/.*/d': path depth 17 exceeds max_depth \(16\)"),
    ("long-segment", good() + [member("dir/" + "n" * 256, b"x")], Limits(),
     r"path segment of 256 bytes exceeds max_name_bytes \(255\)"),
    ("json-too-big", good(), Limits(max_json_bytes=100),
     r"entry 'manifest.json': \d+ bytes exceeds max_json_bytes \(100\)"),
    ("json-too-deep", [member("manifest.json", b"[" * 100_000 + b"]" * 100_000)], Limits(max_json_bytes=1 << 20),
     r"entry 'manifest.json': manifest JSON is nested deeper than max_json_depth \(64\)"),
    ("json-recursion", [member("manifest.json", b"[" * 100_000 + b"]" * 100_000)], Limits(max_json_depth=10**9),
     r"entry 'manifest.json': manifest JSON is nested deeper"),
    ("future-schema", [member("manifest.json", manifest_for(OK, schema_version=2)), *good()[1:]], Limits(),
     r"entry 'manifest.json': schema_version 2 is newer than this batchsafe understands \(1\)"),
    ("bad-manifest", [member("manifest.json", b'{"schema_version": 1}')], Limits(),
     r"entry 'manifest.json': invalid manifest \(files\)"),
    ("manifest-not-first", good()[1:] + good()[:1], Limits(), r"entry 'a.txt': the first file must be manifest.json"),
    ("no-manifest", [member("dir", kind=tarfile.DIRTYPE)], Limits(), r"entry 'manifest.json': archive has no manifest"),
    ("unlisted", good() + [member("extra.txt", b"x")], Limits(), r"entry 'extra.txt': not listed in the manifest"),
    ("missing", good()[:-1], Limits(),
     r"entry 'dir/b.jsonl': listed in the manifest but missing from the archive \(1 missing\)"),
    ("hash", [*good()[:2], member("dir/b.jsonl", b'{"x":2}\n')], Limits(),
     r"entry 'dir/b.jsonl': content hashes to sha256:[0-9a-f]{64}, manifest says sha256:"),
    ("size", [*good()[:2], member("dir/b.jsonl", b'{"x":10}\n')], Limits(),
     r"entry 'dir/b.jsonl': size 9 does not match manifest size 8"),
    ("sparse", good() + [member("s", b"x", pax_headers={"GNU.sparse.major": "1"})], Limits(),
     r"sparse files are not allowed"),
    ("huge-pax", good() + [member("a", b"x", pax_headers={"comment": "c" * 10_000})], Limits(),
     r"extended header of \d+ bytes exceeds max_header_bytes"),
]


@pytest.mark.parametrize(("members", "limits", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_archive_is_refused(store: BundleStore, tmp_path: Path, members, limits: Limits, message: str) -> None:
    for compress in (False, True):
        path = build(tmp_path / "evil.tar", members)
        if compress:
            path.write_bytes(gzip.compress(path.read_bytes()))
        with pytest.raises(UnsafeArchiveError, match=message):
            unpack(path, store, limits)
    # Nothing reached the store, and the scratch space was cleaned up.
    assert store.list_bundles() == []
    assert not any(store.objects_dir.iterdir()) and not any(store.tmp_dir.iterdir())


def test_malformed_containers(store: BundleStore, tmp_path: Path) -> None:
    path = build(tmp_path / "ok.tar", good())
    raw = path.read_bytes()
    cases = {
        "not-tar": (b"hello world" * 100, r"entry #1: not a ustar/pax/GNU tar header"),
        "checksum": (raw[:148] + b"0000000\0" + raw[156:], r"entry #1: header checksum mismatch"),
        "truncated": (raw[:1024 + 100], r"archive is truncated"),
        "no-end-marker": (raw.rstrip(b"\0") + bytes(-len(raw.rstrip(b"\0")) % 512), r"entry #4: archive is truncated"),
        "bzip2": (bz2.compress(raw), r"bzip2-compressed archives are not supported"),
        "bad-gzip": (gzip.compress(raw)[:-40] + bytes(40), r"corrupt compressed stream"),
        "negative-size": (_with_field(raw, 124, b"\xff" * 12), r"negative or malformed numeric field"),
        "octal-garbage": (_with_field(raw, 124, b"12x4\0"), r"negative or malformed numeric field"),
        "non-utf8-name": (_with_field(raw, 0, b"\xff\xfe.json\0"), r"entry b'\\xff\\xfe.json': name is not valid UTF-8"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnsafeArchiveError, match=message):
            unpack(tmp_path / name, store)
    assert store.list_bundles() == []


def _with_field(raw: bytes, offset: int, value: bytes) -> bytes:
    """Replace a header field of the first block and fix the checksum, as an attacker would."""
    block = bytearray(raw[:512])
    block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + raw[512:]


@functools.cache
def _valid_archive() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        src = BundleStore(Path(d) / "src")
        return pack(src, src.write_bundle({**OK, "n/" + "x" * 120: b"y" * 700}), Path(d) / "a.tar").read_bytes()


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_mangled_archives_fail_cleanly(data) -> None:
    """Any mutation of a valid archive is either refused with UnsafeArchiveError or
    imports a bundle that verifies; no other exception, hang or partial import."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        raw = bytearray(_valid_archive())
        for _ in range(data.draw(st.integers(1, 6))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            op = data.draw(st.sampled_from(["set", "cut", "insert"]))
            if op == "set":
                raw[pos] = data.draw(st.integers(0, 255))
            elif op == "cut":
                del raw[pos : pos + data.draw(st.integers(1, 600))]
            else:
                raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        blob = gzip.compress(bytes(raw)) if data.draw(st.booleans()) else bytes(raw)
        (root / "m.tar").write_bytes(blob)
        dst = BundleStore(root / "dst")
        try:
            bid = unpack(root / "m.tar", dst, Limits(max_stream_bytes=1 << 22))
        except UnsafeArchiveError:
            assert dst.list_bundles() == [] and not any(dst.objects_dir.iterdir())
        else:
            assert dst.verify(bid) == []
        assert not any(dst.tmp_dir.iterdir())


# -- compression bombs ------------------------------------------------------------

GIB = 1 << 30
MIB = 1 << 20


def _gzip_bomb(path: Path) -> Path:
    """~1 MB on disk, 1 GiB + headers inflated: gzip members concatenate, so one
    compressed MiB of zeros, repeated, builds the bomb without compressing 1 GiB."""
    files_hdr = tarfile.TarInfo("zeros.bin")
    files_hdr.size = GIB
    # The digest is never reached: the bomb must be refused long before hashing ends.
    entry = FileEntry(name="zeros.bin", sha256="sha256:" + "0" * 64, size=GIB, media_type="application/octet-stream")
    m = manifest_bytes(build_manifest([entry]))
    head = tarfile.TarInfo("manifest.json")
    head.size = len(m)
    prefix = head.tobuf(tarfile.PAX_FORMAT) + m + bytes(-len(m) % 512) + files_hdr.tobuf(tarfile.PAX_FORMAT)
    zeros = gzip.compress(bytes(MIB), mtime=0)
    with path.open("wb") as fh:
        fh.write(gzip.compress(prefix, mtime=0))
        for _ in range(1024):
            fh.write(zeros)
        fh.write(gzip.compress(bytes(1024), mtime=0))
    return path


def test_gzip_bomb_is_stopped_early(store: BundleStore, tmp_path: Path) -> None:
    bomb = _gzip_bomb(tmp_path / "bomb.tar.gz")
    assert bomb.stat().st_size < 2 * MIB
    # Refused from the manifest's declared size, before any data is inflated ...
    t0 = time.monotonic()
    with pytest.raises(UnsafeArchiveError, match=r"entry 'zeros.bin': size 1073741824 exceeds max_file_bytes \(10000000\)"):
        unpack(bomb, store, Limits(max_file_bytes=10_000_000))
    assert time.monotonic() - t0 < 2
    # ... and, with the per-file limits out of the way, by counting inflated bytes.
    t0 = time.monotonic()
    with pytest.raises(UnsafeArchiveError, match=r"entry 'zeros.bin': decompressed archive exceeds max_stream_bytes \(10000000\)"):
        unpack(bomb, store, Limits(max_stream_bytes=10_000_000))
    assert time.monotonic() - t0 < 2
    assert not any(store.objects_dir.iterdir()) and not any(store.tmp_dir.iterdir())


def test_default_stream_cap_covers_legitimate_archives() -> None:
    lim = Limits()
    assert lim.stream_cap() > lim.max_total_bytes + lim.max_json_bytes + lim.max_entries * 1024
    assert Limits(max_stream_bytes=5).stream_cap() == 5
