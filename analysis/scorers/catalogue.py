"""The scorer catalogue: every scorer a spec may name, declared once, at its definition.

A scorer module declares each released version with ``@scorer(name, version, needs=...,
summary=...)`` on the function; that one line is what the compiler validates
``scorer: name@version`` against (:func:`check_ref`), what it checks prompt metadata
against (``needs``), and what :func:`implementation` returns. Importing
``batchsafe.analysis.scorers`` imports every scorer module, so the catalogue is complete
whenever this module is reachable through the package. (Named "catalogue" to keep it
apart from the flip registry, a bundle's ``analysis/flips.jsonl``, and from the
cross-bundle registry database, ``batchsafe.registry``.)

Adding a scorer or a version: write the function in a module of this package (or a new
module imported by the package ``__init__``), decorate it, add its golden outputs. Nothing
else names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCORERS", "ScorerInfo", "check_ref", "implementation", "parse_ref", "registered_refs", "scorer"]

ScorerFn = Callable[[str, dict], Any]
"""``(output text, prompt meta) -> Score``."""


@dataclass
class ScorerInfo:
    """What a catalogued scorer is and what it needs."""

    name: str
    versions: tuple[str, ...] = ()
    """Catalogued versions in declaration order; old ones stay so old bundles rescore as they were."""
    needs: tuple[str, ...] = ()
    """Prompt metadata keys the scorer cannot do without (it may read optional ones too,
    such as ``labels`` or ``unknown_answer``); the same for every version of a name."""
    summary: str = ""
    """One line for listings (the first version's)."""
    functions: dict[str, ScorerFn] = field(default_factory=dict, repr=False)
    """Version -> implementation."""


SCORERS: dict[str, ScorerInfo] = {}
"""Scorer name -> its catalogue entry, filled by :func:`scorer` as the scorer modules load."""


def scorer(name: str, version: str, *, needs: tuple[str, ...] = (), summary: str = "") -> Callable[[ScorerFn], ScorerFn]:
    """Decorator cataloguing ``fn`` as ``name@version``; returns ``fn`` unchanged.

    A released version is frozen: a behaviour change is a new version. Declaring a
    version twice, or a version whose ``needs`` differ from its name's other versions,
    is a programming error and raises at import.
    """

    def wrap(fn: ScorerFn) -> ScorerFn:
        info = SCORERS.setdefault(name, ScorerInfo(name, needs=tuple(needs), summary=summary))
        if version in info.versions and info.functions[version] is not fn:
            raise RuntimeError(f"scorer {name}@{version} declared twice")
        if tuple(needs) != info.needs:
            raise RuntimeError(f"scorer {name}@{version} needs {needs}, other versions need {info.needs}")
        if version not in info.versions:
            info.versions += (version,)
        info.functions[version] = fn
        return fn

    return wrap


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``name@version``."""
    name, _, version = ref.partition("@")
    return name, version


def check_ref(ref: str) -> str | None:
    """None when ``ref`` is catalogued, else a one-line reason."""
    name, version = parse_ref(ref)
    info = SCORERS.get(name)
    if info is None:
        return f"unknown scorer {name!r}; registered: {', '.join(sorted(SCORERS))}"
    if version not in info.versions:
        return f"scorer {name!r} has no version {version!r}; registered: {', '.join(info.versions)}"
    return None


def registered_refs() -> list[str]:
    """Every ``name@version`` in the catalogue, sorted."""
    return sorted(f"{name}@{v}" for name, info in SCORERS.items() for v in info.versions)


def implementation(ref: str) -> ScorerFn | None:
    """The function catalogued as ``ref``, or None."""
    name, version = parse_ref(ref)
    info = SCORERS.get(name)
    return None if info is None else info.functions.get(version)
