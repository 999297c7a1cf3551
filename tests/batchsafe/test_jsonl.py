"""batchsafe.jsonl: the one-call fast path gives what line-by-line parsing gives, and every
bad line is named by its number."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchsafe.core.jsonl import JsonLineError, parse_line, parse_lines

records = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-5, 5), st.text(max_size=5), st.none()),
                          max_size=3).map(lambda d: {**d, "schema_version": 1})
junk = st.sampled_from([b"{", b"[1, 2]", b"1, 2", b"null", b'{"schema_version": 2}', b'{"schema_version": true}',
                        b"{}", b"   ", b""])


@given(st.lists(st.one_of(records.map(lambda d: json.dumps(d).encode()), junk), max_size=8))
def test_fast_path_agrees_with_line_by_line(lines):
    raw = b"\n".join(lines)
    try:
        got = parse_lines(raw, "f.jsonl", "thing", 1)
    except JsonLineError as exc:
        # The first bad non-blank line, by number, is the one named.
        bad = next(n for n, line in enumerate(raw.splitlines(), 1) if line.strip()
                   and _fails(line, n))
        assert str(exc).startswith(f"f.jsonl:{bad}: ")
        return
    assert got == [(n, json.loads(line)) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]


def _fails(line: bytes, n: int) -> bool:
    try:
        parse_line(line, "f.jsonl", n, "thing", 1)
    except JsonLineError:
        return True
    return False


@pytest.mark.parametrize("line,message", [
    (b"{", "f.jsonl:3: not JSON"),
    (b"1, 2", "f.jsonl:3: not JSON"),
    (b"[1]", "f.jsonl:3: a thing must be a JSON object"),
    (b'{"schema_version": 2}', "f.jsonl:3: thing schema_version 2 is newer than this batchsafe understands (1)"),
    (b'{"schema_version": true}', "f.jsonl:3: thing has no valid schema_version (True)"),
    (b"{}", "f.jsonl:3: thing has no valid schema_version (None)"),
])
def test_messages_name_the_line(line, message):
    raw = b'{"schema_version":1}\n\n' + line + b'\n{"schema_version":1}\n'
    with pytest.raises(JsonLineError) as err:
        parse_lines(raw, "f.jsonl", "thing", 1)
    assert str(err.value).startswith(message)
    assert parse_lines(b'{"a":1}\n', "f", "output", None) == [(1, {"a": 1})]  # unversioned records


def test_a_line_break_moved_inside_a_record_is_not_proven_canonical() -> None:
    # Two records either way, and the lines joined by commas equal the list's dump; only a
    # per-line parse sees that neither line is a JSON value.
    import orjson

    from batchsafe.core.jsonl import parse_lines_bulk, sorted_dump_matches

    good = b'{"a":1,"b":2}\n{"c":3}\n'
    assert parse_lines_bulk(good, "f", "thing", None) == ([(1, {"a": 1, "b": 2}), (2, {"c": 3})], True)
    assert sorted_dump_matches(good, [{"a": 1, "b": 2}, {"c": 3}])
    for bad in (b'{"a":1\n"b":2},{"c":3}\n', b'{"x":[{"a":1}\n{"b":2}]},{"c":3}\n'):
        lines = [line for line in bad.splitlines() if line]
        assert len(orjson.loads(b"[" + b",".join(lines) + b"]")) == len(lines) == 2
        with pytest.raises(JsonLineError, match="f:1: not JSON"):
            parse_lines_bulk(bad, "f", "thing", None)


@given(st.lists(records, max_size=6), st.sampled_from([b"", b" ", b"\r", b"\n", b"\t"]),
       st.sampled_from(["sorted", "unsorted", "spaced"]), st.integers(0, 6))
def test_proven_canonical_exactly_when_every_line_is_its_canonical_dump(rows, junk, layout, at):
    """The one-dump proof agrees with dumping each line on its own (the definition)."""
    import orjson

    from batchsafe.core.canonical import canonical_bytes
    from batchsafe.core.jsonl import parse_lines_bulk

    def dump(r):
        if layout == "spaced":
            return json.dumps(r, sort_keys=True).encode()
        return json.dumps(r, sort_keys=layout == "sorted", separators=(",", ":"), ensure_ascii=False).encode()

    lines = [dump(r) for r in rows]
    raw = b"\n".join(lines) + b"\n" if lines else b""
    raw = raw[:at] + junk + raw[at:]
    try:
        parsed, proven = parse_lines_bulk(raw, "f", "thing", 1)
    except JsonLineError:
        return
    exact = (raw.endswith(b"\n") and b"\r" not in raw and
             all(line and canonical_bytes(orjson.loads(line)) == line + b"\n" for line in raw.split(b"\n")[:-1]))
    assert proven == exact, raw


values = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=6), st.none(), st.booleans(),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([1e-5, 2.5e-7, 1e16, 0.1, -0.0, "\x00batchsafe:end-of-line\x00"]))
json_records = st.dictionaries(st.text(max_size=4), st.one_of(values, st.lists(values, max_size=2)), max_size=4)


@given(st.lists(json_records, max_size=7))
def test_sorted_dump_lines_is_a_dump_per_record(rows):
    import orjson

    from batchsafe.core.canonical import canonical_bytes
    from batchsafe.core.jsonl import canonical_lines, sorted_dump_lines

    per_record = b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in rows)
    lines = sorted_dump_lines(rows)
    marked = any(b'"\\u0000batchsafe:end-of-line\\u0000"' in orjson.dumps(r) for r in rows)
    assert lines == (None if marked else per_record)
    canonical = canonical_lines(rows)
    assert canonical is None or canonical == b"".join(canonical_bytes(r) for r in rows)
    if not marked and all(canonical_bytes(r) == orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in rows):
        assert canonical == per_record  # None only where a float is spelled differently


@given(st.lists(json_records, min_size=1, max_size=9), st.integers(0, 200), st.binary(min_size=1, max_size=2))
def test_chunked_proof_sees_an_edit_in_any_chunk(monkeypatch_chunk, rows, at, junk):
    """With two records per chunk, an edit anywhere (a later chunk, the end) leaves the file unproven."""
    from batchsafe.core.canonical import canonical_bytes
    from batchsafe.core.jsonl import canonical_lines, sorted_dump_matches

    raw = b"".join(canonical_bytes(r) for r in rows)
    # Proven exactly when every chunk's dump is settled fast (a float below 1e-4 is not).
    assert sorted_dump_matches(raw, rows) == all(canonical_lines(rows[i:i + 2]) is not None
                                                 for i in range(0, len(rows), 2))
    at %= len(raw) + 1
    edited = raw[:at] + junk + raw[at:]
    assert not sorted_dump_matches(edited, rows)
    assert not sorted_dump_matches(raw + raw[-2:], rows)


@pytest.fixture(scope="module")
def monkeypatch_chunk():
    from batchsafe.core import jsonl

    old, jsonl.CHUNK = jsonl.CHUNK, 2
    yield
    jsonl.CHUNK = old
