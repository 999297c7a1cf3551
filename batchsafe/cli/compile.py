"""batchsafe compile: compile a spec and its data into a locked plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe.core.atomic import atomic_write
from batchsafe.cli._common import EXIT_OK, err, out


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile a spec into plan.lock.json."""
    from batchsafe.compiler.compile import compile_spec

    plan = compile_spec(args.spec, args.data_dir, allow_unpinned=args.allow_unpinned, store=args.store)
    dest = Path(args.output or Path(args.spec).with_suffix("").name + ".plan.lock.json")
    atomic_write(dest, plan.to_bytes())
    out().print(f"wrote {dest}: {len(plan.samples)} samples in {len(plan.groups)} groups, plan_hash {plan.plan_hash}")
    if plan.unpinned:
        err().print(f"warning: {len(plan.unpinned)} unpinned references recorded (--allow-unpinned)")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("compile", help="compile a spec and its data into a locked plan")
    p.add_argument("spec")
    p.add_argument("--data-dir", help="directory holding the datasets (default: $BATCHSAFE_DATA)")
    p.add_argument("-o", "--output", help="plan file (default: <spec name>.plan.lock.json)")
    p.add_argument("--store", help="bundle store for select.from_bundle (default: $BATCHSAFE_STORE or runs/store)")
    p.add_argument("--allow-unpinned", action="store_true", help="record unpinned images/revisions instead of refusing them")
    p.set_defaults(func=cmd_compile)
