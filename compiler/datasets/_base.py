"""Shared pieces of the dataset loaders: the error and record types, and line-tracking readers.

Line numbers are 1-based *physical* lines of the file. For CSV a physical line ends at
``\\n``, ``\\r\\n`` or a lone ``\\r`` (Python's universal newlines, which is also what the
``csv`` module sees); for JSONL only ``\\n`` ends a line, as the JSON Lines convention says.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class DatasetFormatError(BatchsafeError):
    """A dataset file does not have the shape its format promises.

    Attributes:
        path: the path as given to the loader (the data-dir-relative ``rel``).
        line: 1-based physical line of the offending record, or None for whole-file problems.
        message: what is wrong, without the location prefix.
    """

    def __init__(self, path: str, line: int | None, message: str):
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # Exceptions pickle through their args; ours has three named ones.
        return (type(self), (self.path, self.line, self.message))


@dataclass(frozen=True)
class Record:
    """One record of a dataset file, with fields normalised for its format."""

    id: str
    """Stable id, unique within one file: the source's natural id, else the 0-based record
    index, prefixed with the file stem unless the natural id is already globally unique."""
    fields: dict
    """The format's normalised fields (see ``format_fields``); JSON-serialisable values only."""
    source: str
    """The ``rel`` path that was given to the loader."""
    line: int
    """1-based physical line on which the record starts."""


def read_text(path: Path, rel: str) -> str:
    """Read ``path`` as UTF-8, dropping one leading BOM (TruthfulQA v1 starts with one)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetFormatError(rel, line, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def csv_rows(text: str, rel: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(start_line, fields)`` for every non-blank CSV record of ``text``.

    ``reader.line_num`` is the number of physical lines consumed so far, so after a record
    it is the record's *last* line; a record therefore starts one line after the previous
    record (or blank line) ended. Blank lines come back from ``csv.reader`` as ``[]`` and
    are skipped, but still counted. ``strict=True`` makes stray quotes and unterminated
    quoted fields errors instead of silently glued text.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetFormatError(rel, start, f"malformed CSV record: {exc}") from None
        end = reader.line_num
        if row:
            yield start, row


def header_map(
    header: Sequence[str], line: int, rel: str, required: Sequence[str], one_of: Sequence[str] = ()
) -> dict[str, int]:
    """Map every column name -> index for a header row, checking that ``required`` columns exist.

    ``one_of`` lists alternative spellings of one more column, at least one of which must
    be present (a column that was renamed between releases). Extra columns are allowed
    (later releases add some); a repeated name is refused because it would make the column
    a field comes from ambiguous.
    """
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        name = name.strip()
        if name in index:
            raise DatasetFormatError(rel, line, f"duplicate column {name!r} in header")
        index[name] = i
    missing = [c for c in required if c not in index]
    if one_of and not any(c in index for c in one_of):
        missing.append(" or ".join(one_of))
    if missing:
        raise DatasetFormatError(
            rel, line, f"missing required column(s): {', '.join(missing)} (header is {list(header)!r})"
        )
    return index


def empty_file(rel: str, columns: Sequence[str] = ()) -> DatasetFormatError:
    """The error for a file without a single record (or without its header)."""
    if columns:
        return DatasetFormatError(rel, None, f"empty file: expected a header with column(s) {', '.join(columns)}")
    return DatasetFormatError(rel, None, "empty file: no records")


def header_rows(
    path: Path, rel: str, required: Sequence[str], one_of: Sequence[str] = ()
) -> Iterator[tuple[int, dict[str, int], list[str]]]:
    """Yield ``(start_line, column_index, fields)`` for each data row of a CSV with a header.

    Every data row must have exactly as many fields as the header: a short or long row
    means a quoting mistake upstream, and guessing which field moved would corrupt data.
    """
    rows = csv_rows(read_text(path, rel), rel)
    first = next(rows, None)
    if first is None:
        raise empty_file(rel, required)
    hline, header = first
    cols = header_map(header, hline, rel, required, one_of)
    width = len(header)
    for line, row in rows:
        if len(row) != width:
            raise DatasetFormatError(rel, line, f"expected {width} fields as in the header, got {len(row)}")
        yield line, cols, row


class IdRegistry:
    """Detects repeated natural ids within one file, remembering where each was first seen."""

    __slots__ = ("rel", "seen")

    def __init__(self, rel: str):
        self.rel = rel
        self.seen: dict[str, int] = {}

    def add(self, rid: str, line: int) -> str:
        """Register ``rid`` found at ``line``; raise if it was already used."""
        first = self.seen.setdefault(rid, line)
        if first != line:
            raise DatasetFormatError(self.rel, line, f"duplicate id {rid!r} (first at line {first}, again at line {line})")
        return rid


try:  # orjson parses JSON Lines about 3x faster; results are identical for valid JSON.
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a pinned dependency
    _fast_loads = json.loads


def jsonl_objects(path: Path, rel: str) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, object)`` for each non-blank line of a JSON Lines file.

    Each line must hold one JSON object; blank (whitespace-only) lines are skipped but counted.
    """
    text = read_text(path, rel)
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw or raw.isspace():
            continue
        try:
            obj = _fast_loads(raw)
        except ValueError:
            # orjson is stricter in corners (lone surrogates, >64-bit integers): the stdlib decides.
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise DatasetFormatError(rel, number, f"not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise DatasetFormatError(rel, number, f"expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def need(obj: dict, key: str, kind: type | tuple[type, ...], rel: str, line: int, where: str = ""):
    """Return ``obj[key]`` after checking it is present and of type ``kind``.

    ``bool`` is refused where ``int`` is asked for: JSON ``true`` is never a valid index or id.
    """
    if key not in obj:
        raise DatasetFormatError(rel, line, f"missing required key {where + key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = "/".join(t.__name__ for t in _as_tuple(kind))
        raise DatasetFormatError(rel, line, f"key {where + key!r} must be {names}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
