"""The SQLite flip registry on three hand-made runs of the compiler fixture plan whose flips the
test chooses: add / query / show, idempotence, filters against a brute-force oracle,
schema migration v1 -> v2, refusals, concurrency and crash atomicity."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchsafe.registry.db as regdb
from batchsafe.analysis.analyze import analyze_bundle, analyze_run
from batchsafe.analysis.records import FlipRow
from batchsafe.core.canonical import canonical_bytes
from batchsafe.bundles.archive import pack
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.registry import (
    SCHEMA_VERSION,
    BundleContentError,
    NotARegistryError,
    PromptFlipSummary,
    RegistryError,
    RegistryVersionError,
    UnknownPromptError,
    as_json,
    open_registry,
    render_bundles,
    render_query,
    render_show,
)
from batchsafe.registry.db import DIRECTIONS
from batchsafe.registry.ingest import parse_flips
from batchsafe.verification.source import from_store

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    bundle: str
    variants: dict[str, str]
    """Sample id -> which of the fake's answers it got (good / good2 / bad)."""
    flips: list[FlipRow]


def _write_run(plan, run_dir: Path, variants: dict[str, str]) -> Path:
    fake.write_run_dir(plan, run_dir)
    prompts = {p.id: p for p in plan.prompts}
    path = run_dir / "outputs" / "samples.jsonl"
    out = []
    for line in path.read_bytes().splitlines():
        rec = json.loads(line)
        rec["text"] = fake.answers(prompts[rec["prompt"]])[variants[rec["sample"]]]
        out.append(canonical_bytes(rec))
    path.write_bytes(b"".join(out))
    return run_dir


def flipping_prompts(plan, variants: dict[str, str]) -> set[str]:
    """Prompts with a non-baseline sample whose badness differs from its baseline's (the fake's labels)."""
    return {s.prompt for s in plan.samples
            if s.baseline and (variants[s.id] == "bad") != (variants[s.baseline] == "bad")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three run bundles: x flips in all, y only in the first, z only in the second, others in the first two."""
    plan = fake.mini_plan()
    tmp = tmp_path_factory.mktemp("registry")
    store = BundleStore(tmp / "store")
    base = {s.id: fake.variant(s) for s in plan.samples}
    compared = sorted({s.prompt for s in plan.samples if s.baseline})
    f1 = flipping_prompts(plan, base)
    never = sorted(set(compared) - f1)
    assert len(f1) >= 3 and never, "the fixture plan must have prompts that flip and prompts that do not"
    x, y = sorted(f1)[:2]
    z = never[0]
    first_target = {p: next(s for s in plan.samples if s.prompt == p and s.baseline) for p in (x, z)}

    v2 = dict(base)
    for s in plan.samples:
        if s.prompt in (y, z):
            v2[s.id] = "good"
    v2[first_target[z].id] = "bad"
    v3 = {s.id: "good" for s in plan.samples}
    v3[first_target[x].id] = "bad"

    runs = []
    for i, variants in enumerate((base, v2, v3)):
        rd = _write_run(plan, tmp / f"run{i}", variants)
        res = analyze_run(plan, rd, plots=False)
        runs.append(Run(bundle_run(rd, plan, store, extra=res.bundle_files()), variants, res.flips))
    reg = open_registry(tmp / "world.sqlite")
    for r in runs:
        reg.add(from_store(store, r.bundle))
    yield {"plan": plan, "store": store, "runs": runs, "reg": reg, "x": x, "y": y, "z": z, "f1": f1,
           "compared": compared, "tmp": tmp}
    reg.close()


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as c:
        return {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("bundles", "flips", "prompts")}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- add / query / show -------------------------------------------------------------------------


def test_query_counts_the_bundles_each_prompt_flipped_in(world):
    reg, runs, x, y, z, f1 = world["reg"], world["runs"], world["x"], world["y"], world["z"], world["f1"]
    # By construction: x flips in all three runs, y only in run 1, z only in run 2, the rest of
    # run 1's flipping prompts in runs 1 and 2, and the remaining prompts never.
    expected = {p: 2 for p in f1} | {x: 3, y: 1, z: 1}
    # ...which the variants themselves confirm, without the registry or the analysis.
    assert expected == {p: n for p in world["compared"]
                        if (n := sum(p in flipping_prompts(world["plan"], r.variants) for r in runs))}
    got = reg.query()
    assert {r.prompt: r.bundles_flipped for r in got} == expected
    assert [r.prompt for r in got] == sorted(expected, key=lambda p: (-expected[p], p))
    assert all(r.bundles_observed == 3 for r in got)
    by = {r.prompt: r for r in got}
    ids = [r.bundle for r in runs]
    assert by[x].bundles == ids and by[y].bundles == ids[:1] and by[z].bundles == ids[1:2]
    assert {r.prompt for r in reg.query(min_bundles=2)} == f1 - {y}
    assert [r.prompt for r in reg.query(min_bundles=3)] == [x]
    assert reg.query(min_bundles=4) == []
    assert {r.prompt for r in reg.query(min_bundles=0)} == set(world["compared"])


def test_add_reports_what_the_bundle_holds(world, tmp_path):
    plan, runs, store = world["plan"], world["runs"], world["store"]
    targets = [s for s in plan.samples if s.baseline]
    with open_registry(tmp_path / "r.sqlite") as reg:
        results = [reg.add(from_store(store, r.bundle)) for r in runs]
    by_id = {s.id: s for s in plan.samples}
    for res, run in zip(results, runs):
        flipped = sum((run.variants[s.id] == "bad") != (run.variants[by_id[s.baseline].id] == "bad") for s in targets)
        assert (res.added, res.kind, res.flip_rows, res.flipped) == (True, "run", len(targets), flipped)
        assert res.prompts == len({s.prompt for s in targets})
    assert [r.new_prompts for r in results] == [len({s.prompt for s in targets}), 0, 0]
    assert _counts(tmp_path / "r.sqlite") == {"bundles": 3, "flips": 3 * len(targets),
                                              "prompts": len({s.prompt for s in targets})}


def test_adding_again_changes_nothing_whatever_the_source_form(world, tmp_path):
    store, run = world["store"], world["runs"][0]
    path = tmp_path / "r.sqlite"
    with open_registry(path) as reg:
        first = reg.add(from_store(store, run.bundle))
    counts, digest = _counts(path), _sha(path)
    materialized = store.materialize(run.bundle, tmp_path / "dir")
    archive = pack(store, run.bundle, tmp_path / "b.tar.gz")
    with open_registry(path) as reg:
        again = [reg.add(from_store(store, run.bundle)), reg.add_ref(materialized), reg.add_ref(archive)]
    for res in again:
        assert not res.added and res.new_prompts == 0
        assert res.model_dump(exclude={"added", "new_prompts"}) == first.model_dump(exclude={"added", "new_prompts"})
    assert _counts(path) == counts and _sha(path) == digest


def test_show_lists_every_row_of_a_prompt_across_bundles(world):
    reg, plan, runs, x = world["reg"], world["plan"], world["runs"], world["x"]
    h = reg.show(x)
    targets = [s for s in plan.samples if s.prompt == x and s.baseline]
    assert len(h.rows) == 3 * len(targets)
    assert [r.bundle for r in h.rows] == [run.bundle for run in runs for _ in targets]  # add order first
    for run in runs:
        mine = {r.sample: r for r in h.rows if r.bundle == run.bundle}
        assert set(mine) == {s.id for s in targets}
        for s in targets:
            assert mine[s.id].baseline == s.baseline and mine[s.id].model == s.model
            assert mine[s.id].condition == s.condition.label()
            assert mine[s.id].flipped == ((run.variants[s.id] == "bad") != (run.variants[s.baseline] == "bad"))
            assert mine[s.id].identical == (run.variants[s.id] == run.variants[s.baseline])
    assert (h.bundles_observed, h.bundles_flipped) == (3, 3)
    p = next(p for p in plan.prompts if p.id == x)
    assert (h.prompt.task, h.prompt.domain, h.prompt.dataset, h.prompt.records) == (p.task, p.domain, p.dataset,
                                                                                   p.records)
    text = " ".join([m.content for m in p.messages if m.role == "user"][-1].split())
    assert len(h.prompt.preview) <= 80
    assert h.prompt.preview == text or (h.prompt.preview.endswith("…") and text.startswith(h.prompt.preview[:-1]))
    assert reg.show(x[:10]) == h  # a unique prefix resolves


def test_show_refuses_unknown_and_ambiguous_prompts(world):
    with pytest.raises(UnknownPromptError, match="p_0000000000000000.*not in the registry"):
        world["reg"].show("p_0000000000000000")
    with pytest.raises(UnknownPromptError, match="several prompts"):
        world["reg"].show("p_")
    with pytest.raises(UnknownPromptError):
        world["reg"].show("")


def test_bundles_lists_identity_in_add_order(world, tmp_path):
    plan, store, runs = world["plan"], world["store"], world["runs"]
    child, _ = analyze_bundle(store, runs[0].bundle, plots=False)
    with open_registry(tmp_path / "r.sqlite") as reg:
        reg.add(from_store(store, runs[1].bundle))
        reg.add(from_store(store, child))
        listed = reg.bundles()
    assert [(b.order, b.bundle, b.kind, b.parent) for b in listed] == [
        (1, runs[1].bundle, "run", None), (2, child, "analysis", runs[0].bundle)]
    for b in listed:
        assert (b.experiment_id, b.experiment_title, b.plan_hash) == (
            plan.experiment["id"], plan.experiment["title"], plan.plan_hash)
        assert (b.samples, b.flip_rows) == (len(plan.samples), sum(1 for s in plan.samples if s.baseline))
    assert listed[0].flipped == sum(f.flipped for f in runs[1].flips)


# --- filters against a brute-force oracle -------------------------------------------------------


def oracle(runs: list[Run], k=1, model=None, phase_kind=None, condition=None, direction=None, domain=None,
           task=None) -> list[dict]:
    per: dict[str, dict] = {}
    for run in runs:
        for f in run.flips:
            wanted = ((model, f.model), (phase_kind, f.phase_kind), (condition, f.condition.label()),
                      (domain, f.domain), (task, f.task))
            if any(v is not None and v != got for v, got in wanted):
                continue
            e = per.setdefault(f.prompt, {"task": f.task, "domain": f.domain, "obs": [], "hits": []})
            e["obs"].append(run.bundle)
            if f.flipped and (direction is None or f.direction == direction):
                e["hits"].append((run.bundle, f))
    out = []
    for p, e in per.items():
        flipped_in = list(dict.fromkeys(b for b, _ in e["hits"]))
        if len(flipped_in) >= k:
            fs = [f for _, f in e["hits"]]
            out.append({"prompt": p, "task": e["task"], "domain": e["domain"], "bundles_flipped": len(flipped_in),
                        "bundles_observed": len(set(e["obs"])), "flipped_rows": len(fs), "observed_rows": len(e["obs"]),
                        "models": sorted({f.model for f in fs}),
                        "conditions": sorted({f.condition.label() for f in fs}),
                        "directions": sorted({f.direction for f in fs}), "bundles": flipped_in})
    return sorted(out, key=lambda d: (-d["bundles_flipped"], d["prompt"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_query_filters_match_a_brute_force_oracle(world, data):
    flips = [f for r in world["runs"] for f in r.flips]
    # Filter values mostly taken from one real row, so that filters combine into non-empty answers
    # (about two draws in three match something).
    row = data.draw(st.sampled_from([f for f in flips if f.flipped] + flips[:20]))
    values = {"model": row.model, "phase_kind": row.phase_kind, "condition": row.condition.label(), "task": row.task,
              "domain": row.domain, "direction": row.direction}
    others = {"model": ["m1", "m2", "nope"], "phase_kind": sorted({f.phase_kind for f in flips}),
              "condition": sorted({f.condition.label() for f in flips}), "task": sorted({f.task for f in flips}),
              "domain": ["safety", "capability"], "direction": list(DIRECTIONS)}
    kwargs = {}
    for key, mine in values.items():
        how = data.draw(st.sampled_from(["none", "none", "row", "other"]), label=key)
        kwargs[key] = None if how == "none" else mine if how == "row" else data.draw(st.sampled_from(others[key]))
    k = data.draw(st.integers(0, 4), label="min_bundles")
    got = world["reg"].query(min_bundles=k, **kwargs)
    assert [r.model_dump(exclude={"schema_version"}) for r in got] == oracle(world["runs"], k, **kwargs)


def test_filters_select_what_they_name(world):
    reg = world["reg"]
    scorers = {p.id: p.scorer for p in world["plan"].prompts}
    got = reg.query(condition="bs=4", model="m1", direction="refusal_to_compliance")
    assert got, "the fixture has refusal_to_compliance flips of m1 at bs=4"
    for r in got:
        assert r.models == ["m1"] and r.conditions == ["bs=4"] and r.directions == ["refusal_to_compliance"]
        assert r.domain == "safety" and scorers[r.prompt].startswith("refusal@")
    assert reg.query(condition="q=Q2_K,c=2") == reg.query(condition="q=Q2_K,c=2", phase_kind="quant_concurrency")


@pytest.mark.parametrize("kwargs, match", [({"min_bundles": -1}, "non-negative"), ({"min_bundles": True}, "integer"),
                                           ({"direction": "sideways"}, "unknown direction"),
                                           ({"domain": "fun"}, "unknown domain")])
def test_query_refuses_bad_arguments(world, kwargs, match):
    with pytest.raises(RegistryError, match=match):
        world["reg"].query(**kwargs)


# --- bad bundles ------------------------------------------------------------------------------------


def _variant_bundle(world, flips: bytes | None, *, keep_plan: bool = True, kind: str = "analysis") -> str:
    store, src = world["store"], world["runs"][0].bundle
    files: dict = {e.name: store.object_path(e.sha256) for e in store.manifest(src).files
                   if e.name != "analysis/flips.jsonl" and (keep_plan or e.name != "plan.lock.json")}
    if flips is not None:
        files["analysis/flips.jsonl"] = flips
    return store.write_bundle(files, kind=kind, parent=src)


def _flip_lines(world) -> list[dict]:
    return [json.loads(line) for line in world["store"].read(world["runs"][0].bundle, "analysis/flips.jsonl")
            .splitlines()]


def test_bundle_without_flips_is_refused_and_nothing_written(world, tmp_path):
    bid = _variant_bundle(world, None)
    path = tmp_path / "r.sqlite"
    with open_registry(path) as reg:
        with pytest.raises(BundleContentError, match=r"has no analysis/flips\.jsonl"):
            reg.add(from_store(world["store"], bid))
        assert reg.bundles() == []
    assert _counts(path) == {"bundles": 0, "flips": 0, "prompts": 0}


def _edit(line: int, how):
    def apply(rows: list[dict]) -> bytes:
        rows = [dict(r) for r in rows]
        out = [canonical_bytes(r) for r in rows]
        out[line - 1] = how(rows, line - 1)
        return b"".join(out)
    return apply


BAD_FLIPS = [
    (_edit(3, lambda rows, i: b"{not json\n"), r":3: not JSON"),
    (_edit(2, lambda rows, i: canonical_bytes({**rows[i], "schema_version": 2})), r":2: flip row schema_version 2 is newer"),
    (_edit(4, lambda rows, i: canonical_bytes({k: v for k, v in rows[i].items() if k != "label"})),
     r":4: invalid flip row: label: Field required"),
    (_edit(5, lambda rows, i: canonical_bytes({**rows[i], "sample": rows[0]["sample"]})), r":5: sample .* appears twice"),
    (_edit(6, lambda rows, i: canonical_bytes({**rows[i], "prompt": "p_ffffffffffffffff"})),
     r":6: prompt p_ffffffffffffffff .* not in plan\.lock\.json"),
    (_edit(7, lambda rows, i: canonical_bytes({**rows[i], "task": "elsewhere"})), r":7: .* task 'elsewhere'"),
    (_edit(8, lambda rows, i: b"[1, 2]\n"), r":8: a flip row must be a JSON object"),
]


@pytest.mark.parametrize("edit, match", BAD_FLIPS)
def test_malformed_flip_rows_are_refused_naming_the_line(world, tmp_path, edit, match):
    bid = _variant_bundle(world, edit(_flip_lines(world)))
    path = tmp_path / "r.sqlite"
    with open_registry(path) as reg:
        reg.add(from_store(world["store"], world["runs"][1].bundle))
        before = _counts(path)
        with pytest.raises(BundleContentError, match=f"{bid}: analysis/flips.jsonl{match}"):
            reg.add(from_store(world["store"], bid))
    assert _counts(path) == before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"{}", b"[]", b"null", b'{"schema_version":9}',
                                                                   b'{"schema_version":true}'])), max_size=5))
def test_flip_parser_never_fails_with_anything_but_a_content_error(lines):
    try:
        rows = parse_flips(b"\n".join(lines), "x")
    except BundleContentError as exc:
        assert str(exc).startswith("x:")
    else:
        assert all(isinstance(r, FlipRow) for _, r in rows)


def test_bundle_without_plan_gets_metadata_from_a_later_one(world, tmp_path):
    store, r0 = world["store"], world["runs"][0]
    flips = store.read(r0.bundle, "analysis/flips.jsonl")
    bare = store.write_bundle({"analysis/flips.jsonl": flips}, kind="flips")
    with_scores = store.write_bundle({"analysis/flips.jsonl": flips,
                                      "analysis/scores.jsonl": store.read(r0.bundle, "analysis/scores.jsonl")},
                                     kind="flips")
    x = world["x"]
    with open_registry(tmp_path / "r.sqlite") as reg:
        first = reg.add(from_store(store, bare))
        assert first.new_prompts == first.prompts > 0
        h = reg.show(x)
        assert (h.prompt.dataset, h.prompt.records, h.prompt.preview) == (None, [], None)
        reg.add(from_store(store, with_scores))
        assert reg.add(from_store(store, r0.bundle)).new_prompts == 0
        assert reg.show(x).prompt == world["reg"].show(x).prompt  # filled in from the plan
        assert [b.samples for b in reg.bundles()] == [None, len(world["plan"].samples), len(world["plan"].samples)]
        assert [b.experiment_id for b in reg.bundles()] == [None, None, "mini"]


# --- schema and migrations ----------------------------------------------------------------------

# Version 1 exactly as released: the test keeps its own copy, so an edit of the shipped
# migration (which must never change once released) makes this test fail.
V1_DDL = [
    ("CREATE TABLE bundles (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, parent TEXT,"
     " experiment_id TEXT, experiment_title TEXT, plan_hash TEXT, n_samples INTEGER,"
     " n_flip_rows INTEGER NOT NULL, n_flipped INTEGER NOT NULL)"),
    ("CREATE TABLE prompts (id TEXT PRIMARY KEY, task TEXT NOT NULL, domain TEXT NOT NULL, dataset TEXT,"
     " records TEXT NOT NULL DEFAULT '[]', preview TEXT) WITHOUT ROWID"),
    ("CREATE TABLE flips (bundle TEXT NOT NULL REFERENCES bundles(id), sample TEXT NOT NULL,"
     " baseline TEXT NOT NULL, phase TEXT NOT NULL, phase_kind TEXT NOT NULL, model TEXT NOT NULL,"
     " task TEXT NOT NULL, domain TEXT NOT NULL, condition TEXT NOT NULL, prompt TEXT NOT NULL,"
     " identical INTEGER NOT NULL, baseline_score REAL NOT NULL, score REAL NOT NULL,"
     " baseline_label TEXT NOT NULL, label TEXT NOT NULL, flipped INTEGER NOT NULL, direction TEXT NOT NULL,"
     " PRIMARY KEY (bundle, sample)) WITHOUT ROWID"),
    f"PRAGMA application_id = {0x62735267}",
    "PRAGMA user_version = 1",
]
NULL_COND = {"batch_size": None, "cobatch": None, "group_size": None, "quant": None, "concurrency": None,
             "kernel": None, "repeat": 0}


def _v1_file(path: Path, conditions: list[dict]) -> Path:
    c = sqlite3.connect(path)
    for stmt in V1_DDL:
        c.execute(stmt)
    bid = "sha256:" + "ab" * 32
    c.execute("INSERT INTO bundles (id, kind, n_flip_rows, n_flipped) VALUES (?, 'run', ?, ?)",
              (bid, len(conditions), len(conditions)))
    c.execute("INSERT INTO prompts (id, task, domain) VALUES ('p_00000000000000aa', 'adv', 'safety')")
    for i, cond in enumerate(conditions):
        c.execute("INSERT INTO flips VALUES (?, ?, 's_base', 'p1', 'batch_size', 'm1', 'adv', 'safety', ?,"
                  " 'p_00000000000000aa', 0, 1.0, 0.0, 'refusal', 'compliance', 1, 'refusal_to_compliance')",
                  (bid, f"s_{i}", json.dumps(cond, sort_keys=True, separators=(",", ":"))))
    c.commit()
    c.close()
    return path


def _schema(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_a_v1_file_is_migrated_to_the_current_schema(tmp_path):
    assert SCHEMA_VERSION == 2
    conds = [{**NULL_COND, "batch_size": 8}, {**NULL_COND, "quant": "Q2_K", "concurrency": 4},
             {**NULL_COND, "repeat": 2}, NULL_COND]
    path = _v1_file(tmp_path / "v1.sqlite", conds)
    with open_registry(path) as reg:
        assert reg.schema_version == 2
        rows = reg.show("p_00000000000000aa").rows
        assert {r.sample: r.condition for r in rows} == {"s_0": "bs=8", "s_1": "q=Q2_K,c=4", "s_2": "r=2",
                                                         "s_3": "default"}
        hit = reg.query(condition="q=Q2_K,c=4")
        assert [(h.prompt, h.flipped_rows, h.conditions) for h in hit] == [("p_00000000000000aa", 1, ["q=Q2_K,c=4"])]
    with open_registry(tmp_path / "fresh.sqlite"):
        pass
    assert _schema(path) == _schema(tmp_path / "fresh.sqlite")
    assert {"flips_prompt", "flips_condition_label"} <= {row[1] for row in _schema(path)}


def test_a_failed_migration_leaves_the_file_at_its_old_version(tmp_path):
    path = _v1_file(tmp_path / "v1.sqlite", [{**NULL_COND, "batch_size": "eight"}])
    before = _schema(path)
    with pytest.raises(RegistryError, match="cannot be labelled"):
        open_registry(path)
    assert _schema(path) == before
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1


def test_a_newer_registry_is_refused_untouched(tmp_path):
    path = tmp_path / "r.sqlite"
    open_registry(path).close()
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    digest = _sha(path)
    with pytest.raises(RegistryVersionError, match=f"version {SCHEMA_VERSION + 1} is newer .* \\({SCHEMA_VERSION}\\)"):
        open_registry(path)
    assert _sha(path) == digest


@pytest.mark.parametrize("make", ["text", "other_db", "other_app", "directory"])
def test_files_that_are_not_registries_are_refused_untouched(tmp_path, make):
    path = tmp_path / "thing"
    if make == "text":
        path.write_text("hello, I am a text file of a reasonable length for SQLite to look at\n" * 10)
    elif make == "directory":
        path.mkdir()
    else:
        with sqlite3.connect(path) as c:
            if make == "other_db":
                c.execute("CREATE TABLE notes (x)")
            else:
                c.execute("PRAGMA application_id = 1234")
                c.execute("PRAGMA user_version = 1")
    digest = None if make == "directory" else _sha(path)
    with pytest.raises(NotARegistryError, match="thing"):
        open_registry(path)
    assert digest is None or _sha(path) == digest


# --- concurrency and atomicity ------------------------------------------------------------------


def test_two_connections_adding_different_bundles_both_land(world, tmp_path):
    path, store, runs = tmp_path / "r.sqlite", world["store"], world["runs"]
    barrier, errors, results = threading.Barrier(2), [], []

    def worker(bid: str) -> None:
        try:
            barrier.wait()
            with open_registry(path) as reg:  # both race to create and migrate the new file
                results.append(reg.add(from_store(store, bid)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r.bundle,)) for r in runs[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(r.added for r in results) and len(results) == 2
    with open_registry(path) as reg:
        assert {b.bundle for b in reg.bundles()} == {runs[0].bundle, runs[1].bundle}
    assert _counts(path)["flips"] == len(runs[0].flips) + len(runs[1].flips)


def test_an_error_mid_add_leaves_no_partial_rows(world, tmp_path, monkeypatch):
    path, store, runs = tmp_path / "r.sqlite", world["store"], world["runs"]
    calls = []

    def boom(conn, prompts):
        calls.append(conn.execute("SELECT count(*) FROM flips").fetchone()[0])  # rows were written by then
        raise RuntimeError("injected")

    with open_registry(path) as reg:
        reg.add(from_store(store, runs[0].bundle))
        before = _counts(path)
        monkeypatch.setattr(regdb, "_upsert_prompts", boom)
        with pytest.raises(RuntimeError, match="injected"):
            reg.add(from_store(store, runs[1].bundle))
        assert calls == [len(runs[0].flips) + len(runs[1].flips)]
        assert _counts(path) == before
        monkeypatch.undo()
        assert reg.add(from_store(store, runs[1].bundle)).added


CRASH = """
import os, sys
import batchsafe.registry.db as d
from batchsafe.bundles.store import BundleStore
from batchsafe.verification.source import from_store
d._upsert_prompts = lambda conn, prompts: os._exit(3)
d.open_registry(sys.argv[1]).add(from_store(BundleStore(sys.argv[2]), sys.argv[3]))
"""


def test_a_process_killed_mid_add_leaves_no_partial_rows(world, tmp_path):
    path, store, runs = tmp_path / "r.sqlite", world["store"], world["runs"]
    with open_registry(path) as reg:
        reg.add(from_store(store, runs[0].bundle))
    before = _counts(path)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(path), str(store.root), runs[1].bundle], cwd=ROOT,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stderr.decode()
    assert Path(str(path) + "-journal").exists()  # died inside the write transaction
    with open_registry(path) as reg:  # the hot journal is rolled back on open
        assert [b.bundle for b in reg.bundles()] == [runs[0].bundle]
    assert _counts(path) == before


def test_a_tr138_sized_bundle_adds_in_seconds(world, tmp_path):
    rows = _flip_lines(world)
    big = [{**rows[i % len(rows)], "sample": f"s_{i:016x}"} for i in range(31_410)]
    bid = _variant_bundle(world, b"".join(canonical_bytes(r) for r in big))
    with open_registry(tmp_path / "r.sqlite") as reg:
        t0 = time.perf_counter()
        res = reg.add(from_store(world["store"], bid))
        elapsed = time.perf_counter() - t0
        assert (res.flip_rows, res.flipped) == (31_410, sum(r["flipped"] for r in big))
        assert reg.query(min_bundles=1)[0].flipped_rows > 100
    assert elapsed < 5.0, f"adding 31,410 rows took {elapsed:.2f} s"


# --- rendering ------------------------------------------------------------------------------------


def test_renderers_and_json(world):
    reg, x = world["reg"], world["x"]
    results = reg.query(min_bundles=2)
    text = render_query(results, n_bundles=3)
    assert all(r.prompt in text for r in results)
    assert f"{len(results)} prompts across 3 registered bundles" in text
    assert any(line.startswith(x) and " 3/3 " in line for line in text.splitlines())
    assert render_query([], n_bundles=3) == "no prompts match (3 bundles registered)\n"
    h = reg.show(x)
    shown = render_show(h)
    assert h.prompt.preview in shown and "flipped in 3 of 3 bundles" in shown
    assert sum(line.startswith("*") for line in shown.splitlines()) == sum(r.flipped for r in h.rows)
    assert render_bundles(reg.bundles()).count("sha256:") == 3
    assert [PromptFlipSummary.model_validate(d) for d in json.loads(as_json(results))] == results
    assert json.loads(as_json(h))["prompt"]["prompt"] == x
