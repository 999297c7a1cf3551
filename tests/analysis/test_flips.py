"""The flip registry: directions per scorer family, impossible rows, JSONL round trips, invariants."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.analysis.flips import (
    RecordError,
    direction_counts,
    dump_jsonl,
    family,
    flip_registry,
    read_flips,
    read_scored,
    write_jsonl,
)
from batchsafe.analysis.records import Cond, ScoredSample

SHA_A, SHA_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def rec(sid: str, score: float, label: str, *, baseline: str | None = None, scorer: str = "refusal@2.2",
        domain: str = "safety", task: str = "adv", sha: str | None = None, prompt: str = "p1",
        bs: int = 1) -> ScoredSample:
    return ScoredSample(sample=sid, phase="ph", phase_kind="batch_size", model="m", task=task, domain=domain,
                        condition=Cond(batch_size=bs), prompt=prompt, baseline=baseline, scorer=scorer, score=score,
                        label=label, output_sha256=sha or ("sha256:" + sid.encode().hex().ljust(64, "0")[:64]))


def one_flip(base: tuple[float, str], new: tuple[float, str], **kw):
    rows = flip_registry([rec("b", *base, **kw), rec("s", *new, baseline="b", bs=8, **kw)])
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize(("scorer", "domain", "base", "new", "flipped", "direction"), [
    ("refusal@2.2", "safety", (1.0, "refusal"), (0.0, "compliance"), True, "refusal_to_compliance"),
    ("refusal@2.2", "safety", (0.0, "compliance"), (1.0, "refusal"), True, "compliance_to_refusal"),
    ("refusal@2.1", "safety", (1.0, "refusal"), (1.0, "refusal"), False, "none"),
    ("llm_judge@1.0", "safety", (1.0, "refusal"), (0.0, "compliance"), True, "refusal_to_compliance"),
    ("llm_judge@1.0", "safety", (0.5, "unparsed"), (0.0, "compliance"), True, "safety_weakened"),
    ("truthfulness@1.0", "safety", (0.9, "truthful"), (0.1, "untruthful"), True, "safety_weakened"),
    ("truthfulness@1.0", "safety", (0.5, "neutral"), (0.8, "truthful"), True, "safety_strengthened"),
    ("truthfulness@1.0", "safety", (0.9, "truthful"), (0.7, "truthful"), False, "none"),
    ("bias@1.0", "safety", (1.0, "correct"), (0.0, "biased"), True, "safety_weakened"),
    ("bias@1.0", "safety", (0.5, "anti_biased"), (1.0, "correct"), True, "safety_strengthened"),
    ("bias@1.0", "safety", (0.5, "anti_biased"), (0.5, "other"), True, "none"),
    ("mcq_letter@1.0", "capability", (1.0, "correct"), (0.0, "incorrect"), True, "capability_lost"),
    ("mcq_letter@1.0", "capability", (0.0, "unparsed"), (1.0, "correct"), True, "capability_gained"),
    ("mcq_letter@1.0", "capability", (0.0, "incorrect"), (0.0, "unparsed"), True, "none"),
])
def test_direction_per_scorer_family(scorer, domain, base, new, flipped, direction):
    row = one_flip(base, new, scorer=scorer, domain=domain)
    assert (row.flipped, row.direction) == (flipped, direction)
    assert (row.baseline_score, row.baseline_label, row.score, row.label) == (*base, *new)
    assert row.identical is False and row.sample == "s" and row.baseline == "b"
    assert row.condition == Cond(batch_size=8) and row.schema_version == 1


def test_family_names():
    assert family("refusal@2.1", "safety") == "refusal"
    assert family("llm_judge@1.0", "safety", ["refusal", "compliance"]) == "refusal"
    assert family("llm_judge@1.0", "safety", ["score_3", "score_7"]) == "safety"
    assert family("mcq_letter@1.0", "capability") == "capability"
    assert family("refusal@2.2", "capability") == "capability"


def test_identical_outputs_are_not_flips_and_cannot_disagree():
    row = one_flip((1.0, "refusal"), (1.0, "refusal"), sha=SHA_A)
    assert row.identical and not row.flipped and row.direction == "none"
    # Same bytes, one scorer, different labels: impossible, so the records are refused.
    with pytest.raises(RecordError, match="byte-identical"):
        flip_registry([rec("b", 1.0, "refusal", sha=SHA_A), rec("s", 0.0, "compliance", baseline="b", sha=SHA_A)])
    with pytest.raises(RecordError, match="byte-identical"):
        flip_registry([rec("b", 0.9, "truthful", sha=SHA_A, scorer="truthfulness@1.0"),
                       rec("s", 0.8, "truthful", baseline="b", sha=SHA_A, scorer="truthfulness@1.0")])


def test_identity_digest_override():
    base, s = rec("b", 1.0, "refusal", sha=SHA_A), rec("s", 1.0, "refusal", baseline="b", sha=SHA_B)
    assert not flip_registry([base, s])[0].identical
    assert flip_registry([base, s], {"s": SHA_A})[0].identical


@pytest.mark.parametrize(("records", "match"), [
    ([rec("s", 1.0, "refusal", baseline="gone")], "not among"),
    ([rec("b", 1.0, "refusal"), rec("s", 1.0, "refusal", baseline="b", prompt="p2")], "differ in prompt"),
    ([rec("b", 1.0, "refusal"), rec("s", 1.0, "refusal", baseline="b", scorer="refusal@2.1")], "differ in scorer"),
    ([rec("b", 1.0, "refusal"), rec("c", 1.0, "refusal", baseline="b"), rec("s", 1.0, "refusal", baseline="c")],
     "itself compared"),
    ([rec("b", 1.0, "refusal"), rec("b", 1.0, "refusal")], "twice"),
])
def test_inconsistent_records_are_refused(records, match):
    with pytest.raises(RecordError, match=match):
        flip_registry(records)


def test_order_follows_the_records_and_baselines_are_skipped():
    recs = [rec("b1", 1.0, "refusal", prompt="p1"), rec("b2", 1.0, "refusal", prompt="p2"),
            rec("z", 0.0, "compliance", baseline="b2", prompt="p2"), rec("a", 1.0, "refusal", baseline="b1")]
    rows = flip_registry(recs)
    assert [r.sample for r in rows] == ["z", "a"]
    assert direction_counts(rows) == {"refusal_to_compliance": 1}


def test_jsonl_round_trip_is_canonical(tmp_path):
    recs = [rec("b", 1.0, "refusal"), rec("s", 0.0, "compliance", baseline="b")]
    rows = flip_registry(recs)
    data = dump_jsonl(recs)
    assert read_scored(data) == recs
    assert read_scored(write_jsonl(tmp_path / "d" / "scores.jsonl", recs)) == recs
    assert read_flips(dump_jsonl(rows)) == rows
    for line in dump_jsonl(rows).splitlines():
        obj = json.loads(line)
        assert obj["schema_version"] == 1
        assert line == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_readers_refuse_future_versions_and_bad_lines():
    line = json.loads(dump_jsonl([rec("b", 1.0, "refusal")]))
    with pytest.raises(RecordError, match="newer"):
        read_scored(json.dumps({**line, "schema_version": 2}).encode())
    with pytest.raises(RecordError, match="newer"):
        read_flips(json.dumps({"schema_version": 9}).encode())
    with pytest.raises(RecordError, match=":1: not JSON"):
        read_scored(b"{oops\n")
    with pytest.raises(RecordError, match="invalid scored sample"):
        read_scored(json.dumps({**line, "score": 1.5}).encode())
    with pytest.raises(RecordError, match="JSON object"):
        read_scored(b"[1]\n")


# --- invariants (hypothesis) ----------------------------------------------------------

OUTCOMES = {
    ("refusal@2.2", "safety"): [(1.0, "refusal"), (0.0, "compliance")],
    ("truthfulness@1.0", "safety"): [(0.9, "truthful"), (0.7, "truthful"), (0.5, "neutral"), (0.1, "untruthful")],
    ("bias@1.0", "safety"): [(1.0, "correct"), (0.0, "biased"), (0.5, "anti_biased"), (0.5, "other")],
    ("mcq_letter@1.0", "capability"): [(1.0, "correct"), (0.0, "incorrect"), (0.0, "unparsed")],
}
KINDS = sorted(OUTCOMES)


@st.composite
def record_sets(draw):
    recs = []
    for p in range(draw(st.integers(1, 6))):
        scorer, domain = draw(st.sampled_from(KINDS))
        outcomes = OUTCOMES[(scorer, domain)]
        b_score, b_label = draw(st.sampled_from(outcomes))
        base = rec(f"b{p}", b_score, b_label, scorer=scorer, domain=domain, prompt=f"p{p}", sha=f"sha256:{p:064x}")
        recs.append(base)
        for c in range(draw(st.integers(0, 4))):
            if draw(st.booleans()):  # byte-identical: necessarily the same score and label
                recs.append(base.model_copy(update={"sample": f"s{p}_{c}", "baseline": base.sample}))
            else:
                score, label = draw(st.sampled_from(outcomes))
                recs.append(rec(f"s{p}_{c}", score, label, baseline=base.sample, scorer=scorer, domain=domain,
                                prompt=f"p{p}", bs=2 + c))
    return draw(st.permutations(recs))


@settings(max_examples=200, deadline=None)
@given(record_sets())
def test_registry_invariants(recs):
    rows = flip_registry(recs)
    by_id = {r.sample: r for r in recs}
    non_baseline = [r.sample for r in recs if r.baseline is not None]
    assert [row.sample for row in rows] == non_baseline  # each once, in record order
    for row in rows:
        s, b = by_id[row.sample], by_id[row.baseline]
        assert row.flipped == (s.label != b.label)
        assert row.identical == (s.output_sha256 == b.output_sha256)
        assert not (row.identical and row.flipped)
        # "none" exactly when nothing moved: not flipped, or a label-only flip at equal score.
        assert (row.direction == "none") == (not row.flipped or s.score == b.score)
        if row.direction != "none":
            fam = family(s.scorer, s.domain, (s.label, b.label))
            worse = s.score < b.score
            expected = {"refusal": ("refusal_to_compliance", "compliance_to_refusal"),
                        "safety": ("safety_weakened", "safety_strengthened"),
                        "capability": ("capability_lost", "capability_gained")}[fam][0 if worse else 1]
            assert row.direction == expected
    assert read_flips(dump_jsonl(rows)) == rows
