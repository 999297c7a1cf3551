"""batchsafe bundle: make, pack, unpack, export, show and list bundles."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsafe import present
from batchsafe.cli._common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, err, out, store_args, store_of


def cmd_bundle_make(args: argparse.Namespace) -> int:
    """Compile, run (or resume) and bundle a spec; print the bundle id and a summary."""
    from batchsafe.pipeline import make_bundle

    res = make_bundle(args.spec, args.data_dir, out_root=args.out, store_root=args.store,
                      allow_unpinned=args.allow_unpinned, fresh=args.fresh, progress=not args.no_progress,
                      workers=args.workers if args.backend == "ray" else 0)
    con = out()
    con.print(present.plan_table(res.plan))
    con.print(present.identity_table(res.identity))
    differing = sum(r.differing for r in res.identity)
    compared = sum(r.compared for r in res.identity)
    con.print(f"{differing} of {compared} non-baseline outputs differ from their baseline", markup=False)
    con.print(present.headline_table(res))
    con.print(f"run:      {res.run_dir} ({res.run.groups_run} groups run now, {res.run.groups_total} in total)", markup=False)
    con.print(f"outputs:  {res.outputs_sha256}", markup=False)
    con.print(f"bundle:   {res.bundle_id}", markup=False)
    con.print(f"stored:   {res.bundle_dir}", markup=False)
    if res.report is not None:
        con.print(f"report:   {res.report}", markup=False)
    return EXIT_OK


def cmd_bundle_pack(args: argparse.Namespace) -> int:
    """Write a deterministic archive of a bundle."""
    from batchsafe.bundles.archive import pack

    store = store_of(args)
    bundle_id = store.resolve(args.bundle)
    archive = pack(store, bundle_id, Path(args.output))
    out().print(f"packed {bundle_id} -> {archive}", markup=False)
    return EXIT_OK


def cmd_bundle_unpack(args: argparse.Namespace) -> int:
    """Import an archive into the store after checking everything in it (hostile input)."""
    from batchsafe.bundles.archive import unpack

    bundle_id = unpack(Path(args.archive), store_of(args))
    out().print(f"unpacked {bundle_id}", markup=False)
    return EXIT_OK


def cmd_bundle_show(args: argparse.Namespace) -> int:
    """List a bundle's files; --check also recomputes every hash."""
    store = store_of(args)
    bundle_id = store.resolve(args.bundle)
    manifest = store.manifest(bundle_id)
    if args.json:
        print(manifest.model_dump_json(indent=2))
    else:
        out().print(present.manifest_table(manifest))
        out().print(bundle_id, markup=False)
    if args.check:
        problems = store.verify(bundle_id)
        for p in problems:
            err().print(f"FAIL {p}", markup=False)
        if problems:
            return EXIT_FAIL
        err().print(f"PASS every file of {bundle_id} matches its sha256 and size", markup=False)
    return EXIT_OK


def cmd_bundle_export(args: argparse.Namespace) -> int:
    """Materialize a bundle as a plain directory tree (names from the manifest); never overwrite."""
    store = store_of(args)
    bundle_id = store.resolve(args.bundle)
    dest = Path(args.directory)
    if dest.exists() and (not dest.is_dir() or dest.is_symlink() or any(dest.iterdir())):
        err().print(f"error: {dest} exists and is not an empty directory; refusing to overwrite", markup=False)
        return EXIT_USAGE
    store.materialize(bundle_id, dest)
    out().print(f"exported {bundle_id} -> {dest} (check it with: batchsafe verify {dest})", markup=False)
    return EXIT_OK


def cmd_bundle_list(args: argparse.Namespace) -> int:
    """Bundle ids in the store."""
    for bundle_id in store_of(args).list_bundles():
        print(bundle_id)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    bundle = sub.add_parser("bundle", help="make, pack, unpack and inspect bundles").add_subparsers(
        dest="bundle_command", required=True)
    p = bundle.add_parser("make", help="compile, run and bundle a spec")
    p.add_argument("spec")
    p.add_argument("--data-dir", help="directory holding the datasets (default: $BATCHSAFE_DATA)")
    p.add_argument("--allow-unpinned", action="store_true")
    p.add_argument("--fresh", action="store_true", help="start a new run directory instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: one Ray actor per shard, merged into the run directory")
    p.add_argument("--workers", type=int, default=2, help="Ray workers = shards with --backend ray (default 2)")
    store_args(p)
    p.set_defaults(func=cmd_bundle_make)
    p = bundle.add_parser("pack", help="write a deterministic archive of a bundle")
    p.add_argument("bundle", help="bundle id (sha256:..., hex, or a unique prefix of 8+ hex)")
    p.add_argument("-o", "--output", required=True, help="archive path (.tar, or .tar.gz)")
    store_args(p)
    p.set_defaults(func=cmd_bundle_pack)
    p = bundle.add_parser("unpack", help="import an archive (checked as hostile input)")
    p.add_argument("archive")
    store_args(p)
    p.set_defaults(func=cmd_bundle_unpack)
    p = bundle.add_parser("show", help="list a bundle's files")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true")
    p.add_argument("--check", action="store_true", help="recompute every file's sha256")
    store_args(p)
    p.set_defaults(func=cmd_bundle_show)
    p = bundle.add_parser("export", help="write a bundle as a plain directory tree (refuses to overwrite)")
    p.add_argument("bundle", help="bundle id (sha256:..., hex, or a unique prefix of 8+ hex)")
    p.add_argument("directory", help="new (or empty) directory")
    store_args(p)
    p.set_defaults(func=cmd_bundle_export)
    p = bundle.add_parser("list", help="bundle ids in the store")
    store_args(p)
    p.set_defaults(func=cmd_bundle_list)
