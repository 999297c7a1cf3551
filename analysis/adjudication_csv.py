"""The labelling CSV: columns, formula neutralisation, and a reader that knows each row's line.

Model outputs are untrusted and the CSV is meant to be opened in a spreadsheet, where a
cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab / carriage return, which some
spreadsheets strip before evaluating) is run as a formula (CSV injection). Every cell
that starts with one of those characters, or with the escape character ``'`` itself, is
written with one ``'`` in front; the reader removes exactly that one quote again. Quoting
``'`` too is what makes the mapping reversible: ``"'=x"`` is written ``"''=x"`` and read
back as ``"'=x"``, never as ``"=x"``.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import contextlib
import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

COLUMNS = ("item", "bundle", "baseline_sample", "phase", "model", "condition", "task", "prompt_id", "prompt_text",
           "baseline_output", "output", "baseline_label", "label", "direction", "rater", "human_label", "notes")
"""Exported columns, in order; the last three are for the rater to fill."""
REQUIRED = ("item", "bundle", "rater", "human_label")
"""Columns the importer needs (``notes`` is optional; other columns are ignored)."""
DANGEROUS = frozenset("=+-@\t\r")
ESCAPE = "'"
MAX_FIELD = 64 << 20
"""Largest cell the reader accepts (the csv module's default, 128 KiB, is less than a long output)."""


def neutralise(cell: str) -> str:
    """``cell`` made inert for spreadsheets (see the module docstring); :func:`restore` inverts it."""
    if cell and (cell[0] in DANGEROUS or cell[0] == ESCAPE):
        return ESCAPE + cell
    return cell


def restore(cell: str) -> str:
    """Undo :func:`neutralise`: drop one leading ``'`` that protects a dangerous first character."""
    if len(cell) >= 2 and cell[0] == ESCAPE and (cell[1] in DANGEROUS or cell[1] == ESCAPE):
        return cell[1:]
    return cell


def dump_csv(rows: Iterable[Sequence[str]], header: Sequence[str] = COLUMNS) -> bytes:
    """UTF-8 CSV bytes (``\\n`` line endings, minimal quoting) with every cell neutralised.

    Text that UTF-8 cannot encode (a lone surrogate from a JSON escape) is written as a
    backslash escape: the output columns are for reading, the importer never uses them.
    """
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    # QUOTE_MINIMAL quotes only the line terminator's characters, so a lone \r would be written bare
    # and read back as a line break: rows holding one are written fully quoted instead.
    w_all = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(header)
    for row in rows:
        cells = [neutralise(str(c)) for c in row]
        (w_all if any("\r" in c for c in cells) else w).writerow(cells)
    return buf.getvalue().encode("utf-8", errors="backslashreplace")


@dataclass(frozen=True)
class CsvRow:
    """One data row of a labelling CSV, restored, with where it starts."""

    where: str
    """``file:line`` of the row's first physical line (cells may span lines)."""
    cells: dict[str, str]
    """Column name -> restored cell ('' for missing trailing cells)."""


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    # csv.field_size_limit is process-wide: raise it only while this reader runs.
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


class CsvFormatError(BatchsafeError, ValueError):
    """A CSV that cannot be parsed or lacks a needed column; the message names file:line."""


def read_csv(text: str, name: str) -> list[CsvRow]:
    """Data rows of one labelling CSV ``text`` (``name`` is used in messages); blank rows are dropped.

    A byte-order mark (spreadsheets add one) is ignored; header names are matched after
    trimming whitespace. Raises CsvFormatError for a missing required column, a
    duplicated column or unparseable CSV.
    """
    text = text.removeprefix("\ufeff")
    out: list[CsvRow] = []
    with _field_limit(MAX_FIELD):
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise CsvFormatError(f"{name}:1: not a CSV file: {exc}") from None
        if header is None:
            raise CsvFormatError(f"{name}:1: empty file (expected a header with {', '.join(REQUIRED)})")
        cols = [restore(h.strip()) for h in header]
        dup = sorted({c for c in cols if c and cols.count(c) > 1})
        if dup:
            raise CsvFormatError(f"{name}:1: column(s) {', '.join(dup)} appear more than once")
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise CsvFormatError(f"{name}:1: missing column(s) {', '.join(missing)} (is this an adjudication export?)")
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise CsvFormatError(f"{name}:{start}: malformed CSV: {exc}") from None
            if any(c.strip() for c in row):
                if len(row) > len(cols) and any(c.strip() for c in row[len(cols):]):
                    raise CsvFormatError(f"{name}:{start}: {len(row)} cells but the header has {len(cols)} columns")
                cells = {c: restore(v) for c, v in zip(cols, row) if c}
                out.append(CsvRow(f"{name}:{start}", {c: cells.get(c, "") for c in cols if c}))
            start = reader.line_num + 1
    return out
