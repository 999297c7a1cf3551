"""Output identity and flip agreement of matched rows, for ``batchsafe diff``.

Both tallies walk A's rows in file order and look each up in B by key. Done row by row in
Python that was a second per 300k rows; here every row is first counted as if B had it
exactly as A (matched, identical, agreeing) with one C-level ``Counter`` per table, and
then only the rows that may differ are visited in Python, their assumed contribution taken
back and their real one added, as the old loop counted it. "May differ": a superset of the
rows whose B value is not A's very tuple (``diff_read`` gives a B line equal to A's line
the same tuple, and parsed JSON equals itself: orjson makes no NaN, so such a pair agrees
on every field). ``diffs`` from ``diff_read`` names them when B was read against A;
without it they are found by looking every key up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import compress, filterfalse
from operator import is_not, itemgetter
from typing import Any

from .diff_models import FlipDisagreement
from .diff_read import Key

Index = dict[Key, tuple[Any, ...]]

_PHASE_COND, _PHASE_MODEL_COND, _FLIPPED = itemgetter(0, 3), itemgetter(0, 1, 3), itemgetter(1)


def rows_to_visit(sa: Index, sb: Index, diffs: Sequence[int] | None) -> tuple[list[Key], list[tuple[Any, ...]], list[int]]:
    """A's keys and values in order, and the positions of A's rows whose B value may not be A's tuple.

    ``diffs``: positions of B's lines that were not A's line at the same position (sorted; B
    read against A), or None when unknown.
    """
    keys, vals = list(sa), list(sa.values())
    n = len(keys)
    if sb is sa:
        return keys, vals, []
    if diffs is None:
        return keys, vals, list(compress(range(n), map(is_not, vals, map(sb.get, keys))))
    # A row at a position where B's line was A's line has A's tuple in B (keys are unique).
    other = [i for i in diffs if i < n]
    other += range(min(len(sb), n), n)  # A's rows past B's last line
    return keys, vals, other


def tally_outputs(sa: Index, sb: Index, labels: dict[tuple[Any, ...], str],
                  diffs: Sequence[int] | None) -> dict[tuple[str, str], list[int]]:
    """cell (phase, condition label) -> [matched, identical, labels_changed, only_a, only_b],
    cells in A's order of first appearance, then B's."""
    keys, vals, other = rows_to_visit(sa, sb, diffs)
    cells: dict[tuple[Any, str], list[int]] = {}
    for (phase, canon), n in Counter(map(_PHASE_COND, keys)).items():  # first appearance order
        ck = (phase, labels[canon])
        c = cells.get(ck) or cells.setdefault(ck, [0, 0, 0, 0, 0])
        c[0] += n
        c[1] += n
    get = sb.get
    for i in other:
        key, va = keys[i], vals[i]
        vb = get(key)
        c = cells[(key[0], labels[key[3]])]
        c[0] -= 1  # take back "matched and identical"
        c[1] -= 1
        if vb is None:
            c[3] += 1
            continue
        c[0] += 1
        if va[1] == vb[1]:
            c[1] += 1
        if va[2] != vb[2]:
            c[2] += 1
    if len(sb) > sum(c[0] for c in cells.values()):  # some of B's rows are not matched
        for key in filterfalse(sa.__contains__, sb):  # B's order: cells first seen in B come out stably
            ck = (key[0], labels[key[3]])
            (cells.get(ck) or cells.setdefault(ck, [0, 0, 0, 0, 0]))[4] += 1
    return cells


def _verdict(v: tuple[Any, ...]) -> str:
    # v: sample, flipped, direction, baseline_label, label, task
    return f"{v[3]} -> {v[4]} ({v[2]})" if v[1] else f"{v[4]} (no flip)"


def tally_flips(fa: Index, fb: Index, labels: dict[tuple[Any, ...], str], diffs: Sequence[int] | None,
                max_listed: int) -> tuple[dict[tuple[Any, Any, str], list[int]], list[FlipDisagreement], int, int, int]:
    """(cells, disagreements listed, disagreements in all, rows only in A, rows only in B).

    cell (phase, model, condition label) -> [matched, agree, both_flipped, direction, only_a,
    only_b], made at its first matched row in A's order; disagreements in A's order, at most
    ``max_listed``.
    """
    keys, vals, other = rows_to_visit(fa, fb, diffs)
    cells: dict[tuple[Any, Any, str], list[int]] = {}
    for (phase, model, canon), n in Counter(map(_PHASE_MODEL_COND, keys)).items():
        ck = (phase, model, labels[canon])
        c = cells.get(ck) or cells.setdefault(ck, [0, 0, 0, 0, 0, 0])
        c[0] += n
        c[1] += n
    for (phase, model, canon), n in Counter(map(_PHASE_MODEL_COND, compress(keys, map(_FLIPPED, vals)))).items():
        cells[(phase, model, labels[canon])][2] += n
    disagreements: list[FlipDisagreement] = []
    n_dis = rows_only_a = 0
    get = fb.get
    for i in other:
        key, va = keys[i], vals[i]
        vb = get(key)
        ck = (key[0], key[1], labels[key[3]])
        cell = cells[ck]
        flipped_a = bool(va[1])
        cell[0] -= 1  # take back "matched and agreeing"
        cell[1] -= 1
        cell[2] -= flipped_a
        if vb is None:
            rows_only_a += 1
            continue
        cell[0] += 1
        if flipped_a != bool(vb[1]):
            kind = "only_a" if flipped_a else "only_b"
            cell[4 if flipped_a else 5] += 1
        elif not flipped_a:
            cell[1] += 1
            continue
        elif va[2] == vb[2]:
            cell[1] += 1
            cell[2] += 1
            continue
        else:
            kind = "direction"
            cell[3] += 1
        n_dis += 1
        if len(disagreements) < max_listed:
            disagreements.append(FlipDisagreement(
                kind=kind, phase=str(key[0]), model=str(key[1]), condition=ck[2], prompt=str(key[2]),
                task=str(va[5]), sample_a=str(va[0]), sample_b=str(vb[0]), a=_verdict(va), b=_verdict(vb)))
    if rows_only_a:
        # A cell is made at its first *matched* row: with rows only in A, order (and keep) the
        # cells by the matched rows alone.
        in_b = map(fb.__contains__, keys)
        order = dict.fromkeys((k[0], k[1], labels[k[3]]) for k in compress(keys, in_b))
        cells = {ck: cells[ck] for ck in order}
    # Keys are unique on each side: B's rows not matched are B's rows less the matched ones.
    rows_only_b = len(fb) - sum(c[0] for c in cells.values())
    return cells, disagreements, n_dis, rows_only_a, rows_only_b
