"""Reading JSON-lines artifacts from untrusted bundles: one record per line, each an object,
each (for versioned formats) with a ``schema_version`` this batchsafe understands.

Every problem is a ``JsonLineError`` whose message starts with ``<where>:<line>:``; callers
re-raise it as their own error class. ``parse_lines`` splits a well-formed file at its
line feeds and parses each line with one orjson call (no copy of the file into one array
text); a file with CR, blank or unparsable lines goes the general way, which names the
first bad line. The same parse proves a file canonical by dumping its records again, a
chunk per orjson call (``sorted_dump_matches``), which the verify stages use instead of a
dump per line.
"""

from __future__ import annotations

from batchsafe.core.artifact import check_version
from batchsafe.core.errors import BatchsafeError

from collections.abc import Iterable
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
                     current: int | None) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    """``parse_lines`` plus whether the same parse proves ``raw`` canonical (:func:`sorted_dump_matches`).

    The common file (LF endings, no blank line, every line one JSON value) is parsed line
    by line with one orjson call per line and proven canonical by dumping the records again
    (a chunk per orjson call, compared in place); anything else takes the general path, which names the first bad line.
    """
    plain = parse_plain(raw)
    if plain is not None:
        return _checked(plain[0], where, what, current), plain[1]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # orjson would say "surrogates not allowed" or similar
        line = raw.count(b"\n", 0, exc.start) + 1
        raise JsonLineError(f"{where}:{line}: invalid UTF-8 at byte {exc.start}") from None
    numbered = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    return [(n, parse_line(line, where, n, what, current)) for n, line in numbered], False


def parse_plain(raw: bytes) -> tuple[list[Any], bool] | None:
    """The values of ``raw``'s lines, one orjson call per line, and whether they prove ``raw`` canonical.

    None when ``raw`` is not of the plain layout (:func:`plain_layout`) or a line does not
    parse: the caller's general path then names the problem. orjson refuses invalid UTF-8
    anywhere in its input and the line feeds between lines are ASCII, so a file whose lines
    all parse is valid UTF-8. The proof is :func:`sorted_dump_matches` on these very parses.
    """
    if not plain_layout(raw):
        return None
    lines = raw.split(b"\n")
    lines.pop()  # the empty string after the final newline
    try:
        records = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    return records, _dump_matches(raw, records)


def plain_layout(raw: bytes) -> bool:
    """LF line ends only, a final newline, no empty line (whitespace-only lines fail to parse later)."""
    return raw.endswith(b"\n") and b"\r" not in raw and not raw.startswith(b"\n") and b"\n\n" not in raw


def _checked(records: list[Any], where: str, what: str, current: int | None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of the records of consecutive lines, each checked by ``check_record``."""
    # The usual file is all objects at the current version: one pass without a call per record.
    if current is None:
        ok = all(type(r) is dict for r in records)
    else:
        ok = all(type(r) is dict and type(r.get("schema_version")) is int and 1 <= r["schema_version"] <= current
                 for r in records)
    if ok:
        return list(enumerate(records, 1))
    return [(n, check_record(obj, where, n, what, current)) for n, obj in enumerate(records, 1)]


def sorted_dump_matches(raw: bytes, records: list[Any]) -> bool:
    """Whether every line of ``raw`` is orjson's sorted dump of its record: ``raw`` is canonical JSON lines.

    ``records`` are the values of ``raw``'s lines, in order (the per-line parses). Their
    dumps, one per line (:func:`canonical_lines`, a chunk of records per orjson call), are
    compared in place with ``raw``: equal bytes are the proof, and a record's dump that
    orjson could spell unlike Python (a float below 1e-4) leaves it unproven. True also
    requires a final newline, no CR and no blank line; False means "not proven", never
    "not canonical".
    """
    return plain_layout(raw) and _dump_matches(raw, records)


CHUNK = 8192
"""Records dumped per orjson call when comparing with a file: a dump of all of them at once is a second copy of it."""


def _dump_matches(raw: bytes, records: list[Any]) -> bool:
    """:func:`sorted_dump_matches` for a ``raw`` already known to have the plain layout."""
    # Records that are not objects are left unproven: every canonical JSON-lines artifact
    # holds objects, and the callers' general path names such a line.
    if len(records) != raw.count(b"\n") or not all(type(r) is dict for r in records):
        return False
    # Parsed JSON holds no NaN or infinity, so canonical_lines may answer for each chunk.
    return lines_match(raw, (records[i:i + CHUNK] for i in range(0, len(records), CHUNK))) is True


def lines_match(raw: bytes, chunks: Iterable[list[Any] | None]) -> bool | None:
    """Whether ``raw`` is exactly the canonical lines (:func:`canonical_lines`) of ``chunks``' records, in order.

    Each chunk's lines are compared in place with the next bytes of ``raw`` (no copy of the
    file). None when a chunk is None or its lines are not settled fast (the caller then
    compares the exact way); False at the first chunk that differs.
    """
    at = 0
    for records in chunks:
        lines = None if records is None else canonical_lines(records)
        if lines is None:
            return None
        if not raw.startswith(lines, at):
            return False
        at += len(lines)
    return at == len(raw)


# A string no record of batchsafe's holds: dumped between the records of one list, it marks
# where each record's dump ends (``sorted_dump_lines`` checks it occurs nowhere else).
_LINE_MARK = "\x00batchsafe:end-of-line\x00"
_LINE_MARK_JSON = orjson.dumps(_LINE_MARK)


def sorted_dump_lines(records: list[Any]) -> bytes | None:
    """``b"".join(orjson.dumps(r, option=OPT_SORT_KEYS) + b"\\n" for r in records)`` in one orjson call.

    The records are dumped as one list with a marker string after each, and each
    ``,<marker>,`` becomes a line feed: 3x faster than a dump per record. A record whose
    dump holds the marker's text (counted), or a value orjson refuses, gives None.
    """
    n = len(records)
    if not n:
        return b""
    seq: list[Any] = [_LINE_MARK] * (2 * n)
    seq[::2] = records
    try:
        whole = orjson.dumps(seq, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None
    if whole.count(_LINE_MARK_JSON) != n:
        return None
    # "[r1,M,r2,M,...,rn,M]" -> "r1,M,...,rn,M," -> "r1\nr2\n...rn\n" (every M sits between two commas)
    return (whole[1:-1] + b",").replace(b"," + _LINE_MARK_JSON + b",", b"\n")


def canonical_lines(records: list[Any]) -> bytes | None:
    """The canonical JSON lines of ``records`` (``canonical_bytes`` of each), or None when not settled fast.

    orjson's sorted dump is the canonical one except for floats below 1e-4 (see
    ``SHORT_NEG_EXPONENT``) and for NaN and infinities, which orjson writes as null where
    canonical JSON refuses them: ``records`` must hold none (the caller checks), and a dump
    with a suspect float token gives None, as does any case ``sorted_dump_lines`` refuses.
    """
    out = sorted_dump_lines(records)
    if out is None or b"0.0000" in out or SHORT_NEG_EXPONENT.search(out):
        return None
    return out
