"""Content-addressed result bundles: manifest, store, deterministic archives, safe unpacking."""

from .archive import Limits, UnsafeArchiveError, pack, unpack
from .manifest import (
    BundleError,
    FileEntry,
    Manifest,
    ManifestError,
    bundle_id_of,
    load_manifest,
    manifest_bytes,
    media_type_for,
    validate_name,
)
from .store import AmbiguousBundleError, BundleNotFoundError, BundleStore, CorruptBundleError

__all__ = [
    "AmbiguousBundleError",
    "BundleError",
    "BundleNotFoundError",
    "BundleStore",
    "CorruptBundleError",
    "FileEntry",
    "Limits",
    "Manifest",
    "ManifestError",
    "UnsafeArchiveError",
    "bundle_id_of",
    "load_manifest",
    "manifest_bytes",
    "media_type_for",
    "pack",
    "unpack",
    "validate_name",
]
