"""Every file name inside a bundle and every directory of a bundle store, named once.

A bundle is a flat set of relative paths listed by its manifest; the names below are the
ones batchsafe writes and reads. Modules import them from here instead of spelling the
strings again, so a rename is one edit and a typo is an ``AttributeError``, not a file
that silently is never found. This module is part of the floor: it imports nothing.
"""

from __future__ import annotations

from pathlib import Path

# -- the run: written by the compiler and the runtime ---------------------------------
PLAN = "plan.lock.json"
"""The locked plan (``batchsafe.compiler.plan.Plan``)."""
SPEC_DIR = "spec/"
"""The spec texts the plan was compiled from, under their paths relative to the main spec."""
RUN = "run.json"
"""Run metadata: plan hash, started/finished, counts (``batchsafe.runtime.journal``)."""
ENVIRONMENT = "environment.json"
"""Engines, bindings, library versions and host facts of the run."""
OUTPUTS = "outputs/samples.jsonl"
"""One canonical output record per planned sample, in plan order."""
FILLERS = "outputs/fillers.jsonl"
"""Outputs of non-scored co-batch fillers."""
TIMINGS = "volatile/timings.jsonl"
"""Per-group timings and batching evidence; volatile, never compared byte for byte."""
LAUNCH_DIR = "launch/"
"""``LaunchRecord`` JSON files, one per server the runtime started."""
LOGS_DIR = "logs/"
"""Server logs of launched engines."""

# -- analysis: written by ``batchsafe analyze`` and ``rescore`` -----------------------
ANALYSIS_DIR = "analysis/"
"""Prefix of every analysis file."""
SCORES = "analysis/scores.jsonl"
"""Scored samples (``batchsafe.analysis.records.ScoredSample``)."""
FLIPS = "analysis/flips.jsonl"
"""The bundle's flip registry: one row per non-baseline sample (``FlipRow``)."""
STATS = "analysis/stats.json"
"""Statistics of the flip registry."""
TARGETS = "analysis/targets.json"
"""The spec's reproducibility targets, evaluated."""
REPORT = "analysis/report.md"
"""The human report."""
PLOTS_DIR = "analysis/plots/"
"""Figures (PNG)."""
RESCORE_AUDIT = "analysis/rescore_audit.jsonl"
"""Rescore child bundles: one row per label or score that changed."""
RESCORE_AUDIT_SUMMARY = "analysis/rescore_audit.json"
"""Rescore child bundles: flips removed, added or redirected."""

# -- adjudication: written by ``batchsafe adjudicate import`` -------------------------
ADJUDICATION_DIR = "adjudication/"
"""Prefix of every adjudication file."""
ADJ_LABELS = "adjudication/labels.jsonl"
"""Human labels with rater ids."""
ADJ_SUMMARY = "adjudication/summary.json"
"""Agreement (Cohen's / Fleiss' kappa) and per-sample outcome."""
ADJ_REPORT = "adjudication/report.md"
"""The adjudication report."""
ADJ_PROTOCOL = "adjudication/protocol.json"
"""Seed 003's adjudication-corrected rates (only when the parent's plan sets analysis.protocol)."""

# -- the store: ``<root>/objects/ab/abcd...`` and ``<root>/bundles/<hex>/manifest.json`` --
MANIFEST = "manifest.json"
"""A bundle's manifest; its canonical digest is the bundle id."""
STORE_OBJECTS = "objects"
"""Store subdirectory of content-addressed file objects, fanned out by two hex digits."""
STORE_BUNDLES = "bundles"
"""Store subdirectory of bundle directories, one per id (hex without ``sha256:``)."""
STORE_TMP = "tmp"
"""Store subdirectory for temporary files (same filesystem, so renames are atomic)."""


def bundle_dir(store_root: str | Path, bundle_id: str) -> Path:
    """Directory of bundle ``bundle_id`` (``sha256:<hex>`` or bare hex) in the store at ``store_root``."""
    return Path(store_root) / STORE_BUNDLES / bundle_id.split(":", 1)[-1]


def manifest_path(store_root: str | Path, bundle_id: str) -> Path:
    """Path of the manifest of ``bundle_id`` in the store at ``store_root``."""
    return bundle_dir(store_root, bundle_id) / MANIFEST


def object_path(store_root: str | Path, hex_digest: str) -> Path:
    """Path of the object with bare hex digest ``hex_digest`` in the store at ``store_root``."""
    return Path(store_root) / STORE_OBJECTS / hex_digest[:2] / hex_digest


def spec_name(relative_path: str) -> str:
    """Bundle name of a spec text recorded in the plan under ``relative_path`` (``./a.yaml`` -> ``spec/a.yaml``)."""
    return SPEC_DIR + relative_path.lstrip("./")
