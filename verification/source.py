"""Read-only access to one bundle, wherever it lies: a store, a directory or an archive.

``verify``, ``diff``, ``registry add`` and ``adjudicate`` read bundles that may come from
strangers, so every reader here treats the bundle as data:

* a **store** bundle (id or unique prefix) is read through ``BundleStore``, which checks
  each file against its manifest digest;
* a **directory** (a materialized bundle: ``manifest.json`` plus the files) is walked
  without following links; only regular files listed in the manifest are ever opened;
* an **archive** (``.tar`` / ``.tar.gz``) is unpacked by ``bundles.archive.unpack`` (the
  hostile-input reader: traversal, links, devices, duplicates, bombs and size limits)
  into a throw-away store in a temporary directory, removed on exit.

``read`` returns verified bytes or raises ``CorruptBundleError`` naming the file, and
refuses files larger than ``max_read_bytes`` before reading them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchsafe.core.canonical import sha256_tag
from batchsafe.bundles.archive import Limits, unpack
from batchsafe.bundles.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    load_manifest,
)
from batchsafe.bundles.store import CHUNK, BundleNotFoundError, BundleStore, CorruptBundleError

DEFAULT_MAX_READ = 1 << 30
"""Largest file ``read`` loads into memory (1 GiB); hashing streams and has no such bound."""


class SourceError(CorruptBundleError):
    """A bundle that cannot be opened at all (no manifest, unreadable manifest, refused archive)."""


@dataclass
class BundleSource:
    """One bundle's manifest and a way to read its files (see the module docstring)."""

    manifest: Manifest
    """The parsed, canonical manifest."""
    manifest_raw: bytes
    """Its exact bytes; ``sha256(manifest_raw)`` is the bundle id."""
    where: str
    """Human-readable location (store path + id, directory, archive path), for messages."""
    claimed_id: str | None = None
    """The id the location claims (a store directory's name, an archive's ``--id``), if any."""
    max_read_bytes: int = DEFAULT_MAX_READ
    _store: BundleStore | None = None
    _dir: Path | None = None
    _entries: dict[str, FileEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._entries = {e.name: e for e in self.manifest.files}

    @property
    def bundle_id(self) -> str:
        """The id recomputed from the manifest bytes (never taken on trust)."""
        return sha256_tag(self.manifest_raw)

    @property
    def names(self) -> set[str]:
        """Every file name the manifest lists."""
        return set(self._entries)

    def entry(self, name: str) -> FileEntry:
        """The manifest entry of ``name``; ``KeyError`` naming the file when absent."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"bundle has no file {name!r}") from None

    def has(self, name: str) -> bool:
        """Whether the manifest lists ``name``."""
        return name in self._entries

    def _file_path(self, e: FileEntry) -> Path:
        if self._store is not None:
            return self._store.object_path(e.sha256)
        assert self._dir is not None
        return self._dir.joinpath(*e.name.split("/"))

    def _linked_parent(self, name: str) -> str | None:
        """The first parent directory of ``name`` in a directory bundle that is a link (or not a directory)."""
        if self._dir is None:
            return None
        segs = name.split("/")[:-1]
        for i in range(1, len(segs) + 1):
            parent = "/".join(segs[:i])
            try:
                mode = os.lstat(self._dir.joinpath(*segs[:i])).st_mode
            except FileNotFoundError:
                return None  # reported as a missing file
            if not stat.S_ISDIR(mode):
                return parent
        return None

    def read(self, name: str) -> bytes:
        """Bytes of ``name``, checked against the manifest's size and digest."""
        e = self.entry(name)
        if (linked := self._linked_parent(name)) is not None:
            raise CorruptBundleError(f"{name}: its directory {linked} is a link or not a directory")
        if e.size > self.max_read_bytes:
            raise CorruptBundleError(f"{name}: {e.size} bytes is more than this reader loads ({self.max_read_bytes})")
        path = self._file_path(e)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise CorruptBundleError(f"{name}: file is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise CorruptBundleError(f"{name}: not a regular file")
        if st.st_size != e.size:
            raise CorruptBundleError(f"{name}: size {st.st_size} does not match manifest size {e.size}")
        with open(path, "rb", opener=_nofollow) as fh:
            data = fh.read(e.size + 1)
        if len(data) != e.size or sha256_tag(data) != e.sha256:
            raise CorruptBundleError(f"{name}: content hashes to {sha256_tag(data)}, manifest says {e.sha256}")
        return data

    def hash_file(self, name: str) -> tuple[str | None, int | None, str | None]:
        """(digest, size, problem) of ``name`` as stored, streamed; never follows a link."""
        path = self._file_path(self.entry(name))
        if (linked := self._linked_parent(name)) is not None:
            return None, None, f"its directory {linked} is a link or not a directory"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None, None, "file is missing"
        if stat.S_ISLNK(st.st_mode):
            return None, None, "is a symbolic link"
        if not stat.S_ISREG(st.st_mode):
            return None, None, "is not a regular file"
        h = hashlib.sha256()
        size = 0
        with open(path, "rb", opener=_nofollow) as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
        return f"sha256:{h.hexdigest()}", size, None

    def extra_paths(self) -> list[tuple[str, str]]:
        """(path, problem) for each path of a directory bundle that its manifest does not list.

        Links (to files or directories) and special files are reported as such and never
        followed; a directory that holds no listed file is reported with a trailing slash.
        """
        if self._dir is None:
            return []
        listed = set(self._entries) | {MANIFEST_NAME}
        dirs = {"/".join(n.split("/")[:i]) for n in self._entries for i in range(1, n.count("/") + 1)}
        extra = []
        for root, dnames, fnames in os.walk(self._dir, followlinks=False):
            rel_root = Path(root).relative_to(self._dir).as_posix()
            for name in [*dnames, *fnames]:
                rel = name if rel_root == "." else f"{rel_root}/{name}"
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISLNK(st.st_mode):
                    extra.append((rel, "a symbolic link, not listed in the manifest" if rel not in listed
                                  else "a symbolic link where the manifest lists a file"))
                elif stat.S_ISDIR(st.st_mode):
                    if rel not in dirs:
                        extra.append((rel + "/", "not listed in the manifest"))
                elif not stat.S_ISREG(st.st_mode):
                    extra.append((rel, "a special file, not listed in the manifest"))
                elif rel not in listed:
                    extra.append((rel, "not listed in the manifest"))
            dnames[:] = [d for d in dnames if not os.path.islink(os.path.join(root, d))
                         and (d if rel_root == "." else f"{rel_root}/{d}") in dirs]
        return sorted(extra)


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


def _manifest_or_fail(raw: bytes, where: str) -> Manifest:
    try:
        return load_manifest(raw)
    except ManifestError as exc:
        raise SourceError(f"{where}: {exc}") from None


def from_store(store: BundleStore, ref: str, *, max_read_bytes: int = DEFAULT_MAX_READ) -> BundleSource:
    """The bundle ``ref`` (id, bare hex or unique prefix) of ``store``."""
    bid = store.resolve(ref)
    path = store.bundles_dir / bid[7:] / MANIFEST_NAME
    raw = path.read_bytes()
    return BundleSource(_manifest_or_fail(raw, f"{bid}: {MANIFEST_NAME}"), raw, f"{store.root} {bid}",
                        claimed_id=bid, max_read_bytes=max_read_bytes, _store=store)


def from_directory(path: Path | str, *, claimed_id: str | None = None,
                   max_read_bytes: int = DEFAULT_MAX_READ) -> BundleSource:
    """A materialized bundle directory (``manifest.json`` plus the files it lists)."""
    d = Path(path)
    mpath = d / MANIFEST_NAME
    if mpath.is_symlink() or not mpath.is_file():
        raise SourceError(f"{d}: no {MANIFEST_NAME} (not a bundle directory)")
    if mpath.stat().st_size > Limits().max_json_bytes:
        raise SourceError(f"{mpath}: larger than max_json_bytes ({Limits().max_json_bytes})")
    raw = mpath.read_bytes()
    return BundleSource(_manifest_or_fail(raw, str(mpath)), raw, str(d), claimed_id=claimed_id,
                        max_read_bytes=max_read_bytes, _dir=d)


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a regular file (an archive to unpack) rather than a directory or store id."""
    return path.is_file()


@contextlib.contextmanager
def open_bundle(ref: str | Path, store: BundleStore | str | Path | None = None, *, claimed_id: str | None = None,
                limits: Limits = Limits(), max_read_bytes: int = DEFAULT_MAX_READ) -> Iterator[BundleSource]:
    """Open ``ref``: an archive file, a bundle directory, or a bundle id in ``store``.

    Archives are unpacked into a temporary store that is removed when the block exits;
    a refused archive raises ``SourceError`` with ``bundles.archive``'s message.
    """
    p = Path(ref)
    if is_archive(p):
        with tempfile.TemporaryDirectory(prefix="batchsafe-verify-") as tmp:
            tstore = BundleStore(Path(tmp) / "store")
            try:
                bid = unpack(p, tstore, limits)
            except (CorruptBundleError, ValueError) as exc:
                raise SourceError(f"{p}: {exc}") from None
            src = from_store(tstore, bid, max_read_bytes=max_read_bytes)
            src.where = str(p)
            src.claimed_id = claimed_id
            yield src
        return
    if p.is_dir():
        yield from_directory(p, claimed_id=claimed_id, max_read_bytes=max_read_bytes)
        return
    if store is None:
        raise BundleNotFoundError(f"{ref}: no such archive or bundle directory (and no store to look up an id in)")
    st = store if isinstance(store, BundleStore) else BundleStore(store)
    src = from_store(st, str(ref), max_read_bytes=max_read_bytes)
    if claimed_id is not None:
        src.claimed_id = claimed_id
    yield src
