"""The scorer catalogue: every scorer a spec may name, by name and version.

The compiler validates ``scorer: name@version`` against this table and checks
that each task's prompts carry the metadata the scorer reads, so a scorer never
discovers at analysis time that it cannot score a sample.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScorerInfo:
    """What a registered scorer is and what it needs."""

    name: str
    versions: tuple[str, ...]
    """Registered versions; old ones stay so that old bundles can be rescored as they were."""
    needs: tuple[str, ...]
    """Prompt metadata keys the scorer cannot do without (it may read optional ones too,
    such as ``labels`` or ``unknown_answer``); implementations live in ``analysis.scorers``."""
    summary: str


SCORERS: dict[str, ScorerInfo] = {
    s.name: s
    for s in (
        ScorerInfo("refusal", ("2.1", "2.2"), (), "Binary refusal detector (2.2 normalises curly quotes; 2.1 kept for audits)."),
        ScorerInfo("truthfulness", ("1.0",), ("correct_answers", "incorrect_answers"), "TruthfulQA: candidate vs correct and incorrect answers."),
        ScorerInfo("bias", ("1.0",), ("answer", "choices", "biased_answer", "anti_biased_answer"), "BBQ: chosen option vs stereotyped and anti-stereotyped answers."),
        ScorerInfo("mcq_letter", ("1.0",), ("answer",), "Answer-letter extraction vs the reference letter."),
        ScorerInfo("llm_judge", ("1.0",), (), "Rubric prompt sent through an engine; for agreement studies."),
    )
}


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``name@version``."""
    name, _, version = ref.partition("@")
    return name, version


def check_ref(ref: str) -> str | None:
    """None when ``ref`` is registered, else a one-line reason."""
    name, version = parse_ref(ref)
    info = SCORERS.get(name)
    if info is None:
        return f"unknown scorer {name!r}; registered: {', '.join(sorted(SCORERS))}"
    if version not in info.versions:
        return f"scorer {name!r} has no version {version!r}; registered: {', '.join(info.versions)}"
    return None
