"""bundle_run(run_dir, plan, store) -> bundle id: the bundle stage's entry point for a run.

A run bundle holds the plan, the spec texts it was compiled from, the outputs, the
volatile timings, the environment and the logs (and, once analysed, scores, flip
registry, statistics and report) and the provenance statement
(``bundles.provenance``). The journal is left out: it is the crash-recovery
form of ``outputs/samples.jsonl`` and carries nothing more.
"""

from __future__ import annotations

from pathlib import Path

from batchsafe.compiler.plan import Plan
from batchsafe.core import layout

from .provenance import with_provenance
from .store import BundleStore

#: Run-directory entries that never go into a bundle.
EXCLUDED = ("journal.jsonl", ".lock")


def run_files(run_dir: Path) -> dict[str, Path]:
    """Every regular file of a run directory by its POSIX name, minus EXCLUDED; links are refused."""
    files: dict[str, Path] = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_symlink():
            raise ValueError(f"{rel}: refusing to bundle a symbolic link")
        if path.is_file() and rel not in EXCLUDED and not rel.endswith(".tmp"):
            files[rel] = path
    return files


def bundle_run(run_dir: Path, plan: Plan, store: BundleStore, *, extra: dict[str, bytes] | None = None) -> str:
    """Write the run (plus ``extra`` named byte strings) as a bundle; return its id."""
    files: dict[str, bytes | Path] = dict(run_files(run_dir))
    files[layout.PLAN] = plan.to_bytes()
    for spec_file in plan.spec.files:
        files[layout.spec_name(spec_file.path)] = spec_file.text.encode("utf-8")
    files.update(extra or {})
    return store.write_bundle(with_provenance(files, plan, kind="run"), kind="run")
