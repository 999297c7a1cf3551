"""verify(bundle) -> VerifyReport: recheck a bundle from anyone without trusting its author.

The stages are in ``verification.checks``; this module adds the plan recompilation and
the optional replay, and runs everything in order. ``verify`` never raises for a bad
bundle: an archive the hostile-input reader refuses, an unreadable manifest or a missing
file is a FAIL line naming the problem.
"""

from __future__ import annotations

import gc
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchsafe.bundles.archive import Limits
from batchsafe.bundles.manifest import name_problem
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.plan import Plan
from batchsafe.core import layout

from . import checks, recheck
from .completeness import check_files
from .guard import guarded
from .derived import check_derived
from .provenance import check_provenance
from .stack import check_stack
from .report import Stage, VerifyReport
from .source import BundleSource, SourceError, open_bundle


def _write_spec_tree(plan: Plan, root: Path) -> Path | None:
    """Write the plan's recorded spec files under ``root``; return the main spec's path (None: unsafe paths)."""
    ups = max((f.path.split("/").count("..") for f in plan.spec.files), default=0)
    base = root.joinpath(*[f"d{i}" for i in range(ups)]) if ups else root
    for f in plan.spec.files:
        segs = f.path.split("/")
        n_up = 0
        while n_up < len(segs) and segs[n_up] == "..":
            n_up += 1
        rest = "/".join(segs[n_up:])
        if name_problem(rest) or ".." in segs[n_up:]:
            return None
        target = base.joinpath(*[".."] * n_up, *rest.split("/")).resolve()
        if not target.is_relative_to(root.resolve()):
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.text, encoding="utf-8")
    return base / plan.spec.files[0].path


def check_plan(ctx: checks.Context, *, data_dir: str | Path | None = None, spec: str | Path | None = None,
               recompile: bool = True) -> Stage:
    """Internal consistency of the plan; recompilation when the spec's data is available."""
    from batchsafe.compiler.compile import compile_spec, resolve_data_dir
    from batchsafe.compiler.diagnostics import SpecError
    from batchsafe.compiler.plandiff import diff_plans

    st = Stage(name="plan")
    if ctx.missing_input(st, checks.PLAN) or ctx.plan is None:
        return st if st.status == "SKIP" else st.skip(f"{checks.PLAN} unreadable")
    plan = ctx.plan
    checks.check_plan_consistency(ctx, st)
    consistent = f"plan {plan.plan_hash}: hash, {len(plan.samples):,} samples, {len(plan.groups):,} groups consistent"
    data = resolve_data_dir(data_dir)
    with tempfile.TemporaryDirectory(prefix="batchsafe-recompile-") as tmp:
        if not recompile:
            st.summary = consistent + "; not recompiled (--no-recompile)"
            return st
        if spec is not None:
            main: Path | None = Path(spec)
        elif any(i.root == "spec" for i in plan.inputs):
            st.summary = consistent + "; not recompiled: its data ships with the spec (give --spec SPEC)"
            return st
        elif data is None and plan.inputs:
            st.summary = consistent + "; not recompiled: no data directory (give --data-dir or $BATCHSAFE_DATA)"
            return st
        else:
            main = _write_spec_tree(plan, Path(tmp))
            if main is None:
                st.fail(f"{checks.PLAN}: spec file paths are unsafe; not recompiled")
                return st
        try:
            again = compile_spec(main, data, allow_unpinned=bool(plan.unpinned))
        except SpecError as exc:
            first = exc.diagnostics[0].format() if exc.diagnostics else str(exc)
            first = first.replace(str(main.parent) + os.sep, layout.SPEC_DIR) if spec is None else first
            st.fail(f"recompiling the spec failed ({len(exc.diagnostics)} errors), first: {first}")
            return st
    if again.plan_hash != plan.plan_hash:
        st.fail(f"{checks.PLAN}: recompiling gives plan_hash {again.plan_hash}, the bundle has {plan.plan_hash}")
        diff = diff_plans(plan, again)
        for section in ("settings", "inputs", "phases", "engines", "models"):
            for ch in getattr(diff, section):
                st.fail(f"{checks.PLAN}: {ch.where}: bundle {ch.a!r}, recompiled {ch.b!r}")
    if st.status == "PASS":
        st.summary = consistent + "; recompiled from the spec and data: identical plan_hash"
    return st


# -- replay ----------------------------------------------------------------------------------


def replay_groups(plan: Plan, n: int, seed: int, engine: str | None = None) -> list[Any]:
    """``n`` groups chosen by the seeded rank ``sha256("<seed>:replay:<group id>")`` (optionally of one engine)."""
    pool = [g for g in plan.groups if engine is None or g.engine == engine]
    pool.sort(key=lambda g: hashlib.sha256(f"{seed}:replay:{g.id}".encode()).digest())
    return sorted(pool[:n], key=lambda g: g.index)


def check_replay(ctx: checks.Context, n: int, *, seed: int = 0, engine: str | None = None,
                 factory: Callable[[Any], Any] | None = None) -> Stage:
    """Run ``n`` seeded groups again on an available engine; outputs must be byte-identical."""
    from batchsafe.runtime.bindings import (
        DefaultEngineFactory,
        binding_for,
        build_requests,
        check_results,
    )

    st = Stage(name="replay")
    if ctx.missing_input(st, checks.PLAN, checks.OUTPUTS) or ctx.plan is None or ctx.outputs is None:
        return st if st.status == "SKIP" else st.skip("plan or outputs unreadable")
    plan = ctx.plan
    if engine is not None and engine not in {e.name for e in plan.engines}:
        st.fail(f"--engine {engine}: the plan has no such engine ({', '.join(e.name for e in plan.engines)})")
        return st
    groups = replay_groups(plan, n, seed, engine)
    factory = factory or DefaultEngineFactory(plan)
    problems = factory.preflight(groups) if hasattr(factory, "preflight") else []
    if problems:
        return st.skip("no engine available: " + "; ".join(problems))
    recorded = {r["sample"]: r["text"] for r in ctx.outputs}
    prompts = {p.id: p for p in plan.prompts}
    engines: dict[Any, Any] = {}
    compared = 0
    try:
        for g in groups:
            b = binding_for(plan, g)
            eng = engines.get(b) or engines.setdefault(b, factory(b))
            reqs = build_requests(plan, g, prompts)
            results = check_results(reqs, eng.run_group(reqs, g.mode))
            for m, r in zip(g.members, results):
                if m.sample is None:
                    continue
                compared += 1
                if recorded.get(m.sample) != r.text:
                    st.fail(f"{checks.OUTPUTS}: sample {m.sample} (group {g.id}, {g.condition.label()}): replay gives "
                            f"{r.text[:60]!r}..., recorded {str(recorded.get(m.sample))[:60]!r}...")
    finally:
        for eng in engines.values():
            eng.close()
    st.summary = (f"{len(groups)} seeded groups (seed {seed}), {compared} samples: byte-identical"
                  if st.status == "PASS" else f"{st.n_problems} of {compared} replayed samples differ")
    return st


# -- orchestration ---------------------------------------------------------------------------


def verify_source(src: BundleSource, *, data_dir: str | Path | None = None, spec: str | Path | None = None,
                  recompile: bool = True, replay: int = 0, replay_seed: int = 0, engine: str | None = None,
                  engine_factory: Callable[[Any], Any] | None = None, strict: bool = False) -> VerifyReport:
    """Run every stage on an opened bundle (``strict``: files no stage checks, such as logs, fail)."""
    # The stages allocate ~10^6 small objects (records, models) and no cycles; the cyclic
    # collector's repeated full passes over them cost up to a third of a 30k-sample verify.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _run_stages(src, data_dir=data_dir, spec=spec, recompile=recompile, replay=replay,
                           replay_seed=replay_seed, engine=engine, engine_factory=engine_factory, strict=strict)
    finally:
        if paused:
            gc.enable()


def _run_stages(src: BundleSource, *, data_dir: str | Path | None, spec: str | Path | None, recompile: bool,
                replay: int, replay_seed: int, engine: str | None,
                engine_factory: Callable[[Any], Any] | None, strict: bool = False) -> VerifyReport:
    ctx = checks.Context(src)
    rep = VerifyReport(where=src.where, bundle_id=src.bundle_id, claimed_id=src.claimed_id,
                       kind=src.manifest.kind, parent=src.manifest.parent)
    # Every stage runs guarded: malformed data a stage did not foresee is its FAIL line, not an abort.
    rep.stages.append(guarded("integrity", checks.check_integrity, ctx))
    rep.stages.append(guarded("schemas", checks.check_schemas, ctx))
    rep.stages.append(guarded("plan", check_plan, ctx, data_dir=data_dir, spec=spec, recompile=recompile))
    rep.stages.append(guarded("coverage", checks.check_coverage, ctx))
    if (stack := guarded("stack", check_stack, ctx)) is not None:
        rep.stages.append(stack)
    rep.stages.append(guarded("rescoring", recheck.check_rescoring, ctx))
    rep.stages.append(guarded("statistics", recheck.check_statistics, ctx))
    rep.stages.append(guarded("targets", recheck.check_targets, ctx))
    if (derived := guarded("derived", check_derived, ctx)) is not None:
        rep.stages.append(derived)
    rep.stages.append(guarded("files", lambda: check_files(ctx, strict=strict, stats=ctx.stats)))
    rep.stages.append(guarded("provenance", check_provenance, ctx))
    if replay:
        rep.stages.append(guarded("replay", check_replay, ctx, replay, seed=replay_seed, engine=engine,
                                  factory=engine_factory))
    return rep


def verify(ref: str | os.PathLike[str], store: BundleStore | str | Path | None = None, *,
           claimed_id: str | None = None, limits: Limits = Limits(), **options: Any) -> VerifyReport:
    """Verify an archive, a bundle directory or a store bundle (see ``verify_source`` for options)."""
    try:
        with open_bundle(ref, store, claimed_id=claimed_id, limits=limits) as src:
            return verify_source(src, **options)
    except SourceError as exc:
        rep = VerifyReport(where=str(ref), bundle_id=None, claimed_id=claimed_id)
        st = Stage(name="integrity")
        st.fail(str(exc))
        st.summary = "the bundle could not be opened"
        rep.stages.append(st)
        return rep
