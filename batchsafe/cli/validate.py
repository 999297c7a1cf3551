"""batchsafe validate: check a spec: schema and references, every error at file:line:col."""

from __future__ import annotations

import argparse

from batchsafe.cli._common import EXIT_OK, out


def cmd_validate(args: argparse.Namespace) -> int:
    """Schema and reference checks of a spec, without reading data files."""
    from batchsafe.compiler.yamlspec import resolve_spec

    # Unreadable files and YAML problems are rejected here, before the spec models,
    # jsonschema and the checks load (a garbage file is refused in a fraction of the time);
    # a readable spec is parsed again by load_spec, which costs milliseconds.
    resolve_spec(args.spec)
    from batchsafe.compiler.checks import Checker
    from batchsafe.compiler.compile import load_spec
    from batchsafe.compiler.diagnostics import SpecError
    from batchsafe.compiler.spec_checks import spec_only_checks

    spec, doc = load_spec(args.spec)
    # Every check that needs only the spec (and the names in it), exactly as compile runs them.
    diags = Checker(spec, doc, allow_unpinned=args.allow_unpinned).run() + spec_only_checks(spec, doc)
    if diags:
        raise SpecError(diags)
    out().print(f"ok: {args.spec}: {len(spec.phases)} phases, {len(spec.tasks)} tasks, "
                 f"{len(spec.models)} models, {len(spec.engines)} engines")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("validate", help="check a spec (schema and references)")
    p.add_argument("spec")
    p.add_argument("--allow-unpinned", action="store_true", help="record unpinned images/revisions instead of refusing them")
    p.set_defaults(func=cmd_validate)
