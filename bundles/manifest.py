"""The bundle manifest: what a bundle contains, and the one spelling that gets hashed.

A bundle is identified by ``hash_obj(manifest.model_dump(mode="json"))``: the
``sha256:`` digest of the manifest's canonical JSON (``batchsafe.core.canonical``). The
manifest therefore holds only content-derived facts (names, digests, sizes, media
types, the parent bundle, the kind and the batchsafe version) and never timestamps,
hostnames or absolute paths: the same files must give the same id on any machine.

Readers are strict because manifests arrive from other machines inside archives:

* an unknown future ``schema_version`` is refused with a message that says so,
  instead of being half-understood;
* file names must be relative POSIX paths that are safe to create under any
  directory on POSIX, macOS and Windows (see ``validate_name``);
* the bytes must be exactly the canonical serialisation of the parsed model, so
  that ``sha256(manifest.json) == bundle id`` and no two spellings of one manifest
  (duplicate keys, whitespace, ``1.0`` for ``1``) can exist.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import json
import re
import unicodedata
from itertools import accumulate
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchsafe.core.version import __version__ as BATCHSAFE_VERSION
from batchsafe.core import layout
from batchsafe.core.artifact import artifact, check_version
from batchsafe.core.canonical import canonical_bytes, hash_obj

SCHEMA_VERSION = 1
MANIFEST_NAME = layout.MANIFEST
"""Reserved top-level name: the manifest itself, in stores, archives and materialized copies."""

DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64
MAX_SEGMENT_BYTES = 255  # the NAME_MAX of every common filesystem

Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]

_MEDIA_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".md": "text/markdown",
    ".png": "image/png",
    ".yaml": "application/yaml",
    ".txt": "text/plain",
    ".log": "text/plain",
}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BundleError(BatchsafeError):
    """Base class of every error raised by the ``bundles`` package."""


class ManifestError(BundleError, ValueError):
    """A manifest that cannot be read: malformed, too large or deep, unsafe, or from the future."""


def media_type_for(name: str) -> str:
    """Media type recorded for ``name``, chosen by its (case-insensitive) suffix."""
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > name.rfind("/") else ""
    return _MEDIA_TYPES.get(suffix, "application/octet-stream")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative POSIX path, or ``None`` if it is.

    Refused: empty names, absolute paths, backslashes, Windows drive letters, NUL and
    other control characters, empty / ``.`` / ``..`` segments, segments longer than
    255 UTF-8 bytes and unencodable (surrogate) characters. Such names could escape
    the destination directory, mean different files on different systems, or garble
    terminal output.
    """
    if not isinstance(name, str) or not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte"
    if _CONTROL.search(name):
        return "control character"
    if "\\" in name:
        return "backslash"
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE.match(name):
        return "drive letter"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode"
    for seg in name.split("/"):
        if seg == "":
            return "empty path segment"
        if seg == "..":
            return "'..' traversal"
        if seg == ".":
            return "'.' segment"
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"path segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def validate_name(name: str) -> str:
    """Return ``name`` if it is safe (see ``name_problem``), else raise ``ValueError`` saying why."""
    problem = name_problem(name)
    if problem:
        raise ValueError(f"unsafe name {name!r}: {problem}")
    return name


class FileEntry(BaseModel):
    """One file of a bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)

    name: str
    """Relative POSIX path inside the bundle, e.g. ``outputs/samples.jsonl``."""
    sha256: Digest
    """``sha256:<64 lowercase hex>`` of the file's bytes; also its object name in the store."""
    size: Annotated[int, Field(ge=0)]
    """Size of the file in bytes."""
    media_type: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")]
    """IANA-style media type, derived from the name's suffix by ``media_type_for``."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return validate_name(v)


def _check_schema_version(data: Any) -> None:
    # Checked before field validation so that a newer manifest gets this message and
    # not a confusing list of unknown fields.
    if isinstance(data, dict):
        v = data.get("schema_version")
        if isinstance(v, bool):
            raise ValueError("schema_version must be an integer")
        check_version(data, SCHEMA_VERSION, error=ValueError)


class Manifest(BaseModel):
    """Content list of a bundle; its canonical JSON hash is the bundle id."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)

    schema_version: Literal[1] = 1
    """Manifest format version; readers refuse versions newer than they understand."""
    files: list[FileEntry]
    """Every file of the bundle, sorted by name (code point order), names unique."""
    parent: Digest | None = None
    """Bundle id this bundle was derived from (e.g. by rescoring), or ``None``."""
    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
    """What the bundle is, e.g. ``run`` or ``rescore``."""
    batchsafe_version: Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")]
    """Version of batchsafe that wrote the bundle."""

    @model_validator(mode="before")
    @classmethod
    def _future(cls, data: Any) -> Any:
        _check_schema_version(data)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [f.name for f in self.files]
        for a, b in zip(names, names[1:]):
            if a == b:
                raise ValueError(f"duplicate file name {a!r}")
            if a > b:
                raise ValueError(f"files are not sorted by name ({a!r} before {b!r})")
        # Everything materialize() would create, files and parent directories alike,
        # must be distinct even on case-insensitive or normalising filesystems
        # (macOS, Windows), otherwise one file could silently overwrite another.
        seen: dict[str, tuple[str, str]] = {}
        for name in names:
            segs = name.split("/")
            if unicodedata.normalize("NFC", segs[0]).casefold() == MANIFEST_NAME:
                raise ValueError(f"name {name!r} is reserved for the manifest")
            paths = [("dir", "/".join(segs[:i])) for i in range(1, len(segs))] + [("file", name)]
            for kind, path in paths:
                key = unicodedata.normalize("NFC", path).casefold()
                prev = seen.setdefault(key, (kind, path))
                if prev == (kind, path):
                    continue
                if prev[1] == path:
                    raise ValueError(f"name {path!r} is both a file and a directory")
                raise ValueError(f"names {prev[1]!r} and {path!r} collide on case-insensitive filesystems")
        return self


def manifest_bytes(manifest: Manifest) -> bytes:
    """The canonical bytes of ``manifest``: what ``manifest.json`` holds everywhere."""
    return canonical_bytes(manifest.model_dump(mode="json"))


def bundle_id_of(manifest: Manifest) -> str:
    """The bundle id, ``sha256:<hex>`` of the canonical manifest JSON."""
    return hash_obj(manifest.model_dump(mode="json"))


def build_manifest(entries: list[FileEntry], *, kind: str = "run", parent: str | None = None) -> Manifest:
    """Build a manifest for ``entries`` (any order) at the current schema and batchsafe version."""
    return Manifest(
        files=sorted(entries, key=lambda e: e.name),
        parent=parent,
        kind=kind,
        batchsafe_version=BATCHSAFE_VERSION,
    )


# An unterminated string also matches (to the end of the text), so that every quote
# is scanned at most once: a failing match would make the search restart after each
# quote and go quadratic on a run of escaped quotes. Such text is invalid JSON
# anyway and json.loads refuses it afterwards.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
# Keep only brackets, as +1 (openers) and -1 (closers, 0xff read as a signed byte).
_DELTA = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NON_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """Whether the JSON ``text`` nests arrays/objects deeper than ``max_depth``.

    Runs before ``json.loads`` so that a hostile document never reaches the recursive
    parser (nor allocates millions of containers): strings are blanked with one regex,
    everything but brackets is deleted, a few passes of ``bytes.replace`` drop innermost
    ``[]`` pairs (each pass lowers the maximum depth by exactly one and usually empties
    a real manifest, depth 3), and the rest is a C-level running sum checked per 1 MiB
    chunk, so a 64 MiB wall of ``[`` is refused after the first chunk.
    """
    b = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_DELTA, _NON_BRACKETS)
    removed = 0
    while b and removed < min(4, max_depth):
        b = b.replace(b"\x01\xff", b"")
        removed += 1
    limit = max_depth - removed
    depth = 0
    step = 1 << 20
    for start in range(0, len(b), step):
        chunk = memoryview(b)[start : start + step].cast("b")
        if max(accumulate(chunk, initial=depth)) > limit:
            return True
        depth += sum(chunk)
    return False


def load_manifest(
    raw: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_JSON_BYTES,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> Manifest:
    """Parse and validate manifest bytes from an untrusted source; raise ``ManifestError``.

    Checks, in order: size, UTF-8, nesting depth (before parsing), JSON syntax,
    ``schema_version``, the model, and that ``raw`` is the canonical spelling.
    """
    if len(raw) > max_bytes:
        raise ManifestError(f"manifest is {len(raw)} bytes, more than max_json_bytes ({max_bytes})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest is not valid UTF-8: {exc}") from None
    if json_depth_exceeds(text, max_depth):
        raise ManifestError(f"manifest JSON is nested deeper than max_json_depth ({max_depth})")
    try:
        data = json.loads(text)
    except RecursionError:
        raise ManifestError(f"manifest JSON is nested deeper than max_json_depth ({max_depth})") from None
    except ValueError as exc:  # JSONDecodeError, and int strings over Python's digit limit
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError("manifest JSON is not an object")
    try:
        _check_schema_version(data)
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        msg = first["msg"].removeprefix("Value error, ")
        raise ManifestError(f"invalid manifest ({where}): {msg}") from None
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    if manifest_bytes(manifest) != raw:
        raise ManifestError("manifest is not in canonical form (batchsafe.core.canonical)")
    return manifest


# The manifest as an artifact: file name, version and (hostile-input) reader, declared once.
artifact("manifest", version=SCHEMA_VERSION, file=layout.MANIFEST, error=ManifestError,
         reader=lambda raw, where: load_manifest(raw if isinstance(raw, bytes) else raw.encode()))(Manifest)
