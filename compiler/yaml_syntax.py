"""YAML syntax problems as positioned Diagnostics, and the alias-aware composer.

Split from ``compiler.yamlspec``.  A syntax error inside a construct (an unclosed flow
mapping or sequence, an unterminated quoted scalar, a key without its ``:``) is reported
where the construct **starts**, which is where the user's mistake is; the parser's
give-up point (often lines later, or the end of the file) becomes the note.  Nesting past
``MAX_DEPTH`` is reported at the node that crosses it: ruamel's composer counts depth
and stops there, so nothing recurses deeply on hostile input.
"""

from __future__ import annotations

import copy
from typing import Any

from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError

from batchsafe.compiler.diagnostics import Diagnostic

__all__ = ["MAX_DEPTH", "AliasComposer", "syntax_diag"]

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a spec may have (real specs stay under 10)."""

# Constructs whose start is where the user's mistake is: for these the parser's
# give-up point (often the end of the file) is only a secondary note.
_START_CONTEXTS = ("while parsing a flow mapping", "while parsing a flow sequence", "while scanning a quoted scalar",
                   "while scanning a simple key", "while scanning a block scalar", "while scanning an alias",
                   "while scanning an anchor", "while scanning a tag", "while parsing a flow node")
_SYNTAX_HINTS = [  # substring of ruamel's problem text -> what the user most likely did
    ("found character '\\t'", "indent with spaces; YAML does not allow tabs here"),
    ("quoted scalar", "a quoted string is not closed"),
    ("expected <block end>", "check this line's indentation against the lines above it"),
    ("mapping values are not allowed", "quote values that contain ': ', or check the indentation"),
    ("could not find expected ':'", "a key lacks its ':' or a quote is not closed"),
    ("expected ',' or", "a flow collection ([...] or {...}) is not closed properly"),
    ("single document", "a spec holds exactly one YAML document; remove the extra '---'"),
    ("undefined alias", "define the anchor (&name) before using the alias (*name)"),
]


def syntax_diag(file: str, text: str, e: Exception) -> Diagnostic:
    """One positioned ``yaml-syntax`` Diagnostic for whatever ruamel raised on ``text``."""
    line, col, msg, note = 1, 1, str(e) or type(e).__name__, ""
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            line, col = mark.line + 1, mark.column + 1
        problem, context, cm = e.problem or "", e.context or "", e.context_mark
        if "maximum depth" in problem:
            msg = f"the document is nested more than {MAX_DEPTH} levels deep"
        elif not context.startswith("while"):  # e.g. "expected a single document", "but found another"
            msg = ", ".join(x for x in (context, problem) if x) or "invalid YAML"
        else:
            msg = f"{problem} {context}".strip()
            if problem and cm is not None and (cm.line + 1, cm.column + 1) != (line, col):
                if context.startswith(_START_CONTEXTS):
                    # The mistake is the construct left open: point at where it starts, and
                    # say where the parser gave up (often lines later, or the end of the file).
                    note = f"the parser gave up at line {line}, col {col}"
                    line, col = cm.line + 1, cm.column + 1
                else:
                    msg += f" (started at line {cm.line + 1}, col {cm.column + 1})"
    elif isinstance(e, ReaderError):
        head = text[: e.position]
        line, col = head.count("\n") + 1, e.position - (head.rfind("\n") + 1) + 1
        char = e.character if isinstance(e.character, str) else chr(e.character)
        msg = f"character {char!r} is not allowed in YAML ({e.reason})"
    elif isinstance(e, RecursionError):
        msg = "the document is nested too deeply"
    hint = next((h for k, h in _SYNTAX_HINTS if k in msg), "")
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), "invalid YAML")
    return Diagnostic(file, line, col, "", "yaml-syntax", first, hint, note)


class AliasComposer(Composer):
    """ruamel's composer, except that an alias yields a shallow copy of its anchor's node
    carrying the alias's own position (ruamel returns the anchor's node itself, so where
    the alias was written would be lost).  Copies share ``value``, so recursion is still
    detectable; ``loader._alias_targets`` maps a copy's id to (copy, anchor node)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.parser.check_event(AliasEvent):
            return super().compose_node(parent, index)
        mark = self.parser.peek_event().start_mark
        target = super().compose_node(parent, index)
        ref = copy.copy(target)
        ref.start_mark = mark
        self.loader._alias_targets[id(ref)] = (ref, target)  # keeps ref alive, so its id stays unique
        return ref


