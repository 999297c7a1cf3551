"""The analysis stage: scores -> flip registry -> statistics -> targets -> report and plots.

Three entry points, one core (:func:`analyze_scored`):

- :func:`analyze_run`: a plan plus its run directory (or output records), as ``bundle
  make`` does after the run;
- :func:`analyze_bundle`: a stored bundle's plan and outputs, (re)scored, written as a
  CHILD bundle whose parent is the analysed bundle; unchanged files keep their objects;
- :func:`analyze_samples`: bare ``scores.jsonl`` records (``batchsafe analyze --samples``),
  so anyone can recheck the statistics without the outputs' text; baselines come from the
  records' ``baseline`` field, settings and targets from an optional plan or spec.

Files (bare names; in a bundle under ``analysis/``): ``scores.jsonl``, ``flips.jsonl``,
``stats.json`` and ``targets.json`` (canonical JSON, NaN refused), ``report.md`` and
``plots/*.png``. Each is a pure function of its inputs, so re-analysing unchanged inputs
gives byte-identical files (and a bundle reuses their objects).
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsafe.core import layout
from batchsafe.core.canonical import canonical_bytes
from batchsafe.compiler.plan import Plan, load_plan, plan_from_bytes  # noqa: F401  (re-exported: the one plan reader)

from .flips import dump_jsonl, flip_registry, read_scored
from .identity import read_outputs
from .plots import render_plots
from .protocol_plots import render_protocol_plots
from .records import FlipRow, ScoredSample
from .report import render_report
from .scoring import read_timings, score_run, timings_from_bytes
from .stats import compute_stats
from .stats.protocol_wiring import alignment_of, with_protocol
from .targets import evaluate_targets
from batchsafe.core.atomic import atomic_write

BUNDLE_PREFIX = layout.ANALYSIS_DIR
DEFAULT_SETTINGS = {"alpha": 0.05, "tost_margin": 0.03, "correction": "holm"}


class AnalysisError(BatchsafeError, ValueError):
    """Inputs the analysis cannot use (a bundle without outputs, an unreadable spec)."""


@dataclass
class AnalysisResult:
    """Everything one analysis produced; ``files()`` are the bytes that get written."""

    scored: list[ScoredSample]
    flips: list[FlipRow]
    stats: dict[str, Any]
    targets: dict[str, Any]
    report: str
    plots: dict[str, bytes] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)

    def files(self) -> dict[str, bytes]:
        """File name (``plots/`` for figures) -> exact bytes."""
        return {"scores.jsonl": dump_jsonl(self.scored), "flips.jsonl": dump_jsonl(self.flips),
                "stats.json": canonical_bytes(self.stats), "targets.json": canonical_bytes(self.targets),
                "report.md": self.report.encode("utf-8"), **self.plots}

    def bundle_files(self, prefix: str = BUNDLE_PREFIX) -> dict[str, bytes]:
        """``files()`` named as they are in a bundle (under ``analysis/``)."""
        return {prefix + name: data for name, data in self.files().items()}

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``files()`` under ``out_dir`` (each atomically); return the paths."""
        out = Path(out_dir)
        written = []
        for name, data in self.files().items():
            path = out.joinpath(*name.split("/"))
            written.append(atomic_write(path, data))
        return written


def settings_of(analysis: Mapping[str, Any] | None) -> dict[str, Any]:
    """alpha / tost_margin / correction from a plan's or spec's ``analysis`` block (defaults otherwise)."""
    analysis = analysis or {}
    return {k: analysis.get(k, v) for k, v in DEFAULT_SETTINGS.items()}


def headline(stats: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers `bundle make` prints: per phase samples, flip rates, unsafe share, identity; targets."""
    phases = {}
    for p, kind in ((stats.get("meta") or {}).get("phases") or {}).items():
        st = stats.get(p) or {}
        fr = st.get("flip_rate") or {}
        phases[p] = {"kind": kind, "samples": st.get("n_samples", 0), "flip_rows": st.get("n_flip_rows", 0),
                     "safety_flip_rate": fr.get("safety"), "capability_flip_rate": fr.get("capability"),
                     "ratio": fr.get("ratio"), "unsafe_share": (st.get("direction") or {}).get("unsafe_share"),
                     "identity": ((st.get("identity") or {}).get("overall") or {}).get("rate")}
    out: dict[str, Any] = {"phases": phases, "targets": dict(targets.get("summary") or {})}
    if stats.get("audit"):
        out["audit"] = {k: stats["audit"].get(k) for k in ("candidates", "unsafe", "safe", "unsafe_share")}
    return out


def headline_rows(head: Mapping[str, Any], order: Sequence[str] | None = None) -> list[list[str]]:
    """The headline's phases as report rows (rounded here, for report.md and the CLI)."""
    from .report import fnum, pct

    phases = head.get("phases") or {}
    return [[p, h["kind"], f"{h['samples']:,}", pct(h["safety_flip_rate"], 2), pct(h["capability_flip_rate"], 2),
             fnum(h["ratio"], 2), pct(h["unsafe_share"]), pct(h["identity"])]
            for p, h in ((p, phases[p]) for p in (order or phases) if p in phases)]


def analyze_scored(scored: Sequence[ScoredSample], *, settings: Mapping[str, Any] | None = None,
                   targets: Sequence[Mapping[str, Any]] = (), plan_summary: Mapping[str, Any] | None = None,
                   title: str = "", phase_order: Sequence[str] | None = None, plots: bool = True,
                   alignment: Mapping[str, str | None] | None = None,
                   flips: Sequence[FlipRow] | None = None) -> AnalysisResult:
    """Flip registry, statistics, targets, plots and report from scored records.

    ``flips``: the flip registry of exactly these records, when the caller already holds
    it (verify proves it against the bundle's bytes first); computed otherwise.

    ``alignment`` (model -> alignment type) feeds the protocol's Study B; the protocol
    block is computed only when ``settings`` carries ``protocol``.
    """
    scored = list(scored)
    flips = flip_registry(scored) if flips is None else list(flips)
    s = settings_of(settings)
    stats = compute_stats(scored, flips, alpha=s["alpha"], tost_margin=s["tost_margin"], correction=s["correction"])
    stats = with_protocol(stats, flips, settings, alignment)
    # Round-trip through strict JSON: a NaN anywhere fails here, not when a bundle is written.
    stats = json.loads(json.dumps(stats, sort_keys=True, allow_nan=False))
    tres = evaluate_targets(targets, plan_summary, stats)
    figures = {**render_plots(stats), **render_protocol_plots(stats)} if plots else {}
    order = list(phase_order) if phase_order else list(dict.fromkeys(r.phase for r in scored))
    head = headline(stats, tres)
    report = render_report(stats, tres, title=title, plan_summary=plan_summary, plots=sorted(figures),
                           phase_order=order, headline=headline_rows(head, order))
    return AnalysisResult(scored=scored, flips=flips, stats=stats, targets=tres, report=report, plots=figures,
                          headline=head)


def _plan_context(plan: Plan) -> dict[str, Any]:
    return {"settings": plan.analysis, "targets": plan.targets, "plan_summary": plan.summary(),
            "alignment": alignment_of(plan),
            "title": str(plan.experiment.get("title") or plan.experiment.get("id") or ""),
            "phase_order": [p.id for p in plan.phases]}


def analyze_run(plan: Plan, run: str | Path | Mapping[str, Mapping[str, Any]], *,
                timings: Mapping[str, float] | None = None, scorer_override: Mapping[str, str] | None = None,
                plots: bool = True) -> AnalysisResult:
    """Analyse a run: ``run`` is a run directory or its output records by sample id.

    From a run directory, latencies come from ``volatile/timings.jsonl`` unless
    ``timings`` is given.
    """
    if isinstance(run, (str, Path)):
        run_dir = Path(run)
        outputs_path = run_dir / "outputs" / "samples.jsonl"
        if not outputs_path.is_file():
            raise AnalysisError(f"{run_dir}: no outputs/samples.jsonl (has the run finished?)")
        outputs = read_outputs(outputs_path)
        if timings is None:
            timings = read_timings(run_dir / "volatile" / "timings.jsonl")
    else:
        outputs = dict(run)
    scored = score_run(plan, outputs, timings=timings, scorer_override=scorer_override)
    return analyze_scored(scored, plots=plots, **_plan_context(plan))


def outputs_from_bytes(raw: bytes) -> dict[str, dict[str, Any]]:
    """Output records of an ``outputs/samples.jsonl`` by sample id."""
    out = {}
    for line in raw.splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["sample"]] = rec
    return out


@dataclass
class StoredRun:
    """A verified stored run bundle's inputs to the analysis (what :func:`load_stored_run` read)."""

    bundle_id: str
    manifest: Any
    """The bundle's ``bundles.manifest.Manifest``."""
    plan: Plan
    outputs: dict[str, dict[str, Any]]
    """Output records by sample id."""
    timings: dict[str, float]
    """Group id -> wall seconds (empty when the bundle has no timings)."""

    def carried_files(self, store: Any) -> dict[str, bytes | Path]:
        """Every file except the bundle's own ``analysis/`` files, as object paths (a child reuses them)."""
        return {e.name: store.object_path(e.sha256) for e in self.manifest.files if not e.name.startswith(BUNDLE_PREFIX)}


def load_stored_run(store: Any, ref: str) -> StoredRun:
    """Verify stored bundle ``ref`` and read its plan, outputs and timings.

    The bundle is verified first: a damaged object must not be copied into a child
    under a new digest. Raises CorruptBundleError, or AnalysisError for a bundle
    without a plan or outputs.
    """
    from batchsafe.bundles.store import CorruptBundleError

    bid = store.resolve(ref)
    problems = store.verify(bid)
    if problems:
        raise CorruptBundleError(f"bundle {bid} is damaged: {problems[0]}")
    manifest = store.manifest(bid)
    names = {e.name for e in manifest.files}
    for needed in (layout.PLAN, layout.OUTPUTS):
        if needed not in names:
            raise AnalysisError(f"bundle {bid} has no {needed}: only run bundles can be analysed")
    plan = plan_from_bytes(store.read(bid, layout.PLAN), f"{bid}:{layout.PLAN}")
    outputs = outputs_from_bytes(store.read(bid, layout.OUTPUTS))
    timings = timings_from_bytes(store.read(bid, layout.TIMINGS)) if layout.TIMINGS in names else {}
    return StoredRun(bid, manifest, plan, outputs, timings)


def analyze_bundle(store: Any, ref: str, *, scorer_override: Mapping[str, str] | None = None,
                   plots: bool = True) -> tuple[str, AnalysisResult]:
    """(Re)analyse stored bundle ``ref``; write a child bundle (kind "analysis"); return (its id, result).

    The child lists every file of the parent except the parent's own ``analysis/`` files
    (replaced by the new ones), so the unchanged files share the parent's objects. The
    parent is verified first: a damaged object must not be copied under a new digest.
    """
    run = load_stored_run(store, ref)
    result = analyze_run(run.plan, run.outputs, timings=run.timings, scorer_override=scorer_override, plots=plots)
    files = run.carried_files(store)
    files.update(result.bundle_files())
    from batchsafe.bundles.provenance import with_provenance  # the parent's statement lists the parent's files

    files = with_provenance(files, run.plan, kind="analysis", parent=run.bundle_id)
    return store.write_bundle(files, kind="analysis", parent=run.bundle_id), result


def _context_of(spec_or_plan: Plan | str | Path | None) -> dict[str, Any]:
    """Settings, targets and labels from a Plan, a plan.lock.json path or a spec path (None: defaults)."""
    if spec_or_plan is None:
        return {}
    if isinstance(spec_or_plan, Plan):
        return _plan_context(spec_or_plan)
    path = Path(spec_or_plan)
    if path.suffix == ".json":
        return _plan_context(load_plan(path))
    from batchsafe.compiler.compile import load_spec

    spec, _ = load_spec(path)
    # A spec gives settings and targets but no plan summary: plan.* targets are not available.
    return {"settings": spec.analysis.model_dump(), "targets": [t.model_dump(exclude_none=True) for t in spec.targets],
            "alignment": {n: m.alignment for n, m in spec.models.items() if m.alignment},
            "title": spec.experiment.title or spec.experiment.id, "phase_order": [p.id for p in spec.phases]}


def analyze_samples(path: str | Path | bytes, spec_or_plan: Plan | str | Path | None = None, *,
                    plots: bool = True) -> AnalysisResult:
    """Registry, statistics, targets and report recomputed from a scores.jsonl alone.

    ``spec_or_plan`` (a Plan, a plan.lock.json or a spec file) supplies the statistical
    settings, the targets and the phase order; without it the defaults apply and there
    are no targets.
    """
    scored = read_scored(path)
    if not scored:
        raise AnalysisError(f"{path if not isinstance(path, bytes) else '<bytes>'}: no scored records")
    return analyze_scored(scored, plots=plots, **_context_of(spec_or_plan))
