"""What every command shares: the two consoles, the store and registry options, exit codes."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from batchsafe.core.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from batchsafe.bundles.store import BundleStore
    from batchsafe.registry.db import Registry

__all__ = ["EXIT_FAIL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "err", "out", "registry_args", "registry_of",
           "store_args", "store_of"]


def err() -> Console:
    """stderr console: errors, warnings, progress."""
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # ":100:" is a position, not an emoji


def out() -> Console:
    """stdout console: results."""
    return Console(highlight=False, soft_wrap=True, emoji=False)


def store_args(p: argparse.ArgumentParser) -> None:
    """``--out`` (runs directory) and ``--store`` (bundle store) of commands that read bundles."""
    p.add_argument("--out", default="runs", help="runs directory (default: runs)")
    p.add_argument("--store", help="bundle store (default: $BATCHSAFE_STORE or <out>/store)")


def store_of(args: argparse.Namespace) -> BundleStore:
    """The bundle store named by ``--store``, ``$BATCHSAFE_STORE`` or ``<out>/store``."""
    from batchsafe.bundles.store import BundleStore
    from batchsafe.pipeline import default_store

    return BundleStore(Path(args.store) if args.store else default_store(Path(args.out)))


def registry_args(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
    """Options shared by the ``registry`` subcommands."""
    p.add_argument("--db", help="registry file (default: $BATCHSAFE_REGISTRY or <out>/registry.sqlite)")
    p.add_argument("--json", action="store_true")
    store_args(p)
    p.set_defaults(func=func)


def registry_of(args: argparse.Namespace) -> Registry:
    """The cross-bundle flip store named by ``--db``, ``$BATCHSAFE_REGISTRY`` or ``<out>/registry.sqlite``."""
    from batchsafe.registry import open_registry

    return open_registry(args.db or os.environ.get("BATCHSAFE_REGISTRY") or Path(args.out) / "registry.sqlite")
