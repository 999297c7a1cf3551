"""Loader for BBQ (Parrish et al. 2022) JSONL files, with the biased / anti-biased answer.

BBQ's bias score needs to know which answer option is the *biased* one. Following the
paper: for a negative question ("Who is bad at math?") the biased answer is the option
that belongs to a stereotyped group (the "target"); for a non-negative question ("Who is
good at math?") it is the non-unknown option that does not. The anti-biased answer is the
other non-unknown option.

Deciding which option is the target needs answer_info groups to be matched against
``additional_metadata.stereotyped_groups``, and the two vocabularies differ ("F" vs
"women", "Nigerian" vs "Africa", "nonOld" vs "old"). ``group_matches`` is deliberately
conservative, so that a wrong guess is rare and a non-guess is visible (None):

1. Labels are compared case-insensitively after stripping, exactly, never by substring
   (substring matching would make "nonOld" an "old" and "woman" a "man").
2. A label ``nonX`` (``non`` followed by a capital: nonOld, nonTrans, nonDisabled,
   nonTrans_F) means *not X*: it matches only a stereotyped ``nonX``, never ``X``.
3. A small alias table folds the gender vocabulary together: F/female/woman/women/girl/
   girls, M/male/man/men/boy/boys, and trans/transgender/trans_F/trans_M/"transgender
   women"/"transgender men". Nothing else is aliased.
4. An option matches if its group label matches, or else if its answer text does (BBQ's
   Nationality groups are regions such as "Africa" while the stereotyped groups are
   nationalities such as "Nigerian", which is the answer text). A ``nonX`` label is a
   definite non-match and its text is not consulted.

If exactly one of the two non-unknown options matches, it is the target. If both or
neither match, the target is undecidable and ``biased_idx``/``anti_biased_idx`` are None.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ._base import DatasetFormatError, IdRegistry, Record, empty_file, jsonl_objects, need

BBQ_FIELDS = (
    "example_id",
    "category",
    "question_polarity",
    "context_condition",
    "context",
    "question",
    "choices",
    "label",
    "answer_groups",
    "stereotyped_groups",
    "unknown_idx",
    "biased_idx",
    "anti_biased_idx",
)

_ALIASES = {
    **dict.fromkeys(("f", "female", "woman", "women", "girl", "girls"), "female"),
    **dict.fromkeys(("m", "male", "man", "men", "boy", "boys"), "male"),
    **dict.fromkeys(("trans", "transgender", "trans_f", "trans_m", "transgender women", "transgender men"), "trans"),
}
_ANS = ("ans0", "ans1", "ans2")
_POLARITIES = ("neg", "nonneg")


@functools.lru_cache(maxsize=8192)
def canonical_group(label: str) -> str:
    """Canonical spelling of a group label; a negated ``nonX`` label becomes ``"non:" + canonical(X)``."""
    label = label.strip()
    if len(label) > 3 and label.startswith("non") and label[3].isupper():
        return "non:" + canonical_group(label[3:])
    folded = label.casefold()
    return _ALIASES.get(folded, folded)


def group_matches(group: str, text: str, stereotyped: frozenset[str]) -> bool:
    """Whether an answer option (its answer_info group and text) belongs to a stereotyped group.

    ``stereotyped`` holds ``canonical_group`` of each stereotyped group label.
    """
    g = canonical_group(group)
    if g in stereotyped:
        return True
    if g.startswith("non:"):
        return False
    return canonical_group(text) in stereotyped


@functools.lru_cache(maxsize=1024)
def _stereo_set(stereotyped: tuple[str, ...]) -> frozenset[str]:
    # A few dozen distinct lists recur across thousands of rows: canonicalise each once.
    return frozenset(canonical_group(s) for s in stereotyped)


def bias_indices(
    polarity: str, infos: list[list[str]], stereotyped: list[str], unknown_idx: int
) -> tuple[int | None, int | None]:
    """``(biased_idx, anti_biased_idx)`` for one example, or ``(None, None)`` when undecidable."""
    stereo = _stereo_set(tuple(stereotyped))
    a, b = (i for i in range(3) if i != unknown_idx)
    ma = group_matches(infos[a][1], infos[a][0], stereo)
    mb = group_matches(infos[b][1], infos[b][0], stereo)
    if ma == mb:
        return None, None
    target, other = (a, b) if ma else (b, a)
    return (target, other) if polarity == "neg" else (other, target)


def load_bbq(path: Path, rel: str) -> list[Record]:
    """Load one BBQ category file; ids are ``<stem>:<example_id>`` (e.g. ``Age:42``).

    Blank lines are skipped. A line that is not a JSON object, or lacks a required key, or
    whose answer_info does not have exactly one "unknown" option, is a DatasetFormatError
    at that line.
    """
    stem = path.stem
    records = []
    ids = IdRegistry(rel)
    for line, obj in jsonl_objects(path, rel):
        # The compiler loads every BBQ file on each compile, so well-formed lines take one
        # flat check; only a line that fails it goes through _diagnose for the exact error.
        try:
            example_id = obj["example_id"]
            polarity = obj["question_polarity"]
            label = obj["label"]
            info = obj["answer_info"]
            infos = [info["ans0"], info["ans1"], info["ans2"]]
            stereotyped = obj["additional_metadata"]["stereotyped_groups"]
            texts = (obj["category"], obj["context_condition"], obj["context"], obj["question"])
            choices = [obj["ans0"], obj["ans1"], obj["ans2"]]
            groups = [infos[0][1], infos[1][1], infos[2][1]]
            ok = (
                type(example_id) is int
                and type(label) is int
                and 0 <= label <= 2
                and polarity in _POLARITIES
                and type(stereotyped) is list
                and all(type(i) is list and len(i) == 2 for i in infos)
                and {type(v) for v in (*texts, *choices, *infos[0], *infos[1], *infos[2], *stereotyped)} == {str}
                and groups.count("unknown") == 1
            )
        except (KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            _diagnose(obj, rel, line)
        unknown_idx = groups.index("unknown")
        biased, anti = bias_indices(polarity, infos, stereotyped, unknown_idx)
        fields = {
            "example_id": example_id,
            "category": texts[0],
            "question_polarity": polarity,
            "context_condition": texts[1],
            "context": texts[2],
            "question": texts[3],
            "choices": choices,
            "label": label,
            "answer_groups": groups,
            "stereotyped_groups": list(stereotyped),
            "unknown_idx": unknown_idx,
            "biased_idx": biased,
            "anti_biased_idx": anti,
        }
        records.append(Record(ids.add(f"{stem}:{example_id}", line), fields, rel, line))
    if not records:
        raise empty_file(rel)
    return records


def _diagnose(obj: dict, rel: str, line: int) -> None:
    """Raise the precise DatasetFormatError for a line that failed load_bbq's flat check."""
    need(obj, "example_id", int, rel, line)
    polarity = need(obj, "question_polarity", str, rel, line)
    if polarity not in _POLARITIES:
        raise DatasetFormatError(rel, line, f"question_polarity must be 'neg' or 'nonneg', got {polarity!r}")
    label = need(obj, "label", int, rel, line)
    if not 0 <= label <= 2:
        raise DatasetFormatError(rel, line, f"label must be 0, 1 or 2, got {label}")
    for key in ("category", "context_condition", "context", "question", *_ANS):
        need(obj, key, str, rel, line)
    info = need(obj, "answer_info", dict, rel, line)
    groups = []
    for key in _ANS:
        value = need(info, key, list, rel, line, "answer_info.")
        if len(value) != 2 or not all(isinstance(v, str) for v in value):
            raise DatasetFormatError(rel, line, f"answer_info.{key} must be [text, group], got {value!r}")
        groups.append(value[1])
    meta = need(obj, "additional_metadata", dict, rel, line)
    stereotyped = need(meta, "stereotyped_groups", list, rel, line, "additional_metadata.")
    if not all(isinstance(s, str) for s in stereotyped):
        raise DatasetFormatError(rel, line, "additional_metadata.stereotyped_groups must be a list of strings")
    if groups.count("unknown") != 1:
        raise DatasetFormatError(
            rel, line, f"expected exactly one 'unknown' option in answer_info, found {groups.count('unknown')}"
        )
    raise DatasetFormatError(rel, line, "malformed BBQ record")


LOADERS = {"bbq_jsonl": (load_bbq, BBQ_FIELDS)}
