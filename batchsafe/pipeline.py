"""make_bundle: compile -> run -> analyse -> bundle, the orchestration behind `make bundle`.

Thin on purpose: every step is a stage function; this module only decides where
things go. A run directory is named after the plan hash, so running the same
spec again resumes an interrupted run or re-bundles a complete one instead of
starting over; ``fresh=True`` starts a new run directory next to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsafe.analysis.analyze import analyze_run
from batchsafe.analysis.identity import IdentityRow, output_identity, read_outputs
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.plan import Plan
from batchsafe.core import layout
from batchsafe.runtime.executor import RunSummary, run_plan

DEFAULT_OUT = "runs"
STORE_ENV = "BATCHSAFE_STORE"


def default_store(out_root: Path) -> Path:
    """$BATCHSAFE_STORE, else <out>/store."""
    return Path(os.environ.get(STORE_ENV) or out_root / "store")


@dataclass
class MakeResult:
    """What `bundle make` produced."""

    plan: Plan
    run_dir: Path
    store: BundleStore
    bundle_id: str
    run: RunSummary
    identity: list[IdentityRow] = field(default_factory=list)
    outputs_sha256: str = ""
    headline: dict[str, Any] = field(default_factory=dict)
    """Per phase: samples, safety/capability flip rates, unsafe-direction share, identity; targets passed/failed."""
    report: Path | None = None
    """The bundle's HTML report (``<out>/reports/<id>/index.html``)."""

    @property
    def bundle_dir(self) -> Path:
        """Directory holding the bundle's manifest in the store."""
        return layout.bundle_dir(self.store.root, self.bundle_id)


def run_dir_for(plan: Plan, out_root: Path, fresh: bool) -> Path:
    """<out>/<experiment>-<12 hex of plan hash>[-N]; a new N when ``fresh``."""
    base = out_root / f"{plan.experiment.get('id', 'run')}-{plan.plan_hash.split(':', 1)[1][:12]}"
    if not fresh or not base.exists():
        return base
    n = 2
    while (candidate := base.with_name(f"{base.name}-{n}")).exists():
        n += 1
    return candidate


def make_bundle(spec: str | Path, data_dir: str | Path | None = None, *, out_root: str | Path = DEFAULT_OUT,
                store_root: str | Path | None = None, allow_unpinned: bool = False, fresh: bool = False,
                progress: bool = True, engine_factory: Any = None, workers: int = 0) -> MakeResult:
    """Compile ``spec``, run (or resume) its plan, analyse the outputs and write the bundle.

    The analysis files (scores, flip registry, statistics, targets, report, plots) go into
    the run bundle under ``analysis/``; they are not written to the run directory. The HTML
    report goes to ``<out>/reports/`` (outside the run directory, so it is never bundled).
    ``workers`` > 0 runs the plan on that many Ray workers (``runtime.ray_backend``: one
    actor per shard, partial runs merged into the run directory, byte-identical outputs).
    """
    from batchsafe.core.canonical import hash_file

    out = Path(out_root)
    plan = compile_spec(spec, data_dir, allow_unpinned=allow_unpinned, store=Path(store_root) if store_root else default_store(out))
    run_dir = run_dir_for(plan, out, fresh)
    if workers > 0:
        summary = _run_on_ray(plan, run_dir, workers, progress)
    else:
        summary = run_plan(plan, run_dir, resume=run_dir.exists(), progress=progress, engine_factory=engine_factory)
    outputs = run_dir / "outputs" / "samples.jsonl"
    identity = output_identity(plan, read_outputs(outputs))
    analysis = analyze_run(plan, run_dir)
    store = BundleStore(Path(store_root) if store_root else default_store(out))
    bundle_id = bundle_run(run_dir, plan, store, extra=analysis.bundle_files())
    from batchsafe.analysis.viewer import default_report_dir, write_report
    from batchsafe.verification.source import from_store

    report = write_report(from_store(store, bundle_id), default_report_dir(out, bundle_id))
    return MakeResult(plan=plan, run_dir=run_dir, store=store, bundle_id=bundle_id, run=summary,
                      identity=identity, outputs_sha256=hash_file(outputs)[0], headline=analysis.headline,
                      report=report)


def _run_on_ray(plan: Plan, run_dir: Path, workers: int, progress: bool) -> RunSummary:
    """The plan on ``workers`` Ray actors, merged into ``run_dir`` (resuming partial runs)."""
    from batchsafe.runtime.ray_backend import run_ray

    rs = run_ray(plan, run_dir, workers=workers, resume=True, progress=progress)
    ran = sum(len(s.groups) for s in rs.manifest.shards if s.index in rs.shards_run)
    n = len(plan.groups)
    return RunSummary(run_dir=run_dir, plan_hash=plan.plan_hash, groups_total=n, groups_done=n, groups_run=ran,
                      samples_total=len(plan.samples), samples_done=len(plan.samples), complete=True)
