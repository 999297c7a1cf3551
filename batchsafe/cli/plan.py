"""batchsafe plan: inspect locked plans: summary and differences."""

from __future__ import annotations

import argparse
import json

from batchsafe import present
from batchsafe.cli._common import EXIT_FAIL, EXIT_OK, out


def cmd_plan_show(args: argparse.Namespace) -> int:
    """Summarise a plan, as a table or JSON."""
    from batchsafe.compiler.plan import load_plan

    plan = load_plan(args.plan)
    if args.json:
        print(json.dumps(plan.summary(), indent=2, sort_keys=True))
        return EXIT_OK
    con = out()
    con.print(present.plan_table(plan))
    for note, items in (("unpinned (--allow-unpinned)", plan.unpinned), ("resolved at run time", plan.resolved_at_run)):
        if items:
            con.print(f"{note}:")
            for item in items:
                con.print(f"  {item}")
    return EXIT_OK


def cmd_plan_diff(args: argparse.Namespace) -> int:
    """What changed between two plans; exit 1 when they differ."""
    from batchsafe.compiler.plan import load_plan
    from batchsafe.compiler.plandiff import diff_plans

    diff = diff_plans(load_plan(args.a), load_plan(args.b))
    if args.json:
        print(diff.model_dump_json(indent=2))
        return EXIT_OK if diff.same else EXIT_FAIL
    con = out()
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
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
