"""canonical_bytes_of_parsed must give exactly canonical_bytes for every value orjson parses."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.core import canonical
from batchsafe.core.canonical import canonical_bytes, canonical_bytes_of_parsed

# Floats around both of Python's switch points to exponent notation (1e-4 and 1e16).
edge_floats = st.sampled_from([0.0, -0.0, 1e-4, 9.999e-5, 1e-5, -1e-7, 5e-324, 1e15, 1e16, 1.5e16, -1e300,
                               0.1, 0.30000000000000004, 123.0])
floats = st.floats(allow_nan=False, allow_infinity=False) | edge_floats
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | floats | st.text()
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=25)


@settings(max_examples=400)
@given(json_values)
def test_equals_canonical_bytes_for_parsed_values(value):
    parsed = orjson.loads(orjson.dumps(value))
    assert canonical_bytes_of_parsed(parsed) == canonical_bytes(parsed)


@pytest.mark.parametrize("value", [{"x": 1e-05}, [1e16, 2], {"a": {"b": [-1e-7]}}, 1e-5, 2**70])
def test_values_orjson_spells_differently_take_the_exact_path(value):
    # 1e-05 is "1e-05" canonically and "0.00001" for orjson; orjson refuses 2**70.
    assert canonical_bytes_of_parsed(value) == canonical_bytes(value)


def test_a_lone_surrogate_is_refused_as_canonical_bytes_refuses_it():
    with pytest.raises(UnicodeEncodeError):
        canonical_bytes({"k": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        canonical_bytes_of_parsed({"k": "\ud800"})


def test_plan_like_values_take_the_fast_path(monkeypatch):
    # Hex ids, digests and floats Python writes without an exponent must not trip the guard,
    # or the fast path would never be taken on a real plan.
    value = {"id": "s_be9d9619bf3ca297", "d": "sha256:1e5ab", "n": 0.00012, "m": 1e15, "t": 0.0, "k": [1, 2]}
    expected = canonical_bytes(value)
    monkeypatch.setattr(canonical, "canonical_bytes", lambda obj: pytest.fail("took the exact path"))
    assert canonical_bytes_of_parsed(value) == expected


def test_float_lookalikes_inside_strings_still_give_the_canonical_bytes():
    value = {"id": "sha256:1e5", "text": "x,1e-7]", "n": 0.00012, "m": 1e15}
    assert canonical_bytes_of_parsed(value) == canonical_bytes(value)
