"""Loaders for question-answering benchmarks: TruthfulQA (CSV), MMLU (hendrycks CSV), ARC (JSONL)."""

from __future__ import annotations

from pathlib import Path

from ._base import DatasetFormatError, IdRegistry, Record, csv_rows, empty_file, header_rows, jsonl_objects, need, read_text

TRUTHFULQA_FIELDS = (
    "type",
    "category",
    "question",
    "best_answer",
    "best_incorrect_answer",
    "correct_answers",
    "incorrect_answers",
    "source",
)
MMLU_FIELDS = ("question", "choices", "answer", "subject")
ARC_FIELDS = ("id", "question", "choices", "labels", "answer", "answer_index")

_TQA_COLS = ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source")
_TQA_BEST_INCORRECT = "Best Incorrect Answer"


def _answers(text: str) -> list[str]:
    # Upstream lists are "; "-joined and some end in a stray ";", hence strip and drop empties.
    return [a for a in (part.strip() for part in text.split(";")) if a]


def load_truthfulqa(path: Path, rel: str) -> list[Record]:
    """Load TruthfulQA.csv, either the Jan-2025 release or the classic v1 file.

    The classic file lacks ``Best Incorrect Answer`` (the field is then None) and starts
    with a UTF-8 BOM, which ``read_text`` drops. There is no natural id: ids are
    ``<stem>:<row index>``. Answer lists are split on ``;``, stripped, empties dropped.
    """
    stem = path.stem
    records = []
    for line, c, row in header_rows(path, rel, _TQA_COLS):
        bi = c.get(_TQA_BEST_INCORRECT)
        fields = {
            "type": row[c["Type"]],
            "category": row[c["Category"]],
            "question": row[c["Question"]],
            "best_answer": row[c["Best Answer"]],
            "best_incorrect_answer": None if bi is None else row[bi],
            "correct_answers": _answers(row[c["Correct Answers"]]),
            "incorrect_answers": _answers(row[c["Incorrect Answers"]]),
            "source": row[c["Source"]],
        }
        records.append(Record(f"{stem}:{len(records)}", fields, rel, line))
    return records


_MMLU_SPLITS = ("_test", "_dev", "_val")
_LETTERS = ("A", "B", "C", "D")


def mmlu_subject(stem: str) -> str:
    """``anatomy_test`` -> ``anatomy``: the subject is the file stem minus its split suffix."""
    for suffix in _MMLU_SPLITS:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def load_mmlu(path: Path, rel: str) -> list[Record]:
    """Load one MMLU subject file in hendrycks' data.tar layout.

    No header; exactly 6 fields a row: question, choices A-D, and the answer letter, which
    must be exactly one of ``A``..``D``. Ids are ``<stem>:<row index>``.
    """
    stem = path.stem
    subject = mmlu_subject(stem)
    records = []
    append = records.append
    for line, row in csv_rows(read_text(path, rel), rel):
        if len(row) != 6:
            raise DatasetFormatError(rel, line, f"expected 6 fields (question, A, B, C, D, answer), got {len(row)}")
        answer = row[5]
        if answer not in _LETTERS:
            raise DatasetFormatError(rel, line, f"answer must be one of A, B, C, D, got {answer!r}")
        fields = {"question": row[0], "choices": row[1:5], "answer": answer, "subject": subject}
        append(Record(f"{stem}:{len(records)}", fields, rel, line))
    if not records:
        raise empty_file(rel)
    return records


def load_arc(path: Path, rel: str) -> list[Record]:
    """Load an ARC JSONL file (ARC-V1-Feb2018 layout).

    The id is ARC's own ``id`` (e.g. ``Mercury_7175875``), unprefixed: ARC ids are unique
    across the whole release. Labels are kept as given (mostly A-D, some 1-4 or A-E);
    ``answer_index`` is the answerKey's position among them.
    """
    records = []
    ids = IdRegistry(rel)
    for line, obj in jsonl_objects(path, rel):
        qid = need(obj, "id", str, rel, line)
        question = need(obj, "question", dict, rel, line)
        stem = need(question, "stem", str, rel, line, "question.")
        choices = need(question, "choices", list, rel, line, "question.")
        answer = need(obj, "answerKey", str, rel, line)
        texts, labels = [], []
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise DatasetFormatError(rel, line, f"question.choices[{i}] must be an object")
            texts.append(need(choice, "text", str, rel, line, f"question.choices[{i}]."))
            labels.append(need(choice, "label", str, rel, line, f"question.choices[{i}]."))
        if len(set(labels)) != len(labels):
            raise DatasetFormatError(rel, line, f"repeated choice labels {labels}")
        try:
            index = labels.index(answer)
        except ValueError:
            raise DatasetFormatError(rel, line, f"answerKey {answer!r} is not among the choice labels {labels}") from None
        ids.add(qid, line)
        fields = {
            "id": qid,
            "question": stem,
            "choices": texts,
            "labels": labels,
            "answer": answer,
            "answer_index": index,
        }
        records.append(Record(qid, fields, rel, line))
    if not records:
        raise empty_file(rel)
    return records


LOADERS = {
    "truthfulqa_csv": (load_truthfulqa, TRUTHFULQA_FIELDS),
    "mmlu_csv": (load_mmlu, MMLU_FIELDS),
    "arc_jsonl": (load_arc, ARC_FIELDS),
}
