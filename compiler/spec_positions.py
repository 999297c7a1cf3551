"""Where a spec problem is *caused*, when that is not where it shows.

``extends`` lets a child spec delete a base key with ``key: null``.  When the deleted
key was required (by the schema, by the phase kind) or named by a reference elsewhere,
the checks notice the absence at the parent mapping or at the reference, which may be
in the base file, far from the edit that broke it.  :func:`deletion_cause` finds the
deleting ``null`` so the diagnostic can point there (``yamlspec.diag_at`` does this for
every check), keeping the place of the requirement as a note.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["deletion_cause"]

# Sections whose entries are referenced by name from elsewhere in a spec.
_NAMED_SECTIONS = ("datasets", "tasks", "models", "engines")


def _mentions(message: str, key: Any) -> bool:
    """Whether ``message`` names ``key`` as a whole word (``'axes'``, ``axes.batch_sizes``)."""
    return re.search(r"(?<![\w-])" + re.escape(str(key)) + r"(?![\w-])", message) is not None


def deletion_cause(doc: Any, path: tuple, code: str, message: str) -> tuple[str, int, int] | None:
    """Position of the ``key: null`` deletion behind a ``missing-key`` / ``unknown-name`` problem, else None.

    ``missing-key`` at ``path``: a deleted key at or below ``path`` that the message names
    (``missing required key 'axes'``, ``a batch_size phase needs axes.batch_sizes``).
    ``unknown-name``: a deleted top-level entry (``datasets.x: null``) the message names
    in quotes (``unknown dataset 'x'``).
    """
    deleted = getattr(doc, "deleted", None)
    if not deleted or code not in ("missing-key", "unknown-name"):
        return None
    for gone, pos in deleted.items():
        if code == "missing-key" and gone[: len(path)] == tuple(path) and len(gone) > len(path) \
                and _mentions(message, gone[-1]):
            return pos
        if code == "unknown-name" and len(gone) == 2 and gone[0] in _NAMED_SECTIONS \
                and f"{gone[0][:-1]} {gone[1]!r}" in message:
            return pos
    return None
