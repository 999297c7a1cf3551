"""Durable file writes: one ``atomic_write`` and one ``fsync_dir`` for every stage.

A reader of a path written here sees the old bytes or the new bytes, never half: the data
goes to a temp file in the target's own directory (so the rename stays on one filesystem),
is fsynced, renamed over the target, and the directory entry is fsynced too. On any error
the temp file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_writer", "fsync_dir"]


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so that a file created or renamed in it survives a crash.

    Platforms that cannot open or fsync a directory make this a no-op: the rename has
    already happened, only its durability across a power cut is weaker there.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | Path, *, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file handle whose bytes replace ``path`` when the block exits without error.

    ``mode`` is applied before the rename (mkstemp creates 0600 files). ``durable=False``
    skips the fsyncs, for caches that may lose an entry in a crash but must never hold a
    torn one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)


def atomic_write(path: str | Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> Path:
    """Replace ``path``'s contents with ``data`` atomically (see ``atomic_writer``); return the path."""
    with atomic_writer(path, mode=mode, durable=durable) as fh:
        fh.write(data)
    return Path(path)
