"""Column-wise indexing of JSON-lines files for ``batchsafe diff`` (the common case, fast).

``diff_read.LineCache`` used to walk a file in a Python loop, one orjson call and a dozen
dict look-ups per line: most of a diff's time (5.5 of 9 s for two 300k-sample bundles).
Here the same work is done a column at a time with ``map``/``zip``/``itemgetter``, whose
loops run in C, and B's lines that are byte for byte A's line at the same position are not
parsed at all (two runs of one plan are aligned line by line and differ in few lines).

The result is exactly the old loop's (``LineCache.index_lines``, still the fallback): the
bulk path only accepts a chunk that the old loop's fast path would have accepted line for
line (a dict with an int ``schema_version`` in range, a condition already validated, every
field present, hashable keys, no repeated key), and validates each condition not seen yet
through ``LineCache.record`` on the first line that has it, as the old loop did. Anything
else (a blank line, bad JSON, a missing field, a newer version, a repeated key) returns
None and the caller runs the old loop over the whole file, which names the first bad line.
The old loop cut the volatile latency field out of score lines before parsing them; this
path parses them as written, which reads the same key and values unless one of those is an
object or a list (the cut can reach inside): such a chunk goes to the old loop too. A
condition is validated on its first line with the cut made, as the old loop saw it.

Files with CR in them are left to the old loop (here lines are split at LF only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import accumulate, chain, compress
from operator import itemgetter, ne
from typing import Any

import orjson

SPAN = 1 << 18
"""Bytes of a file split into lines at a time (about 500 lines of scores)."""

BLOCK = 16
"""Lines of A compared with B's as one byte string (most blocks are equal: they are not split)."""

CHUNK = 512
"""Lines parsed per step: bounds the parsed dicts alive at once (a 300k-line file parsed in one
go held ~1 GB of dicts) while each step still runs its loops in C."""

_VERSION, _COND = itemgetter("schema_version"), itemgetter("condition")
_PHASE, _MODEL, _PROMPT = itemgetter("phase"), itemgetter("model"), itemgetter("prompt")
_CONTAINERS = frozenset({dict, list})

Key = tuple[str, str, str, tuple[Any, ...]]
"""(phase, model, prompt, canonical condition): how samples are matched between bundles."""
Rows = tuple[list[Key], list[tuple[Any, ...]]]
Index = dict[Key, tuple[Any, ...]]
# The readers below take a ``diff_read.LineCache`` as ``cache`` (annotated ``Any``): this
# module sits below diff_read, which imports it, so it must not import diff_read back.
LineCache = Any


def bulk_rows(cache: LineCache, lines: Sequence[bytes], where: str,
              numbers: Sequence[int] | None = None) -> Rows | None:
    """(keys, picked values) of ``lines`` in order, or None where the old loop must decide.

    ``numbers`` are the lines' 0-based positions in their file (default: 0, 1, ...), for the
    line numbers of ``LineCache.record``'s messages.
    """
    keys: list[Key] = []
    vals: list[tuple[Any, ...]] = []
    for start in range(0, len(lines), CHUNK):
        part = lines[start:start + CHUNK]
        base = numbers[start:start + CHUNK] if numbers is not None else range(start, start + len(part))
        try:
            got = _chunk(cache, part, where, base)
        except Exception:  # noqa: BLE001 - any surprise: the old loop decides (and names the line)
            return None
        if got is None:
            return None
        keys += got[0]
        vals += got[1]
    return keys, vals


def _chunk(cache: LineCache, part: Sequence[bytes], where: str, numbers: Sequence[int]) -> Rows | None:
    recs = list(map(orjson.loads, part))  # a blank or bad line raises: the old loop decides
    versions = list(map(_VERSION, recs))  # TypeError for a non-object, KeyError for no version
    if versions and (set(map(type, versions)) != {int} or min(versions) < 1 or max(versions) > cache.current):
        return None
    # Conditions: each record's is a fresh dict; group equal ones (C speed) and look each group
    # up once, as the old loop looked up tuple(map(c.get, FIELDS)) per line.
    conds = list(map(_COND, recs))
    names, groups = _condition_groups(conds)
    canon_of: dict[Any, tuple[Any, ...]] = dict.fromkeys(groups)  # type: ignore[arg-type]
    seen = cache.conds.seen
    for group in canon_of:
        cond = dict(zip(names, group)) if names is not None else dict(group)
        raw = tuple(map(cond.get, cache.cond_fields))
        canon = seen.get(raw)
        if canon is None:
            # First line with this condition: the old loop validated it through record(), on
            # the line as it read it (volatile field cut); so does this, which registers it.
            j = groups.index(group)
            line = part[j] if cache.volatile is None else cache.volatile.sub(b"", part[j])
            cache.record(line, where, numbers[j] + 1)
            canon = seen[raw]
        canon_of[group] = canon
    phases, models, prompts = list(map(_PHASE, recs)), list(map(_MODEL, recs)), list(map(_PROMPT, recs))
    vals = list(map(cache.pick, recs))
    if cache.volatile is not None and not _CONTAINERS.isdisjoint(
            set(map(type, chain(phases, models, prompts, chain.from_iterable(vals))))):
        # The old loop read these lines with the volatile field cut, which can change a nested
        # object or list but no scalar: only scalars are taken as read here.
        return None
    keys = list(zip(phases, models, prompts, map(canon_of.__getitem__, groups)))
    return keys, vals


def _condition_groups(conds: list[Any]) -> tuple[tuple[str, ...] | None, list[Any]]:
    """Per condition, a hashable value equal for equal conditions: when all have the first's
    keys, (those keys, the tuples of their values); else (None, the tuples of their items)."""
    names = tuple(conds[0]) if type(conds[0]) is dict else ()
    if len(names) > 1 and set(map(len, conds)) == {len(names)}:
        try:
            return names, list(map(itemgetter(*names), conds))  # same size, all these keys: same keys
        except (KeyError, TypeError):
            pass
    return None, list(map(tuple, map(dict.items, conds)))


def _spans(raw: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive runs of whole lines of about ``SPAN`` bytes; each ends just
    after a line feed, but the last, which ends with the file."""
    pos, n = 0, len(raw)
    while pos < n:
        cut = raw.find(b"\n", pos + SPAN - 1)
        end = n if cut < 0 else cut + 1
        yield pos, end
        pos = end


def _lines(raw: bytes, start: int, end: int) -> list[bytes]:
    """The lines of ``raw[start:end]`` (a file without CR: ``splitlines`` there is a split at LF)."""
    lines = raw[start:end].split(b"\n")
    if not lines[-1]:
        lines.pop()  # after the last line feed
    return lines


def read_rows(cache: LineCache, raw: bytes, where: str) -> tuple[Rows, list[tuple[int, int, int, list[int]]]] | None:
    """``bulk_rows`` of a file without CR, split a span at a time (no list of all its lines: a
    300k-line file's was 150 MB more, built in fresh memory); also the spans, as (start, end,
    lines, where every BLOCK-th line starts), for ``aligned_index``."""
    keys: list[Key] = []
    vals: list[tuple[Any, ...]] = []
    spans = []
    first = 0
    for start, end in _spans(raw):
        lines = _lines(raw, start, end)
        try:
            got = _chunk(cache, lines, where, range(first, first + len(lines)))
        except Exception:  # noqa: BLE001 - any surprise: the old loop decides (and names the line)
            return None
        if got is None:
            return None
        keys += got[0]
        vals += got[1]
        # Where every BLOCK-th line starts, for aligned_index to compare B with A a block at a time.
        at = list(accumulate(map(len, lines), initial=0))
        spans.append((start, end, len(lines), [start + at[j] + j for j in range(0, len(lines), BLOCK)] + [end]))
        first += len(lines)
    return (keys, vals), spans


def _take(raw: bytes, pos: int, count: int, hint: int) -> tuple[list[bytes], int]:
    """The next ``count`` lines of ``raw`` from ``pos`` (fewer where the file ends), and the
    position after them; ``hint``: about how many bytes they take."""
    n = len(raw)
    end = min(pos + hint + 64, n)
    while True:
        parts = raw[pos:end].split(b"\n", count)
        if len(parts) > count:  # ``count`` whole lines
            del parts[count:]
            return parts, pos + sum(map(len, parts)) + count
        if end >= n:
            if not parts[-1]:
                parts.pop()  # after the last line feed
            return parts, n
        end = min(pos + 2 * (end - pos) + 1, n)


def aligned_index(cache: LineCache, raw: bytes, where: str,
                  prev: tuple[bytes, list[tuple[int, int, int, list[int]]], Rows, Index]
                  ) -> tuple[Index, list[int]] | None:
    """B's records by key, given A's bytes, spans, rows and records, and the positions of B's
    lines that are not A's line at the same position (or None where the line loop decides).

    B's line at a position where A has the same line is A's record: the same key and the
    very same values tuple (which the diff's counters rely on: ``va is vb`` means the two
    rows agree on every field); only the other lines are parsed. A block of A's lines whose
    bytes B has at the same place is not even split, and B's records start as a copy of A's
    (one C copy instead of 300k insertions): the rows B shares with A keep A's order and
    B's other rows follow in B's order, which is all the diff reads of B's order.
    """
    raw_a, spans_a, (keys_a, _), index_a = prev
    view = memoryview(raw_a)
    todo: list[int] = []
    todo_lines: list[bytes] = []
    pos, n = 0, len(raw)
    i = 0  # line number (0-based) in both files
    blocks = ((marks[q], marks[q + 1], min(BLOCK, count - q * BLOCK))
              for start, end, count, marks in spans_a for q in range(len(marks) - 1))
    for start, end, count in blocks:
        if pos >= n:
            break
        if raw_a[end - 1] == 10 and raw.startswith(view[start:end], pos):  # whole lines, all equal
            pos += end - start
            i += count
            continue
        lines_a = _lines(raw_a, start, end)
        lines, pos = _take(raw, pos, count, end - start)
        differ = list(compress(range(len(lines)), map(ne, lines, lines_a)))
        todo += [i + j for j in differ]
        todo_lines += [lines[j] for j in differ]
        i += len(lines)
        if len(lines) < count:  # B ends here
            break
    if pos < n:  # B's lines past A's last
        rest = _lines(raw, pos, n)
        todo += range(i, i + len(rest))
        todo_lines += rest
        i += len(rest)
    got = bulk_rows(cache, todo_lines, where, todo) if todo else ([], [])
    if got is None:
        return None
    out = dict(index_a)
    for j in todo:  # A's rows where B has another line (keys are unique: each is there once)
        if j >= len(keys_a):
            break
        del out[keys_a[j]]
    for j in range(i, len(keys_a)):  # A's rows past B's last line
        del out[keys_a[j]]
    try:
        for k, v in zip(*got):
            if k in out:
                return None  # a repeated key: the line loop names it
            out[k] = v
    except TypeError:  # an unhashable key: likewise
        return None
    return out, todo
