"""batchsafe adjudicate: human labels for flip candidates: export a CSV, import the labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe.cli._common import EXIT_OK, out, store_args, store_of


def cmd_adjudicate_export(args: argparse.Namespace) -> int:
    """Write a bundle's flip candidates to a CSV for human labelling."""
    from batchsafe.analysis.adjudication import export_candidates, render_export
    from batchsafe.verification.source import open_bundle

    with open_bundle(args.bundle, store_of(args) if not Path(args.bundle).exists() else None) as src:
        res = export_candidates(src, Path(args.output), include=args.include, blind=args.blind)
    out().print(render_export(res), markup=False)
    return EXIT_OK


def cmd_adjudicate_import(args: argparse.Namespace) -> int:
    """Record filled-in labels into a child bundle (kappa when >= 2 raters)."""
    from batchsafe.analysis.adjudication import import_labels, render_import

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    res = import_labels(store_of(args), args.bundle, [Path(p) for p in args.csv], allowed_labels=labels)
    out().print(render_import(res), markup=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
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
