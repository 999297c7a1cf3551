"""batchsafe rescore: rescore a bundle with other scorer versions into an audited child bundle."""

from __future__ import annotations

import argparse

from batchsafe import present
from batchsafe.cli._common import EXIT_OK, out, store_args, store_of


def cmd_rescore(args: argparse.Namespace) -> int:
    """Rescore a bundle with other scorer versions into a child bundle with an audit of changed labels."""
    from batchsafe.analysis.rescore import overrides_from_refs, render_rescore, rescore_bundle

    res = rescore_bundle(store_of(args), args.bundle, overrides_from_refs(args.scorer), plots=not args.no_plots)
    out().print(present.headline_table(res.analysis))
    out().print(render_rescore(res), markup=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("rescore", help="rescore a bundle with other scorer versions (child bundle + audit)")
    p.add_argument("bundle")
    p.add_argument("--scorer", action="append", required=True, metavar="NAME@VERSION")
    p.add_argument("--no-plots", action="store_true")
    store_args(p)
    p.set_defaults(func=cmd_rescore)
