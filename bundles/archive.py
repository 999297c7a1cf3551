"""Deterministic bundle archives, and an unpacker that treats every archive as hostile.

``pack`` writes a POSIX.1-2001 (pax) tar: ``manifest.json``, then each file under its
manifest name in name order; mode 0o644, uid/gid 0, no uname/gname, mtime 0, pax records
only where ustar cannot hold a value (non-ASCII or > 100-byte names, files >= 8 GiB).
Headers are built here, not by ``tarfile`` (its output has changed between Python
releases), so the bytes depend on this code alone. Plain ``.tar`` is the canonical
form: same bundle, same bytes, on any machine. ``.tar.gz`` is one gzip member with
mtime 0, no name, XFL 0, OS 255, level 6: reproducible for a given zlib build, but
zlib forks (zlib-ng in some distributions) emit other, equally valid, deflate streams.
Either way identity is the bundle id: the sha256 of the ``manifest.json`` entry.

``unpack`` uses neither ``extractall`` nor ``tarfile`` (3.11's loops forever on negative
sizes, has a pax-header ReDoS and reads extended headers of any size into memory): a
strict streaming reader stops at the first problem and names the entry. The manifest
must come first, so each later entry is checked against it before its data is read;
decompressed bytes are counted as they are produced, so a bomb stops at a limit. Files
land in a temp directory inside the store and reach ``objects/`` only after the whole
archive verified. Nothing from an archive is executed, unpickled or extracted.
"""

from __future__ import annotations

from batchsafe.core.atomic import atomic_writer

import contextlib
import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .manifest import MANIFEST_NAME, BundleError, FileEntry, Manifest, ManifestError
from .manifest import load_manifest, manifest_bytes, name_problem
from .store import CHUNK, BundleStore, CorruptBundleError

BLOCK = 512
RECORD = 20 * BLOCK
GZIP_LEVEL = 6  # zlib's and gzip(1)'s default; fixed because it changes the output bytes
_ZERO = bytes(BLOCK)
_MAX_OCTAL_SIZE = 0o77777777777  # 11 octal digits: 8 GiB - 1


class UnsafeArchiveError(BundleError, ValueError):
    """An archive was refused; the message names the offending entry."""


@dataclass(frozen=True)
class Limits:
    """Resource bounds for ``unpack``, each checked before the data it bounds is read or parsed."""

    max_entries: int = 100_000
    """Most tar entries (files and directories)."""
    max_file_bytes: int = 2 << 30
    """Largest single file."""
    max_total_bytes: int = 8 << 30
    """Largest sum of all file sizes, manifest included."""
    max_depth: int = 16
    """Most path segments in a name."""
    max_name_bytes: int = 255
    """Longest path segment, in UTF-8 bytes."""
    max_json_bytes: int = 64 << 20
    """Largest ``manifest.json``."""
    max_json_depth: int = 64
    """Deepest array/object nesting in ``manifest.json``."""
    max_header_bytes: int = 8192
    """Largest pax / GNU long-name payload (a 16-deep path of 255-byte segments is ~4 KiB)."""
    max_stream_bytes: int | None = None
    """Backstop on decompressed tar bytes; ``None``: total + JSON + 10 KiB per entry of headers."""

    def stream_cap(self) -> int:
        """The effective ``max_stream_bytes``."""
        if self.max_stream_bytes is not None:
            return self.max_stream_bytes
        per_entry = 3 * BLOCK + self.max_header_bytes + BLOCK  # header, ext header+payload, padding
        return self.max_total_bytes + self.max_json_bytes + self.max_entries * per_entry + RECORD


# -- writing -------------------------------------------------------------------


def _ustar(name: bytes, size: int, typeflag: bytes) -> bytes:
    # name, mode, uid, gid, size, mtime, checksum placeholder, type, linkname, magic+version,
    # uname+gname, devmajor+devminor, prefix (unused: long names use pax) + padding.
    block = (
        name.ljust(100, b"\0") + b"0000644\0" + b"0000000\0" * 2 + b"%011o\0" % size + b"0" * 11 + b"\0"
        + b" " * 8 + typeflag + bytes(100) + b"ustar\x0000" + bytes(64) + b"0000000\0" * 2 + bytes(167)
    )  # fmt: skip
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:  # the length field counts its own digits
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _pad(n: int) -> bytes:
    return bytes(-n % BLOCK)


def _entry_header(name: str, size: int) -> bytes:
    raw = name.encode("utf-8")
    pax = _pax_record(b"path", raw) if not name.isascii() or len(raw) > 100 else b""
    pax += _pax_record(b"size", b"%d" % size) if size > _MAX_OCTAL_SIZE else b""
    # ustar fields get an ASCII stand-in; pax readers (including ours) use the records.
    head = _ustar(name.encode("ascii", "replace")[:100], size if size <= _MAX_OCTAL_SIZE else 0, b"0")
    return head if not pax else _ustar(b"././@PaxHeader", len(pax), b"x") + pax + _pad(len(pax)) + head


class _Writer:
    """Counts tar bytes for the final record padding and, if asked, wraps them in one
    gzip member with a fixed header (no name, mtime 0, XFL 0, OS 255)."""

    def __init__(self, fh: BinaryIO, compress: bool) -> None:
        self._fh, self._crc, self.size = fh, 0, 0
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS) if compress else None
        if self._z:
            fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._z:
            self._crc = zlib.crc32(data, self._crc)
            data = self._z.compress(data)
        self._fh.write(data)

    def close(self) -> None:
        self.write(bytes(2 * BLOCK + (-(self.size + 2 * BLOCK) % RECORD)))  # end-of-archive + record padding
        if self._z:
            self._fh.write(self._z.flush() + struct.pack("<II", self._crc, self.size & 0xFFFFFFFF))


def pack(store: BundleStore, bundle_id: str, out: Path | str, *, compress: bool | None = None) -> Path:
    """Write bundle ``bundle_id`` as a deterministic archive at ``out``; return ``out``.

    ``compress=None`` gzips when ``out`` ends in ``.gz`` or ``.tgz``. Every object is
    re-hashed while it is copied, so a damaged store raises ``CorruptBundleError``
    instead of producing an archive; the archive appears at ``out`` atomically.
    """
    out = Path(out)
    manifest = store.manifest(bundle_id)
    with atomic_writer(out) as fh:
        w = _Writer(fh, out.name.endswith((".gz", ".tgz")) if compress is None else compress)
        raw = manifest_bytes(manifest)
        w.write(_entry_header(MANIFEST_NAME, len(raw)) + raw + _pad(len(raw)))
        for e in manifest.files:
            w.write(_entry_header(e.name, e.size))
            left = e.size
            with store._open_entry(e) as src:  # raises CorruptBundleError at EOF on a digest mismatch
                while chunk := src.read(CHUNK):
                    if (left := left - len(chunk)) < 0:
                        raise CorruptBundleError(f"file {e.name!r} is larger than its manifest size")
                    w.write(chunk)
            w.write(_pad(e.size))
        w.close()
    return out


# -- reading -------------------------------------------------------------------


class _Stream:
    """Decompressed tar bytes, counted as they are produced; refuses past ``cap``."""

    def __init__(self, fh: BinaryIO, cap: int) -> None:
        self._fh, self._cap, self.count = fh, cap, 0

    def read_exact(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes, in reads of at most 1 MiB (so memory stays bounded too)."""
        parts, got = [], 0
        while got < n:
            try:
                data = self._fh.read(min(n - got, CHUNK))
            except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
                raise UnsafeArchiveError(f"{what}: corrupt compressed stream ({exc})") from None
            if not data:
                raise UnsafeArchiveError(f"{what}: archive is truncated")
            got, self.count = got + len(data), self.count + len(data)
            if self.count > self._cap:
                raise UnsafeArchiveError(f"{what}: decompressed archive exceeds max_stream_bytes ({self._cap})")
            parts.append(data)
        return b"".join(parts)


def _bad(name: str | bytes, problem: str) -> UnsafeArchiveError:
    if isinstance(name, bytes):
        with contextlib.suppress(UnicodeDecodeError):  # undecodable names show as bytes literals
            name = name.decode("utf-8")
    return UnsafeArchiveError(f"entry {name!r}: {problem}")


def _nts(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _number(field: bytes, where: str) -> int:
    if field[0] == 0x80:  # GNU base-256, positive
        return int.from_bytes(field[1:], "big")
    text = _nts(field).strip(b" ")
    if field[0] & 0x80 or text.strip(b"01234567"):  # negative sizes are refused, never seeked over
        raise UnsafeArchiveError(f"{where}: negative or malformed numeric field")
    return int(text or b"0", 8)


_REFUSED_TYPES = {
    b"1": "hardlinks are not allowed", b"2": "symlinks are not allowed", b"3": "character devices are not allowed",
    b"4": "block devices are not allowed", b"6": "FIFOs are not allowed", b"7": "contiguous files are not allowed",
    b"g": "global pax headers are not allowed", b"K": "GNU long link names are not allowed",
    b"S": "sparse files are not allowed",
}  # fmt: skip


def _parse_header(block: bytes, where: str) -> tuple[bytes, bytes, int]:
    """(name, typeflag, size) of a header block, after magic and checksum checks."""
    if block[257:263] not in (b"ustar\x00", b"ustar "):
        raise UnsafeArchiveError(f"{where}: not a ustar/pax/GNU tar header")
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    signed = sum(struct.unpack("148b", block[:148])) + 256 + sum(struct.unpack("356b", block[156:]))
    if _number(block[148:156], where) not in (unsigned, signed):
        raise UnsafeArchiveError(f"{where}: header checksum mismatch")
    name, prefix = _nts(block[:100]), _nts(block[345:500])
    if block[257:263] == b"ustar\x00" and prefix:  # POSIX only; GNU keeps other fields there
        name = prefix + b"/" + name
    return name, block[156:157], _number(block[124:136], where)


def _parse_pax(payload: bytes, where: str) -> tuple[bytes | None, int | None]:
    name = size = None
    pos = 0
    while pos < len(payload) and payload[pos]:
        sp = payload.find(b" ", pos, pos + 21)
        length = payload[pos:sp]
        end = pos + int(length) if sp >= 0 and length.isdigit() else -1
        key, eq, value = payload[sp + 1 : end - 1].partition(b"=")
        if sp < 0 or end <= sp + 1 or end > len(payload) or payload[end - 1] != 0x0A or not eq:
            raise UnsafeArchiveError(f"{where}: malformed pax record")
        if key == b"path":
            name = value
        elif key == b"size":
            if not value.isdigit() or len(value) > 20:  # also keeps int() away from huge digit strings
                raise UnsafeArchiveError(f"{where}: malformed pax size")
            size = int(value)
        elif key.startswith(b"GNU.sparse."):
            raise UnsafeArchiveError(f"{where}: sparse files are not allowed")
        elif key == b"hdrcharset" and value != b"ISO-IR 10646 2000 UTF-8":
            raise UnsafeArchiveError(f"{where}: non-UTF-8 pax header charset")
        # Other keys (times, owners, xattrs, comments) mean nothing here and are never applied.
        pos = end
    return name, size


def _next_header(src: _Stream, where: str, limits: Limits) -> tuple[bytes, bytes, int] | None:
    """(name, typeflag, size) of the next entry, extended headers applied; ``None`` at the end."""
    block = src.read_exact(BLOCK, where)  # no end-of-archive block means truncated: refused
    if block == _ZERO:
        return None  # end-of-archive: anything after it is never read
    name, typeflag, size = _parse_header(block, where)
    if typeflag not in (b"x", b"L"):
        return name, typeflag, size
    if size > limits.max_header_bytes:
        raise UnsafeArchiveError(f"{where}: extended header of {size} bytes exceeds max_header_bytes")
    payload = src.read_exact(size + len(_pad(size)), where)[:size]
    ext_name, ext_size = _parse_pax(payload, where) if typeflag == b"x" else (_nts(payload), None)
    name, typeflag, size = _parse_header(src.read_exact(BLOCK, where), where)
    if typeflag in (b"x", b"L", b"g", b"K"):
        raise UnsafeArchiveError(f"{where}: chained extended headers are not supported")
    return (name if ext_name is None else ext_name), typeflag, (size if ext_size is None else ext_size)


def _check_name(raw: bytes, limits: Limits) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(raw, "name is not valid UTF-8") from None
    segs = name.split("/")
    longest = max(len(s.encode("utf-8")) for s in segs)
    if len(segs) > limits.max_depth:
        raise _bad(name, f"path depth {len(segs)} exceeds max_depth ({limits.max_depth})")
    if longest > limits.max_name_bytes:
        raise _bad(name, f"path segment of {longest} bytes exceeds max_name_bytes ({limits.max_name_bytes})")
    if problem := name_problem(name):
        raise _bad(name, f"unsafe name: {problem}")
    return name


def _open_stream(fh: BinaryIO, cap: int) -> _Stream:
    magic = fh.peek(6)[:6]  # type: ignore[attr-defined]
    if magic.startswith(b"\x1f\x8b"):
        return _Stream(gzip.GzipFile(fileobj=fh, mode="rb"), cap)  # type: ignore[arg-type]
    for sig, kind in ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd")):
        if magic.startswith(sig):
            raise UnsafeArchiveError(f"{kind}-compressed archives are not supported (use .tar or .tar.gz)")
    return _Stream(fh, cap)


def unpack(archive: Path | str, store: BundleStore, limits: Limits = Limits()) -> str:
    """Verify the archive at ``archive`` and import it into ``store``; return the bundle id.

    Raises ``UnsafeArchiveError`` naming the entry at the first problem; the store is
    unchanged unless everything verified.
    """
    work = Path(tempfile.mkdtemp(dir=store.tmp_dir, prefix="unpack-"))
    try:
        with open(archive, "rb") as raw:
            manifest, objects = _read_archive(_open_stream(raw, limits.stream_cap()), work, limits)
        for sha, (path, size) in objects.items():
            store._adopt(path, sha, size)
        return store._write_manifest(manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read_archive(src: _Stream, work: Path, limits: Limits) -> tuple[Manifest, dict[str, tuple[Path, int]]]:
    manifest: Manifest | None = None
    expected: dict[str, FileEntry] = {}
    parents: set[str] = set()
    early_dirs: list[str] = []  # directories seen before the manifest, checked once it is read
    seen: set[str] = set()
    objects: dict[str, tuple[Path, int]] = {}
    while header := _next_header(src, f"entry #{len(seen) + 1}", limits):
        raw_name, typeflag, size = header
        is_dir = typeflag == b"5" or (typeflag == b"\0" and raw_name.endswith(b"/"))
        raw_name = raw_name[:-1] if is_dir and raw_name.endswith(b"/") else raw_name
        if len(seen) >= limits.max_entries:
            raise _bad(raw_name, f"archive has more than max_entries ({limits.max_entries})")
        if not is_dir and typeflag not in (b"0", b"\0"):
            raise _bad(raw_name, _REFUSED_TYPES.get(typeflag, f"unsupported entry type {typeflag!r}"))
        name = _check_name(raw_name, limits)
        if name in seen:
            raise _bad(name, "duplicate entry name")
        seen.add(name)
        if is_dir:  # implicit parents are harmless and ignored; any other directory is refused
            if size:
                raise _bad(name, "directory entry carries data")
            if manifest is None:
                early_dirs.append(name)
            elif name not in parents:
                raise _bad(name, "directory is not a parent of any manifest file")
        elif manifest is None:
            if name != MANIFEST_NAME:
                raise _bad(name, f"the first file must be {MANIFEST_NAME}")
            if size > limits.max_json_bytes:
                raise _bad(name, f"{size} bytes exceeds max_json_bytes ({limits.max_json_bytes})")
            raw = src.read_exact(size + len(_pad(size)), name)[:size]
            try:
                manifest = load_manifest(raw, max_bytes=limits.max_json_bytes, max_depth=limits.max_json_depth)
            except ManifestError as exc:
                raise _bad(name, str(exc)) from None
            expected = _check_manifest_limits(manifest, limits, size)
            parents = {"/".join(n.split("/")[:i]) for n in expected for i in range(1, n.count("/") + 1)}
            for d in early_dirs:
                if d not in parents:
                    raise _bad(d, "directory is not a parent of any manifest file")
        elif (entry := expected.get(name)) is None:
            raise _bad(name, "not listed in the manifest")
        elif size != entry.size:  # sizes were checked against the limits via the manifest
            raise _bad(name, f"size {size} does not match manifest size {entry.size}")
        else:
            path, _ = objects.setdefault(entry.sha256, (work / str(len(objects)), size))
            _copy_verified(src, name, size, entry.sha256, path)
    if manifest is None:
        raise _bad(MANIFEST_NAME, "archive has no manifest")
    if missing := [n for n in expected if n not in seen]:
        raise _bad(missing[0], f"listed in the manifest but missing from the archive ({len(missing)} missing)")
    return manifest, objects


def _check_manifest_limits(manifest: Manifest, limits: Limits, total: int) -> dict[str, FileEntry]:
    """Refuse, from the manifest alone, a bundle whose entries would cross a limit."""
    if len(manifest.files) + 1 > limits.max_entries:
        raise _bad(MANIFEST_NAME, f"lists {len(manifest.files)} files, more than max_entries ({limits.max_entries})")
    for e in manifest.files:
        if e.size > limits.max_file_bytes:
            raise _bad(e.name, f"size {e.size} exceeds max_file_bytes ({limits.max_file_bytes})")
        total += e.size
        if total > limits.max_total_bytes:
            raise _bad(e.name, f"total size exceeds max_total_bytes ({limits.max_total_bytes})")
    return {e.name: e for e in manifest.files}


def _copy_verified(src: _Stream, name: str, size: int, sha: str, dest: Path) -> None:
    """Stream ``size`` bytes (+ padding) to ``dest`` (only hash them if it exists) and check ``sha``."""
    h = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        out = None if dest.exists() else stack.enter_context(open(dest, "wb"))  # repeated content: hash only
        left = size
        while left:
            chunk = src.read_exact(min(left, CHUNK), f"entry {name!r}")
            h.update(chunk)
            if out:
                out.write(chunk)
            left -= len(chunk)
        src.read_exact(len(_pad(size)), f"entry {name!r}")
        if out:
            out.flush()
            os.fsync(out.fileno())
    if (got := f"sha256:{h.hexdigest()}") != sha:
        raise _bad(name, f"content hashes to {got}, manifest says {sha}")
