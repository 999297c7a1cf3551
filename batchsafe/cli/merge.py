"""batchsafe merge: partial runs of one plan (``run --shard i/N``) -> one run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe.cli._common import EXIT_OK, out


def cmd_merge(args: argparse.Namespace) -> int:
    """Check the partials (hashes, plan, overlaps, gaps) and write the merged run; exit 1 when they do not add up."""
    from batchsafe.compiler.plan import load_plan
    from batchsafe.runtime.merge import merge_partials

    plan = load_plan(args.plan)
    # MergeError (exit 1: overlap, gap, altered partial) and MergeUsageError (exit 2) are reported by main().
    m = merge_partials(plan, [Path(p) for p in args.partials], Path(args.out))
    out().print(f"merged {len(m.shards)} partials: {m.samples} samples, {m.fillers} fillers in {m.groups} groups "
                f"-> {m.outputs['samples']} ({m.outputs_sha256})", markup=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser to ``sub``."""
    p = sub.add_parser("merge", help="merge the partial runs of `run --shard i/N` into one run directory")
    p.add_argument("plan", help="plan.lock.json the partials ran")
    p.add_argument("partials", nargs="+", help="partial run directories (one per non-empty shard)")
    p.add_argument("--out", required=True, help="merged run directory (must not exist or be empty)")
    p.set_defaults(func=cmd_merge)
