"""batchsafe engines: the engine kinds this build declares, from the one engine catalogue."""

from __future__ import annotations

import argparse
import importlib.util
import json

from batchsafe.cli._common import EXIT_OK, out


def cmd_engines(args: argparse.Namespace) -> int:
    """List every engine kind: dispatch modes, capabilities, default endpoint, what it needs."""
    from batchsafe.runtime.engines.catalogue import describe

    rows = describe()
    for row in rows:
        # Whether the optional dependencies import here, without importing them.
        row["available"] = all(importlib.util.find_spec(m) is not None for m in row["requires"])
    if args.json:
        out().print(json.dumps(rows, indent=2), markup=False, soft_wrap=True)
        return EXIT_OK
    for row in rows:
        needs = f"pip install 'batchsafe[{','.join(row['extras'])}]'" if row["extras"] else "a server (running, or launched)"
        state = "ready" if row["available"] else "not installed"
        out().print(f"{row['kind']:<9} {row['display']}: {row['summary']}", markup=False)
        out().print(f"          modes {', '.join(row['modes'])}; endpoint {row['default_endpoint'] or '-'}; "
                    f"needs {needs} ({state})", markup=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add this command's parser(s) to ``sub``."""
    p = sub.add_parser("engines", help="list the engine kinds a spec may name (modes, endpoints, extras)")
    p.add_argument("--json", action="store_true", help="machine-readable listing")
    p.set_defaults(func=cmd_engines)
