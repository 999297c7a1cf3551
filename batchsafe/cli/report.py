"""batchsafe report: a self-contained HTML page of a bundle (summary, targets, phases, plots, flip browser)."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

from batchsafe.cli._common import EXIT_OK, out, store_args, store_of


def cmd_report(args: argparse.Namespace) -> int:
    """Write <dir>/index.html for a bundle (store id, directory or archive); print its path."""
    from batchsafe.analysis.viewer import default_report_dir, write_report
    from batchsafe.verification.source import open_bundle

    store = store_of(args) if not Path(args.bundle).exists() else None
    with open_bundle(args.bundle, store) as src:
        dest = Path(args.output) if args.output else default_report_dir(args.out, src.bundle_id)
        path = write_report(src, dest)
    out().print(f"report:   {path}", markup=False)
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("report", help="write a self-contained HTML report of a bundle (flip browser included)")
    p.add_argument("bundle", help="bundle id (or unique prefix) in the store, bundle directory, or archive")
    p.add_argument("-o", "--output", metavar="DIR", help="directory for index.html (default: <out>/reports/<id>)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    store_args(p)
    p.set_defaults(func=cmd_report)
