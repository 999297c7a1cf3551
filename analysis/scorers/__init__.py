"""Versioned scorers: pure functions ``(output text, prompt meta) -> Score``.

``analysis.registry.SCORERS`` is the catalogue (names, versions, needed metadata) that the
compiler validates specs against; this package holds the implementations, one per
registered ``name@version``. A registered version is frozen: a behaviour change is a new
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

from collections.abc import Callable

from batchsafe.analysis.registry import SCORERS, check_ref

from .base import MetaError, Score
from .choice import extract_choice, score_bias_v1_0, score_mcq_letter_v1_0
from .judge import JudgeRequired, build_judge_request, cohen_kappa, parse_judge_reply, score_llm_judge_v1_0
from .refusal import find_refusal, score_v2_1, score_v2_2
from .truthfulness import score_truthfulness_v1_0

ScorerFn = Callable[[str, dict], Score]

#: Implementation of every registered ``name@version``. Never change what a key maps to
#: in a way that changes outputs; add a key (and the version in the registry) instead.
IMPLEMENTATIONS: dict[str, ScorerFn] = {
    "refusal@2.1": score_v2_1,
    "refusal@2.2": score_v2_2,
    "truthfulness@1.0": score_truthfulness_v1_0,
    "bias@1.0": score_bias_v1_0,
    "mcq_letter@1.0": score_mcq_letter_v1_0,
    "llm_judge@1.0": score_llm_judge_v1_0,
}


def registered_refs() -> list[str]:
    """Every ``name@version`` in the catalogue, sorted."""
    return sorted(f"{name}@{v}" for name, info in SCORERS.items() for v in info.versions)


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
    "IMPLEMENTATIONS", "JudgeRequired", "MetaError", "Score", "build_judge_request", "cohen_kappa",
    "extract_choice", "find_refusal", "get_scorer", "parse_judge_reply", "registered_refs", "score",
]
