"""batchsafe diff: compare two bundles flip by flip, with deployment gates."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe.cli._common import store_args, store_of


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare two bundles: setup, output identity, flip registries, statistics; --fail-on gates."""
    from batchsafe.verification.diff import diff_bundles, evaluate_gates, exit_code, parse_gate, render_diff, with_gates
    from batchsafe.verification.source import open_bundle

    gates = [parse_gate(t) for t in args.fail_on or []]  # a GateError (exit 2) before any bundle is read
    store = store_of(args)
    with open_bundle(args.a, None if Path(args.a).exists() else store) as a, \
            open_bundle(args.b, None if Path(args.b).exists() else store) as b:
        diff = diff_bundles(a, b)
    results = evaluate_gates(diff, gates)
    print(with_gates(diff, results).model_dump_json(indent=2) if args.json else render_diff(diff, results), end="")
    return exit_code(results)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("diff", help="compare two bundles (exit 1 when a --fail-on gate fails)")
    p.add_argument("a", help="bundle A (id, directory or archive)")
    p.add_argument("b", help="bundle B")
    p.add_argument("--json", action="store_true")
    p.add_argument("--fail-on", action="append", metavar="METRIC>VALUE",
                   help='gate, e.g. \'b.stats.p1_batch_size.flip_rate.safety>0.05\' or \'agreement.overall<0.99\'')
    store_args(p)
    p.set_defaults(func=cmd_diff)
