"""compile_spec(path) -> Plan: the compiler stage.

Pure function of (spec files, data files, batchsafe version): no clock, no
absolute paths, no environment beyond where the data directory is. Errors of
every stage are collected and raised together as one SpecError.
"""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path, PurePosixPath
from typing import Any

from batchsafe.core.version import __version__
from batchsafe.core.canonical import hash_obj, sha256_tag
from batchsafe.core.gcpause import with_gc_paused

from .checks import Checker
from .plan_invariants import assert_plan_invariants
from .spec_checks import spec_only_checks
from .datacache import load_cached
from .datasets import DatasetFormatError, Record
from .diagnostics import Diagnostic, SpecError
from .plan import (InputFile, Locators, PhaseSummary, Plan, Prompt, ResolvedEngine, ResolvedModel,
                   SpecFile, SpecInfo)
from .prior import PriorError, PriorReader, pick_records
from .render import RenderError, render_prompt
from .schedule import ScheduleError, schedule_phase
from . import composition
from .selection import Candidate, SelectionError, rank_key, select
from .spec import Spec, Task, spec_json_schema
from .tensor_parallel import phase_variants as tp_variants
from .schema_errors import validate_schema
from .yamlspec import LocatedDoc, diag_at, resolve_spec

DATA_ENV = "BATCHSAFE_DATA"
# Keys that say where something is, not what runs (engines.*.launch's python/model_dir/
# port/ready_timeout_s included); removed before hashing.
_LOCATOR_KEYS = {"endpoint", "sources", "python", "model_dir", "port", "ready_timeout_s"}


@functools.cache
def _spec_schema() -> dict[str, Any]:
    # Generating the schema from the models is a third of a warm tr138_v2 compile; it is
    # fixed for the process (the models and the engine catalogue are), and read-only here.
    return spec_json_schema()


def load_spec(path: str | os.PathLike[str]) -> tuple[Spec, LocatedDoc]:
    """Load, extends-merge and schema-validate a spec; raise SpecError with every problem."""
    doc = resolve_spec(path)
    diags = validate_schema(doc, _spec_schema())
    if diags:
        raise SpecError(diags)
    return Spec.model_validate(doc.data), doc


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """--data-dir wins over $BATCHSAFE_DATA; None when neither is set."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    return Path(chosen) if chosen else None


def _strip_locators(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_locators(v) for k, v in obj.items() if k not in _LOCATOR_KEYS}
    if isinstance(obj, list):
        return [_strip_locators(v) for v in obj]
    return obj


def _load_inputs(spec: Spec, doc: LocatedDoc, data_root: Path | None, needed: set[str],
                 diags: list[Diagnostic]) -> tuple[list[InputFile], dict[str, list[Record]]]:
    inputs: list[InputFile] = []
    records: dict[str, list[Record]] = {}
    for name in sorted(needed):
        ds = spec.datasets[name]
        records[name] = []
        root = Path(doc.files[0]).parent if ds.root == "spec" else data_root
        for i, ref in enumerate(ds.files):
            at = ("datasets", name, "files", i, "path")
            if root is None:
                diags.append(diag_at(doc, at, "missing-data-dir", f"no data directory to find {ref.path!r} in",
                                     f"pass --data-dir or set {DATA_ENV} (see README: obtaining the datasets)"))
                continue
            if PurePosixPath(ref.path).is_absolute() or ".." in PurePosixPath(ref.path).parts:
                diags.append(diag_at(doc, at, "invalid-value", f"data path {ref.path!r} must stay inside the data directory"))
                continue
            is_glob = glob.has_magic(ref.path)
            if is_glob and ref.sha256:
                diags.append(diag_at(doc, ("datasets", name, "files", i, "sha256"), "invalid-value",
                                     "sha256 cannot pin a glob", "list the files one by one to pin each"))
            rels = (sorted(PurePosixPath(p).relative_to(root.as_posix()).as_posix() for p in glob.glob(f"{root.as_posix()}/{ref.path}"))
                    if is_glob else [ref.path])
            if not rels or (not is_glob and not (root / ref.path).is_file()):
                diags.append(diag_at(doc, at, "missing-file", f"data file {ref.path!r} not found in the data directory",
                                     "check the path, or point --data-dir / BATCHSAFE_DATA at the datasets"))
                continue
            for rel in rels:
                raw = (root / rel).read_bytes()
                digest = sha256_tag(raw)
                if ref.sha256 and digest != ref.sha256:
                    diags.append(diag_at(doc, ("datasets", name, "files", i, "sha256"), "hash-mismatch",
                                         f"data file {rel!r} has {digest}, the spec pins {ref.sha256}",
                                         "the file changed: restore the original or update the pin deliberately"))
                    continue
                try:
                    recs = load_cached(ds.format, root / rel, rel, digest)
                except DatasetFormatError as exc:
                    where = f"{rel}:{exc.line}" if exc.line else rel
                    diags.append(diag_at(doc, at, "dataset-format", f"{where}: {exc.message}", f"is this really {ds.format}?"))
                    continue
                inputs.append(InputFile(dataset=name, path=rel, root=ds.root, sha256=digest, size=len(raw), rows=len(recs),
                                        pinned=ref.sha256 is not None))
                records[name].extend(recs)
    return inputs, records


def _candidates(task: Task, records: dict[str, list[Record]], seed: int, name: str) -> list[Candidate]:
    recs = records[task.dataset]
    if task.render.kind != "jailbreak" or task.render.goals is None:
        return [Candidate(id=r.id, records=[r.id], fields=r.fields) for r in recs]
    # Pair the i-th template with the i-th goal, each list in its own seeded order: a
    # pool of min(T, G) pairs without materialising the T x G product.
    goals = records[task.render.goals.dataset]
    t_order = sorted(recs, key=lambda r: rank_key(seed, f"templates:{name}", r.id))
    g_order = sorted(goals, key=lambda r: rank_key(seed, f"goals:{name}", r.id))
    field = task.render.goals.field
    return [Candidate(id=f"{t.id}+{g.id}", records=[t.id, g.id], fields=t.fields, goal=str(g.fields.get(field) or ""))
            for t, g in zip(t_order, g_order)]


def _picked_candidates(task: Task, records: dict[str, list[Record]],
                       picks: list[tuple[str, ...]]) -> tuple[list[Candidate], list[str]]:
    """Candidates for the record tuples picked from a prior bundle, and the picks not in the data.

    Jailbreak picks keep the prior's template x goal pairs instead of re-pairing under
    this spec's seed, so the enriched subset is the prior's prompts whatever the seed.
    """
    by_id = {r.id: r for r in records[task.dataset]}
    goals = {r.id: r for r in records[task.render.goals.dataset]} if task.render.kind == "jailbreak" and task.render.goals else None
    out, missing = [], []
    for pick in picks:
        if goals is None and len(pick) == 1 and pick[0] in by_id:
            out.append(Candidate(id=pick[0], records=[pick[0]], fields=by_id[pick[0]].fields))
        elif goals is not None and task.render.goals and len(pick) == 2 and pick[0] in by_id and pick[1] in goals:
            goal = str(goals[pick[1]].fields.get(task.render.goals.field) or "")
            out.append(Candidate(id="+".join(pick), records=list(pick), fields=by_id[pick[0]].fields, goal=goal))
        else:
            missing.append("+".join(pick))
    return out, missing


def _prior_picks(spec: Spec, doc: LocatedDoc, tasks: set[str], reader: PriorReader,
                 diags: list[Diagnostic]) -> dict[str, list[tuple[str, ...]]]:
    """Record tuples picked from prior bundles, by task; tasks with problems are left out."""
    picks: dict[str, list[tuple[str, ...]]] = {}
    for name in sorted(tasks):
        task = spec.tasks[name]
        fb = task.select.from_bundle
        if fb is None:
            continue
        base = ("tasks", name, "select", "from_bundle")
        try:
            errors, picked = pick_records(reader.open(fb.bundle), fb, name, task.dataset)
        except PriorError as exc:
            errors, picked = [exc], []
        for err in errors:
            diags.append(diag_at(doc, base + err.at, err.code, err.message, err.hint))
        if not errors:
            picks[name] = picked
    return picks


def _select_all(spec: Spec, doc: LocatedDoc, records: dict[str, list[Record]],
                diags: list[Diagnostic], picks: dict[str, list[tuple[str, ...]]]) -> dict[str, list[Prompt]]:
    out: dict[str, list[Prompt]] = {}
    for name, task in spec.tasks.items():
        if task.select.from_bundle is None:
            cands = _candidates(task, records, spec.seed, name)
        elif name not in picks:
            continue  # the prior bundle's problems are already reported
        else:
            cands, missing = _picked_candidates(task, records, picks[name])
            if missing:
                diags.append(diag_at(doc, ("tasks", name, "select", "from_bundle"), "prior-mismatch",
                                     f"{len(missing)} of the {len(picks[name])} records picked from bundle "
                                     f"{task.select.from_bundle.bundle} are not in dataset {task.dataset!r} "
                                     f"(first: {missing[0]!r})",
                                     "the data changed since the prior bundle was made: compile with the data files "
                                     "listed in its plan.lock.json inputs"))
                continue

        def render(c: Candidate, task: Task = task, name: str = name) -> Prompt:
            return render_prompt(name, task, c.fields, c.records, c.goal)

        try:
            out[name] = select(name, task.select, cands, spec.seed, render)
        except SelectionError as exc:
            for err in [exc, *exc.extra]:
                path = ("tasks", name, "select") + (err.at if err.at is not None else ("ids", err.index) if err.index is not None
                                                    else ("count",) if task.select.count else ())
                diags.append(diag_at(doc, path, err.code, err.message, err.hint))
        except RenderError as exc:
            diags.append(diag_at(doc, ("tasks", name, "render"), "invalid-value", f"cannot render a {task.dataset} record: {exc}"))
    return out


def _launch_locators(spec: Spec, engines: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for n in engines:
        launch = getattr(spec.engines[n], "launch", None)
        if launch is not None:
            out[n] = launch.model_dump(mode="json", exclude={"kind"})
    return out


def _resolve_models(spec: Spec, used: set[str]) -> tuple[list[ResolvedModel], dict[str, list[dict[str, Any]]]]:
    models, sources = [], {}
    for name in sorted(used):
        m = spec.models[name]
        models.append(ResolvedModel(
            name=name, family=m.family,
            hf_repo=m.hf.repo if m.hf else None, hf_revision=m.hf.revision if m.hf else None,
            hf_weights_sha256=m.hf.weights_sha256 if m.hf else None,
            gguf_sha256=m.gguf.sha256 if m.gguf else None, gguf_name=m.gguf.name if m.gguf else "",
            gguf_quant=m.gguf.quant if m.gguf else None, variants=dict(m.gguf.variants) if m.gguf else {},
            ollama_tags=dict(m.ollama.tags) if m.ollama else {}, ollama_digests=dict(m.ollama.digests) if m.ollama else {},
            alignment=m.alignment))
        if m.gguf and m.gguf.sources:
            sources[name] = [s.model_dump(mode="json") for s in m.gguf.sources]
    return models, sources


@with_gc_paused  # ~10^6 small objects, no cycles: the collector's passes were half of a 300k compile
def compile_spec(path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *,
                 allow_unpinned: bool = False, store: Any = None) -> Plan:
    """Compile a spec and its data into a locked, hashed Plan (raises SpecError).

    ``store`` (a path or ``bundles.store.BundleStore``) is where ``select.from_bundle``
    finds prior bundles; None: ``$BATCHSAFE_STORE``, else ``runs/store`` relative to the
    working directory. Specs without ``from_bundle`` never touch it.
    """
    spec, doc = load_spec(path)
    checker = Checker(spec, doc, allow_unpinned)
    diags = checker.run() + spec_only_checks(spec, doc)
    # Keep going after reference errors with the tasks that are sound, so that data and
    # selection problems are reported in the same run; stop before scheduling.
    used_tasks = {t for p in spec.phases for t in p.tasks}
    used_tasks |= {t for p in spec.phases if p.axes.cobatch for pool in p.axes.cobatch.fillers.values() for t in pool.tasks}
    used_tasks |= {t for p in spec.phases if p.composition for t in p.composition.background.tasks}
    used_tasks = {t for t in used_tasks if t in spec.tasks and t not in checker.bad_tasks}
    needed = {spec.tasks[t].dataset for t in used_tasks}
    needed |= {spec.tasks[t].render.goals.dataset for t in used_tasks if spec.tasks[t].render.goals}
    spec = spec.model_copy(update={"tasks": {k: v for k, v in spec.tasks.items() if k in used_tasks}})
    # Prior bundles are read before the data so that their problems are reported even when data is missing.
    picks = _prior_picks(spec, doc, used_tasks, PriorReader(store), diags)
    inputs, records = _load_inputs(spec, doc, resolve_data_dir(data_dir), needed, diags)
    bad_data = {d.path.split(".")[1] for d in diags if d.path.startswith("datasets.")}
    ok_tasks = {k: v for k, v in spec.tasks.items()
                if v.dataset not in bad_data and not (v.render.goals and v.render.goals.dataset in bad_data)}
    prompts = _select_all(spec.model_copy(update={"tasks": ok_tasks}), doc, records, diags, picks)
    if diags:
        raise SpecError(diags)

    samples, groups, summaries = [], [], []
    for i, phase in enumerate(spec.phases):
        targets = [p for t in phase.tasks for p in prompts[t]]
        fillers = {c: [p for t in pool.tasks for p in prompts[t]]
                   for c, pool in (phase.axes.cobatch.fillers.items() if phase.axes.cobatch else [])}
        locked = None
        try:
            if phase.kind == composition.KIND:  # one server session per load level (compiler/composition.py)
                background = [p for t in phase.composition.background.tasks for p in prompts[t]]
                sched, locked = composition.schedule_composition(phase, targets, background, spec.seed, len(groups))
            else:
                sched = schedule_phase(phase, targets, fillers, spec.seed, len(groups))
        except (ScheduleError, composition.CompositionError) as exc:
            diags.append(diag_at(doc, ("phases", i) + exc.path, exc.code, exc.message, exc.hint))
            continue
        samples += sched.samples
        groups += sched.groups
        summaries.append(PhaseSummary(
            id=phase.id, kind=phase.kind, engine=phase.engine, models=list(phase.models), tasks=list(phase.tasks),
            dispatch=phase.dispatch, prompts=sched.targets, conditions=sched.conditions,
            samples=len(sched.samples), groups=len(sched.groups),
            kernel_variants=[k.model_dump() for k in phase.axes.kernel or []],
            tensor_parallel=tp_variants(phase), composition=locked))
    if diags:
        raise SpecError(diags)

    seen_ids: dict[str, str] = {}
    all_prompts: list[Prompt] = []
    for name, plist in prompts.items():
        for p in plist:
            if p.id in seen_ids:
                continue  # the same rendered prompt selected by two tasks is one prompt
            seen_ids[p.id] = name
            all_prompts.append(p)

    used_models = {m for p in spec.phases for m in p.models}
    models, sources = _resolve_models(spec, used_models)
    used_engines = sorted({p.engine for p in spec.phases})
    resolved = _strip_locators(doc.data)
    main_dir = Path(doc.files[0]).parent
    spec_files = [SpecFile(path=os.path.relpath(f, main_dir).replace(os.sep, "/"), sha256=sha256_tag(doc.texts[f].encode()),
                           text=doc.texts[f]) for f in doc.files]
    plan = Plan(
        batchsafe_version=__version__,
        experiment=spec.experiment.model_dump(),
        spec=SpecInfo(sha256=hash_obj(resolved), files=spec_files, resolved=resolved),
        seed=spec.seed,
        decoding=spec.decoding.model_dump(),
        analysis=spec.analysis.model_dump(),
        inputs=inputs,
        prompts=all_prompts,
        models=models,
        engines=[ResolvedEngine(name=n, kind=spec.engines[n].kind,
                                config=_strip_locators(spec.engines[n].model_dump(exclude={"kind"}))) for n in used_engines],
        phases=summaries,
        samples=samples,
        groups=groups,
        targets=[t.model_dump(exclude_none=True) for t in spec.targets],
        unpinned=sorted(checker.unpinned),
        resolved_at_run=sorted(set(checker.resolved_at_run)),
        locators=Locators(model_sources=sources, launch=_launch_locators(spec, used_engines),
                          endpoints={n: getattr(spec.engines[n], "endpoint") for n in used_engines
                                     if hasattr(spec.engines[n], "endpoint")}),
    )
    plan = plan.with_hash()
    assert_plan_invariants(plan)  # unique sample/group ids: checked before anyone writes the plan
    return plan
