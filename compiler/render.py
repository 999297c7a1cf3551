"""Render dataset records into chat prompts with the metadata their scorers need.

Templates use ``{field}`` placeholders only (``{{`` and ``}}`` are literal braces).
This is deliberately not ``str.format``: a spec must not reach attributes or
indexes of Python objects, and an unknown placeholder must be a compile error
with a position, not a KeyError at run time.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import re
from typing import Any

from batchsafe.core.canonical import short_id

from .plan import Message, Prompt
from .spec import Render, Task

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Placeholders provided by the renderer itself rather than by record fields.
SPECIAL_FIELDS = {"mcq": {"choices"}, "jailbreak": {"goal"}, "chat": set()}


class RenderError(BatchsafeError, ValueError):
    """A record that cannot be rendered with the task's template."""


def placeholders(template: str) -> list[str]:
    """Field names referenced by ``template``, in order of appearance."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    return str(value)


def fill(template: str, values: dict[str, Any]) -> str:
    """Substitute ``{field}`` placeholders; ``{{``/``}}`` become literal braces."""

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = m.group(1)
        if name not in values:
            raise RenderError(f"unknown placeholder {{{name}}}")
        return _text(values[name])

    return _PLACEHOLDER.sub(sub, template)


def _answer_index(fields: dict[str, Any], labels: str) -> int | None:
    """Index of the correct option, from whichever key the format provides."""
    if isinstance(fields.get("answer_index"), int):
        return fields["answer_index"]
    if isinstance(fields.get("label"), int) and not isinstance(fields.get("label"), bool):
        return fields["label"]
    answer = fields.get("answer")
    if isinstance(answer, str) and len(answer) == 1 and answer in labels:
        return labels.index(answer)
    return None


def _letter(index: Any, labels: str) -> str | None:
    return labels[index] if isinstance(index, int) and 0 <= index < len(labels) else None


def _mcq(render: Render, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    choices = fields.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise RenderError("record has no 'choices' list for an MCQ rendering")
    labels = render.choice_labels
    if len(choices) > len(labels):
        raise RenderError(f"{len(choices)} choices but only {len(labels)} choice_labels")
    lettered = "\n".join(f"{labels[i]}. {_text(c)}" for i, c in enumerate(choices))
    content = fill(render.template, {**fields, "choices": lettered})
    index = _answer_index(fields, labels)
    meta: dict[str, Any] = {
        "choices": [_text(c) for c in choices],
        "labels": list(labels[: len(choices)]),
        "answer": _letter(index, labels),
    }
    for key in ("biased_idx", "anti_biased_idx", "unknown_idx"):
        if key in fields:
            meta[key.replace("_idx", "_answer")] = _letter(fields[key], labels)
    return content, meta


def render_prompt(task_name: str, task: Task, fields: dict[str, Any], records: list[str],
                  goal: str | None = None) -> Prompt:
    """Render one record (or one jailbreak template x goal pair) into a Prompt.

    ``meta`` holds every record field not used verbatim in the message text, so
    scorers see answer keys, answer lists, groups and categories without the plan
    duplicating long prompt texts.
    """
    render = task.render
    used = set(placeholders(render.template))
    if render.kind == "mcq":
        content, extra = _mcq(render, fields)
    elif render.kind == "jailbreak":
        if goal is None:
            raise RenderError("jailbreak rendering needs a goal")
        jailbreak = fill(render.template, {**fields, "goal": goal})
        if render.placeholder in jailbreak:
            content = jailbreak.replace(render.placeholder, goal)
        else:
            # Templates without the placeholder expect the request to follow them.
            content = f"{jailbreak}\n\n{goal}"
        extra = {"goal": goal}
    else:
        content = fill(render.template, fields)
        extra = {}
    meta = {k: v for k, v in fields.items() if k not in used}
    meta.update(extra)
    messages = []
    if render.system:
        messages.append(Message(role="system", content=render.system))
    messages.append(Message(role="user", content=content))
    ident = {
        "task": task_name,
        "messages": [m.model_dump() for m in messages],
        "meta": meta,
    }
    return Prompt(
        id=short_id("p_", ident),
        task=task_name,
        domain=task.domain,
        dataset=task.dataset,
        records=records,
        messages=messages,
        scorer=task.scorer,
        meta=meta,
    )
