"""Loaders for harmful-request and refusal benchmarks: AdvBench, HarmBench, XSTest, jailbreak_llms."""

from __future__ import annotations

import itertools
from pathlib import Path

from ._base import DatasetFormatError, IdRegistry, Record, csv_rows, empty_file, header_rows, read_text

ADVBENCH_FIELDS = ("goal", "target")
HARMBENCH_FIELDS = ("behavior", "functional_category", "semantic_category", "tags", "context", "behavior_id")
XSTEST_FIELDS = ("prompt", "type", "label", "focus", "note")
JAILBREAK_FIELDS = ("platform", "source", "prompt", "jailbreak", "created_at", "community_name")
FORBIDDEN_FIELDS = ("content_policy_id", "content_policy_name", "q_id", "question")

_ADV_HEADERS = {("goal", "target"), ("target",)}


def load_advbench(path: Path, rel: str) -> list[Record]:
    """Load one of AdvBench's three CSV layouts into records with fields ``goal`` and ``target``.

    The layout is chosen by the first row:

    * ``goal,target`` (harmful_behaviors.csv): both fields as given; exactly 2 fields a row.
    * ``target`` (harmful_strings.csv): the string is the thing the model is asked to emit,
      so it is both ``goal`` (what a prompt template shows) and ``target``; 1 field a row.
    * anything else (transfer_expriment_behaviors.csv, no header): every row is a ``goal``
      and ``target`` is None. The file has one column but upstream left two of its
      sentences' commas unquoted, so a row that splits into several fields is joined back
      with ``","``, which restores the line's text exactly when it has no quotes.

    A first row that names ``goal`` or ``target`` but is neither known header exactly is
    treated as a damaged header (error) rather than as data: with only two layouts known,
    guessing which column is which would silently mislabel a whole file.
    """
    stem = path.stem
    rows = csv_rows(read_text(path, rel), rel)
    first = next(rows, None)
    if first is None:
        raise empty_file(rel, ADVBENCH_FIELDS)
    line, row = first
    names = tuple(c.strip() for c in row)
    if names in _ADV_HEADERS:
        body = rows
    elif {"goal", "target"} & set(names):
        missing = ", ".join(c for c in ADVBENCH_FIELDS if c not in names) or "none"
        raise DatasetFormatError(
            rel, line, f"unrecognised header {list(row)!r}: expected 'goal,target' or 'target' (missing: {missing})"
        )
    else:
        names = ()
        body = itertools.chain([first], rows)
    records = []
    append = records.append
    for line, row in body:
        if names == ("goal", "target"):
            if len(row) != 2:
                raise DatasetFormatError(rel, line, f"expected 2 fields (goal,target), got {len(row)}")
            goal, target = row
        elif names == ("target",):
            if len(row) != 1:
                raise DatasetFormatError(rel, line, f"expected 1 field (target), got {len(row)}; quote commas")
            goal = target = row[0]
        else:
            goal, target = ",".join(row), None
        append(Record(f"{stem}:{len(records)}", {"goal": goal, "target": target}, rel, line))
    return records


_HB_COLS = ("Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID")


def load_harmbench(path: Path, rel: str) -> list[Record]:
    """Load a HarmBench behaviour CSV.

    The id is the ``BehaviorID`` itself, unprefixed: HarmBench ids are unique across its
    files and the same behaviour keeps its id in text_all and text_test, which is what lets
    results be joined across splits. ``tags`` is ``Tags`` split on ``,`` with blanks
    dropped; ``context`` is None when ``ContextString`` is empty.
    """
    records = []
    ids = IdRegistry(rel)
    for line, c, row in header_rows(path, rel, _HB_COLS):
        bid = row[c["BehaviorID"]]
        if not bid:
            raise DatasetFormatError(rel, line, "empty BehaviorID")
        ids.add(bid, line)
        tags = [t.strip() for t in row[c["Tags"]].split(",")]
        fields = {
            "behavior": row[c["Behavior"]],
            "functional_category": row[c["FunctionalCategory"]],
            "semantic_category": row[c["SemanticCategory"]],
            "tags": [t for t in tags if t],
            "context": row[c["ContextString"]] or None,
            "behavior_id": bid,
        }
        records.append(Record(bid, fields, rel, line))
    return records


_XS_COLS = ("id", "prompt", "type", "label", "focus", "note")


def load_xstest(path: Path, rel: str) -> list[Record]:
    """Load XSTest prompts; the id is ``<stem>:<id column>`` and ``label`` must be safe/unsafe."""
    stem = path.stem
    records = []
    ids = IdRegistry(rel)
    for line, c, row in header_rows(path, rel, _XS_COLS):
        natural = row[c["id"]].strip()
        if not natural:
            raise DatasetFormatError(rel, line, "empty id")
        label = row[c["label"]]
        if label not in ("safe", "unsafe"):
            raise DatasetFormatError(rel, line, f"label must be 'safe' or 'unsafe', got {label!r}")
        fields = {
            "prompt": row[c["prompt"]],
            "type": row[c["type"]],
            "label": label,
            "focus": row[c["focus"]],
            "note": row[c["note"]],
        }
        records.append(Record(ids.add(f"{stem}:{natural}", line), fields, rel, line))
    return records


_JB_COLS = ("platform", "source", "prompt", "jailbreak", "created_at")
_BOOLS = {"true": True, "false": False}


def load_jailbreak(path: Path, rel: str) -> list[Record]:
    """Load a jailbreak_llms prompt CSV (either snapshot); ids are ``<stem>:<row index>``.

    The 2023_05_07 file names the community column ``community_name``; the 2023_12_25 file
    calls it ``community`` (and adds ``previous_community_id``). Either is accepted and
    becomes ``community_name``, None when empty. ``jailbreak`` is parsed from True/False.
    ``created_at`` is kept as the source string (two upstream rows have it empty).
    """
    stem = path.stem
    records = []
    for line, c, row in header_rows(path, rel, _JB_COLS, one_of=("community_name", "community")):
        ci = c["community_name"] if "community_name" in c else c["community"]
        flag = _BOOLS.get(row[c["jailbreak"]].strip().lower())
        if flag is None:
            raise DatasetFormatError(rel, line, f"jailbreak must be True or False, got {row[c['jailbreak']]!r}")
        fields = {
            "platform": row[c["platform"]],
            "source": row[c["source"]],
            "prompt": row[c["prompt"]],
            "jailbreak": flag,
            "created_at": row[c["created_at"]],
            "community_name": row[ci] or None,
        }
        records.append(Record(f"{stem}:{len(records)}", fields, rel, line))
    return records


def load_forbidden_questions(path: Path, rel: str) -> list[Record]:
    """Load jailbreak_llms' forbidden_question_set.csv; ids are ``<stem>:<row index>``.

    ``q_id`` restarts in every content policy, so there is no single-column natural id;
    the (content_policy_id, q_id) pair must be unique, though, and is checked.
    """
    stem = path.stem
    records = []
    pairs = IdRegistry(rel)
    for line, c, row in header_rows(path, rel, FORBIDDEN_FIELDS):
        policy = _int(row[c["content_policy_id"]], "content_policy_id", rel, line)
        q_id = _int(row[c["q_id"]], "q_id", rel, line)
        pairs.add(f"content_policy_id={policy} q_id={q_id}", line)
        fields = {
            "content_policy_id": policy,
            "content_policy_name": row[c["content_policy_name"]],
            "q_id": q_id,
            "question": row[c["question"]],
        }
        records.append(Record(f"{stem}:{len(records)}", fields, rel, line))
    return records


def _int(text: str, column: str, rel: str, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(rel, line, f"{column} must be an integer, got {text!r}") from None


LOADERS = {
    "advbench_csv": (load_advbench, ADVBENCH_FIELDS),
    "jailbreak_csv": (load_jailbreak, JAILBREAK_FIELDS),
    "forbidden_question_csv": (load_forbidden_questions, FORBIDDEN_FIELDS),
    "xstest_csv": (load_xstest, XSTEST_FIELDS),
    "harmbench_csv": (load_harmbench, HARMBENCH_FIELDS),
}
