"""batchsafe: declarative, exact and re-checkable LLM serving-safety experiments.

The public API, one stage function per artifact (imported lazily, so ``import batchsafe``
stays cheap and no stage is loaded before it is used)::

    import batchsafe
    plan = batchsafe.compile_spec("specs/quickstart.yaml")        # spec -> locked plan
    summary = batchsafe.run_plan(plan, "runs/q")                  # plan -> run directory
    result = batchsafe.make_bundle("specs/quickstart.yaml")       # the whole pipeline
    report = batchsafe.verify(result.bundle_id, "runs/store")     # recheck a bundle
"""

from __future__ import annotations

import importlib
from typing import Any

from batchsafe.core.version import __version__

_API = {
    "compile_spec": "batchsafe.compiler.compile",
    "load_spec": "batchsafe.compiler.compile",
    "load_plan": "batchsafe.compiler.plan",
    "Plan": "batchsafe.compiler.plan",
    "run_plan": "batchsafe.runtime.executor",
    "analyze_run": "batchsafe.analysis.analyze",
    "analyze_bundle": "batchsafe.analysis.analyze",
    "rescore_bundle": "batchsafe.analysis.rescore",
    "make_bundle": "batchsafe.pipeline",
    "BundleStore": "batchsafe.bundles.store",
    "open_bundle": "batchsafe.verification.source",
    "verify": "batchsafe.verification.verify",
    "diff_bundles": "batchsafe.verification.diff",
    "open_registry": "batchsafe.registry",
    "BatchsafeError": "batchsafe.core.errors",
    "ENGINES": "batchsafe.runtime.engines.catalogue",
    "SCORERS": "batchsafe.analysis.scorers.catalogue",
}

_ALIASES = {"analyze": "analyze_bundle", "rescore": "rescore_bundle"}
"""Short names of the issue's API list, for the same functions."""

__all__ = ["__version__", *_API, *_ALIASES]


def __getattr__(name: str) -> Any:
    # PEP 562: the stage module is imported on first use of one of its names.
    if name in _API or name in _ALIASES:
        target = _ALIASES.get(name, name)
        value = getattr(importlib.import_module(_API[target]), target)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'batchsafe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
