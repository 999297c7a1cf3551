"""The batchsafe command line: one module per command, each parsing arguments and calling the public API.

Exit codes: 0 success, 1 a check failed or plans differ, 2 bad input or usage, 130
interrupted (resumable). Every deliberate error is a ``BatchsafeError`` carrying its exit
code; ``main`` catches that root once, so no traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from batchsafe.cli._common import EXIT_INTERRUPTED, err
from batchsafe.core.errors import BatchsafeError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = ("validate", "compile", "plan", "run", "merge", "bundle", "analyze", "report", "verify", "diff",
            "rescore", "adjudicate", "registry", "engines")
"""Command modules under ``batchsafe.cli``, in ``--help`` order; each has ``register(subparsers)``."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from batchsafe.core.version import __version__

    parser = argparse.ArgumentParser(prog="batchsafe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"batchsafe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"batchsafe.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batchsafe`` console script: one handler for the one error root."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BatchsafeError as exc:
        console = err()
        for line in exc.render():
            console.print(line, markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err().print("interrupted", markup=False)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
