"""Fast readers of a bundle's analysis files for ``batchsafe diff``.

JSONL lines are parsed with orjson into plain dicts, not validated per row by pydantic,
and read column-wise (``diff_bulk``): whole columns of a few hundred lines at a time, and
B's lines that are byte for byte A's line at the same position not parsed again (two runs
of one plan differ in few lines); a file with the same digest in both is read once. What
is checked per line: a JSON object, a ``schema_version`` this batchsafe understands (newer
is refused), the fields the diff reads, and a sample key (phase, model, prompt, condition)
that does not repeat. Each distinct condition is validated once by
``compiler.plan.Condition``. Anything unusual goes through the line-by-line reader
(``LineCache.index_lines``), which names the first bad line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson
from pydantic import ValidationError

from batchsafe.analysis.flips import FLIP_SCHEMA_VERSION
from batchsafe.analysis.records import SCORED_SCHEMA_VERSION
from batchsafe.core import layout
from batchsafe.core.jsonl import JsonLineError, parse_line
from batchsafe.bundles.manifest import BundleError
from batchsafe.compiler.plan import Condition

from .diff_bulk import Key, Rows, aligned_index, read_rows
from .source import BundleSource

SCORES, FLIPS, STATS, ENVIRONMENT, PLAN = layout.SCORES, layout.FLIPS, layout.STATS, layout.ENVIRONMENT, layout.PLAN
REQUIRED = (SCORES, FLIPS, STATS)

COND_FIELDS = tuple(Condition.model_fields)
SCORE_FIELDS = ("sample", "output_sha256", "label", "scorer", "task")
FLIP_FIELDS = ("sample", "flipped", "direction", "baseline_label", "label", "task")


class DiffError(BundleError, ValueError):
    """A bundle the diff cannot use: no analysis files, a malformed or newer record (named by file and line)."""


def require_analysis(src: BundleSource, side: str) -> None:
    """Refuse a bundle without the analysis files the diff compares."""
    missing = [n for n in REQUIRED if not src.has(n)]
    if missing:
        hint = (f"analyse it first: batchsafe analyze {src.bundle_id}" if src.has(layout.OUTPUTS)
                else "it has no outputs either")
        raise DiffError(f"bundle {side} ({src.bundle_id}, {src.where}) has no {', '.join(missing)}: "
                        f"diff compares analysed bundles; {hint}")


class Conditions:
    """Canonical form and label of record conditions, each distinct condition validated once."""

    def __init__(self) -> None:
        self.seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        """Raw condition values (field order) -> canonical tuple, for conditions already validated."""
        self.labels: dict[tuple[Any, ...], str] = {}
        """Canonical condition -> ``Condition.label()``."""

    def canonical(self, cond: Any) -> tuple[Any, ...]:
        """The condition as a tuple in field order, defaults filled (raises ValueError if invalid)."""
        raw = tuple(map(cond.get, COND_FIELDS))
        canon = self.seen.get(raw)
        if canon is None:
            try:
                c = Condition.model_validate(cond)
            except ValidationError as exc:
                raise ValueError(f"invalid condition {cond!r}: {' '.join(str(exc).splitlines()[1:3])}") from None
            canon = tuple(getattr(c, f) for f in COND_FIELDS)
            self.seen[raw] = canon
            self.labels[canon] = c.label()
        return canon


class LineCache:
    """Reader of one kind of file, shared by A and B: B's lines that A has at the same position
    (column-wise path) or anywhere (line-by-line path) are not parsed again."""

    def __init__(self, what: str, current: int, fields: Sequence[str], conds: Conditions,
                 volatile: str | None = None) -> None:
        self.what, self.current, self.conds = what, current, conds
        self.pick = itemgetter(*fields)
        self.cond_fields = COND_FIELDS
        self.lines: dict[bytes, tuple[Key, tuple[Any, ...]]] = {}
        """Parsed lines of the line-by-line path (the column-wise path compares B with A by position)."""
        self.prev: tuple[bytes, list[tuple[int, int, int, list[int]]], Rows, dict[Key, tuple[Any, ...]]] | None = None
        self.diffs: list[int] | None = None
        """After B was read against A: positions of B's lines that were not A's line there."""
        # A numeric field that differs between any two runs (latency) and that the diff does
        # not read: the line-by-line path cuts it from the lines (as written, canonical: a
        # number or null between ',' and ',' or '}') so that the rest can match byte for byte.
        # The column-wise path parses the lines as they are and takes only what the cut
        # cannot change (see diff_bulk._chunk).
        self.volatile = re.compile(rb',"' + re.escape(volatile.encode()) + rb'":(?:[-+0-9.eE]+|null)(?=[,}])'
                                   ) if volatile else None

    def record(self, line: bytes, where: str, n: int) -> tuple[Key, tuple[Any, ...]]:
        """(sample key, picked fields) of one JSONL line; DiffError naming ``where:n`` when it is unusable."""
        try:
            r = parse_line(line, where, n, self.what, self.current)
        except JsonLineError as exc:
            raise DiffError(str(exc)) from None
        try:
            key = (r["phase"], r["model"], r["prompt"], self.conds.canonical(r["condition"]))
            hash(key)
            return key, self.pick(r)
        except KeyError as exc:
            raise DiffError(f"{where}:{n}: sample {r.get('sample')!r}: missing field {exc}") from None
        except (TypeError, AttributeError, ValueError) as exc:
            raise DiffError(f"{where}:{n}: sample {r.get('sample')!r}: {exc}") from None

    def index(self, raw: bytes, where: str) -> dict[Key, tuple[Any, ...]]:
        """Records of a JSONL file by sample key (file order); a repeated key is an error.

        Column-wise (``diff_bulk``) when the file is well formed, B's lines that equal A's
        at the same position taken from A (B's dict then has A's order for the rows they
        share: see ``aligned_index``); otherwise, or to name an error, line by line.
        """
        prev, self.prev = self.prev, None  # A's bytes, spans and rows, kept for B only
        self.diffs = None
        if b"\r" in raw:  # the column-wise path splits lines at LF alone
            return self.index_lines(raw, where)
        if prev is not None:
            got = aligned_index(self, raw, where, prev)
            if got is None:
                return self.index_lines(raw, where)
            out, self.diffs = got
            return out
        got_a = read_rows(self, raw, where)
        if got_a is not None:
            rows, spans = got_a
            try:
                out = dict(zip(*rows))
            except TypeError:  # an unhashable key: named below
                out = {}
            if len(out) == len(rows[0]):  # else a repeated or unhashable key: named below
                self.prev = (raw, spans, rows, out)
                return out
        return self.index_lines(raw, where)

    def index_lines(self, raw: bytes, where: str) -> dict[Key, tuple[Any, ...]]:
        """``index`` line by line: the reference the column-wise path must equal, and its fallback."""
        out: dict[Key, tuple[Any, ...]] = {}
        known, loads, pick, seen, current = self.lines, orjson.loads, self.pick, self.conds.seen, self.current
        if self.volatile is not None:
            raw = self.volatile.sub(b"", raw)
        for n, line in enumerate(raw.splitlines(), 1):
            hit = known.get(line)
            if hit is None:
                # Fast path for well-formed lines; anything unusual (a blank line, a new
                # condition, an error) goes through record().
                try:
                    r = loads(line)
                    v = r["schema_version"]
                    c = r["condition"]
                    canon = seen[tuple(map(c.get, COND_FIELDS))] if type(v) is int and 0 < v <= current else None
                    if canon is None:
                        raise LookupError
                    key = (r["phase"], r["model"], r["prompt"], canon)
                    hit = (key, pick(r))
                    hash(key)
                except (ValueError, LookupError, TypeError, AttributeError):
                    if not line.strip():
                        continue
                    hit = self.record(line, where, n)
                known[line] = hit
            key, val = hit
            if key in out:
                raise DiffError(f"{where}:{n}: sample {val[0]!r} repeats the key (phase, model, prompt, "
                                f"condition) of sample {out[key][0]!r}")
            out[key] = val
        return out


class SideData:
    """What the diff reads from one bundle, parsed once per distinct file digest."""

    def __init__(self, src: BundleSource, side: str, conds: Conditions, cache: dict[Any, Any]) -> None:
        require_analysis(src, side)
        self.src = src
        self.side = side

        def load(name: str, build: Any) -> Any:
            # Same bytes in A and B (by manifest digest): parse them once.
            ck = (name, src.entry(name).sha256)
            if ck not in cache:
                cache[ck] = build(src.read(name), f"{side}: {name}")
            return cache[ck]

        if "lines" not in cache:
            cache["lines"] = {SCORES: LineCache("scored sample", SCORED_SCHEMA_VERSION, SCORE_FIELDS, conds,
                                                volatile="latency_s"),
                              FLIPS: LineCache("flip row", FLIP_SCHEMA_VERSION, FLIP_FIELDS, conds)}
        lines = cache["lines"]
        self.scores: dict[Key, tuple[Any, ...]] = load(SCORES, lines[SCORES].index)
        self.flips: dict[Key, tuple[Any, ...]] = load(FLIPS, lines[FLIPS].index)
        self.diffs: dict[str, list[int] | None] = {}
        """B only: ``LineCache.diffs`` of its scores and flips (None: not read against A's)."""
        if side == "B":  # A's lines, kept to compare B's with, are not needed any more
            for name, lc in lines.items():
                self.diffs[name] = lc.diffs  # None unless B's file was read (a same-digest file is A's)
                lc.prev = None
        self.stats: dict[str, Any] = load(STATS, _json_object)
        self.environment: dict[str, Any] | None = (load(ENVIRONMENT, _json_object) if src.has(ENVIRONMENT)
                                                   else None)

    def digest(self, name: str) -> str | None:
        """Manifest digest of ``name``, None when the bundle lacks it."""
        return self.src.entry(name).sha256 if self.src.has(name) else None


def _json_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DiffError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DiffError(f"{where}: top level must be a JSON object")
    return data
