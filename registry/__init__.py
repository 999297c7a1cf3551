"""A persistent flip registry across bundles (SQLite).

``open_registry(path)`` -> ``Registry`` with ``add(src)``, ``query(...)``, ``show(prompt)``
and ``bundles()``; ``registry.render`` prints their results. See ``registry.db``.
"""

from .db import Registry, UnknownPromptError, open_registry
from .ingest import BundleContentError
from .migrations import (
    SCHEMA_VERSION,
    NotARegistryError,
    RegistryError,
    RegistryVersionError,
)
from .models import (
    AddResult,
    BundleInfo,
    HistoryRow,
    PromptFlipSummary,
    PromptHistory,
    PromptInfo,
)
from .render import as_json, render_bundles, render_query, render_show

__all__ = [
    "SCHEMA_VERSION", "AddResult", "BundleContentError", "BundleInfo", "HistoryRow", "NotARegistryError",
    "PromptFlipSummary", "PromptHistory", "PromptInfo", "Registry", "RegistryError", "RegistryVersionError",
    "UnknownPromptError", "as_json", "open_registry", "render_bundles", "render_query", "render_show",
]
