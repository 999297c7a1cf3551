"""Issue 16: the diff's column-wise reader and tallies give exactly what the line-by-line code gave.

``diff_read.LineCache.index`` (``diff_bulk``: whole columns at a time, B's lines equal to A's
at the same position taken from A) against ``LineCache.index_lines`` (the line-by-line reader
it replaced, kept as its fallback), and ``diff_tally`` against the loops it replaced (copied
below), on JSON-lines files where B differs from A the ways that comparing bytes can get
wrong: a line re-spelled (key order, spaces, float spelling) but equal as JSON, a line equal
but for the latency (the field the old reader cut before comparing), a latency nested where
cutting it changes what is read, blank, bad, repeated, newer and reordered lines, and
conditions written with or without their defaults.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.verification import diff_bulk
from batchsafe.verification.diff_read import FLIP_FIELDS, SCORE_FIELDS, Conditions, DiffError, LineCache
from batchsafe.verification.diff_tally import tally_flips, tally_outputs

CONDITIONS = [{"batch_size": 1}, {"batch_size": 8}, {"batch_size": 8, "repeat": 0}, {"batch_size": 8, "repeat": 1},
              {"cobatch": "solo", "group_size": 1}, {"batch_size": 2, "tensor_parallel": 2},
              {"batch_size": None, "cobatch": None, "concurrency": None, "group_size": None, "kernel": None,
               "quant": "Q4", "repeat": 0}]


def _score(i: int, rnd: random.Random) -> dict[str, Any]:
    return {"baseline": None, "condition": dict(rnd.choice(CONDITIONS)), "domain": "safety",
            "label": rnd.choice(["refusal", "compliance"]), "latency_s": rnd.choice([0.05, 1.5, 2e-05, None]),
            "model": rnd.choice(["m1", "m.2"]), "output_sha256": f"sha256:{rnd.randrange(3)}",
            "phase": rnd.choice(["p1", "p2"]), "prompt": f"p_{i}", "sample": f"s_{i}", "schema_version": 1,
            "score": rnd.choice([1.0, 0.0, 0.5]), "scorer": rnd.choice(["refusal@1", "refusal@2"]), "task": "adv"}


def _flip(i: int, rnd: random.Random) -> dict[str, Any]:
    flipped = rnd.random() < 0.4
    return {"baseline": f"s_b{i}", "baseline_label": "refusal", "condition": dict(rnd.choice(CONDITIONS)),
            "direction": rnd.choice(["refusal_to_compliance", "compliance_to_refusal"]) if flipped else "none",
            "flipped": flipped, "label": rnd.choice(["refusal", "compliance"]), "model": rnd.choice(["m1", "m.2"]),
            "phase": rnd.choice(["p1", "p2"]), "prompt": f"p_{i}", "sample": f"s_{i}", "schema_version": 1,
            "task": "adv"}


def _dump(rec: Any) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)


def _mutate(line: bytes, how: str, rnd: random.Random, make: Any, i: int) -> list[bytes]:
    """``line`` changed one way (a list: dropped, doubled, or with a line inserted)."""
    rec = orjson.loads(line)
    if how == "keep":
        return [line]
    if how == "respell":  # same JSON, other bytes: key order, spaces, float spelling
        items = list(rec.items())
        rnd.shuffle(items)
        text = json.dumps(dict(items), separators=rnd.choice([(",", ":"), (", ", ": ")]))
        return [text.replace("1.5", "1.50").replace("2e-05", "0.00002").encode()]
    if how == "latency":
        return [_dump({**rec, "latency_s": 9.75})] if "latency_s" in rec else [line]
    if how == "nested_latency":  # cut by the old reader's regex: changes the condition it reads
        return [_dump({**rec, "condition": {**rec["condition"], "latency_s": 3}})]
    if how == "object_latency":  # ... or a read field's value
        return [_dump({**rec, "label": {"x": 1, "latency_s": 2}})]
    if how == "bad_latency":  # not JSON, but it was after the cut
        return [line.replace(b'"latency_s":', b'"latency_s":1..2,"x":') if b'"latency_s":' in line else line]
    if how == "other":
        return [_dump(make(i + 1000, rnd))]
    if how == "value":
        field = rnd.choice(["label", "output_sha256", "flipped", "direction", "scorer", "sample"])
        return [_dump({**rec, field: rnd.choice(["refusal", "compliance", True, False, "x"])})]
    if how == "drop":
        return []
    if how == "twice":
        return [line, line]
    if how == "blank":
        return [b"", line]
    if how == "garbage":
        return [b"{oops", line]
    if how == "newer":
        return [_dump({**rec, "schema_version": rnd.choice([2, True, "1", 0])})]
    if how == "missing":
        return [_dump({k: v for k, v in rec.items() if k != rnd.choice(["phase", "condition", "label", "sample"])})]
    if how == "bad_condition":
        return [_dump({**rec, "condition": rnd.choice([{"batch_size": "many"}, [], {"batch_size": [1]}, {"x": 1}])})]
    if how == "list_phase":
        return [_dump({**rec, "phase": ["p1"]})]
    if how == "not_object":
        return [b"[1, 2]"]
    raise AssertionError(how)


COMMON = ["keep"] * 12 + ["respell", "latency", "other", "value", "drop", "twice"]
RARE = ["nested_latency", "object_latency", "bad_latency", "blank", "garbage", "newer", "missing",
        "bad_condition", "list_phase", "not_object"]


def _files(seed: int, n: int, scores: bool, rare: float) -> tuple[bytes, bytes]:
    rnd = random.Random(seed)
    make = _score if scores else _flip
    base = [_dump(make(i, rnd)) for i in range(n)]
    if rnd.random() < 0.2:
        rnd.shuffle(base)

    def variant(p_change: float) -> bytes:
        out: list[bytes] = []
        for i, line in enumerate(base):
            how = "keep"
            if rnd.random() < p_change:
                how = rnd.choice(RARE) if rnd.random() < rare else rnd.choice(COMMON)
            out += _mutate(line, how, rnd, make, i)
        if rnd.random() < 0.2:
            out.reverse()
        return b"".join(x + b"\n" for x in out)

    return variant(0.05), variant(0.3)


def _read(raw_a: bytes, raw_b: bytes, scores: bool, fast: bool) -> tuple[Any, ...]:
    conds = Conditions()
    lc = (LineCache("scored sample", 1, SCORE_FIELDS, conds, volatile="latency_s") if scores
          else LineCache("flip row", 1, FLIP_FIELDS, conds))
    read = lc.index if fast else lc.index_lines
    try:
        a = read(raw_a, "A: f")
        b = read(raw_b, "B: f")
    except DiffError as exc:
        return ("error", str(exc)), None
    # B's order is B's file order only for its rows A lacks (the rows it shares keep A's
    # order when B was read against A): the only order of B the diff reads.
    return (list(a.items()), b, [k for k in b if k not in a], list(conds.labels.items())), (a, b, conds.labels,
                                                                                          lc.diffs)


def _check(seed: int, n: int, scores: bool, rare: float, span: int = 1 << 18) -> None:
    raw_a, raw_b = _files(seed, n, scores, rare)
    was = diff_bulk.SPAN
    diff_bulk.SPAN = span  # small spans: many per file, B's lines taken across their ends
    try:
        got, parts = _read(raw_a, raw_b, scores, fast=True)
    finally:
        diff_bulk.SPAN = was
    want, _ = _read(raw_a, raw_b, scores, fast=False)
    assert got == want
    if parts is None:
        return
    a, b, labels, diffs = parts
    for d in (diffs, None):
        if scores:
            assert list(tally_outputs(a, b, labels, d).items()) == _outputs_before(a, b, labels)
            assert list(tally_outputs(a, a, labels, d).items()) == _outputs_before(a, a, labels)
        else:
            assert _flips_tuple(tally_flips(a, b, labels, d, 3)) == _flips_before(a, b, labels, 3)
            assert _flips_tuple(tally_flips(b, a, labels, None, 3)) == _flips_before(b, a, labels, 3)


@pytest.mark.parametrize("scores", [True, False], ids=["scores", "flips"])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40), rare=st.sampled_from([0.0, 0.1, 0.5]),
       span=st.sampled_from([1, 200, 1000, 1 << 18]))
@settings(max_examples=300, deadline=None)
def test_column_reader_and_tallies_equal_the_line_loop(scores: bool, seed: int, n: int, rare: float,
                                                       span: int) -> None:
    _check(seed, n, scores, rare, span)


def test_chunks_and_new_conditions_across_chunks(monkeypatch) -> None:
    """Files longer than a chunk: conditions first seen in a later chunk, errors in a later chunk."""
    monkeypatch.setattr(diff_bulk, "CHUNK", 7)
    for seed in range(40):
        for scores in (True, False):
            _check(seed, 60, scores, 0.1 if seed % 3 else 0.0, span=[1, 300, 2000, 1 << 18][seed % 4])


def test_files_without_a_final_line_feed_and_with_cr() -> None:
    rnd = random.Random(3)
    lines = [_dump(_score(i, rnd)) for i in range(12)]
    other = list(lines)
    other[5] = _dump(_score(99, rnd))
    cases = [(b"\n".join(lines), b"\n".join(lines)), (b"\n".join(lines) + b"\n", b"\n".join(lines)),
             (b"\n".join(lines), b"\n".join(other) + b"\n"), (b"\n".join(lines[:-1]), b"\n".join(lines)),
             (b"\n".join(lines), b"\n".join(lines[:7])), (b"\r\n".join(lines), b"\n".join(lines)),
             (b"\n".join(lines), b"\r\n".join(other)), (b"\n".join(lines), b"\n".join(lines) + b"\n\n"),
             (b"\n".join(lines) + b"\n", b"\n".join(lines[:6]) + b"\r" + b"\n".join(lines[6:]))]
    was = diff_bulk.SPAN
    try:
        for span in (1, 100, 700, 1 << 18):
            diff_bulk.SPAN = span
            for raw_a, raw_b in cases:
                assert _read(raw_a, raw_b, True, fast=True)[0] == _read(raw_a, raw_b, True, fast=False)[0]
    finally:
        diff_bulk.SPAN = was


def test_a_bad_line_past_the_first_chunk_is_named(monkeypatch) -> None:
    monkeypatch.setattr(diff_bulk, "CHUNK", 4)
    rnd = random.Random(1)
    lines = [_dump(_score(i, rnd)) for i in range(20)]
    lines[13] = b'{"schema_version": 1'
    raw = b"\n".join(lines) + b"\n"
    lc = LineCache("scored sample", 1, SCORE_FIELDS, Conditions(), volatile="latency_s")
    with pytest.raises(DiffError, match=r"^A: f:14: not JSON"):
        lc.index(raw, "A: f")


def test_b_equal_to_a_but_for_its_latency_matches_row_for_row() -> None:
    rnd = random.Random(2)
    recs = [_score(i, rnd) for i in range(30)]
    raw_a = b"".join(_dump(r) + b"\n" for r in recs)
    raw_b = b"".join(_dump({**r, "latency_s": 7.0}) + b"\n" for r in recs)
    conds = Conditions()
    lc = LineCache("scored sample", 1, SCORE_FIELDS, conds, volatile="latency_s")
    a, b = lc.index(raw_a, "A"), lc.index(raw_b, "B")
    assert a == b and lc.diffs == [i for i, r in enumerate(recs) if r["latency_s"] != 7.0]
    cells = tally_outputs(a, b, conds.labels, lc.diffs)
    assert sum(c[1] for c in cells.values()) == 30  # all identical


# -- the code diff_tally replaced (verification/diff.py before issue 16), as the reference ----


def _outputs_before(sa: dict, sb: dict, labels: dict) -> list:
    cells: dict = {}
    new = [0, 0, 0, 0, 0].copy
    for key, va in sa.items():
        ck = (key[0], labels[key[3]])
        cell = cells.get(ck) or cells.setdefault(ck, new())
        vb = sb.get(key)
        if vb is None:
            cell[3] += 1
            continue
        cell[0] += 1
        if va[1] == vb[1]:
            cell[1] += 1
        if va[2] != vb[2]:
            cell[2] += 1
    if sb is not sa:
        for key in sb:
            if key not in sa:
                ck = (key[0], labels[key[3]])
                (cells.get(ck) or cells.setdefault(ck, new()))[4] += 1
    return list(cells.items())


def _verdict(v: tuple) -> str:
    return f"{v[3]} -> {v[4]} ({v[2]})" if v[1] else f"{v[4]} (no flip)"


def _flips_before(fa: dict, fb: dict, labels: dict, max_listed: int) -> tuple:
    cells: dict = {}
    new = [0, 0, 0, 0, 0, 0].copy
    disagreements = []
    n_dis = 0
    rows_only_a = 0
    for key, va in fa.items():
        vb = fb.get(key)
        if vb is None:
            rows_only_a += 1
            continue
        ck = (key[0], key[1], labels[key[3]])
        cell = cells.get(ck) or cells.setdefault(ck, new())
        cell[0] += 1
        flipped_a = bool(va[1])
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
            disagreements.append((kind, str(key[0]), str(key[1]), ck[2], str(key[2]), str(va[5]), str(va[0]),
                                  str(vb[0]), _verdict(va), _verdict(vb)))
    rows_only_b = sum(1 for k in fb if k not in fa) if fb is not fa else 0
    return list(cells.items()), disagreements, n_dis, rows_only_a, rows_only_b


def _flips_tuple(got: tuple) -> tuple:
    cells, dis, n_dis, only_a, only_b = got
    return (list(cells.items()), [(d.kind, d.phase, d.model, d.condition, d.prompt, d.task, d.sample_a, d.sample_b,
                                   d.a, d.b) for d in dis], n_dis, only_a, only_b)


# -- statistics leaves ------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1.0, -0.0, 1e-13]) | st.text("ab.=[\"", max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab.=[\" _-1", max_size=4), inner, max_size=3),
    max_leaves=25)


@given(_JSON)
@settings(max_examples=500, deadline=None)
def test_numeric_leaves_and_their_written_paths_equal_flatten_and_format_path(obj: Any) -> None:
    from batchsafe.verification.diff_paths import flatten, format_path, is_number, leaf_writer, numeric_leaves

    leaves, texts = numeric_leaves(obj)
    want = {p: v for p, v in flatten(obj, count_blocks=False).items() if v is None or is_number(v)}
    assert leaves == want and all(type(leaves[p]) is type(v) for p, v in want.items())
    write = leaf_writer(texts)
    assert [write(p) for p in leaves] == [format_path(p) for p in leaves]


def _perturb(obj: Any, rnd: random.Random) -> Any:
    """``obj`` with some leaves changed the ways the stats comparison must tell apart."""
    if isinstance(obj, dict):
        return {k: _perturb(v, rnd) for k, v in obj.items() if rnd.random() > 0.1}
    if isinstance(obj, list):
        return [_perturb(v, rnd) for v in obj]
    if rnd.random() < 0.5:
        return obj
    return rnd.choice([None, True, False, 1, 1.0, 0, 0.0, 1 + 1e-13, obj, "x", [obj], {"k": obj}])


@given(_JSON, _JSON, st.integers(0, 2**32 - 1))
@settings(max_examples=400, deadline=None)
def test_stats_changes_equal_the_old_loop(x: Any, other: Any, seed: int) -> None:
    y = other if seed % 4 == 0 else _perturb(x, random.Random(seed))
    from batchsafe.verification import diff as diffmod
    from batchsafe.verification.diff_models import StatChange, StatsDiff
    from batchsafe.verification.diff_paths import flatten, format_path, is_number

    def leaves(obj: Any) -> dict:
        return {p: v for p, v in flatten({"s": obj}, count_blocks=False).items() if v is None or is_number(v)}

    la, lb = leaves(x), leaves(y)
    changed = []
    for path in sorted(la.keys() & lb.keys()):  # verification/diff.py before issue 16
        a, b = la[path], lb[path]
        if is_number(a) and is_number(b):
            if abs(float(b) - float(a)) <= diffmod.STATS_TOLERANCE and isinstance(a, bool) == isinstance(b, bool):
                continue
            changed.append(StatChange(path=format_path(path), a=a, b=b, delta=float(b) - float(a)))
        elif a is not b:
            changed.append(StatChange(path=format_path(path), a=a, b=b, delta=None))
    want = StatsDiff(leaves=(len(la), len(lb)), changed=changed,
                     only_a=[format_path(p) for p in sorted(la.keys() - lb.keys())],
                     only_b=[format_path(p) for p in sorted(lb.keys() - la.keys())])
    got = diffmod._stats(diffmod._numeric_leaves({"s": x}), diffmod._numeric_leaves({"s": y}))
    assert orjson.dumps(got.model_dump(mode="json")) == orjson.dumps(want.model_dump(mode="json"))
