"""Loaders for benchmark datasets in their original file formats.

Each format name maps to a loader that parses one file into ``Record`` objects with
normalised fields, and to the tuple of those field names (which the compiler uses to check
prompt templates). Malformed input raises ``DatasetFormatError`` naming the file and the
1-based physical line of the offending record.

Ids are stable and unique within a file: the source's natural id where it has one, else
the 0-based record index; prefixed with the file stem (``harmful_behaviors:17``,
``Age:42``, ``xstest_prompts:1``) except where the natural id is already unique across
the dataset's files (ARC ids such as ``Mercury_7175875``, HarmBench BehaviorIDs).

Formats: ``advbench_csv``, ``truthfulqa_csv``, ``bbq_jsonl``, ``mmlu_csv``, ``arc_jsonl``,
``jailbreak_csv``, ``forbidden_question_csv``, ``xstest_csv``, ``harmbench_csv``; see each
loader's docstring for its exact rules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import bbq, qa, safety
from ._base import DatasetFormatError, Record

__all__ = ["DatasetFormatError", "Record", "FORMATS", "load_records", "format_fields"]

_REGISTRY: dict[str, tuple[Callable[[Path, str], list[Record]], tuple[str, ...]]] = {
    **safety.LOADERS,
    **qa.LOADERS,
    **bbq.LOADERS,
}

FORMATS: tuple[str, ...] = (
    "advbench_csv",
    "truthfulqa_csv",
    "bbq_jsonl",
    "mmlu_csv",
    "arc_jsonl",
    "jailbreak_csv",
    "forbidden_question_csv",
    "xstest_csv",
    "harmbench_csv",
)
assert set(FORMATS) == set(_REGISTRY), "FORMATS and the loader registry disagree"


def _entry(fmt: str):
    try:
        return _REGISTRY[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset format {fmt!r}; known formats: {', '.join(FORMATS)}") from None


def load_records(fmt: str, path: str | os.PathLike[str], rel: str) -> list[Record]:
    """Parse one file of format ``fmt`` into records, in file order.

    ``rel`` is the data-dir-relative path; it becomes ``Record.source`` and the path in
    error messages. Raises ``DatasetFormatError`` for malformed input (including an empty
    file, missing header columns and repeated natural ids), ``ValueError`` listing
    ``FORMATS`` for an unknown format, and ``OSError`` if the file cannot be read.
    """
    loader, _ = _entry(fmt)
    return loader(Path(path), rel)


def format_fields(fmt: str) -> tuple[str, ...]:
    """Names of the normalised fields every record of format ``fmt`` has.

    Raises ``ValueError`` listing ``FORMATS`` for an unknown format.
    """
    return _entry(fmt)[1]
