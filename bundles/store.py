"""Content-addressed bundle store.

Layout::

    <store>/objects/ab/abcdef…                        file content, named by its sha256 hex;
                                                      written once, read-only (0o444)
    <store>/bundles/<hex of bundle id>/manifest.json  canonical manifest bytes
    <store>/tmp/                                      scratch space for atomic writes

Why this layout:

* **Objects by content hash.** A file's name *is* its digest, so identical content
  (a shared ``plan.lock.json``, an unchanged ``outputs/samples.jsonl`` reused by a
  rescored child bundle) is stored once however many bundles list it, and an object
  never changes after it is written: re-writing it would produce the same bytes.
  The two-hex-character fan-out keeps directories small (256 buckets) for stores
  with millions of objects; the full hex is kept in the file name so that
  ``sha256sum objects/*/*`` can be compared with the names directly.
* **Bundles as directories named by their id.** The id is the sha256 of the
  ``manifest.json`` inside, so a bundle is checkable with nothing but
  ``sha256sum``; a directory (rather than a bare file) leaves room for derived,
  non-identifying data next to the manifest later without changing ids.
* **Atomic, crash-safe writes.** Every file is written under ``tmp/`` (same
  filesystem), fsynced, then ``os.replace``-d into place; a bundle directory is
  renamed into ``bundles/`` only after its manifest is complete, and only after all
  of its objects exist. A crash leaves at most garbage in ``tmp/`` (safe to delete
  when no writer runs), never a half-written object or a bundle with a hole.
  Concurrent writers need no lock: they can only race to write identical bytes.
* **Read-only objects** guard against accidental edits through a materialized
  hard link or a careless editor; ``verify`` detects deliberate ones.
"""

from __future__ import annotations

from batchsafe.core.atomic import fsync_dir

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from batchsafe.core import layout
from batchsafe.core.canonical import normalize_digest, sha256_tag

from .manifest import (
    MANIFEST_NAME,
    BundleError,
    FileEntry,
    Manifest,
    ManifestError,
    build_manifest,
    bundle_id_of,
    load_manifest,
    manifest_bytes,
    media_type_for,
    validate_name,
)

CHUNK = 1 << 20
MIN_PREFIX = 8
_HEX = frozenset("0123456789abcdef")


class BundleNotFoundError(BundleError, LookupError):
    """No bundle (or no file in a bundle) matches what was asked for."""


class AmbiguousBundleError(BundleError, LookupError):
    """A bundle id prefix matches more than one bundle."""


class CorruptBundleError(BundleError):
    """Stored bytes do not match the digests that name them."""



class _VerifyingReader(io.RawIOBase):
    """Reads an object and raises ``CorruptBundleError`` at EOF if its digest or size is wrong."""

    def __init__(self, fh: BinaryIO, entry: FileEntry) -> None:
        self._fh, self._entry = fh, entry
        self._hash = hashlib.sha256()
        self._size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        if len(buf) == 0:
            return 0
        n = self._fh.readinto(buf)
        if n:
            self._hash.update(memoryview(buf)[:n])
            self._size += n
        elif self._size != self._entry.size or f"sha256:{self._hash.hexdigest()}" != self._entry.sha256:
            raise CorruptBundleError(f"file {self._entry.name!r} does not match its manifest digest")
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


class BundleStore:
    """A directory of content-addressed objects and the manifests that name them."""

    def __init__(self, root: Path | str) -> None:
        """Open (creating if needed) the store at ``root``."""
        self.root = Path(root)
        self.objects_dir = self.root / layout.STORE_OBJECTS
        self.bundles_dir = self.root / layout.STORE_BUNDLES
        self.tmp_dir = self.root / layout.STORE_TMP
        for d in (self.objects_dir, self.bundles_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- objects -------------------------------------------------------------

    def object_path(self, sha: str) -> Path:
        """Where the object with digest ``sha`` (tagged or bare hex) lives."""
        hexd = normalize_digest(sha).split(":", 1)[1]
        return self.objects_dir / hexd[:2] / hexd

    def has_object(self, sha: str, size: int | None = None) -> bool:
        """Whether the object exists (and, if ``size`` is given, has that size)."""
        try:
            st = self.object_path(sha).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def _new_tmp(self) -> tuple[Path, BinaryIO]:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="obj-")
        return Path(name), os.fdopen(fd, "wb")

    def _adopt(self, tmp: Path, sha: str, size: int) -> None:
        """Move the fsynced temp file ``tmp`` into place as object ``sha`` (package-internal)."""
        dest = self.object_path(sha)
        if self.has_object(sha, size):
            # Written once: an existing object of the right size is kept. A wrong-sized
            # one (external damage) is replaced, since we hold the right bytes.
            tmp.unlink()
            return
        os.chmod(tmp, 0o444)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its ``sha256:`` digest."""
        sha = sha256_tag(data)
        if self.has_object(sha, len(data)):
            return sha
        tmp, fh = self._new_tmp()
        try:
            with fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self._adopt(tmp, sha, len(data))
        finally:
            tmp.unlink(missing_ok=True)
        return sha

    def _put_stream(self, src: BinaryIO) -> tuple[str, int]:
        h = hashlib.sha256()
        size = 0
        tmp, fh = self._new_tmp()
        try:
            with fh:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    fh.write(chunk)
                    size += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            sha = f"sha256:{h.hexdigest()}"
            self._adopt(tmp, sha, size)
        finally:
            tmp.unlink(missing_ok=True)
        return sha, size

    def put_file(self, path: Path | str) -> str:
        """Store the file at ``path``, streamed in 1 MiB chunks; return its digest."""
        with Path(path).open("rb") as src:
            return self._put_stream(src)[0]

    # -- bundles -------------------------------------------------------------

    def write_bundle(
        self,
        files: Mapping[str, bytes | Path],
        *,
        kind: str = "run",
        parent: str | None = None,
    ) -> str:
        """Store ``files`` (bundle name -> bytes or path to read) as a bundle; return its id.

        Names are validated before anything is written. Content already in the store
        (from this or any other bundle) is not stored again.
        """
        for name in files:
            validate_name(name)
        entries = []
        for name, content in files.items():
            if isinstance(content, bytes | bytearray | memoryview):
                data = bytes(content)
                sha, size = self.put_bytes(data), len(data)
            else:
                with Path(content).open("rb") as src:
                    sha, size = self._put_stream(src)
            entries.append(FileEntry(name=name, sha256=sha, size=size, media_type=media_type_for(name)))
        manifest = build_manifest(entries, kind=kind, parent=normalize_digest(parent) if parent else None)
        return self._write_manifest(manifest)

    def _write_manifest(self, manifest: Manifest) -> str:
        """Publish ``manifest`` (whose objects must all exist); return the bundle id (package-internal)."""
        bid = bundle_id_of(manifest)
        final = self._bundle_dir(bid)
        if (final / MANIFEST_NAME).is_file():
            return bid
        staging = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="bundle-"))
        try:
            with (staging / MANIFEST_NAME).open("wb") as fh:
                fh.write(manifest_bytes(manifest))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.replace(staging, final)
            except OSError:
                # A concurrent writer published the same bundle first (non-empty target).
                if not (final / MANIFEST_NAME).is_file():
                    raise
            fsync_dir(self.bundles_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return bid

    @staticmethod
    def _full_id(bundle_id: str) -> str:
        try:
            return normalize_digest(bundle_id)
        except ValueError:
            raise BundleNotFoundError(f"not a full bundle id: {bundle_id!r} (use resolve() for prefixes)") from None

    def _bundle_dir(self, bundle_id: str) -> Path:
        return self.bundles_dir / self._full_id(bundle_id)[7:]

    def _manifest_raw(self, bundle_id: str) -> bytes:
        path = self._bundle_dir(bundle_id) / MANIFEST_NAME
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BundleNotFoundError(f"no bundle {self._full_id(bundle_id)} in {self.root}") from None

    def manifest(self, bundle_id: str) -> Manifest:
        """The manifest of ``bundle_id``; raises ``CorruptBundleError`` if it does not hash to the id."""
        bid = self._full_id(bundle_id)
        raw = self._manifest_raw(bid)
        if sha256_tag(raw) != bid:
            raise CorruptBundleError(f"manifest of {bid} hashes to {sha256_tag(raw)}")
        try:
            return load_manifest(raw)
        except ManifestError as exc:
            raise CorruptBundleError(f"manifest of {bid}: {exc}") from None

    def entry(self, bundle_id: str, name: str) -> FileEntry:
        """The manifest entry for ``name`` in ``bundle_id``."""
        for e in self.manifest(bundle_id).files:
            if e.name == name:
                return e
        raise BundleNotFoundError(f"bundle {self._full_id(bundle_id)} has no file {name!r}")

    def read(self, bundle_id: str, name: str) -> bytes:
        """The bytes of file ``name``, checked against the manifest digest."""
        e = self.entry(bundle_id, name)
        data = self._object_bytes(e)
        if len(data) != e.size or sha256_tag(data) != e.sha256:
            raise CorruptBundleError(f"file {name!r} does not match its manifest digest")
        return data

    def _object_bytes(self, e: FileEntry) -> bytes:
        try:
            return self.object_path(e.sha256).read_bytes()
        except FileNotFoundError:
            raise CorruptBundleError(f"object {e.sha256} for {e.name!r} is missing") from None

    def open(self, bundle_id: str, name: str) -> BinaryIO:
        """A read-only, forward-only stream of file ``name``.

        The stream hashes what it reads and raises ``CorruptBundleError`` on reaching
        EOF if the bytes do not match the manifest, so a full read is a verified read.
        """
        return self._open_entry(self.entry(bundle_id, name))

    def _open_entry(self, e: FileEntry) -> BinaryIO:
        try:
            fh = self.object_path(e.sha256).open("rb", buffering=0)
        except FileNotFoundError:
            raise CorruptBundleError(f"object {e.sha256} for {e.name!r} is missing") from None
        return io.BufferedReader(_VerifyingReader(fh, e), CHUNK)  # type: ignore[return-value]

    def materialize(self, bundle_id: str, dest_dir: Path | str) -> Path:
        """Write a plain, writable copy of the bundle (files + ``manifest.json``) to ``dest_dir``.

        ``dest_dir`` must not exist or be empty, so nothing there (a symlink planted
        under a bundle directory name, say) can redirect the writes. Every file is
        verified while copying; on a mismatch ``CorruptBundleError`` is raised.
        """
        bid = self._full_id(bundle_id)
        m = self.manifest(bid)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise FileExistsError(f"{dest} is not empty")
        for e in m.files:
            target = dest.joinpath(*e.name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._open_entry(e) as src, target.open("xb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        (dest / MANIFEST_NAME).write_bytes(manifest_bytes(m))
        return dest

    def verify(self, bundle_id: str) -> list[str]:
        """Re-hash everything ``bundle_id`` needs; return the problems found (empty: intact)."""
        bid = self._full_id(bundle_id)
        try:
            raw = self._manifest_raw(bid)
        except BundleNotFoundError as exc:
            return [str(exc)]
        problems = []
        if sha256_tag(raw) != bid:
            problems.append(f"bundle id mismatch: manifest.json hashes to {sha256_tag(raw)}, not {bid}")
        try:
            m = load_manifest(raw)
        except ManifestError as exc:
            return [*problems, f"manifest unreadable: {exc}"]
        for e in m.files:
            path = self.object_path(e.sha256)
            h, size = hashlib.sha256(), 0
            try:
                with path.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        h.update(chunk)
                        size += len(chunk)
            except FileNotFoundError:
                problems.append(f"{e.name}: object {e.sha256} is missing")
                continue
            if size != e.size:
                problems.append(f"{e.name}: size {size} != manifest size {e.size}")
            if f"sha256:{h.hexdigest()}" != e.sha256:
                problems.append(f"{e.name}: content hashes to sha256:{h.hexdigest()}, not {e.sha256}")
        return problems

    def list_bundles(self) -> list[str]:
        """Ids (``sha256:<hex>``) of every complete bundle, sorted."""
        out = []
        for d in self.bundles_dir.iterdir():
            if len(d.name) == 64 and set(d.name) <= _HEX and (d / MANIFEST_NAME).is_file():
                out.append(f"sha256:{d.name}")
        return sorted(out)

    def resolve(self, ref: str) -> str:
        """Full bundle id for ``ref``: ``sha256:<hex>``, bare hex, or a unique hex prefix (≥ 8 chars)."""
        v = ref.strip().lower().removeprefix("sha256:")
        if not v or not set(v) <= _HEX or len(v) > 64:
            raise BundleNotFoundError(f"not a bundle id or hex prefix: {ref!r}")
        if len(v) == 64:
            if (self.bundles_dir / v / MANIFEST_NAME).is_file():
                return f"sha256:{v}"
            raise BundleNotFoundError(f"no bundle sha256:{v} in {self.root}")
        if len(v) < MIN_PREFIX:
            raise BundleNotFoundError(f"bundle id prefix {ref!r} is too short (need at least {MIN_PREFIX} hex chars)")
        hits = [b for b in self.list_bundles() if b[7:].startswith(v)]
        if not hits:
            raise BundleNotFoundError(f"no bundle matches prefix {ref!r} in {self.root}")
        if len(hits) > 1:
            shown = ", ".join(hits[:5]) + (" …" if len(hits) > 5 else "")
            raise AmbiguousBundleError(f"bundle id prefix {ref!r} is ambiguous: {len(hits)} matches ({shown})")
        return hits[0]
