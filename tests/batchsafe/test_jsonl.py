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
    # per-line comparison sees that neither line is a JSON value.
    import orjson

    from batchsafe.core.jsonl import sorted_dump_matches

    good = b'{"a":1,"b":2}\n{"c":3}\n'
    assert sorted_dump_matches(good, orjson.loads(b'[{"a":1,"b":2},{"c":3}]'))
    for bad in (b'{"a":1\n"b":2},{"c":3}\n', b'{"x":[{"a":1}\n{"b":2}]},{"c":3}\n'):
        lines = [line for line in bad.splitlines() if line]
        bulk = orjson.loads(b"[" + b",".join(lines) + b"]")
        assert len(bulk) == len(lines) == 2
        assert not sorted_dump_matches(bad, bulk)
