"""The differing span of two outputs, for highlighting (difflib, word level).

Word-level tokens (runs of word characters, runs of spaces, single other characters)
keep the highlight readable ("can't" vs "cannot" marks the words, not scattered letters)
and keep ``SequenceMatcher`` fast on long outputs: its cost grows with the number of
tokens, which is several times smaller than the number of characters.
"""

from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)
MAX_TOKENS = 20_000
"""Beyond this many tokens per side the whole text is marked as changed (bounded time)."""

Segments = list[list[int | str]]
"""``[[highlighted (0/1), text], ...]``; concatenated texts give the output back exactly."""


def _merge(segs: Segments, hl: int, text: str) -> None:
    if not text:
        return
    if segs and segs[-1][0] == hl:
        segs[-1][1] = str(segs[-1][1]) + text
    else:
        segs.append([hl, text])


def diff_segments(a: str, b: str) -> dict[str, Segments]:
    """``{"a": segments of a, "b": segments of b}``: equal runs unmarked, deleted (in a) and inserted (in b) marked."""
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    if "".join(ta) != a or "".join(tb) != b or len(ta) > MAX_TOKENS or len(tb) > MAX_TOKENS:
        return {"a": [[1, a]] if a else [], "b": [[1, b]] if b else []}
    sa: Segments = []
    sb: Segments = []
    sm = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        hl = 0 if op == "equal" else 1
        _merge(sa, hl, "".join(ta[i1:i2]))
        _merge(sb, hl, "".join(tb[j1:j2]))
    return {"a": sa, "b": sb}
