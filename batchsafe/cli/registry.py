"""batchsafe registry: the cross-bundle flip store (SQLite): add, query, show, list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batchsafe.cli._common import EXIT_OK, registry_args, registry_of, store_of


def cmd_registry(args: argparse.Namespace) -> int:
    """Add bundles to the persistent flip registry, or query it."""
    from batchsafe.registry import as_json, render_bundles, render_query, render_show

    with registry_of(args) as reg:
        if args.registry_command == "add":
            results = [reg.add_ref(ref, store_of(args) if not Path(ref).exists() else None) for ref in args.bundles]
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    reg = sub.add_parser("registry", help="persistent flip registry across bundles (SQLite)").add_subparsers(
        dest="registry_command", required=True)
    p = reg.add_parser("add", help="add bundles (idempotent)")
    p.add_argument("bundles", nargs="+")
    registry_args(p, cmd_registry)
    p = reg.add_parser("query", help="prompts that flipped in at least K bundles")
    p.add_argument("--min-bundles", type=int, default=1, metavar="K")
    for opt in ("model", "phase-kind", "condition", "direction", "domain", "task"):
        p.add_argument(f"--{opt}")
    registry_args(p, cmd_registry)
    p = reg.add_parser("show", help="one prompt across every registered bundle")
    p.add_argument("prompt")
    registry_args(p, cmd_registry)
    p = reg.add_parser("list", help="registered bundles")
    registry_args(p, cmd_registry)
