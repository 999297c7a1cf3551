"""Canonical JSON and algorithm-tagged hashes shared by every stage.

Every artifact is hashed through ``canonical_bytes`` so that two processes,
machines or Python versions that build the same artifact get the same digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

HASH_ALGO = "sha256"
_CHUNK = 1 << 20


def canonical_bytes(obj: Any) -> bytes:
    """Serialise ``obj`` as canonical JSON: sorted keys, no whitespace, UTF-8, trailing newline.

    Floats are written by Python's shortest round-trip repr; NaN and infinities are
    refused because they have no JSON spelling and would make hashes ambiguous.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def sha256_tag(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``."""
    return f"{HASH_ALGO}:{hashlib.sha256(data).hexdigest()}"


def hash_obj(obj: Any) -> str:
    """Algorithm-tagged digest of the canonical JSON of ``obj``."""
    return sha256_tag(canonical_bytes(obj))


def hash_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Stream a file and return (``sha256:<hex>``, size in bytes)."""
    h = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return f"{HASH_ALGO}:{h.hexdigest()}", size


def short_id(prefix: str, obj: Any, length: int = 16) -> str:
    """A readable content-derived id: ``prefix`` + first ``length`` hex chars of the digest."""
    return prefix + hash_obj(obj).split(":", 1)[1][:length]


def normalize_digest(value: str) -> str:
    """Accept ``sha256:<hex>`` or a bare 64-char hex digest; return the tagged lowercase form."""
    v = value.strip().lower()
    if v.startswith(f"{HASH_ALGO}:"):
        v = v.split(":", 1)[1]
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ValueError(f"not a sha256 digest: {value!r}")
    return f"{HASH_ALGO}:{v}"
