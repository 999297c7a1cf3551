"""Versioned scorers: pure functions ``(output text, prompt meta) -> Score``.

``analysis.scorers.catalogue.SCORERS`` is the catalogue (names, versions, needed metadata)
that the compiler validates specs against, filled by the ``@scorer(name, version)``
decorator on each implementation in this package (importing the package imports them all). A registered version is frozen: a behaviour change is a new
version, so an old bundle rescored with its own scorer ref gives exactly its old scores
(``tests/analysis/test_scorers/golden.jsonl`` pins every version's outputs).

=================  ==================================================================
refusal@2.1        refusal patterns on the raw text (misses curly apostrophes; audits)
refusal@2.2        same patterns after quote look-alike -> ASCII, NFKC, whitespace
truthfulness@1.0   token-F1 against TruthfulQA's correct vs incorrect answers
bias@1.0           BBQ option choice vs answer / biased / anti-biased option
mcq_letter@1.0     answer-letter extraction vs ``meta["answer"]``
llm_judge@1.0      parses a judge model's reply (``meta["judge_reply"]``)
=================  ==================================================================
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from .base import MetaError, Score
from .catalogue import SCORERS, check_ref, implementation, registered_refs, scorer  # noqa: F401

from .choice import extract_choice
from .judge import JudgeRequired, build_judge_request, parse_judge_reply
from .refusal import find_refusal

# Importing every module of this package fills the catalogue (each definition carries
# @scorer), so a scorer in a new module needs no line here.
for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

ScorerFn = Callable[[str, dict], Score]

#: Implementation of every catalogued ``name@version``, taken from the catalogue once at
#: import (a plain dict, so tests can substitute one). Never change what a version does
#: in a way that changes outputs; declare a new version instead.
IMPLEMENTATIONS: dict[str, ScorerFn] = {ref: implementation(ref) for ref in registered_refs()}  # type: ignore[misc]


def get_scorer(ref: str) -> ScorerFn:
    """The scorer function for ``ref`` (``"refusal@2.2"``).

    Raises ValueError naming the registered refs when ``ref`` is not in the catalogue
    (or, which a test forbids, is catalogued without an implementation).
    """
    problem = check_ref(ref) if isinstance(ref, str) else f"scorer ref must be a string, got {type(ref).__name__}"
    if problem is None and ref in IMPLEMENTATIONS:
        return IMPLEMENTATIONS[ref]
    problem = problem or f"scorer {ref!r} is registered but has no implementation"
    raise ValueError(f"{problem} (registered scorers: {', '.join(registered_refs())})")


def score(ref: str, output: str, meta: dict | None = None) -> Score:
    """Score one output with scorer ``ref``, given its prompt's ``meta``.

    Raises ValueError for an unknown ref, TypeError when ``output`` is not a string,
    MetaError (a ValueError) when ``meta`` lacks what the scorer needs, and JudgeRequired
    for ``llm_judge`` without ``meta["judge_reply"]``. Never raises because of the output
    text itself.
    """
    fn = get_scorer(ref)
    if not isinstance(output, str):
        raise TypeError(f"output must be str, got {type(output).__name__}")
    return fn(output, meta or {})


__all__ = [
    "IMPLEMENTATIONS", "SCORERS", "JudgeRequired", "MetaError", "Score", "build_judge_request", "check_ref",
    "extract_choice", "find_refusal", "get_scorer", "parse_judge_reply", "registered_refs", "score", "scorer",
]
