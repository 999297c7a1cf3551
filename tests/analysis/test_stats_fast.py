"""The vectorised statistics paths against the code they replaced, bit for bit.

Each fast path of ``analysis.stats`` must give the same floats as the pandas /
statsmodels-formula code it replaced (stats.json bytes are content-addressed); the
reference implementations are kept here, verbatim in substance, and compared through
``orjson`` bytes so that even a last-bit difference fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.analysis.stats._num import clean
from batchsafe.analysis.stats.anova import anova_one_way, anova_two_way, factor_codes


def _bytes(x: Any) -> bytes:
    return orjson.dumps(clean(x), option=orjson.OPT_SORT_KEYS)


def _formula_table(d: pd.DataFrame, terms: list[str]) -> pd.DataFrame:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    return anova_lm(smf.ols("y ~ " + " + ".join(terms), data=d).fit(), typ=2)


def _formula_anova(df: pd.DataFrame, y: str, a: str, b: str | None) -> pd.DataFrame | None:
    """The replaced path: patsy on the whole frame with Categorical(str) factors."""
    d = pd.DataFrame({"y": df[y].astype(float).to_numpy(), "A": pd.Categorical(df[a].astype(str).to_numpy())})
    keys = ["A"]
    if b is not None:
        d["B"] = pd.Categorical(df[b].astype(str).to_numpy())
        keys.append("B")
    active = [k for k in keys if d[k].nunique() >= 2]
    terms = [f"C({k})" for k in active] + (["C(A):C(B)"] if len(active) == 2 else [])
    y_ = d["y"].to_numpy()
    if not terms or not len(d) or np.ptp(y_) == 0:
        return None
    return _formula_table(d, terms)


def _check(df: pd.DataFrame, b: str | None) -> None:
    try:
        table = _formula_anova(df, "y", "a", b)
    except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. no residual df: NaN covariance
        with pytest.raises(type(exc)):
            anova_two_way(df, "y", "a", b) if b else anova_one_way(df, "y", "a")
        return
    fast = anova_two_way(df, "y", "a", b) if b else anova_one_way(df, "y", "a")
    if table is None:
        return
    # Every number of the fast result comes from the table: compare them all.
    names = {"C(A)": "a", "C(B)": "b", "C(A):C(B)": "a:b"}
    assert fast["residual"]["sum_sq"] == float(table.loc["Residual", "sum_sq"]) or fast["residual"]["sum_sq"] is None
    for row, name in names.items():
        if row in table.index and name in fast["factors"]:
            got, want = fast["factors"][name], table.loc[row]
            assert _bytes(got["sum_sq"]) == _bytes(float(want["sum_sq"]))
            if got.get("note") is None:
                assert _bytes([got["F"], got["p"]]) == _bytes([float(want["F"]), float(want["PR(>F)"])])


levels_a = st.sampled_from([["x", "y"], ["x", "y", "z"], [1, 4, 8, 16], [1.0, 4.0, None], ["solo"]])
levels_b = st.sampled_from([["q4", "q8"], [1, 2, 3], ["m1", "m2", "m10"]])


@settings(max_examples=60, deadline=None)
@given(la=levels_a, lb=levels_b, n=st.integers(2, 120), seed=st.integers(0, 2**31 - 1),
       grain=st.sampled_from([None, 1.0, 0.5]))
def test_anova_codes_match_formula_path(la: list, lb: list, n: int, seed: int, grain: float | None) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(n)
    if grain is not None:  # scores on a grid (0/1 or halves), like the real data
        y = np.round(y / grain) * grain
    df = pd.DataFrame({"y": y, "a": pd.Series([la[i] for i in rng.integers(0, len(la), n)], dtype=object),
                       "b": pd.Series([lb[i] for i in rng.integers(0, len(lb), n)], dtype=object)})
    if any(isinstance(v, float) for v in la):
        df["a"] = pd.to_numeric(df["a"])  # float column with NaN, as the frames have
    _check(df, "b")
    _check(df, None)


def test_factor_codes_match_categorical() -> None:
    for col in (pd.Series([8.0, 1.0, None, 16.0, 1.0]), pd.Series(["b", "a", "b", None], dtype=object),
                pd.Series([3, 1, 2, 1]), pd.Series([], dtype=object), pd.Series([1, "1", 2], dtype=object)):
        codes, cats = factor_codes(col)
        ref = pd.Categorical(col.astype(str).to_numpy())
        assert list(cats) == list(ref.categories) and codes.tolist() == ref.codes.tolist()


@settings(max_examples=50, deadline=None)
@given(keys=st.lists(st.one_of(st.sampled_from(["m2", "m10", "a"]), st.none()), max_size=40))
def test_groups_match_pandas_groupby(keys: list) -> None:
    from batchsafe.analysis.stats._groups import groups

    s = pd.Series(keys, dtype=object)
    want = [(k, list(idx)) for k, idx in s.groupby(s).indices.items()]
    got = [(k, pos.tolist()) for k, pos in groups(s)]
    assert got == [(k, [int(i) for i in idx]) for k, idx in want]


def test_latency_block_matches_per_model_frames() -> None:
    """The numpy latency block against the per-model pandas version it replaced (tests/analysis/stats_reference)."""
    from stats_reference.cross import latency_block as _latency_reference

    from batchsafe.analysis.stats.cross import latency_block

    rng = np.random.default_rng(7)
    n = 400
    sd = pd.DataFrame({"sample": [f"s{i}" for i in range(n)], "model": rng.choice(["m1", "m2", "m3"], n),
                       "domain": rng.choice(["safety", "capability"], n),
                       "batch_size": rng.choice([1.0, 4.0, 8.0, np.nan], n),
                       "latency_s": np.where(rng.random(n) < 0.1, np.nan, rng.random(n) * 3)})
    fl = pd.DataFrame({"sample": [f"s{i}" for i in range(0, n, 3)], "flipped": rng.random(len(range(0, n, 3))) < 0.3})
    assert _bytes(latency_block(sd, fl, "batch_size")) == _bytes(_latency_reference(sd, fl, "batch_size"))
    assert _bytes(latency_block(sd, fl.iloc[:0], "batch_size")) == _bytes(_latency_reference(sd, fl.iloc[:0],
                                                                                             "batch_size"))


def test_memo_reuses_exact_arguments_only_and_returns_copies() -> None:
    from batchsafe.analysis.stats._memo import memo, memo_scope

    calls: list[Any] = []

    @memo
    def f(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(args)
        return {"args": repr(args), "nested": {"list": [1, 2]}}

    f(1)
    f(1)
    assert len(calls) == 2  # no scope: no reuse
    with memo_scope():
        a = f(1, np.array([0.5, 1.0]), x=0.0)
        a["nested"]["list"].append(3)  # callers add keys to results: reuse must hand out copies
        b = f(1, np.array([0.5, 1.0]), x=0.0)
        assert b == {"args": a["args"], "nested": {"list": [1, 2]}} and len(calls) == 3
        f(1, np.array([0.5, 1.0]), x=-0.0)  # -0.0 is not 0.0
        f(1.0, np.array([0.5, 1.0]), x=0.0)  # 1.0 is not 1
        f(1, np.array([0.5, 1.0], dtype=np.float32), x=0.0)
        f(1, np.array(["a"], dtype=object))  # object arrays are never keyed
        f(1, np.array(["a"], dtype=object))
        assert len(calls) == 8
    f(1)
    assert len(calls) == 9


def _frame_reference(rows: list, fields: tuple) -> pd.DataFrame:
    """The replaced frame builder: from_records, then to_numeric / astype per column."""
    from operator import attrgetter

    from batchsafe.analysis.stats.frames import COND_FIELDS

    get, get_cond = attrgetter(*fields), attrgetter(*COND_FIELDS)
    df = pd.DataFrame.from_records([get(r) + get_cond(r.condition) for r in rows], columns=[*fields, *COND_FIELDS])
    for f in ("batch_size", "group_size", "concurrency", "repeat", "tensor_parallel", "load", "latency_s"):
        if f in df:
            df[f] = pd.to_numeric(df[f], errors="coerce")
    for f in ("score", "baseline_score"):
        if f in df:
            df[f] = df[f].astype(float)
    for f in ("identical", "flipped"):
        if f in df:
            df[f] = df[f].astype(bool)
    return df


maybe_int = st.one_of(st.none(), st.integers(1, 64))


@settings(max_examples=60, deadline=None)
@given(conds=st.lists(st.tuples(maybe_int, st.sampled_from([None, "solo", "mixed"]), maybe_int,
                                st.one_of(st.none(), st.floats(0, 100, allow_nan=False))), min_size=0, max_size=12),
       model=st.booleans())
def test_frames_match_from_records(conds: list, model: bool) -> None:
    from types import SimpleNamespace

    from batchsafe.analysis.records import Cond
    from batchsafe.analysis.stats.frames import FLIP_FIELDS, SAMPLE_FIELDS, flips_frame, samples_frame

    rows = []
    for i, (bs, cob, rep, lat) in enumerate(conds):
        # Cond (a pydantic model) takes the per-distinct-condition path, a namespace the per-row one.
        cond = (Cond if model else SimpleNamespace)(
            batch_size=bs, cobatch=cob, group_size=None, quant=None, concurrency=bs, kernel=None,
            repeat=rep if rep is not None else 0, tensor_parallel=None, load=None)
        rows.append(SimpleNamespace(
            sample=f"s{i}", phase="p", phase_kind="batch_size", model="m", task="t", domain="safety", prompt="q",
            baseline=None if i % 2 else "s0", score=float(i % 3) / 2, label="x", latency_s=lat, condition=cond,
            identical=bool(i % 2), baseline_score=0.5, baseline_label="y", flipped=bool(i % 3), direction="none"))
    for build, fields in ((samples_frame, SAMPLE_FIELDS), (flips_frame, FLIP_FIELDS)):
        got, want = build(rows), _frame_reference(rows, fields)
        pd.testing.assert_frame_equal(got, want, check_exact=True)


flip_rows = st.lists(st.tuples(st.sampled_from(["m1", "m2", "m10"]), st.sampled_from([1.0, 4.0, 16.0, None]),
                               st.sampled_from(["safety", "capability"]), st.booleans(), st.booleans(),
                               st.sampled_from(["b1", "b2", "b3"]), st.sampled_from([0.0, 0.5, 1.0])),
                     min_size=1, max_size=40)


def _flip_frame(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["model", "batch_size", "domain", "flipped", "identical", "baseline",
                                     "baseline_score"])
    df["batch_size"] = pd.to_numeric(df["batch_size"], errors="coerce")
    # A baseline has one score, as in a registry.
    df["baseline_score"] = df["baseline"].map({"b1": 0.0, "b2": 0.5, "b3": 1.0})
    return df


@settings(max_examples=60, deadline=None)
@given(rows=flip_rows)
def test_tally_and_counts_match_groupby(rows: list) -> None:
    from batchsafe.analysis.stats._groups import tally
    from batchsafe.analysis.stats._num import skey
    from batchsafe.analysis.stats.flips import _counts

    fl = _flip_frame(rows)
    for sort in (True, False):
        g = fl.groupby(["model", "batch_size"], dropna=False, sort=sort)["identical"].agg(["sum", "count"])
        want = [(k, int(n), [int(s)]) for k, (s, n) in zip(g.index, g.to_numpy())]
        got = tally([fl["model"], fl["batch_size"]], fl["identical"].to_numpy(bool), sort=sort)
        assert _bytes([[list(k), n, s] for k, n, s in got]) == _bytes([[list(k), n, s] for k, n, s in want])
    for keys in ([], ["batch_size"], ["model", "batch_size"]):
        g = fl.groupby(keys + ["domain"], dropna=False, sort=False)["flipped"].agg(["sum", "count"])
        want: dict = {}
        for idx, (k, n) in zip(g.index, g.to_numpy()):
            idx = idx if isinstance(idx, tuple) else (idx,)
            want.setdefault(tuple(idx[:-1]), {})[idx[-1]] = (int(k), int(n))
        got = _counts(fl, keys)
        # Keys are compared as the stats see them (skey): numpy vs Python float, NaN.
        assert [([skey(x) for x in k], v) for k, v in got.items()] == [([skey(x) for x in k], v)
                                                                       for k, v in want.items()]


@settings(max_examples=60, deadline=None)
@given(rows=flip_rows)
def test_correlation_matches_groupby(rows: list) -> None:
    from batchsafe.analysis.stats.flips import _correlation, _correlation_frame

    fl = _flip_frame(rows)
    sf = fl[fl["domain"] == "safety"]
    assert _bytes(_correlation(fl)) == _bytes(_correlation_frame(sf) if len(sf) else {})


def _clean_reference(obj: Any) -> Any:
    """_num.clean before its exact-type fast paths."""
    from collections.abc import Mapping

    from batchsafe.analysis.stats._num import num

    if isinstance(obj, Mapping):
        return {str(k): _clean_reference(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, (list, tuple)):
        return [_clean_reference(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean_reference(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return num(obj)
    return obj


leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3),
                 st.floats().map(np.float64), st.integers(-5, 5).map(np.int64), st.booleans().map(np.bool_))
tree = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4), st.tuples(kids, kids),
                                                 st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), kids,
                                                                 max_size=4)), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(obj=tree)
def test_clean_matches_reference(obj: Any) -> None:
    got, want = clean(obj), _clean_reference(obj)
    assert repr(got) == repr(want) and [type(x) for x in _leaves(got)] == [type(x) for x in _leaves(want)]


def _leaves(x: Any) -> list:
    if isinstance(x, dict):
        return [y for v in x.values() for y in _leaves(v)]
    if isinstance(x, list):
        return [y for v in x for y in _leaves(v)]
    return [x]


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["p1", "p2", "p10", None]),
                               st.sampled_from(["batch_size", "cobatch", None])), min_size=1, max_size=20))
def test_phase_kinds_match_groupby_first(rows: list) -> None:
    from batchsafe.analysis.stats.core import _phase_kinds

    df = pd.DataFrame(rows, columns=["phase", "phase_kind"], dtype=object)
    assert repr(_phase_kinds(df)) == repr(df.groupby("phase")["phase_kind"].first().to_dict())


def test_memo_scope_is_per_thread() -> None:
    import threading

    from batchsafe.analysis.stats._memo import _cache, memo_scope

    seen: list[Any] = []
    with memo_scope():
        t = threading.Thread(target=lambda: seen.append(_cache.get()))
        t.start()
        t.join()
        assert _cache.get() is not None
    assert seen == [None] and _cache.get() is None
