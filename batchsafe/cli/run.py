"""batchsafe run: run a locked plan into a resumable run directory (one process, one shard, or Ray workers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe.cli._common import EXIT_OK, err, out


def cmd_run(args: argparse.Namespace) -> int:
    """Run a locked plan into a run directory; exit 130 when interrupted (resumable)."""
    import shlex

    from batchsafe.compiler.plan import load_plan
    from batchsafe.runtime.executor import RunInterrupted, run_plan

    plan = load_plan(args.plan)
    if args.backend == "ray":
        return _run_ray(plan, args)
    try:
        if args.shard:
            from batchsafe.runtime.partial import run_shard
            from batchsafe.runtime.shard import parse_shard

            i, n = parse_shard(args.shard)
            summary = run_shard(plan, Path(args.out), i, n, resume=args.resume, progress=not args.no_progress)
        else:
            summary = run_plan(plan, Path(args.out), resume=args.resume, progress=not args.no_progress)
    except RunInterrupted as exc:
        s = exc.summary
        shard = f" --shard {args.shard}" if args.shard else ""
        err().print(f"interrupted after {s.groups_done}/{s.groups_total} groups; resume with: batchsafe run "
                    f"{shlex.quote(args.plan)}{shard} --out {shlex.quote(args.out)} --resume", markup=False)
        return 130
    # RunSetupError (exit 2) and RunError (exit 1) are reported by main() like every stage's errors.
    if args.shard:
        out().print(f"shard {args.shard} done: {summary.samples_done} samples in {summary.groups_total} groups "
                    f"({summary.groups_run} run now) -> {args.out}; merge every shard with: batchsafe merge "
                    f"{shlex.quote(args.plan)} PARTIAL... --out DIR", markup=False)
        return EXIT_OK
    out().print(f"done: {summary.samples_done} samples, {summary.fillers_done} fillers in {summary.groups_total} "
                f"groups ({summary.groups_run} run now) -> {summary.outputs['samples']}", markup=False)
    return EXIT_OK


def _run_ray(plan, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """``--backend ray``: one actor per shard, then merge into --out."""
    from batchsafe.runtime.ray_backend import run_ray

    if args.shard:
        err().print("error: --shard runs one shard in this process; --backend ray runs all of them", markup=False)
        return 2
    s = run_ray(plan, Path(args.out), workers=args.workers, resume=args.resume, address=args.ray_address,
                partials_dir=Path(args.partials) if args.partials else None, gpus=args.gpus_per_worker,
                progress=not args.no_progress)
    if s.already_complete:
        out().print(f"already complete: {args.out}", markup=False)
        return EXIT_OK
    m = s.merge
    assert m is not None
    restarts = sum(s.restarts.values())
    out().print(f"done on {args.workers} Ray workers ({len(s.shards_run)} shards run now"
                + (f", {restarts} worker restarts recovered" if restarts else "")
                + f"): {m.samples} samples, {m.fillers} fillers in {m.groups} groups -> {m.outputs['samples']} "
                f"({m.outputs_sha256})", markup=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("run", help="run a locked plan (resumable after a crash or Ctrl-C)")
    p.add_argument("plan", help="plan.lock.json")
    p.add_argument("--out", required=True, help="run directory (must be empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run journaled in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when stderr is not a TTY)")
    p.add_argument("--shard", metavar="i/N", help="run only shard i (0-based) of N into --out (a partial run; "
                                                  "`batchsafe merge` joins them)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: one Ray actor per shard, merged into --out")
    p.add_argument("--workers", type=int, default=2, help="Ray workers = shards (default 2)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: start a local one on 127.0.0.1)")
    p.add_argument("--partials", help="where Ray workers write partial runs (default: <out>.shards)")
    p.add_argument("--gpus-per-worker", type=float, help="override the GPUs each Ray worker reserves")
    p.set_defaults(func=cmd_run)
