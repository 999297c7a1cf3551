"""Located plain data from a composed ruamel node graph (split from ``compiler.yamlspec``).

``_Builder`` walks the nodes ruamel composed and builds dict/list/scalar data where every
key and value keeps its 1-based (file, line, col).  It refuses what a spec may not hold
(custom tags, non-string keys, duplicate keys, non-finite floats, recursive aliases) as
Diagnostics, and positions everything reached through an alias at the alias, keeping the
anchor side as ``origin`` (see ``compiler.yaml_syntax.AliasComposer``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from batchsafe.compiler.diagnostics import Diagnostic, clip, describe_value, format_path
from batchsafe.compiler.yaml_syntax import MAX_DEPTH

Pos = tuple[str, int, int]
"""(file, line, col), both 1-based."""

_T = "tag:yaml.org,2002:"
_SCALAR_TAGS = tuple(_T + t for t in ("str", "timestamp", "int", "float", "bool", "null"))
_MAX_NODES = 1_000_000  # alias expansion ("billion laughs") must not exhaust memory


@dataclass
class _N:
    """A located node: ``v`` is dict[str, _N], list[_N] or a scalar."""

    v: Any
    kpos: Pos
    vpos: Pos
    origin: Pos | None = None
    """Where the node was really written, when it was reached through an alias (then kpos/vpos are the alias's)."""


def _d(pos: Pos, path: tuple, code: str, message: str, hint: str = "") -> Diagnostic:
    return Diagnostic(pos[0], pos[1], pos[2], format_path(path), code, message, hint)


class _Builder:
    """Turns a composed ruamel node graph into located plain data, collecting problems."""

    def __init__(self, file: str, yaml: YAML) -> None:
        self.file, self.con, self.diags, self.count, self.active = file, yaml.constructor, [], 0, set()
        self.aliases: dict[int, tuple[Any, Any]] = getattr(yaml, "_alias_targets", {})
        self.depth = 0

    def mark(self, node: Any) -> Pos:
        return (self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def tag_ok(self, node: Any, path: tuple, allowed: tuple[str, ...]) -> bool:
        tag = str(node.tag)
        if tag in allowed:
            return True
        shown = "!!" + tag[len(_T):] if tag.startswith(_T) else tag
        self.diags.append(_d(self.mark(node), path, "custom-tag", f"YAML tag {shown} is not allowed",
                             "specs are plain data; remove the tag (only core tags like !!str are accepted)"))
        return False

    def build(self, node: Any, path: tuple, kpos: Pos, via: Pos | None = None) -> _N:
        """Located data of ``node``; ``via`` is the position of the alias it was reached through."""
        self.count += 1
        if self.count > _MAX_NODES:
            raise OverflowError("alias expansion")
        alias = self.aliases.get(id(node))
        inner = via is not None  # already beneath an alias: every position collapses to it
        if alias is not None and via is None:
            via = self.mark(node)  # the outermost alias is where the user used the value
        real = self.mark(alias[1] if alias is not None else node)
        vpos, origin = (via, real) if via is not None else (real, None)
        if inner:
            kpos = via
        if isinstance(node, ScalarNode):
            return _N(self.scalar(node, path, vpos), kpos, vpos, origin)
        if id(node.value) in self.active:  # `&a [*a]`: a node containing itself has no finite data
            self.diags.append(_d(vpos, path, "recursive-alias", "recursive alias: this node contains itself",
                                 "an alias cannot be used inside its own anchor"))
            return _N(None, kpos, vpos, origin)
        if self.depth >= MAX_DEPTH:  # aliases can stack nesting beyond what the composer saw
            raise _TooDeep(vpos)
        self.active.add(id(node.value))
        self.depth += 1
        try:
            if isinstance(node, SequenceNode):
                self.tag_ok(node, path, (_T + "seq",))
                return _N([self.build(c, path + (i,), self.mark(c) if via is None else via, via)
                           for i, c in enumerate(node.value)], kpos, vpos, origin)
            self.tag_ok(node, path, (_T + "map",))
            return _N(self.mapping(node, path, via), kpos, vpos, origin)
        finally:
            self.depth -= 1
            self.active.discard(id(node.value))

    def scalar(self, node: ScalarNode, path: tuple, at: Pos | None = None) -> Any:
        tag = str(node.tag)
        at = at or self.mark(node)
        if tag in (_T + "str", _T + "timestamp", _T + "merge"):
            return node.value  # timestamps stay text: JSON and our hashes have no date type
        if not self.tag_ok(node, path, (_T + "int", _T + "float", _T + "bool", _T + "null")):
            return None
        try:
            value = getattr(self.con, "construct_yaml_" + tag[len(_T):])(node)
        except Exception:  # noqa: BLE001 - e.g. `!!int abc`; any failure is the user's data
            text = str(node.value)
            size = f" ({len(text):,} characters)" if len(text) > 60 else ""
            self.diags.append(_d(at, path, "invalid-value", f"cannot read {clip(repr(text), 60)}{size} as "
                                 f"{'!!' + tag[len(_T):]}", "integers in a spec hold at most 4,300 digits"
                                 if tag == _T + "int" and len(text) > 4300 else ""))
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.diags.append(_d(at, path, "invalid-value",
                                 f"{clip(str(node.value))} is not allowed: specs hold finite numbers only"))
        return value

    def mapping(self, node: MappingNode, path: tuple, via: Pos | None = None) -> dict[str, _N]:
        out: dict[str, _N] = {}
        merged: dict[str, _N] = {}
        for knode, vnode in node.value:
            if str(knode.tag) == _T + "merge":  # `<<: *base` copies keys not given explicitly
                sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
                for src in sources:
                    got = self.build(src, path, via or self.mark(src), via).v
                    if not isinstance(got, dict):
                        self.diags.append(_d(self.mark(src), path, "wrong-type", "a '<<' merge needs a mapping"))
                        continue
                    for k, n in got.items():
                        merged.setdefault(k, n)
                continue
            kpos = via or self.mark(knode)
            if not isinstance(knode, ScalarNode):
                self.diags.append(_d(kpos, path, "wrong-type", "mapping keys must be plain strings"))
                continue
            if not self.tag_ok(knode, path + (knode.value,), _SCALAR_TAGS):
                continue
            key = self.scalar(knode, path + (knode.value,), kpos)
            if not isinstance(key, str):
                self.diags.append(_d(kpos, path + (clip(str(knode.value)),), "wrong-type",
                                     f"mapping keys must be strings, got {describe_value(key)}",
                                     f"quote the key: '{clip(str(knode.value))}'"))
                continue
            if key in out:
                first = out[key].kpos
                self.diags.append(_d(kpos, path + (key,), "duplicate-key", f"duplicate key {key!r}",
                                     f"first defined at line {first[1]}, col {first[2]}"))
                continue
            child = self.build(vnode, path + (key,), kpos, via)
            if isinstance(vnode, ScalarNode) and vnode.value == "" and vnode.style is None and via is None:
                child.vpos = kpos  # an empty value has no text; ruamel marks the next token instead
            out[key] = child
        for k, n in merged.items():
            out.setdefault(k, n)
        return out


class _TooDeep(Exception):
    """Nesting past MAX_DEPTH found while building (through aliases); ``pos`` is where."""

    def __init__(self, pos: Pos) -> None:
        super().__init__(pos)
        self.pos = pos
