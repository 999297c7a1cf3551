"""Positioned, user-facing errors for spec compilation.

Every problem the compiler finds in a user's spec becomes a :class:`Diagnostic`
that names the file, the 1-based line and column, the key path inside the
document and a short machine-readable ``code``.  Problems are collected rather
than raised one at a time, then raised together as one :class:`SpecError`, so a
user fixes a whole spec in one edit/compile round instead of one error per run.

Formatted output (stable; golden tests compare it byte for byte)::

    specs/sweep.yaml:12:7: error[out-of-range] phases[2].axes.batch_sizes[1]: value 0 is below the minimum 1
        hint: batch sizes count requests, so they start at 1
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Diagnostic", "SpecError", "format_path", "sort_key",
    "type_name", "show_value", "describe_value", "join_names", "did_you_mean", "first_sentence",
    "clip", "safe_text", "ECHO_LIMIT",
]

# Keys made only of these characters print bare (``a.b_c``); anything else is
# quoted (``a['x.y']``) so that a path always reads back unambiguously.
_BARE_KEY = re.compile(r"[A-Za-z0-9_\-]+\Z")
_WS = re.compile(r"\s+")


ECHO_LIMIT = 80
"""Longest run of non-space characters a message echoes; longer ones are cut with ``...``."""
_LONG_TOKEN = re.compile(r"\S{%d,}" % (ECHO_LIMIT + 1))


def safe_text(text: str) -> str:
    """``text`` with control, format (bidi, zero-width) and separator characters escaped as ``\\uXXXX``.

    A spec or bundle may carry U+202E and friends; echoed raw they would reorder or hide
    the rest of a terminal line, so no message prints them as they are.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else
                   (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}") for c in text)


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` made safe to echo (see :func:`safe_text`) and cut to ``limit`` characters with ``...``."""
    text = safe_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    # Messages often embed user text or library messages that may hold newlines;
    # the format promises exactly one line per message and per hint.  Echoed values are
    # made safe and capped here too, as a net under every message builder: a
    # 5,000-digit number or a megabyte-long key must not be printed whole.
    text = safe_text(_WS.sub(" ", text).strip())
    return _LONG_TOKEN.sub(lambda m: m.group(0)[: ECHO_LIMIT - 3] + "...", text)


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in a spec, at an exact place.

    Field order is the natural sort order (file, then position, then path), so a
    sorted list of diagnostics reads top to bottom through each file.
    """

    file: str
    """Path as the user gave it, or as resolved relative to the including file;
    never made absolute when it was relative, so output is machine-independent."""
    line: int
    """1-based line number."""
    col: int
    """1-based column number."""
    path: str
    """Key path such as ``phases[2].axes.batch_sizes[1]``; ``""`` for the document root."""
    code: str
    """Short slug naming the kind of problem (``unknown-key``, ``wrong-type``, ...)."""
    message: str
    """One-line description of what is wrong."""
    hint: str = ""
    """One-line suggestion of how to fix it; may be empty."""
    note: str = ""
    """One-line secondary position or context (where a YAML parser gave up, the anchor an
    alias copies, ...); may be empty."""

    def __post_init__(self) -> None:
        # Normalise here (not in format()) so equality, hashing and dedup see the
        # same text that is printed.
        object.__setattr__(self, "message", _one_line(self.message))
        object.__setattr__(self, "hint", _one_line(self.hint))
        object.__setattr__(self, "note", _one_line(self.note))
        object.__setattr__(self, "path", _one_line(self.path))

    def format(self) -> str:
        """Render as ``{file}:{line}:{col}: error[{code}] {path}: {message}``.

        The `` {path}`` part is left out for the document root
        (``error[{code}]: {message}``); a non-empty hint adds a second line
        ``    hint: {hint}``.
        """
        where = f" {self.path}" if self.path else ""
        out = f"{safe_text(self.file)}:{self.line}:{self.col}: error[{self.code}]{where}: {self.message}"
        if self.note:
            out += f"\n    note: {self.note}"
        if self.hint:
            out += f"\n    hint: {self.hint}"
        return out


def sort_key(d: Diagnostic) -> tuple:
    """Sort key used everywhere: (file, line, col, path, message, code, hint, note)."""
    return (d.file, d.line, d.col, d.path, d.message, d.code, d.hint, d.note)


class SpecError(BatchsafeError):
    """A spec is invalid; carries every problem found, sorted and deduplicated.

    ``str(err)`` is all diagnostics formatted, one after another, newline-separated.
    """

    diagnostics: list[Diagnostic]
    """Non-empty, sorted by :func:`sort_key`, without duplicates."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        diags = sorted(set(diagnostics), key=sort_key)
        if not diags:
            # An empty SpecError would print nothing and fail the user silently.
            raise ValueError("SpecError needs at least one Diagnostic")
        self.diagnostics = diags
        super().__init__(self.format())

    def format(self) -> str:
        """All diagnostics formatted, newline-separated."""
        return "\n".join(d.format() for d in self.diagnostics)

    def render(self) -> list[str]:
        """Every diagnostic on its own line, then the count."""
        n = len(self.diagnostics)
        return [d.format() for d in self.diagnostics] + [f"{n} error{'s' if n != 1 else ''}"]

    def __str__(self) -> str:
        return self.format()


def format_path(parts: Sequence[str | int]) -> str:
    """Render a key path: ``("phases", 2, "axes")`` -> ``phases[2].axes``; ``()`` -> ``""``.

    Integers are list indices (``[2]``); string keys that are not plain
    identifiers-with-dashes are quoted (``a['x.y']``) so the path stays unambiguous.
    """
    out: list[str] = []
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(f"[{part}]")
        else:
            key = str(part)
            if _BARE_KEY.match(key):
                out.append(f".{key}" if out else key)
            else:
                out.append(f"[{key!r}]")
    return "".join(out)


# Message helpers, shared by every check so that all diagnostics speak the same
# YAML-ish language (mapping/list/null, true/false) rather than Python's.


def type_name(v: Any) -> str:
    """YAML-ish type name: integer, number, string, boolean, mapping, list, null."""
    for t, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                    (dict, "mapping"), (list, "list")):
        if isinstance(v, t):
            return name
    return "null" if v is None else type(v).__name__


def show_value(v: Any) -> str:
    """Short YAML-ish rendering: ``'text'``, ``8``, ``true``, ``null``, ``a mapping``."""
    if isinstance(v, str):
        return repr(v if len(v) <= 60 else v[:57] + "...")
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, int) and abs(v) >= 10 ** 40:
        # repr() of a huge int is slow and, past 4300 digits, raises; say how big it is instead.
        head, digits = _int_head(v)
        return f"{'-' if v < 0 else ''}{head}... ({digits} digits)"
    if isinstance(v, (int, float)):
        return repr(v)
    return f"a {type_name(v)}"


def _int_head(v: int) -> tuple[str, int]:
    """(first 12 digits, number of digits) of a big integer, without converting all of it
    to text (``str`` refuses more than 4,300 digits)."""
    a = abs(v)
    digits = int(a.bit_length() * 0.30102999566398)  # log10(2): exact or one short
    digits += a >= 10 ** digits
    return str(a // 10 ** max(0, digits - 12)), digits


def describe_value(v: Any) -> str:
    """Type plus value for scalars: ``string ('8')``, ``integer (8)``; just the type otherwise."""
    return f"{type_name(v)} ({show_value(v)})" if isinstance(v, (str, int, float)) else type_name(v)


def join_names(items: Sequence[Any], limit: int = 12) -> str:
    """``a, b, c`` (strings bare, other values YAML-ish), truncated after ``limit`` items."""
    shown = [i if isinstance(i, str) else show_value(i) for i in items]
    more = f", ... ({len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def did_you_mean(word: Any, options: Iterable[Any]) -> str:
    """``did you mean 'x'?`` for the closest string option (difflib), else ``""``."""
    if not isinstance(word, str):
        return ""
    hit = difflib.get_close_matches(word, [o for o in options if isinstance(o, str)], n=1, cutoff=0.6)
    return f"did you mean {hit[0]!r}?" if hit else ""


def first_sentence(text: Any) -> str:
    """First sentence of a description (used as a hint); ``""`` for non-strings."""
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0] if isinstance(text, str) else ""
