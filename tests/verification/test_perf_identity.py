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

import os
import sys
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import orjson
import pytest

from batchsafe.core.canonical import sha256_tag
from batchsafe.verification.diff import diff_bundles
from batchsafe.verification.source import from_store
from batchsafe.verification.verify import verify

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("BATCHSAFE_DATA") or ROOT.parent / "shared" / "data")
PRINT = bool(os.environ.get("BATCHSAFE_PRINT_DIGESTS"))

MINI = {
    "bundle_a": "sha256:ec63231b67aeab0632053a3f6e52a92ee38319c36307bcd180602ec87b896527",
    "bundle_b": "sha256:dda5bc27ee0fdd9826c50d39b6df79783c9382a0f40ac8403af018b7b83fb123",
    "diff": "sha256:be14f8265390a70f67e8d5452472715d8043a4c3108338f7486e365de4ccde8c",
    "plan": "sha256:e6f9ea874f2687e2c74ca4154d19d399d0e4862c86a18dccd9db0bbd186ace02",
    "verify_a": "sha256:8ab53178786aa70ef08f490bbd8f4a4af487a1589a70ad1e4895d0df25488f64",
    "verify_b": "sha256:34219982edabbbf6b83771b029c09aa07a55a00e94d9b64b0bc012fae855f4df",
}
SYNTHETIC = {
    "bundle_a": "sha256:90ce4f57f03ae2336ebf1fdee073dfd6deba437c4e8233c8fad28c354fb1552f",
    "bundle_b": "sha256:78f865fee272169e72ae04954f8f081841f9b6c0bf3ba3bd86f373689e70de65",
    "diff": "sha256:098ddb3b0242033ce95711b75473daa87c2a2015b6c1c35d73d51caf1a48334d",
    "plan": "sha256:b72424bc3f9e1df8e26e1814083545e3f7f138eb0fc3190670cf8c5ea77e3e97",
    "verify_a": "sha256:34d2fb1b6b9405fa2477b0082818ee194e76f5883e183351941e557698557e25",
    "verify_b": "sha256:b07b28332c4c39ee0f341a05abbf8f1dc647a84cea69b96f5c1f883554db16b1",
}


def _digests(store, a: str, b: str, plan) -> dict[str, str]:
    rep_a = verify(a, store, recompile=False)
    rep_b = verify(b, store, recompile=False)
    d = diff_bundles(from_store(store, a), from_store(store, b))
    return {"plan": sha256_tag(plan.to_bytes()), "bundle_a": a, "bundle_b": b,
            "verify_a": sha256_tag("\n".join(rep_a.lines()).encode()),
            "verify_b": sha256_tag("\n".join(rep_b.lines()).encode()),
            "diff": sha256_tag(orjson.dumps(d.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS))}


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
    got = _digests(store, a, b, plan)
    assert verify(a, store, recompile=False).ok
    _check(got, MINI, "mini")


@pytest.mark.skipif(not (DATA / "advbench").is_dir(), reason=f"public datasets not found at {DATA}")
def test_benchmark_bundles_verify_and_diff_are_byte_identical(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import verify_bench

    store, a, b, plan = verify_bench.build(tmp_path, DATA, models=2)
    got = _digests(store, a, b, plan)
    assert len(plan.samples) > 5000
    _check(got, SYNTHETIC, "synthetic")
