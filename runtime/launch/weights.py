"""The digest of a model directory as a server loads it.

``weights_digest(dir)`` is ``sha256:`` of the canonical JSON ``{relative path: hex sha256}``
of every regular file in the directory, minus batchsafe's own bookkeeping
(``batchsafe-model.json``, which records conversion times) and hidden files. The plan's
``hf.weights_sha256`` pins it; the launcher computes it before it starts a server and
refuses a directory that differs, and the bundle records the per-file digests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from batchsafe.core.canonical import canonical_bytes

IGNORED = frozenset({"batchsafe-model.json"})
"""Files in a model directory that are not read by the server."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_files(model_dir: Path) -> dict[str, str]:
    """{relative POSIX path: hex sha256} of the files a server reads from ``model_dir``."""
    out = {}
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir)
        if p.is_file() and rel.as_posix() not in IGNORED and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = file_sha256(p)
    return out


def weights_digest(files: dict[str, str]) -> str:
    """``sha256:`` digest of a :func:`weights_files` mapping."""
    return "sha256:" + hashlib.sha256(canonical_bytes(files)).hexdigest()
