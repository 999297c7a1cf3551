"""batchsafe analyze: score, flip registry, statistics and report of a bundle or bare scored records."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe import present
from batchsafe.cli._common import EXIT_OK, EXIT_USAGE, err, out, store_args, store_of


def cmd_analyze(args: argparse.Namespace) -> int:
    """(Re)analyse a stored bundle into a child bundle, or bare scored records into a directory."""
    from batchsafe.analysis.analyze import analyze_bundle, analyze_samples

    overrides = {ref.partition("@")[0]: ref for ref in args.scorer or []}
    if args.samples:
        if args.bundle or overrides or not args.output:
            err().print("error: --samples takes no BUNDLE or --scorer and needs -o DIR", markup=False)
            return EXIT_USAGE
        res = analyze_samples(Path(args.samples), args.plan or args.spec, plots=not args.no_plots)
    elif args.bundle:
        child, res = analyze_bundle(store_of(args), args.bundle, scorer_override=overrides, plots=not args.no_plots)
    else:
        err().print("error: give a BUNDLE or --samples FILE.jsonl", markup=False)
        return EXIT_USAGE
    con = out()
    con.print(present.headline_table(res))
    if args.output:
        paths = res.write(Path(args.output))
        con.print(f"wrote {len(paths)} files to {args.output}", markup=False)
    if not args.samples:
        con.print(child, markup=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
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
