"""batchsafe verify: recheck anyone's bundle stage by stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe.cli._common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, err, out, store_args, store_of


def cmd_verify(args: argparse.Namespace) -> int:
    """Recheck a bundle stage by stage; exit 1 when any stage fails."""
    from batchsafe.compiler.diagnostics import safe_text
    from batchsafe.verification.entry import verify  # rejects bad input before the analysis stack loads

    if args.replay < 0:
        err().print("error: --replay takes a number of groups >= 0", markup=False)
        return EXIT_USAGE
    store = store_of(args) if not Path(args.bundle).exists() else None
    report = verify(args.bundle, store, claimed_id=args.id, data_dir=args.data_dir, spec=args.spec,
                    recompile=not args.no_recompile, replay=args.replay, replay_seed=args.replay_seed, engine=args.engine,
                    strict=args.strict)
    if args.vsa:
        _write_vsa(report, args)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        con = out()
        for line in report.lines():
            con.print(safe_text(line), markup=False)  # bundle names and texts may carry bidi/control characters
    return EXIT_OK if report.ok else EXIT_FAIL


def _write_vsa(report, args: argparse.Namespace) -> None:
    """--vsa FILE: a SLSA Verification Summary Attestation of this report (written even on FAIL)."""
    from batchsafe.core.atomic import atomic_write
    from batchsafe.core.canonical import canonical_bytes
    from batchsafe.verification.provenance import vsa

    uri = Path(args.bundle).resolve().as_uri() if Path(args.bundle).exists() else f"urn:batchsafe:bundle:{report.bundle_id}"
    atomic_write(Path(args.vsa), canonical_bytes(vsa(report, resource_uri=uri)))
    err().print(f"verification summary attestation: {args.vsa}", markup=False)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("verify", help="recheck a bundle: integrity, schemas, plan, coverage, rescoring, statistics, targets")
    p.add_argument("bundle", help="archive (.tar/.tar.gz), bundle directory, or bundle id in the store")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--id", help="the bundle id you expect (checked against the manifest's hash)")
    p.add_argument("--data-dir", help="datasets for recompiling the plan (default: $BATCHSAFE_DATA)")
    p.add_argument("--spec", help="recompile this spec (for specs whose data ships beside them)")
    p.add_argument("--no-recompile", action="store_true", help="check the plan's internal consistency only")
    p.add_argument("--replay", type=int, default=0, metavar="N", help="re-run N seeded groups and compare bytes")
    p.add_argument("--replay-seed", type=int, default=0, help="seed choosing the replayed groups")
    p.add_argument("--engine", help="replay only groups of this plan engine")
    p.add_argument("--strict", action="store_true", help="fail on listed files no stage checks (logs, volatile)")
    p.add_argument("--vsa", metavar="FILE", help="also write a SLSA verification summary attestation (in-toto JSON)")
    store_args(p)
    p.set_defaults(func=cmd_verify)
