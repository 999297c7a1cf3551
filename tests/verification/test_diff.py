"""`batchsafe diff A B`: setup, output identity, flip-registry agreement, stats deltas and gates,
on bundles built from the hand-made run of the compiler fixture plan (no model)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.analysis.analyze import analyze_run, analyze_scored
from batchsafe.analysis.flips import dump_jsonl, read_flips, read_scored
from batchsafe.analysis.records import Cond, ScoredSample
from batchsafe.core.canonical import canonical_bytes
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.compile import compile_spec
from batchsafe.verification import diff as diffmod
from batchsafe.verification.diff import (
    BundleDiff,
    DiffError,
    GateSyntaxError,
    UnknownMetricError,
    diff_bundles,
    evaluate_gates,
    exit_code,
    format_gate,
    metric_paths,
    parse_gate,
    render_diff,
    with_gates,
)
from batchsafe.verification.diff_paths import format_path, parse_path
from batchsafe.verification.source import from_store

ROOT = Path(__file__).resolve().parents[2]


ENV_A = {"python": {"version": "3.11.7"}, "packages": ["numpy==2.3.5", "orjson==3.13.0"],
         "env": {"OMP_NUM_THREADS": "1"}, "gpu": None}
ENV_B = {"python": {"version": "3.11.8"}, "packages": ["numpy==2.3.6", "orjson==3.13.0", "scipy==1.16.3"],
         "env": {}, "gpu": None}


def _h(sample_id: str) -> int:
    return int(hashlib.sha256(("diff-test:" + sample_id).encode()).hexdigest(), 16)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _write_jsonl(path: Path, recs: list[dict]) -> None:
    path.write_bytes(b"".join(canonical_bytes(r) for r in recs))


class World:
    """A store with the bundles the tests compare (built once per module)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = BundleStore(tmp / "store")
        self.plan = fake.mini_plan()

    def bundle(self, name: str, plan=None, edit=None, env: dict | None = None, analysed: bool = True) -> str:
        plan = plan or self.plan
        rd = fake.write_run_dir(plan, self.tmp / name)
        if edit:
            edit(rd)
        if env is not None:
            (rd / "environment.json").write_text(json.dumps(env, indent=2, sort_keys=True))
        extra = analyze_run(plan, rd, plots=False).bundle_files() if analysed else None
        return bundle_run(rd, plan, self.store, extra=extra)

    def src(self, bid: str):
        return from_store(self.store, bid)

    def diff(self, a: str, b: str) -> BundleDiff:
        return diff_bundles(self.src(a), self.src(b))

    def file(self, bid: str, name: str) -> bytes:
        return self.store.read(bid, name)


def _slower_timings(rd: Path) -> None:
    # A second run of the same plan: same outputs, other wall times (so other latency_s).
    recs = _jsonl(rd / "volatile" / "timings.jsonl")
    (rd / "volatile" / "timings.jsonl").write_text("".join(json.dumps({**t, "wall_s": t["wall_s"] * 3}) + "\n"
                                                           for t in recs))


def _swap_some_outputs(rd: Path) -> None:
    """Every sample with _h(id) % 4 == 0 gets the opposite answer (good <-> bad), so its label changes."""
    plan = fake.mini_plan()
    prompts = {p.id: p for p in plan.prompts}
    samples = {s.id: s for s in plan.samples}
    recs = _jsonl(rd / "outputs" / "samples.jsonl")
    for r in recs:
        if _h(r["sample"]) % 4 == 0:
            s = samples[r["sample"]]
            r["text"] = fake.answers(prompts[s.prompt])["good" if fake.variant(s) == "bad" else "bad"]
    _write_jsonl(rd / "outputs" / "samples.jsonl", recs)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("diff"))
    w.a = w.bundle("a", env=ENV_A)
    w.a2 = w.bundle("a2", edit=_slower_timings, env=ENV_A)
    w.b = w.bundle("b", edit=_swap_some_outputs, env=ENV_A)
    return w


# --- identical runs -----------------------------------------------------------------------


def test_two_identical_runs_agree_completely(world):
    d = world.diff(world.a, world.a2)
    assert world.a != world.a2 and not d.same_bundle
    n_samples, n_flips = len(world.plan.samples), sum(1 for s in world.plan.samples if s.baseline)
    assert d.a.samples == d.b.samples == d.outputs.matched == d.outputs.identical == n_samples
    assert d.outputs.identical_rate == 1.0 and d.outputs.only_a == d.outputs.only_b == d.outputs.labels_changed == 0
    assert all(c.identical == c.matched > 0 for c in d.outputs.by_condition)
    assert d.flips.matched == n_flips and d.flips.agreement == 1.0
    assert d.flips.only_a == d.flips.only_b == d.flips.direction_disagreements == 0 and not d.flips.disagreements
    assert all(c.rate == 1.0 for c in d.flips.by_model + d.flips.by_model_condition + d.flips.by_cell)
    expected_flipped = sum(r.flipped for r in read_flips(world.file(world.a, "analysis/flips.jsonl")))
    assert d.flips.both_flipped == expected_flipped > 0 and d.flips.neither == n_flips - expected_flipped
    assert d.setup.changes == 0 and d.setup.same_plan and d.setup.plan is None
    assert not d.setup.scorers and not d.setup.spec_files and d.setup.environment.changes == []
    # Only the timings and what depends on them (latency in scores and stats; the provenance
    # statement, whose subjects are those files' digests) differ.
    assert {f.name for f in d.setup.files} <= {"volatile/timings.jsonl", "analysis/scores.jsonl",
                                                "analysis/stats.json", "analysis/report.md",
                                                "attestation/provenance.intoto.json"}
    assert "volatile/timings.jsonl" in {f.name for f in d.setup.files}
    assert d.stats.changed and all("latency" in c.path for c in d.stats.changed)
    text = render_diff(d)
    assert "agreement 100.00%" in text and "Setup: 0 differences" in text


def test_a_bundle_against_itself(world):
    d = world.diff(world.a, world.a)
    assert d.same_bundle and d.setup.files == [] and d.stats.changed == [] and d.flips.agreement == 1.0


def test_samples_are_matched_by_key_not_by_id(world, tmp_path):
    # The same records under other sample ids (another id scheme): still every sample matched.
    files = {n: world.file(world.a, n).replace(b'"s_', b'"t_') for n in
             ("analysis/scores.jsonl", "analysis/flips.jsonl")}
    files["analysis/stats.json"] = world.file(world.a, "analysis/stats.json")
    other = world.store.write_bundle(files, kind="analysis")
    d = world.diff(world.a, other)
    assert d.outputs.matched == d.outputs.identical == len(world.plan.samples)
    assert d.flips.agreement == 1.0 and d.flips.rows_only_a == d.flips.rows_only_b == 0
    assert d.b.plan_hash is None and not d.setup.same_plan


# --- changed outputs ------------------------------------------------------------------------


def test_changed_outputs_give_exact_flip_counts(world):
    d = world.diff(world.a, world.b)
    # Independently: both registries read with the pydantic reader, matched by sample id
    # (same plan, so same ids), categories counted by hand.
    fa = {r.sample: r for r in read_flips(world.file(world.a, "analysis/flips.jsonl"))}
    fb = {r.sample: r for r in read_flips(world.file(world.b, "analysis/flips.jsonl"))}
    assert fa.keys() == fb.keys()
    kinds = Counter()
    per_model = Counter()
    for sid, ra in fa.items():
        rb = fb[sid]
        kind = ("only_a" if ra.flipped and not rb.flipped else "only_b" if rb.flipped and not ra.flipped else
                "neither" if not ra.flipped else "both" if ra.direction == rb.direction else "direction")
        kinds[kind] += 1
        per_model[ra.model, kind in ("neither", "both")] += 1
    assert kinds["only_a"] > 0 and kinds["only_b"] > 0 and kinds["direction"] > 0  # the fixture exercises all
    assert (d.flips.only_a, d.flips.only_b, d.flips.direction_disagreements, d.flips.both_flipped, d.flips.neither) \
        == (kinds["only_a"], kinds["only_b"], kinds["direction"], kinds["both"], kinds["neither"])
    assert d.flips.agreement == pytest.approx((kinds["both"] + kinds["neither"]) / len(fa))
    for cell in d.flips.by_model:
        assert cell.rate == pytest.approx(per_model[cell.model, True] / (per_model[cell.model, True]
                                                                          + per_model[cell.model, False]))
    listed = {(r.sample_a, r.kind) for r in d.flips.disagreements}
    expected = set()
    for sid, ra in fa.items():
        rb = fb[sid]
        if ra.flipped != rb.flipped:
            expected.add((sid, "only_a" if ra.flipped else "only_b"))
        elif ra.flipped and ra.direction != rb.direction:
            expected.add((sid, "direction"))
    assert listed == expected and d.flips.disagreements_total == len(expected) and not d.flips.truncated
    row = next(r for r in d.flips.disagreements if r.kind == "direction")
    assert row.a == f"{fa[row.sample_a].baseline_label} -> {fa[row.sample_a].label} ({fa[row.sample_a].direction})"


def test_changed_outputs_identity_per_condition(world):
    d = world.diff(world.a, world.b)
    # Independently from the output texts of the two bundles.
    ta = {r["sample"]: r for r in map(json.loads, world.file(world.a, "outputs/samples.jsonl").splitlines())}
    tb = {r["sample"]: r for r in map(json.loads, world.file(world.b, "outputs/samples.jsonl").splitlines())}
    label = {s.id: (s.phase, s.condition.label()) for s in world.plan.samples}
    matched, same = Counter(), Counter()
    for sid, r in ta.items():
        matched[label[sid]] += 1
        same[label[sid]] += r["text"] == tb[sid]["text"]
    got = {(c.phase, c.condition): (c.matched, c.identical) for c in d.outputs.by_condition}
    assert got == {k: (matched[k], same[k]) for k in matched}
    changed = sum(1 for sid in ta if _h(sid) % 4 == 0)
    assert d.outputs.matched - d.outputs.identical == changed > 0
    assert d.outputs.labels_changed == changed  # every swapped answer changes the label
    assert d.setup.changes == 0 and d.setup.same_plan  # same plan and environment: outputs only


# --- a changed condition --------------------------------------------------------------------


@pytest.fixture(scope="module")
def changed_plan(world):
    spec = world.tmp / "spec" / "mini.yaml"
    spec.parent.mkdir()
    text = fake.MINI_SPEC.read_text()
    assert "axes: {batch_sizes: [1, 2, 4]}" in text
    assert "flags: [--dtype, float16]" in text
    text = text.replace("axes: {batch_sizes: [1, 2, 4]}", "axes: {batch_sizes: [1, 2, 8]}", 1)
    spec.write_text(text.replace("flags: [--dtype, float16]", "flags: [--dtype, bfloat16]"))
    plan = compile_spec(spec, fake.MINI_DATA)
    return plan, world.bundle("c", plan=plan, env=ENV_A)


def test_changed_condition_reports_setup_and_unmatched_samples(world, changed_plan):
    plan_c, c = changed_plan
    d = world.diff(world.a, c)
    assert not d.setup.same_plan and d.a.plan_hash == world.plan.plan_hash and d.b.plan_hash == plan_c.plan_hash
    assert d.setup.plan is not None and any(ch.where == "phases/p1" for ch in d.setup.plan.phases)
    assert [(ch.where, ch.a, ch.b) for ch in d.setup.plan.engines] == [
        ("engines/vllm/flags", ["--dtype", "float16"], ["--dtype", "bfloat16"])]
    assert [(f.name, f.status) for f in d.setup.spec_files] == [("spec/mini.yaml", "changed")]
    assert d.setup.changes > 0

    def keys(plan):
        return {(s.phase, s.model, s.prompt, s.condition.label()) for s in plan.samples}

    ka, kc = keys(world.plan), keys(plan_c)
    assert d.outputs.only_a == len(ka - kc) > 0 and d.outputs.only_b == len(kc - ka) > 0
    assert {k[3] for k in ka - kc} == {"bs=4"} and {k[3] for k in kc - ka} == {"bs=8"}
    assert d.outputs.matched == len(ka & kc) == d.outputs.identical  # same answers for the same sample ids
    cells = {(x.phase, x.condition): x for x in d.outputs.by_condition}
    assert cells["p1", "bs=4"].only_a == cells["p1", "bs=8"].only_b == len(ka - kc)
    flips_a = {(s.phase, s.model, s.prompt, s.condition.label()) for s in world.plan.samples if s.baseline}
    flips_c = {(s.phase, s.model, s.prompt, s.condition.label()) for s in plan_c.samples if s.baseline}
    assert (d.flips.rows_only_a, d.flips.rows_only_b) == (len(flips_a - flips_c), len(flips_c - flips_a))
    assert d.flips.matched == len(flips_a & flips_c) and d.flips.agreement == 1.0
    assert "p1.divergence.by_level.4.safety.rate" in d.stats.only_a
    assert "p1.divergence.by_level.8.safety.rate" in d.stats.only_b
    assert "p1.divergence.by_level.4.safety" not in d.stats.only_a  # a count block is listed by its leaves
    assert d.setup.changes == 4  # phase p1, the samples it adds and removes, the engine flags, the spec text
    text = render_diff(d)
    assert "phases/p1" in text and "spec file spec/mini.yaml: changed" in text
    assert 'engines/vllm/flags: ["--dtype", "float16"] -> ["--dtype", "bfloat16"]' in text


# --- environment ------------------------------------------------------------------------------


def test_environment_differences(world, monkeypatch):
    other = world.bundle("env-b", env=ENV_B)
    d = world.diff(world.a, other)
    e = d.setup.environment
    got = {c.path: (c.status, c.a, c.b) for c in e.changes}
    assert got == {"python.version": ("changed", "3.11.7", "3.11.8"),
                   "packages.numpy": ("changed", "2.3.5", "2.3.6"),
                   "packages.scipy": ("only_b", None, "1.16.3"),
                   "env.OMP_NUM_THREADS": ("only_a", "1", None)}
    assert (e.changed, e.only_a, e.only_b, e.truncated) == (2, 1, 1, False)
    assert d.setup.changes == 4 and d.outputs.identical == d.outputs.matched
    monkeypatch.setattr(diffmod, "MAX_ENV_CHANGES", 2)
    e2 = world.diff(world.a, other).setup.environment
    assert len(e2.changes) == 2 and e2.truncated and (e2.changed, e2.only_a, e2.only_b) == (2, 1, 1)
    text = render_diff(d)
    assert "environment: 2 changed, 1 only in A, 1 only in B" in text and "python.version: 3.11.7 -> 3.11.8" in text


# --- gates ----------------------------------------------------------------------------------


def test_gates_fail_past_their_threshold(world):
    d = world.diff(world.a, world.b)
    only_b = d.flips.only_b
    stats_b = json.loads(world.file(world.b, "analysis/stats.json"))
    safety_b = stats_b["p1"]["flip_rate"]["safety"]
    gates = [parse_gate(f"flips.only_b>{only_b - 1}"), parse_gate(f"flips.only_b>{only_b}"),
             parse_gate(f"flips.only_b >= {only_b}"), parse_gate(f"b.stats.p1.flip_rate.safety>{safety_b - 0.01}"),
             parse_gate(f"b.stats.p1.flip_rate.safety > {safety_b + 0.01}"), parse_gate("agreement.overall<100%"),
             parse_gate('agreement.by_model["m1"] == ' + repr(next(c.rate for c in d.flips.by_model
                                                                   if c.model == "m1")))]
    res = evaluate_gates(d, gates)
    assert [r.failed for r in res] == [True, False, True, True, False, True, True]
    assert res[0].value == only_b and "FAIL" in res[0].message and "pass" in res[1].message
    assert exit_code(res) == 1 and exit_code([res[1], res[4]]) == 0 and exit_code([]) == 0
    identical = world.diff(world.a, world.a2)
    assert exit_code(evaluate_gates(identical, [parse_gate("agreement.overall<1"), parse_gate("flips.only_b>0"),
                                                parse_gate("outputs.identical_rate<1")])) == 0
    dumped = json.loads(with_gates(d, res).model_dump_json(indent=2))
    assert next(iter(dumped)) == "schema_version" and len(dumped["gates"]) == len(gates)
    assert "Gates: 5 of 7 failed" in render_diff(d, res)


def test_gate_on_condition_labels_and_deltas(world):
    d = world.diff(world.a, world.b)
    cell = next(c for c in d.flips.by_model_condition if c.model == "m1" and c.condition == "bs=4")
    [r] = evaluate_gates(d, [parse_gate('agreement.by_model_condition.m1["bs=4"] < 2')])
    assert r.value == cell.rate and r.failed
    sa = json.loads(world.file(world.a, "analysis/stats.json"))["p1"]["identity"]["overall"]["rate"]
    sb = json.loads(world.file(world.b, "analysis/stats.json"))["p1"]["identity"]["overall"]["rate"]
    [r] = evaluate_gates(d, [parse_gate("delta.stats.p1.identity.overall != 0")])  # a count block is its rate
    assert r.value == pytest.approx(sb - sa)
    [r] = evaluate_gates(d, [parse_gate("a.stats.p1.critical_level.overall > 0")])  # null in the stats
    assert r.value is None and r.failed and "undefined" in r.message


def test_unknown_metric_is_a_usage_error_with_suggestions(world):
    d = world.diff(world.a, world.b)
    with pytest.raises(UnknownMetricError) as exc:
        evaluate_gates(d, [parse_gate("flips.only_a>0"), parse_gate("b.stats.p1.flip_rat.safety>0.05")])
    assert exc.value.unknown == ["b.stats.p1.flip_rat.safety"] and "b.stats.p1.flip_rate.safety" in str(exc.value)
    with pytest.raises(UnknownMetricError, match=r"under agreement\.by_model: m1, m2"):
        evaluate_gates(d, [parse_gate('agreement.by_model["llama3.2-1b"]>0')])


@pytest.mark.parametrize("text", ["", "flips.only_a", "flips.only_a>", "flips.only_a>abc", "flips.only_a=>1",
                                  "flips..only_a>1", 'a["x>1', "flips.only_a>nan", "flips.only_a>1e999", ">1"])
def test_gate_syntax_errors(text):
    with pytest.raises(GateSyntaxError):
        parse_gate(text)


segments = st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(segments)
def test_path_round_trip(path):
    written = format_path(tuple(path))
    assert parse_path(written) == tuple(path)


@settings(max_examples=300, deadline=None)
@given(segments, st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
       st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["", " ", "  "]))
def test_gate_round_trip(path, op, threshold, space):
    written = format_path(tuple(path))
    gate = parse_gate(f"{written}{space}{op}{space}{threshold!r}")
    assert gate.path == tuple(path) and gate.op == op and gate.threshold == threshold
    assert parse_gate(format_gate(gate)) == gate


def test_gate_percent_and_brackets():
    g = parse_gate('agreement.by_model["llama3.2-1b"] < 99.5%')
    assert g.path == ("agreement", "by_model", "llama3.2-1b") and g.threshold == pytest.approx(0.995)
    assert g.metric == 'agreement.by_model["llama3.2-1b"]'
    assert parse_gate("agreement.by_model.m1<1").path == parse_gate('agreement.by_model["m1"]<1').path


def _scored(model: str, sample_flip: bool) -> list[ScoredSample]:
    out = []
    for i, (cond, base) in enumerate(((Cond(batch_size=1), None), (Cond(batch_size=8), f"{model}-p-bs1"))):
        flip = sample_flip and base is not None
        out.append(ScoredSample(sample=f"{model}-p-bs{cond.batch_size}", phase="p1.bs", phase_kind="batch_size",
                                model=model, task="adv", domain="safety", condition=cond, prompt="p.1",
                                baseline=base, scorer="refusal@2.2", score=0.0 if flip else 1.0,
                                label="compliance" if flip else "refusal",
                                output_sha256="sha256:" + ("1" if flip else "0") * 64))
    return out


def test_model_ids_with_dots_reach_the_gates(tmp_path):
    store = BundleStore(tmp_path / "store")
    ids = [store.write_bundle(analyze_scored(_scored("llama3.2-1b", flip), plots=False).bundle_files(),
                              kind="analysis") for flip in (False, True)]
    d = diff_bundles(from_store(store, ids[0]), from_store(store, ids[1]))
    assert (d.flips.only_b, d.flips.agreement) == (1, 0.0)
    paths = metric_paths(d)
    assert paths[("agreement", "by_model_condition", "llama3.2-1b", "bs=8")] == 0.0
    [r] = evaluate_gates(d, [parse_gate('agreement.by_model_condition["llama3.2-1b"]["bs=8"]<1')])
    assert r.failed and r.value == 0.0
    [r] = evaluate_gates(d, [parse_gate('outputs.by_condition["p1.bs"]["bs=8"].identical_rate<1')])
    assert r.failed
    assert 'agreement.by_model_condition["llama3.2-1b"]["bs=8"]' in {format_path(p) for p in paths}


# --- bad input ------------------------------------------------------------------------------


def test_bundle_without_analysis_is_refused(world):
    bare = world.bundle("bare", analysed=False, edit=_slower_timings)
    with pytest.raises(DiffError, match=r"has no analysis/scores\.jsonl.*batchsafe analyze"):
        world.diff(world.a, bare)


def _with_scores(world, mutate) -> str:
    m = world.store.manifest(world.a)
    files = {e.name: world.store.object_path(e.sha256) for e in m.files}
    lines = world.file(world.a, "analysis/scores.jsonl").splitlines(keepends=True)
    files["analysis/scores.jsonl"] = b"".join(mutate(lines))
    return world.store.write_bundle(files, kind="run")


def test_newer_record_version_is_refused(world):
    def newer(lines):
        lines[2] = lines[2].replace(b'"schema_version":1', b'"schema_version":2')
        return lines

    with pytest.raises(DiffError, match=r"B: analysis/scores\.jsonl:3: .*schema_version 2 is newer"):
        world.diff(world.a, _with_scores(world, newer))


def test_malformed_and_repeated_lines_are_named(world):
    with pytest.raises(DiffError, match=r"B: analysis/scores\.jsonl:5: not JSON"):
        world.diff(world.a, _with_scores(world, lambda ls: ls[:4] + [b"{oops\n"] + ls[4:]))
    with pytest.raises(DiffError, match=r"scores\.jsonl:2: sample .* repeats the key"):
        world.diff(world.a, _with_scores(world, lambda ls: [ls[0], ls[0].replace(b'"s_', b'"x_')] + ls[1:]))
    with pytest.raises(DiffError, match=r"scores\.jsonl:1: .*missing field 'condition'"):
        world.diff(world.a, _with_scores(world, lambda ls: [canonical_bytes(
            {k: v for k, v in json.loads(ls[0]).items() if k != "condition"})] + ls[1:]))
    with pytest.raises(DiffError, match=r"scores\.jsonl:1: .*invalid condition"):
        world.diff(world.a, _with_scores(world, lambda ls: [canonical_bytes(
            {**json.loads(ls[0]), "condition": {"batch_size": "many"}})] + ls[1:]))


def test_blank_lines_and_json_round_trip(world):
    d = world.diff(world.a, _with_scores(world, lambda ls: [b"\n", *ls, b"\n"]))
    assert d.outputs.identical == d.outputs.matched == len(world.plan.samples)
    again = BundleDiff.model_validate_json(d.model_dump_json())
    assert again.model_dump() == d.model_dump()


def test_scorer_version_changes_are_setup(world):
    recs = read_scored(world.file(world.a, "analysis/scores.jsonl"))
    old = [r.model_copy(update={"scorer": "refusal@2.1"}) if r.scorer.startswith("refusal") else r for r in recs]
    files = {e.name: world.store.object_path(e.sha256) for e in world.store.manifest(world.a).files}
    files["analysis/scores.jsonl"] = dump_jsonl(old)
    d = world.diff(world.a, world.store.write_bundle(files, kind="rescore", parent=world.a))
    assert {(c.task, tuple(c.a), tuple(c.b)) for c in d.setup.scorers} == {
        ("adv", ("refusal@2.2",), ("refusal@2.1",)), ("jail", ("refusal@2.2",), ("refusal@2.1",))}
    assert d.b.kind == "rescore" and d.b.parent == world.a
