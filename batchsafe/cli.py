"""The batchsafe command line: parses arguments and dispatches to the stages.

Exit codes: 0 success, 1 a check failed or plans differ, 2 bad input or usage.
No traceback reaches the user for bad input: stage errors are reported as text.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from batchsafe import present

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def cmd_validate(args: argparse.Namespace) -> int:
    """Schema and reference checks of a spec, without reading data files."""
    from compiler.checks import Checker
    from compiler.compile import load_spec
    from compiler.diagnostics import SpecError

    spec, doc = load_spec(args.spec)
    diags = Checker(spec, doc, allow_unpinned=args.allow_unpinned).run()
    if diags:
        raise SpecError(diags)
    _out().print(f"ok: {args.spec}: {len(spec.phases)} phases, {len(spec.tasks)} tasks, "
                 f"{len(spec.models)} models, {len(spec.engines)} engines")
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile a spec into plan.lock.json."""
    from compiler.compile import compile_spec

    plan = compile_spec(args.spec, args.data_dir, allow_unpinned=args.allow_unpinned, store=args.store)
    out = Path(args.output or Path(args.spec).with_suffix("").name + ".plan.lock.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(plan.to_bytes())
    tmp.replace(out)
    _out().print(f"wrote {out}: {len(plan.samples)} samples in {len(plan.groups)} groups, plan_hash {plan.plan_hash}")
    if plan.unpinned:
        _err().print(f"warning: {len(plan.unpinned)} unpinned references recorded (--allow-unpinned)")
    return EXIT_OK


def cmd_plan_show(args: argparse.Namespace) -> int:
    """Summarise a plan, as a table or JSON."""
    from compiler.plan import load_plan

    plan = load_plan(args.plan)
    if args.json:
        print(json.dumps(plan.summary(), indent=2, sort_keys=True))
        return EXIT_OK
    con = _out()
    con.print(present.plan_table(plan))
    for note, items in (("unpinned (--allow-unpinned)", plan.unpinned), ("resolved at run time", plan.resolved_at_run)):
        if items:
            con.print(f"{note}:")
            for item in items:
                con.print(f"  {item}")
    return EXIT_OK


def cmd_plan_diff(args: argparse.Namespace) -> int:
    """What changed between two plans; exit 1 when they differ."""
    from compiler.plan import load_plan
    from compiler.plandiff import diff_plans

    diff = diff_plans(load_plan(args.a), load_plan(args.b))
    if args.json:
        print(diff.model_dump_json(indent=2))
        return EXIT_OK if diff.same else EXIT_FAIL
    con = _out()
    if diff.same:
        con.print(f"identical plans ({diff.plan_hash[0]})")
        return EXIT_OK
    con.print(f"plan_hash {diff.plan_hash[0]} -> {diff.plan_hash[1]}")
    for section in ("settings", "inputs", "phases", "engines", "models"):
        for ch in getattr(diff, section):
            con.print(f"  {ch.where}: {json.dumps(ch.a)} -> {json.dumps(ch.b)}")
    if diff.prompts_added or diff.prompts_removed:
        con.print(f"  prompts: +{len(diff.prompts_added)} -{len(diff.prompts_removed)}")
    con.print(f"  samples: +{diff.samples_added} -{diff.samples_removed}, regrouped {diff.samples_regrouped}")
    return EXIT_FAIL


def cmd_run(args: argparse.Namespace) -> int:
    """Run a locked plan into a run directory; exit 130 when interrupted (resumable)."""
    import shlex

    from compiler.plan import load_plan
    from runtime.executor import RunInterrupted, run_plan

    plan = load_plan(args.plan)
    try:
        summary = run_plan(plan, Path(args.out), resume=args.resume, progress=not args.no_progress)
    except RunInterrupted as exc:
        s = exc.summary
        _err().print(f"interrupted after {s.groups_done}/{s.groups_total} groups; resume with: batchsafe run "
                     f"{shlex.quote(args.plan)} --out {shlex.quote(args.out)} --resume", markup=False)
        return 130
    # RunSetupError (exit 2) and RunError (exit 1) are reported by main() like every stage's errors.
    _out().print(f"done: {summary.samples_done} samples, {summary.fillers_done} fillers in {summary.groups_total} "
                 f"groups ({summary.groups_run} run now) -> {summary.outputs['samples']}", markup=False)
    return EXIT_OK


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from batchsafe.pipeline import default_store
    from bundles.store import BundleStore

    return BundleStore(Path(args.store) if args.store else default_store(Path(args.out)))


def cmd_bundle_make(args: argparse.Namespace) -> int:
    """Compile, run (or resume) and bundle a spec; print the bundle id and a summary."""
    from batchsafe.pipeline import make_bundle

    res = make_bundle(args.spec, args.data_dir, out_root=args.out, store_root=args.store,
                      allow_unpinned=args.allow_unpinned, fresh=args.fresh, progress=not args.no_progress)
    con = _out()
    con.print(present.plan_table(res.plan))
    con.print(present.identity_table(res.identity))
    differing = sum(r.differing for r in res.identity)
    compared = sum(r.compared for r in res.identity)
    con.print(f"{differing} of {compared} non-baseline outputs differ from their baseline", markup=False)
    con.print(present.headline_table(res))
    con.print(f"run:      {res.run_dir} ({res.run.groups_run} groups run now, {res.run.groups_total} in total)", markup=False)
    con.print(f"outputs:  {res.outputs_sha256}", markup=False)
    con.print(f"bundle:   {res.bundle_id}", markup=False)
    con.print(f"stored:   {res.bundle_dir}", markup=False)
    return EXIT_OK


def cmd_bundle_pack(args: argparse.Namespace) -> int:
    """Write a deterministic archive of a bundle."""
    from bundles.archive import pack

    store = _store(args)
    bundle_id = store.resolve(args.bundle)
    out = pack(store, bundle_id, Path(args.output))
    _out().print(f"packed {bundle_id} -> {out}", markup=False)
    return EXIT_OK


def cmd_bundle_unpack(args: argparse.Namespace) -> int:
    """Import an archive into the store after checking everything in it (hostile input)."""
    from bundles.archive import unpack

    bundle_id = unpack(Path(args.archive), _store(args))
    _out().print(f"unpacked {bundle_id}", markup=False)
    return EXIT_OK


def cmd_bundle_show(args: argparse.Namespace) -> int:
    """List a bundle's files; --check also recomputes every hash."""
    store = _store(args)
    bundle_id = store.resolve(args.bundle)
    manifest = store.manifest(bundle_id)
    if args.json:
        print(manifest.model_dump_json(indent=2))
    else:
        _out().print(present.manifest_table(manifest))
        _out().print(bundle_id, markup=False)
    if args.check:
        problems = store.verify(bundle_id)
        for p in problems:
            _err().print(f"FAIL {p}", markup=False)
        if problems:
            return EXIT_FAIL
        _err().print(f"PASS every file of {bundle_id} matches its sha256 and size", markup=False)
    return EXIT_OK


def cmd_bundle_list(args: argparse.Namespace) -> int:
    """Bundle ids in the store."""
    for bundle_id in _store(args).list_bundles():
        print(bundle_id)
    return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    """(Re)analyse a stored bundle into a child bundle, or bare scored records into a directory."""
    from analysis.analyze import AnalysisError, analyze_bundle, analyze_samples
    from analysis.flips import RecordError
    from analysis.scoring import ScoringError

    overrides = {ref.partition("@")[0]: ref for ref in args.scorer or []}
    try:
        if args.samples:
            if args.bundle or overrides or not args.output:
                _err().print("error: --samples takes no BUNDLE or --scorer and needs -o DIR", markup=False)
                return EXIT_USAGE
            res = analyze_samples(Path(args.samples), args.plan or args.spec, plots=not args.no_plots)
        elif args.bundle:
            child, res = analyze_bundle(_store(args), args.bundle, scorer_override=overrides, plots=not args.no_plots)
        else:
            _err().print("error: give a BUNDLE or --samples FILE.jsonl", markup=False)
            return EXIT_USAGE
    except (AnalysisError, RecordError, ScoringError) as exc:
        _err().print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    con = _out()
    con.print(present.headline_table(res))
    if args.output:
        paths = res.write(Path(args.output))
        con.print(f"wrote {len(paths)} files to {args.output}", markup=False)
    if not args.samples:
        con.print(child, markup=False)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Recheck a bundle stage by stage; exit 1 when any stage fails."""
    from verification.verify import verify

    if args.replay < 0:
        _err().print("error: --replay takes a number of groups >= 0", markup=False)
        return EXIT_USAGE
    store = _store(args) if not Path(args.bundle).exists() else None
    report = verify(args.bundle, store, claimed_id=args.id, data_dir=args.data_dir, spec=args.spec,
                    recompile=not args.no_recompile, replay=args.replay, replay_seed=args.replay_seed, engine=args.engine)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        con = _out()
        for line in report.lines():
            con.print(line, markup=False)
    return EXIT_OK if report.ok else EXIT_FAIL


def cmd_rescore(args: argparse.Namespace) -> int:
    """Rescore a bundle with other scorer versions into a child bundle with an audit of changed labels."""
    from analysis.rescore import overrides_from_refs, render_rescore, rescore_bundle

    res = rescore_bundle(_store(args), args.bundle, overrides_from_refs(args.scorer), plots=not args.no_plots)
    _out().print(present.headline_table(res.analysis))
    _out().print(render_rescore(res), markup=False)
    return EXIT_OK


def cmd_adjudicate_export(args: argparse.Namespace) -> int:
    """Write a bundle's flip candidates to a CSV for human labelling."""
    from analysis.adjudication import export_candidates, render_export
    from verification.source import open_bundle

    with open_bundle(args.bundle, _store(args) if not Path(args.bundle).exists() else None) as src:
        res = export_candidates(src, Path(args.output), include=args.include, blind=args.blind)
    _out().print(render_export(res), markup=False)
    return EXIT_OK


def cmd_adjudicate_import(args: argparse.Namespace) -> int:
    """Record filled-in labels into a child bundle (kappa when >= 2 raters)."""
    from analysis.adjudication import import_labels, render_import

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    res = import_labels(_store(args), args.bundle, [Path(p) for p in args.csv], allowed_labels=labels)
    _out().print(render_import(res), markup=False)
    return EXIT_OK


def _registry(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import os

    from registry import open_registry

    return open_registry(args.db or os.environ.get("BATCHSAFE_REGISTRY") or Path(args.out) / "registry.sqlite")


def cmd_registry(args: argparse.Namespace) -> int:
    """Add bundles to the persistent flip registry, or query it."""
    from registry import as_json, render_bundles, render_query, render_show

    with _registry(args) as reg:
        if args.registry_command == "add":
            results = [reg.add_ref(ref, _store(args) if not Path(ref).exists() else None) for ref in args.bundles]
            if args.json:
                sys.stdout.write(as_json(results).decode())
            for r in results if not args.json else []:
                print(f"added {r.bundle}: {r.flip_rows} flip rows ({r.flipped} flipped), {r.prompts} prompts "
                      f"({r.new_prompts} new)" if r.added else f"already registered: {r.bundle} (nothing changed)")
        elif args.registry_command == "query":
            res = reg.query(min_bundles=args.min_bundles, model=args.model, phase_kind=args.phase_kind,
                            condition=args.condition, direction=args.direction, domain=args.domain, task=args.task)
            print(as_json(res).decode() if args.json else render_query(res, n_bundles=len(reg.bundles())), end="")
        elif args.registry_command == "show":
            h = reg.show(args.prompt)
            print(as_json(h).decode() if args.json else render_show(h), end="")
        else:
            b = reg.bundles()
            print(as_json(b).decode() if args.json else render_bundles(b), end="")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare two bundles: setup, output identity, flip registries, statistics; --fail-on gates."""
    from verification.diff import GateError, diff_bundles, evaluate_gates, exit_code, parse_gate, render_diff, with_gates
    from verification.source import open_bundle

    try:
        gates = [parse_gate(t) for t in args.fail_on or []]
        store = _store(args)
        with open_bundle(args.a, None if Path(args.a).exists() else store) as a, \
                open_bundle(args.b, None if Path(args.b).exists() else store) as b:
            diff = diff_bundles(a, b)
        results = evaluate_gates(diff, gates)
    except GateError as exc:
        _err().print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    print(with_gates(diff, results).model_dump_json(indent=2) if args.json else render_diff(diff, results), end="")
    return exit_code(results)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from batchsafe import __version__

    parser = argparse.ArgumentParser(prog="batchsafe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"batchsafe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a spec (schema and references)")
    p.add_argument("spec")
    p.add_argument("--allow-unpinned", action="store_true", help="record unpinned images/revisions instead of refusing them")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("compile", help="compile a spec and its data into a locked plan")
    p.add_argument("spec")
    p.add_argument("--data-dir", help="directory holding the datasets (default: $BATCHSAFE_DATA)")
    p.add_argument("-o", "--output", help="plan file (default: <spec name>.plan.lock.json)")
    p.add_argument("--store", help="bundle store for select.from_bundle (default: $BATCHSAFE_STORE or runs/store)")
    p.add_argument("--allow-unpinned", action="store_true", help="record unpinned images/revisions instead of refusing them")
    p.set_defaults(func=cmd_compile)

    plan = sub.add_parser("plan", help="inspect locked plans").add_subparsers(dest="plan_command", required=True)
    p = plan.add_parser("show", help="summarise a plan")
    p.add_argument("plan")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=cmd_plan_show)
    p = plan.add_parser("diff", help="what changed between two plans (exit 1 when they differ)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan_diff)

    p = sub.add_parser("run", help="run a locked plan (resumable after a crash or Ctrl-C)")
    p.add_argument("plan", help="plan.lock.json")
    p.add_argument("--out", required=True, help="run directory (must be empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run journaled in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when stderr is not a TTY)")
    p.set_defaults(func=cmd_run)
    bundle = sub.add_parser("bundle", help="make, pack, unpack and inspect bundles").add_subparsers(
        dest="bundle_command", required=True)

    def store_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", default="runs", help="runs directory (default: runs)")
        p.add_argument("--store", help="bundle store (default: $BATCHSAFE_STORE or <out>/store)")

    p = bundle.add_parser("make", help="compile, run and bundle a spec")
    p.add_argument("spec")
    p.add_argument("--data-dir", help="directory holding the datasets (default: $BATCHSAFE_DATA)")
    p.add_argument("--allow-unpinned", action="store_true")
    p.add_argument("--fresh", action="store_true", help="start a new run directory instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    store_args(p)
    p.set_defaults(func=cmd_bundle_make)
    p = bundle.add_parser("pack", help="write a deterministic archive of a bundle")
    p.add_argument("bundle", help="bundle id (sha256:..., hex, or a unique prefix of 8+ hex)")
    p.add_argument("-o", "--output", required=True, help="archive path (.tar, or .tar.gz)")
    store_args(p)
    p.set_defaults(func=cmd_bundle_pack)
    p = bundle.add_parser("unpack", help="import an archive (checked as hostile input)")
    p.add_argument("archive")
    store_args(p)
    p.set_defaults(func=cmd_bundle_unpack)
    p = bundle.add_parser("show", help="list a bundle's files")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true")
    p.add_argument("--check", action="store_true", help="recompute every file's sha256")
    store_args(p)
    p.set_defaults(func=cmd_bundle_show)
    p = bundle.add_parser("list", help="bundle ids in the store")
    store_args(p)
    p.set_defaults(func=cmd_bundle_list)

    p = sub.add_parser("analyze", help="score, flip registry, statistics, targets and report of a bundle")
    p.add_argument("bundle", nargs="?", help="bundle id (writes a child bundle and prints its id)")
    p.add_argument("--samples", metavar="FILE.jsonl", help="analyse bare scored records instead of a bundle")
    p.add_argument("--plan", help="plan.lock.json for --samples (settings, targets)")
    p.add_argument("--spec", help="spec for --samples (settings, targets)")
    p.add_argument("--scorer", action="append", metavar="NAME@VERSION", help="rescore with this scorer version")
    p.add_argument("-o", "--output", metavar="DIR", help="also write the analysis files into DIR")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    store_args(p)
    p.set_defaults(func=cmd_analyze)
    p = sub.add_parser("verify", help="recheck a bundle: integrity, schemas, plan, coverage, rescoring, statistics, targets")
    p.add_argument("bundle", help="archive (.tar/.tar.gz), bundle directory, or bundle id in the store")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--id", help="the bundle id you expect (checked against the manifest's hash)")
    p.add_argument("--data-dir", help="datasets for recompiling the plan (default: $BATCHSAFE_DATA)")
    p.add_argument("--spec", help="recompile this spec (for specs whose data ships beside them)")
    p.add_argument("--no-recompile", action="store_true", help="check the plan's internal consistency only")
    p.add_argument("--replay", type=int, default=0, metavar="N", help="re-run N seeded groups and compare bytes")
    p.add_argument("--replay-seed", type=int, default=0, help="seed choosing the replayed groups")
    p.add_argument("--engine", help="replay only groups of this plan engine")
    store_args(p)
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("diff", help="compare two bundles (exit 1 when a --fail-on gate fails)")
    p.add_argument("a", help="bundle A (id, directory or archive)")
    p.add_argument("b", help="bundle B")
    p.add_argument("--json", action="store_true")
    p.add_argument("--fail-on", action="append", metavar="METRIC>VALUE",
                   help='gate, e.g. \'b.stats.p1_batch_size.flip_rate.safety>0.05\' or \'agreement.overall<0.99\'')
    store_args(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("rescore", help="rescore a bundle with other scorer versions (child bundle + audit)")
    p.add_argument("bundle")
    p.add_argument("--scorer", action="append", required=True, metavar="NAME@VERSION")
    p.add_argument("--no-plots", action="store_true")
    store_args(p)
    p.set_defaults(func=cmd_rescore)

    adj = sub.add_parser("adjudicate", help="human labels for flip candidates").add_subparsers(
        dest="adjudicate_command", required=True)
    p = adj.add_parser("export", help="write flip candidates to a CSV for raters")
    p.add_argument("bundle")
    p.add_argument("-o", "--output", default="candidates.csv")
    p.add_argument("--include", choices=("flips", "unsafe", "safety"), default="flips")
    p.add_argument("--blind", action="store_true", help="hide the scorer's labels from raters")
    store_args(p)
    p.set_defaults(func=cmd_adjudicate_export)
    p = adj.add_parser("import", help="record filled-in CSVs into a child bundle")
    p.add_argument("bundle", help="the bundle the candidates came from")
    p.add_argument("csv", nargs="+")
    p.add_argument("--labels", help="comma-separated allowed labels (default: the scorer's labels + unclear)")
    store_args(p)
    p.set_defaults(func=cmd_adjudicate_import)

    reg = sub.add_parser("registry", help="persistent flip registry across bundles (SQLite)").add_subparsers(
        dest="registry_command", required=True)

    def reg_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help="registry file (default: $BATCHSAFE_REGISTRY or <out>/registry.sqlite)")
        p.add_argument("--json", action="store_true")
        store_args(p)
        p.set_defaults(func=cmd_registry)

    p = reg.add_parser("add", help="add bundles (idempotent)")
    p.add_argument("bundles", nargs="+")
    reg_args(p)
    p = reg.add_parser("query", help="prompts that flipped in at least K bundles")
    p.add_argument("--min-bundles", type=int, default=1, metavar="K")
    for opt in ("model", "phase-kind", "condition", "direction", "domain", "task"):
        p.add_argument(f"--{opt}")
    reg_args(p)
    p = reg.add_parser("show", help="one prompt across every registered bundle")
    p.add_argument("prompt")
    reg_args(p)
    p = reg.add_parser("list", help="registered bundles")
    reg_args(p)
    return parser


INPUT_ERRORS = {
    "analysis.analyze": "AnalysisError", "analysis.flips": "RecordError", "analysis.scoring": "ScoringError",
    "analysis.adjudication_models": "AdjudicationError", "registry.migrations": "RegistryError",
}
"""Module -> bad-input error class of the analysis and registry commands (exit 2)."""


def _loaded_input_errors() -> tuple[type[BaseException], ...]:
    # Only from modules already imported: a module that was never loaded raised nothing, and
    # importing analysis (scipy, statsmodels, matplotlib) here would add ~2 s to every
    # command, `batchsafe run` and its resumes included.
    return tuple(getattr(sys.modules[m], cls) for m, cls in INPUT_ERRORS.items() if m in sys.modules)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batchsafe`` console script."""
    from bundles.manifest import BundleError
    from compiler.diagnostics import SpecError
    from compiler.plan import PlanError
    from runtime.executor import RunError, RunInterrupted, RunSetupError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        err = _err()
        for diag in exc.diagnostics:
            err.print(diag.format(), markup=False)
        err.print(f"{len(exc.diagnostics)} error{'s' if len(exc.diagnostics) != 1 else ''}", markup=False)
        return EXIT_USAGE
    except PlanError as exc:
        _err().print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    except RunInterrupted as exc:
        s = exc.summary
        _err().print(f"interrupted after {s.groups_done}/{s.groups_total} groups; run the same command again to resume",
                     markup=False)
        return 130
    except RunSetupError as exc:
        _err().print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    except RunError as exc:
        _err().print(f"error: {exc}", markup=False)
        return EXIT_FAIL
    except BundleError as exc:
        _err().print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    except Exception as exc:
        if not isinstance(exc, _loaded_input_errors()):
            raise
        _err().print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err().print("interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
