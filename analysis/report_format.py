"""The formatting floor of report.md: how numbers are spelled and tables are drawn.

Shared by ``report`` (the phase sections) and ``protocol_report`` (seed 003's studies),
which ``report`` imports, so neither can hold these for the other. Numbers are rounded
only at this layer; stats.json keeps full precision. Tables are GitHub markdown from
``tabulate`` with number parsing off, so the strings formatted here print exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tabulate import tabulate

NOT_ENOUGH = "not enough data"
"""What a section prints instead of a table when its data is missing or degenerate."""
Stats = Mapping[str, Any]
FAILURES = (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError)
"""Errors of degenerate statistics that a section turns into NOT_ENOUGH instead of failing the report."""


def pct(x: Any, nd: int = 1) -> str:
    """A share as a percentage ("1.7%"); "--" when undefined."""
    return "--" if x is None else f"{100.0 * float(x):.{nd}f}%"


def fnum(x: Any, nd: int = 3) -> str:
    """A number to ``nd`` decimals; "--" when undefined."""
    return "--" if x is None else f"{float(x):.{nd}f}"


def pval(x: Any) -> str:
    """A p-value to 4 decimals."""
    return fnum(x, 4)


def yes(b: Any) -> str:
    """Yes/No for a flag."""
    return "Yes" if b else "No"


def ci(lo: Any, hi: Any, nd: int = 3) -> str:
    """An interval as "[lo, hi]"."""
    return f"[{fnum(lo, nd)}, {fnum(hi, nd)}]"


def frac(c: Mapping[str, Any] | None, nd: int = 2) -> str:
    """A rate with its counts, "1.70% (17/1,000)", from ``{"rate", "k", "n"}`` (None: "-- (0/0)")."""
    c = c or {}
    return f"{pct(c.get('rate'), nd)} ({c.get('k', 0):,}/{c.get('n', 0):,})"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A GitHub markdown table (strings printed as given), or the not-enough-data line."""
    rows = [[str(c) for c in r] for r in rows]
    if not rows:
        return [NOT_ENOUGH]
    return tabulate(rows, headers=list(headers), tablefmt="github", disable_numparse=True).splitlines()
