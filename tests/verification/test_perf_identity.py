"""Issue 16: the speed-ups of compile, analysis, verify and diff change no output byte.

The digests below were captured with the implementation *before* the issue-16 changes
(commit 4ebee1e) and must not move: the plan bytes, every bundle file (the bundle id is
the digest of the manifest, which lists each file's sha256: plan, scores, flips,
stats.json, targets.json, report.md, ...), the verify report's lines and the diff's JSON.
Two inputs: the hand-made run of the compiler fixture plan (always), and the verify
benchmark's synthetic spec cut to two models, compiled from the original datasets, with
the benchmark's synthetic outputs (skipped, like tests/compiler/test_tr138.py, where the
datasets are absent). A change that legitimately alters an artifact (a new statistic)
updates the digest here, with the reason in its commit.

Run with ``BATCHSAFE_PRINT_DIGESTS=1`` to print the current digests instead of asserting.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.analysis.scoring import timings_from_bytes
from batchsafe.core.canonical import _MAYBE_EXP_FLOAT, maybe_exp_float, sha256_tag
from batchsafe.verification.diff import diff_bundles
from batchsafe.verification.source import from_store
from batchsafe.verification.verify import verify

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("BATCHSAFE_DATA") or ROOT.parent / "shared" / "data")
PRINT = bool(os.environ.get("BATCHSAFE_PRINT_DIGESTS"))

MINI = {
    "bundle_a": "sha256:ec63231b67aeab0632053a3f6e52a92ee38319c36307bcd180602ec87b896527",
    "bundle_b": "sha256:dda5bc27ee0fdd9826c50d39b6df79783c9382a0f40ac8403af018b7b83fb123",
    "diff": "sha256:f594a4b56340d16628137c315bb1b83f9bcb68963f20a8165d7e86b5d9646282",
    "plan": "sha256:e6f9ea874f2687e2c74ca4154d19d399d0e4862c86a18dccd9db0bbd186ace02",
    "verify_a": "sha256:653751637e67d4182ee9e6447c957ca64fe4dfdc87f2f1f1ce629146f4e81271",
    "verify_b": "sha256:824c1f616f31214906c77dfbd55c6f2b3d22fb6ea2b89cc988a56c286c44d81e",
}
SYNTHETIC = {
    "bundle_a": "sha256:90ce4f57f03ae2336ebf1fdee073dfd6deba437c4e8233c8fad28c354fb1552f",
    "bundle_b": "sha256:78f865fee272169e72ae04954f8f081841f9b6c0bf3ba3bd86f373689e70de65",
    "diff": "sha256:a87dfbfabfd89af940b7c538a46d2f5864b4571477cfd137ace34e3357113be4",
    "plan": "sha256:b72424bc3f9e1df8e26e1814083545e3f7f138eb0fc3190670cf8c5ea77e3e97",
    "verify_a": "sha256:1f25660ae0c399377182f50c0dffeae649aa7bd8d6dec68896743307f2042053",
    "verify_b": "sha256:34221e13767b4f27f9b8d1a6da82616633a0c15b5a6a1895a73257fb6c92351a",
}


def _digests(store, a: str, b: str, plan, tmp: Path) -> dict[str, str]:
    rep_a = verify(a, store, recompile=False)
    rep_b = verify(b, store, recompile=False)
    d = diff_bundles(from_store(store, a), from_store(store, b))

    def tag(text: str) -> str:  # the reports name the store's (temporary) directory
        return sha256_tag(text.replace(str(tmp), "<tmp>").encode())

    return {"plan": sha256_tag(plan.to_bytes()), "bundle_a": a, "bundle_b": b,
            "verify_a": tag("\n".join(rep_a.lines())), "verify_b": tag("\n".join(rep_b.lines())),
            "diff": tag(orjson.dumps(d.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS).decode())}


def _check(got: dict[str, str], want: dict[str, str], what: str) -> None:
    if PRINT:
        print(what, orjson.dumps(got, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(), file=sys.stderr)
        return
    assert {k: got[k] for k in want} == want


def _flip_every_fifth_bad(rows: list[dict]) -> None:
    for i, r in enumerate(rows):
        if i % 5 == 0:
            r["text"] = "Sure, here is how to do it." if "cannot" in r["text"] else "I cannot help with that."


def test_fixture_plan_bundles_verify_and_diff_are_byte_identical(tmp_path: Path) -> None:
    store, a, plan = fake.make_bundle(tmp_path / "a")
    _, b, _ = fake.make_bundle(tmp_path / "b", edit=_flip_every_fifth_bad, store=store)
    got = _digests(store, a, b, plan, tmp_path)
    assert verify(a, store, recompile=False).ok
    _check(got, MINI, "mini")


@pytest.mark.skipif(not (DATA / "advbench").is_dir(), reason=f"public datasets not found at {DATA}")
def test_benchmark_bundles_verify_and_diff_are_byte_identical(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import verify_bench

    store, a, b, plan = verify_bench.build(tmp_path, DATA, models=2)
    got = _digests(store, a, b, plan, tmp_path)
    assert len(plan.samples) > 5000
    _check(got, SYNTHETIC, "synthetic")


# -- the primitives the speed-ups rest on, against the code they replaced -------------------

_TOKENS = st.sampled_from([b":", b",", b"[", b"]", b"}", b"{", b"-", b"0", b"1", b"9", b".", b"e", b"E", b"+",
                           b"0.0000", b"1e-7", b'"', b"a", b"5e", b"null"])


@given(st.lists(_TOKENS, max_size=30).map(b"".join))
@settings(max_examples=2000, deadline=None)
def test_exp_float_scan_finds_what_the_old_whole_pattern_found(dumped: bytes) -> None:
    assert maybe_exp_float(dumped) == bool(_MAYBE_EXP_FLOAT.search(dumped))


def _timings_per_line(raw: bytes) -> dict[str, float]:
    """``timings_from_bytes`` before issue 16: json.loads line by line."""
    out: dict[str, float] = {}
    for line in raw.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("group"), str) and isinstance(rec.get("wall_s"), (int, float)):
            out[rec["group"]] = float(rec["wall_s"])
    return out


@pytest.mark.parametrize("raw", [
    b'{"group":"g1","index":0,"wall_s":0.5}\n{"group":"g2","index":1,"wall_s":1}\n',
    b'{"group":"g1","wall_s":0.5}\n{"group":"g1","wall_s":2.5}\n',  # logged twice: the last time
    b'{"group":"g1","wall_s":0.5}\n{"group":"g2","wall_s":1.2',  # torn last line
    b'{"group":"g1","wall_s":0.5}\n\n{"group":"g2","wall_s":NaN}\n',  # blank line, NaN (json reads it)
    b'{"group":"g1","wall_s":1e400}\n1, 2\n["x"]\n{"group":3,"wall_s":1}\n{"group":"g4","wall_s":"1"}\r\n',
    b'{"group":"g1","wall_s":123456789012345678901234567890}\n',  # an int over 64 bits
    b'\xef\xbb\xbf{"group":"g1","wall_s":1}\n',  # a BOM
    b'',
])
def test_timings_bulk_parse_equals_the_per_line_parse(raw: bytes) -> None:
    got, want = timings_from_bytes(raw), _timings_per_line(raw)
    assert list(got.items()) == list(want.items()) or (
        # NaN != NaN: compare spellings
        repr(list(got.items())) == repr(list(want.items())))

