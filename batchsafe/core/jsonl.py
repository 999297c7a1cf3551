"""Reading JSON-lines artifacts from untrusted bundles: one record per line, each an object,
each (for versioned formats) with a ``schema_version`` this batchsafe understands.

Every problem is a ``JsonLineError`` whose message starts with ``<where>:<line>:``; callers
re-raise it as their own error class. ``parse_lines`` parses a whole file in one orjson call
when it can (most of the cost at 30k lines is per-call overhead and the cyclic GC) and
falls back to line by line only to name the first bad line.
"""

from __future__ import annotations

from batchsafe.core.artifact import check_version
from batchsafe.core.errors import BatchsafeError

from typing import Any

import re

import orjson

# orjson writes floats below 1e-4 as 0.0000x or with a one-digit negative exponent (2.5e-7)
# where Python writes 1e-05 / 2.5e-07 (see ``sorted_dump_matches``).
SHORT_NEG_EXPONENT = re.compile(rb"e-[0-9](?![0-9])")


class JsonLineError(BatchsafeError, ValueError):
    """A JSON line that cannot be used; the message names ``where:line``."""


def check_record(obj: Any, where: str, n: int, what: str, current: int | None) -> dict[str, Any]:
    """``obj`` if it is an object with a valid ``schema_version`` (``current`` None: unversioned)."""
    if not isinstance(obj, dict):
        raise JsonLineError(f"{where}:{n}: a {what} must be a JSON object")
    if current is not None:
        v = obj.get("schema_version")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise JsonLineError(f"{where}:{n}: {what} has no valid schema_version ({v!r})")
        check_version(obj, current, what=what, where=f"{where}:{n}", error=JsonLineError)
    return obj


def parse_line(line: bytes, where: str, n: int, what: str, current: int | None) -> dict[str, Any]:
    """One record (see ``check_record``)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise JsonLineError(f"{where}:{n}: not JSON: {exc}") from None
    return check_record(obj, where, n, what, current)


def parse_lines(raw: bytes, where: str, what: str, current: int | None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line of ``raw``."""
    return parse_lines_bulk(raw, where, what, current)[0]


def parse_lines_bulk(raw: bytes, where: str, what: str,
                     current: int | None) -> tuple[list[tuple[int, dict[str, Any]]], list[Any] | None]:
    """``parse_lines`` plus the one-call parse of the joined lines it used (None: it went line by line).

    The second value is what :func:`sorted_dump_matches` needs to prove the file canonical
    without parsing it again.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # orjson would say "surrogates not allowed" or similar
        line = raw.count(b"\n", 0, exc.start) + 1
        raise JsonLineError(f"{where}:{line}: invalid UTF-8 at byte {exc.start}") from None
    numbered = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    try:
        bulk = orjson.loads(b"[" + b",".join(line for _, line in numbered) + b"]")
    except orjson.JSONDecodeError:
        bulk = None
    if bulk is not None and len(bulk) == len(numbered):  # `1, 2` on one line would parse as two items
        return [(n, check_record(obj, where, n, what, current)) for (n, _), obj in zip(numbered, bulk)], bulk
    return [(n, parse_line(line, where, n, what, current)) for n, line in numbered], None


def sorted_dump_matches(raw: bytes, bulk: list[Any] | None) -> bool:
    """Whether every line of ``raw`` is orjson's sorted dump of its record, ``bulk`` being the parse of the lines.

    ``bulk`` must be ``orjson.loads(b"[" + b",".join(lines) + b"]")`` of the non-blank lines
    (what :func:`parse_lines_bulk` returns), unmodified. True exactly when the whole-file
    fast path of the verify ``files`` stage (``verification.completeness.jsonl_problem``)
    accepts ``raw``: a final newline, no CR, no blank or whitespace-only line, as many
    records as lines, each line byte-equal to its record's sorted dump, and no float token
    orjson spells unlike Python. False means "not proven", never "not canonical".
    """
    if bulk is None or not raw.endswith(b"\n") or b"\r" in raw or raw.startswith(b"\n") or b"\n\n" in raw:
        return False
    if len(bulk) != raw.count(b"\n"):  # a whitespace-only line was skipped by the parse
        return False
    # One dump per record, joined by newlines: the line breaks must fall exactly between
    # records. (Comparing one dump of the whole list with the lines joined by commas let a
    # break moved inside a record pass: `{"a":1` + `"b":2},{"c":3}` is two records too.)
    fast = b"\n".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in bulk) + b"\n"
    return fast == raw and b"0.0000" not in fast and not SHORT_NEG_EXPONENT.search(fast)
