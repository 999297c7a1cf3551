"""Metric paths for ``batchsafe diff``: one spelling for report lines, JSON and ``--fail-on``.

A path is a tuple of string segments. Written out, plain segments (letters, digits, ``_``
and ``-``) are joined by dots; any other segment is written in brackets as a JSON string,
so model ids and condition labels with dots, ``=`` or commas stay reachable::

    agreement.by_model["llama3.2-1b"]
    agreement.by_model_condition.m1["bs=8"]
    b.stats.p1.flip_rate.safety

``parse_path(format_path(p)) == p`` for every tuple of strings (a hypothesis test holds
it to that). ``flatten`` turns nested JSON into ``{path: leaf}`` the same way for
statistics and environments.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

Path = tuple[str, ...]
_PLAIN = re.compile(r"[A-Za-z0-9_\-]+")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


class PathSyntaxError(BatchsafeError, ValueError):
    """A metric path that cannot be read (the message points at the offending character)."""


def format_segment(seg: str) -> str:
    """``seg`` as written in a path: bare when plain, else ``["..."]`` (JSON string)."""
    return seg if _PLAIN.fullmatch(seg) else "[" + json.dumps(seg, ensure_ascii=False) + "]"


def format_path(path: Path) -> str:
    """The written form of ``path`` (see the module docstring)."""
    out = []
    for i, seg in enumerate(path):
        text = format_segment(seg)
        out.append(text if (i == 0 or text.startswith("[")) else "." + text)
    return "".join(out)


def parse_path_prefix(text: str, pos: int = 0) -> tuple[Path, int]:
    """Read a path starting at ``text[pos]``; return it and the index just after it.

    Stops at the first character that cannot continue a path (an operator, a space).
    """
    segs: list[str] = []
    expect_seg = True  # at the start, or just after a dot
    while pos < len(text):
        ch = text[pos]
        if ch == "[":
            m = _QUOTED.match(text, pos + 1)
            if not m or not text.startswith("]", m.end()):
                raise PathSyntaxError(f"{text!r}: at {pos + 1}: a bracket needs a JSON string and ']', "
                                      f'e.g. ["llama3.2-1b"]')
            try:
                segs.append(json.loads(m.group()))
            except ValueError as exc:
                raise PathSyntaxError(f"{text!r}: at {pos + 1}: bad string in brackets: {exc}") from None
            pos = m.end() + 1
            expect_seg = False
        elif expect_seg:
            m = _PLAIN.match(text, pos)
            if not m:
                break
            segs.append(m.group())
            pos = m.end()
            expect_seg = False
        elif ch == ".":
            pos += 1
            expect_seg = True
        else:
            break
    if expect_seg:
        what = "a name or [\"...\"] after '.'" if segs else "a metric path"
        raise PathSyntaxError(f"{text!r}: at {pos + 1}: expected {what}")
    return tuple(segs), pos


def parse_path(text: str) -> Path:
    """The segments of a written path; ``PathSyntaxError`` unless all of ``text`` is one path."""
    path, end = parse_path_prefix(text.strip())
    if end != len(text.strip()):
        raise PathSyntaxError(f"{text!r}: at {end + 1}: unexpected {text.strip()[end]!r}")
    return path


def is_count_block(node: Mapping[str, Any]) -> bool:
    """A ``{"k", "n", "rate"}`` block of the statistics: its own path stands for its rate."""
    return "rate" in node and "k" in node and "n" in node


def flatten(obj: Any, prefix: Path = (), *, string_lists: bool = False, count_blocks: bool = True) -> dict[Path, Any]:
    """Leaves of nested JSON by path: mappings by key, lists by index (``"0"``, ``"1"``...).

    With ``count_blocks`` a count block also gets an entry for its own path (its ``rate``),
    as ``analysis.targets.resolve_metric`` resolves it. With ``string_lists`` a list of
    strings is a set: ``"name==version"`` items become ``{name: version}``, other items
    ``{item: True}`` (package lists and CPU flags differ by member, not by position).
    """
    out: dict[Path, Any] = {}
    stack: list[tuple[Path, Any]] = [(prefix, obj)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, Mapping):
            if count_blocks and is_count_block(node):
                out[path] = node["rate"]
            for k, v in node.items():
                stack.append((path + (str(k),), v))
        elif isinstance(node, list):
            if string_lists and node and all(isinstance(x, str) for x in node):
                for item in node:
                    name, sep, version = item.partition("==")
                    out[path + (name if sep else item,)] = version if sep else True
            else:
                for i, v in enumerate(node):
                    stack.append((path + (str(i),), v))
        else:
            out[path] = node
    return out


def numeric_leaves(obj: Any) -> tuple[dict[Path, Any], dict[Path, str]]:
    """The number, boolean and null leaves of ``flatten(obj, count_blocks=False)`` (same paths
    and values, in another order), and ``format_path`` of every container on the way (for
    :func:`leaf_writer`), in one walk."""
    out: dict[Path, Any] = {}
    texts: dict[Path, str] = {(): ""}
    stack: list[tuple[Path, Any]] = [((), obj)]
    while stack:
        path, node = stack.pop()
        if type(node) is dict or (type(node) is not list and isinstance(node, Mapping)):
            items: Any = node.items()
        elif type(node) is list:
            items = enumerate(node)
        else:  # a scalar at the top
            if node is None or isinstance(node, (int, float)):
                out[path] = node
            continue
        text = texts[path]
        for k, v in items:
            t = type(v)
            if v is None or t is float or t is int or t is bool:
                out[path + (str(k),)] = v
            elif t is dict or t is list or isinstance(v, Mapping):
                sub = path + (str(k),)
                seg = format_segment(sub[-1])
                texts[sub] = seg if not path else text + seg if seg.startswith("[") else text + "." + seg
                stack.append((sub, v))
            elif isinstance(v, (int, float)):
                out[path + (str(k),)] = v
    return out, texts


def leaf_writer(texts: dict[Path, str]) -> Callable[[Path], str]:
    """``format_path`` of a leaf whose container's written path is in ``texts`` (from
    :func:`numeric_leaves`), each distinct last segment written once."""
    segs: dict[str, str] = {}

    def write(path: Path) -> str:
        if len(path) < 2:
            return format_path(path)
        last = path[-1]
        seg = segs.get(last)
        if seg is None:
            seg = segs[last] = format_segment(last)
        head = texts[path[:-1]]
        return head + seg if seg.startswith("[") else head + "." + seg

    return write


def is_number(value: Any) -> bool:
    """A JSON number or boolean (booleans count as 1/0, as spec targets count them)."""
    return isinstance(value, (int, float))
