"""batchsafe run: run a locked plan into a resumable run directory."""

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
    try:
        summary = run_plan(plan, Path(args.out), resume=args.resume, progress=not args.no_progress)
    except RunInterrupted as exc:
        s = exc.summary
        err().print(f"interrupted after {s.groups_done}/{s.groups_total} groups; resume with: batchsafe run "
                     f"{shlex.quote(args.plan)} --out {shlex.quote(args.out)} --resume", markup=False)
        return 130
    # RunSetupError (exit 2) and RunError (exit 1) are reported by main() like every stage's errors.
    out().print(f"done: {summary.samples_done} samples, {summary.fillers_done} fillers in {summary.groups_total} "
                 f"groups ({summary.groups_run} run now) -> {summary.outputs['samples']}", markup=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("run", help="run a locked plan (resumable after a crash or Ctrl-C)")
    p.add_argument("plan", help="plan.lock.json")
    p.add_argument("--out", required=True, help="run directory (must be empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run journaled in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when stderr is not a TTY)")
    p.set_defaults(func=cmd_run)
