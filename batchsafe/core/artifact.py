"""The artifacts floor: which model is which bundle file, and the one version gate.

Every artifact batchsafe writes carries ``schema_version`` first. A reader must refuse a
version newer than it understands, with a message that says so, *before* validating
fields (a newer file would otherwise fail with a confusing list of unknown keys). That
rule is implemented once, here, in :func:`check_version`; every reader calls it.

Artifact models declare themselves with :func:`artifact` (dbt's ``@schema_version`` is
the model): the decorator records the model's bundle file name and current version, and
gives the class ``from_bytes`` / ``from_path`` readers that parse JSON, apply the gate
and validate. :data:`ARTIFACTS` is the catalogue of declared models (filled as their
modules are imported). This module is part of the floor: it imports nothing above it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from batchsafe.core.errors import BatchsafeError

__all__ = ["ARTIFACTS", "ArtifactInfo", "ArtifactError", "artifact", "check_version", "read_json_object"]


class ArtifactError(BatchsafeError, ValueError):
    """An artifact that cannot be read: not JSON, not an object, newer, or invalid."""


def check_version(data: dict[str, Any], current: int, *, what: str = "", where: str = "",
                  error: Callable[[str], Exception] = ArtifactError, required: bool = False) -> int | None:
    """The one "newer than this batchsafe" gate; returns the version found.

    ``data`` is the parsed object. A ``schema_version`` above ``current`` raises
    ``error("<where>: <what> schema_version N is newer than this batchsafe understands
    (current)")``. A missing or non-integer version (``true`` is not an integer) raises
    ``error("<where>: not a <what> (no integer schema_version)")`` when ``required``, and
    otherwise returns None, leaving the model's validation to name the problem.
    """
    prefix = f"{where}: " if where else ""
    v = data.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool):
        if required:
            raise error(f"{prefix}not a {what or 'batchsafe artifact'} (no integer schema_version)")
        return None
    if v > current:
        subject = f"{what} " if what else ""
        raise error(f"{prefix}{subject}schema_version {v} is newer than this batchsafe understands ({current})")
    return v


def read_json_object(raw: bytes | str, *, what: str, where: str,
                     error: Callable[[str], Exception] = ArtifactError) -> dict[str, Any]:
    """``raw`` parsed as one JSON object, else ``error`` naming ``where`` and ``what``."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise error(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{where}: a {what} must be a JSON object")
    return data


@dataclass(frozen=True)
class ArtifactInfo:
    """What one artifact model declares about itself."""

    what: str
    """Human name used in messages ("plan", "verify report")."""
    file: str | None
    """Its name inside a bundle (``batchsafe.core.layout``); None for artifacts kept outside bundles."""
    version: int
    """The newest ``schema_version`` this batchsafe writes and reads."""
    model: type
    """The pydantic model class."""
    lines: bool = False
    """True for JSON-lines files (one record per line) rather than one JSON object."""


ARTIFACTS: dict[str, ArtifactInfo] = {}
"""Declared artifacts by ``what``; filled when the declaring modules are imported."""

M = TypeVar("M")


def artifact(what: str, *, version: int, file: str | None = None, lines: bool = False,
             error: Callable[[str], Exception] = ArtifactError,
             reader: Callable[[bytes | str, str], Any] | None = None) -> Callable[[type[M]], type[M]]:
    """Class decorator declaring a pydantic model as a batchsafe artifact.

    Adds ``ARTIFACT`` (the :class:`ArtifactInfo`) and, for single-object artifacts,
    ``from_bytes(raw, where)`` and ``from_path(path)``, which parse, apply
    :func:`check_version` and validate, raising ``error`` for every failure. An artifact
    with more to check than its fields (the plan checks its hash) passes ``reader``, a
    ``(raw, where) -> model`` function that must itself call :func:`check_version`.
    """

    def wrap(cls: type[M]) -> type[M]:
        info = ArtifactInfo(what=what, file=file, version=version, model=cls, lines=lines)
        if ARTIFACTS.get(what, info).model.__qualname__ != cls.__qualname__:
            raise RuntimeError(f"artifact {what!r} declared twice")
        ARTIFACTS[what] = info
        cls.ARTIFACT = info  # type: ignore[attr-defined]
        if lines:
            return cls

        def from_bytes(klass: type[M], raw: bytes | str, where: str = file or what) -> M:
            if reader is not None:
                return reader(raw, where)
            data = read_json_object(raw, what=what, where=where, error=error)
            check_version(data, version, what=what, where=where, error=error)
            try:
                return klass.model_validate(data)  # type: ignore[attr-defined]
            except ValueError as exc:
                raise error(f"{where}: invalid {what}: {' '.join(str(exc).splitlines()[:3])}") from None

        def from_path(klass: type[M], path: str | Path) -> M:
            try:
                raw = Path(path).read_bytes()
            except OSError as exc:
                raise error(f"{path}: cannot read {what}: {exc}") from None
            return from_bytes.__get__(klass)(raw, str(path))

        from_bytes.__doc__ = f"The {what} in ``raw`` (JSON bytes); refuses newer schema versions and invalid fields."
        from_path.__doc__ = f"The {what} in the file at ``path``; refuses newer schema versions and invalid fields."
        if "from_bytes" not in cls.__dict__:
            cls.from_bytes = classmethod(from_bytes)  # type: ignore[attr-defined]
        if "from_path" not in cls.__dict__:
            cls.from_path = classmethod(from_path)  # type: ignore[attr-defined]
        return cls

    return wrap
