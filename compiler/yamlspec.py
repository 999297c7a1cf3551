"""The one YAML entry point: load, ``extends``-merge, schema-validate, locate errors.

Loading.  Files are read as UTF-8 and composed with ruamel.yaml (pure safe
loader); plain data is then built from the node graph here, which gives an exact
1-based (line, col) for every key and every value, including list items, block
scalars (the ``|``/``>`` indicator), quoted scalars (the opening quote) and flow
collections (the ``[``/``{``).  Aliases and ``<<`` merge keys are honoured (they
just copy data; copied nodes keep the anchor's position; an anchor may not be
redefined, as an alias would then silently mean the later one).  Specs carry no code, so
any tag beyond the YAML core ones (``!!str !!int !!float !!bool !!null !!map !!seq``)
is refused.  Timestamps stay strings (JSON has no date type), NaN/infinity are
refused (they have no canonical JSON spelling), mapping keys must be strings.

``extends`` merge rules (``extends: <path>`` at the top level, relative to the
including file; the base is resolved first, recursively, then the child is merged
over it and ``extends`` is dropped):

* mapping over mapping merges key by key, recursively; base keys keep their order
  and new child keys are appended in child order;
* a child value ``null`` for a key that exists in the base deletes that key (a
  ``null`` for a key the base lacks is kept as a value);
* a non-empty child list over a base list, where every item of both is a mapping
  with a string or integer ``id``, merges by id: a child item with a known id
  deep-merges over the base item and keeps the base item's place; new ids are
  appended in child order.  Inherited items cannot be removed; ids must be unique;
* anything else (other lists, ``[]``, scalars, type changes) is replaced by the child.

Positions point into whichever file supplied a node: untouched base nodes keep
the base file's positions; nodes merged from both take the child's.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from batchsafe.compiler.diagnostics import (Diagnostic, SpecError, describe_value, format_path,
                                  show_value)

__all__ = ["Pos", "LocatedDoc", "load_located", "resolve_spec", "validate_schema", "diag_at"]

Pos = tuple[str, int, int]
"""(file, line, col), both 1-based."""

_T = "tag:yaml.org,2002:"
_SCALAR_TAGS = tuple(_T + t for t in ("str", "timestamp", "int", "float", "bool", "null"))
_MAX_NODES = 1_000_000  # alias expansion ("billion laughs") must not exhaust memory
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


@dataclass
class LocatedDoc:
    """A spec as plain data plus where every piece of it was written."""

    data: Any
    """Plain Python data (dict/list/str/int/float/bool/None), no ruamel types."""
    key_pos: dict[tuple, Pos]
    """Path tuple -> position of the key (mapping entries) or of the item (list items)."""
    value_pos: dict[tuple, Pos]
    """Path tuple -> position of the value's first character."""
    files: list[str] = field(default_factory=list)
    """Every file read: the outermost spec first, then its bases in extends order."""
    texts: dict[str, str] = field(default_factory=dict)
    """File -> exact text read (the compiler hashes these)."""

    def pos(self, path: tuple, *, key: bool = False) -> Pos:
        """Position of ``path`` (its key if ``key``), else of its nearest known ancestor."""
        table = self.key_pos if key else self.value_pos
        p = tuple(path)
        while p not in table and p:
            p = p[:-1]
        return table.get(p, (self.files[0] if self.files else "<spec>", 1, 1))


@dataclass
class _N:
    """A located node: ``v`` is dict[str, _N], list[_N] or a scalar."""

    v: Any
    kpos: Pos
    vpos: Pos


def _d(pos: Pos, path: tuple, code: str, message: str, hint: str = "") -> Diagnostic:
    return Diagnostic(pos[0], pos[1], pos[2], format_path(path), code, message, hint)


def diag_at(doc: LocatedDoc, path: tuple, code: str, message: str, hint: str = "", *, key: bool = False) -> Diagnostic:
    """Build a Diagnostic at ``path`` in ``doc`` (its key if ``key``; nearest known ancestor otherwise)."""
    return _d(doc.pos(path, key=key), tuple(path), code, message, hint)


# --------------------------------------------------------------------------- loading


def _read(file: str) -> tuple[str | None, list[Diagnostic]]:
    where = (file, 1, 1)
    try:
        raw = Path(file).read_bytes()
    except FileNotFoundError:
        return None, [_d(where, (), "missing-file", f"file not found: {file}")]
    except OSError as e:
        return None, [_d(where, (), "unreadable-file", f"cannot read file: {e.strerror or e}")]
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as e:
        head = raw[: e.start]
        line_start = head.rfind(b"\n") + 1
        col = len(head[line_start:].decode("utf-8", "replace")) + 1
        return None, [_d((file, head.count(b"\n") + 1, col), (), "encoding",
                         f"file is not valid UTF-8 (byte 0x{raw[e.start]:02x})", "save the spec as UTF-8")]


def _syntax_diag(file: str, text: str, e: Exception) -> Diagnostic:
    line, col, msg = 1, 1, str(e) or type(e).__name__
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            line, col = mark.line + 1, mark.column + 1
        problem, context, cm = e.problem or "", e.context or "", e.context_mark
        if not context.startswith("while"):  # e.g. "expected a single document", "but found another"
            msg = ", ".join(x for x in (context, problem) if x) or "invalid YAML"
        else:
            msg = f"{problem} {context}".strip()
            if problem and cm is not None and (cm.line + 1, cm.column + 1) != (line, col):
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
    return _d((file, line, col), (), "yaml-syntax", first, hint)


class _Builder:
    """Turns a composed ruamel node graph into located plain data, collecting problems."""

    def __init__(self, file: str, yaml: YAML) -> None:
        self.file, self.con, self.diags, self.count, self.active = file, yaml.constructor, [], 0, set()

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

    def build(self, node: Any, path: tuple, kpos: Pos) -> _N:
        self.count += 1
        if self.count > _MAX_NODES:
            raise OverflowError("alias expansion")
        vpos = self.mark(node)
        if isinstance(node, ScalarNode):
            return _N(self.scalar(node, path), kpos, vpos)
        if id(node) in self.active:  # `&a [*a]`: a node containing itself has no finite data
            self.diags.append(_d(vpos, path, "yaml-syntax", "recursive alias: this node contains itself"))
            return _N(None, kpos, vpos)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self.tag_ok(node, path, (_T + "seq",))
                return _N([self.build(c, path + (i,), self.mark(c)) for i, c in enumerate(node.value)], kpos, vpos)
            self.tag_ok(node, path, (_T + "map",))
            return _N(self.mapping(node, path), kpos, vpos)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: ScalarNode, path: tuple) -> Any:
        tag = str(node.tag)
        if tag in (_T + "str", _T + "timestamp", _T + "merge"):
            return node.value  # timestamps stay text: JSON and our hashes have no date type
        if not self.tag_ok(node, path, (_T + "int", _T + "float", _T + "bool", _T + "null")):
            return None
        try:
            value = getattr(self.con, "construct_yaml_" + tag[len(_T):])(node)
        except Exception:  # noqa: BLE001 - e.g. `!!int abc`; any failure is the user's data
            self.diags.append(_d(self.mark(node), path, "invalid-value",
                                 f"cannot read {node.value!r} as {'!!' + tag[len(_T):]}"))
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.diags.append(_d(self.mark(node), path, "invalid-value",
                                 f"{node.value} is not allowed: specs hold finite numbers only"))
        return value

    def mapping(self, node: MappingNode, path: tuple) -> dict[str, _N]:
        out: dict[str, _N] = {}
        merged: dict[str, _N] = {}
        for knode, vnode in node.value:
            if str(knode.tag) == _T + "merge":  # `<<: *base` copies keys not given explicitly
                sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
                for src in sources:
                    got = self.build(src, path, self.mark(src)).v
                    if not isinstance(got, dict):
                        self.diags.append(_d(self.mark(src), path, "wrong-type", "a '<<' merge needs a mapping"))
                        continue
                    for k, n in got.items():
                        merged.setdefault(k, n)
                continue
            kpos = self.mark(knode)
            if not isinstance(knode, ScalarNode):
                self.diags.append(_d(kpos, path, "wrong-type", "mapping keys must be plain strings"))
                continue
            if not self.tag_ok(knode, path + (knode.value,), _SCALAR_TAGS):
                continue
            key = self.scalar(knode, path + (knode.value,))
            if not isinstance(key, str):
                self.diags.append(_d(kpos, path + (knode.value,), "wrong-type",
                                     f"mapping keys must be strings, got {describe_value(key)}",
                                     f"quote the key: '{knode.value}'"))
                continue
            if key in out:
                first = out[key].kpos
                self.diags.append(_d(kpos, path + (key,), "duplicate-key", f"duplicate key {key!r}",
                                     f"first defined at line {first[1]}, col {first[2]}"))
                continue
            child = self.build(vnode, path + (key,), kpos)
            if isinstance(vnode, ScalarNode) and vnode.value == "" and vnode.style is None:
                child.vpos = kpos  # an empty value has no text; ruamel marks the next token instead
            out[key] = child
        for k, n in merged.items():
            out.setdefault(k, n)
        return out


def _load_tree(file: str) -> tuple[_N | None, str | None, list[Diagnostic]]:
    """Read and build one file; the tree is None when nothing usable could be read."""
    text, diags = _read(file)
    if text is None:
        return None, None, diags
    yaml = YAML(typ="safe", pure=True)
    try:
        with warnings.catch_warnings(record=True) as caught:  # ruamel warns on stderr; we report instead
            warnings.simplefilter("always")
            root = yaml.compose(text)
    except Exception as e:  # noqa: BLE001 - whatever ruamel raises on bad input is the user's syntax problem
        return None, text, [_syntax_diag(file, text, e)]
    # A redefined anchor is legal YAML, but then an alias silently means the later definition.
    diags = [_d((file, int(m[4]), int(m[5])), (), "duplicate-anchor", f"anchor &{m[1]} is defined twice",
                f"first defined at line {m[2]}, col {m[3]}; give each anchor its own name")
             for w in caught if issubclass(w.category, ReusedAnchorWarning)
             for m in [re.search(r"anchor '(.*)'\s+first occurrence.*?line (\d+), column (\d+)"
                                 r".*?second occurrence.*?line (\d+), column (\d+)", str(w.message), re.S)] if m]
    if root is None:
        return None, text, diags + [_d((file, 1, 1), (), "wrong-type", "the spec is empty; expected a mapping")]
    builder = _Builder(file, yaml)
    builder.diags += diags
    try:
        tree = builder.build(root, (), builder.mark(root))
    except OverflowError:
        return None, text, [_d((file, 1, 1), (), "too-large", "aliases expand to too many nodes")]
    except RecursionError as e:
        return None, text, [_syntax_diag(file, text, e)]
    if not isinstance(tree.v, dict):
        builder.diags.append(_d(tree.vpos, (), "wrong-type", f"the top level must be a mapping, got {describe_value(tree.v)}"))
    return tree, text, builder.diags


def _to_doc(tree: _N, files: list[str], texts: dict[str, str]) -> LocatedDoc:
    kp: dict[tuple, Pos] = {}
    vp: dict[tuple, Pos] = {}

    def plain(n: _N, path: tuple) -> Any:
        kp[path], vp[path] = n.kpos, n.vpos
        if isinstance(n.v, dict):
            return {k: plain(c, path + (k,)) for k, c in n.v.items()}
        if isinstance(n.v, list):
            return [plain(c, path + (i,)) for i, c in enumerate(n.v)]
        return n.v

    data = plain(tree, ())
    return LocatedDoc(data, kp, vp, files, texts)


def load_located(path: str | Path) -> LocatedDoc:
    """Load one YAML file as plain data with the position of every key and value.

    Raises SpecError (never a ruamel exception) for unreadable files, YAML syntax
    errors, duplicate keys (at the second occurrence), refused tags, non-string
    keys, non-finite floats and a top level that is not a mapping.
    ``extends`` is not followed (see :func:`resolve_spec`).
    """
    file = os.fspath(path)
    tree, text, diags = _load_tree(file)
    if diags or tree is None:
        raise SpecError(diags)
    return _to_doc(tree, [file], {file: text or ""})


# --------------------------------------------------------------------------- extends


def _idkey(n: _N) -> tuple | None:
    """(type, id) of a list item that is a mapping with a str/int ``id``, else None."""
    ident = n.v.get("id") if isinstance(n.v, dict) else None
    # The type is part of the key so that id 1 and id "1" are different items.
    return (type(ident.v).__name__, ident.v) if ident is not None and type(ident.v) in (str, int) else None


def _merge(base: _N, child: _N, path: tuple, diags: list[Diagnostic]) -> _N:
    """Deep-merge ``child`` over ``base`` (rules in the module docstring)."""
    if isinstance(base.v, dict) and isinstance(child.v, dict):
        out = dict(base.v)
        for k, c in child.v.items():
            if k in base.v and c.v is None:
                del out[k]
            else:
                out[k] = _merge(base.v[k], c, path + (k,), diags) if k in base.v else c
        return _N(out, child.kpos, child.vpos)
    if (isinstance(base.v, list) and isinstance(child.v, list) and child.v
            and all(_idkey(i) is not None for i in base.v + child.v)):
        for items in (base.v, child.v):  # by-id merging is ambiguous when an id repeats
            seen: dict[tuple, int] = {}
            for i, item in enumerate(items):
                k = _idkey(item)
                if k in seen:
                    diags.append(_d(item.v["id"].vpos, path + (i, "id"), "duplicate-id",
                                    f"duplicate id {show_value(k[1])} (also item [{seen[k]}])",
                                    "extends merges lists by id, so ids must be unique"))
                seen.setdefault(k, i)
        index = {_idkey(b): i for i, b in enumerate(base.v)}
        out_l = list(base.v)
        for c in child.v:
            i = index.get(_idkey(c))
            if i is None:
                out_l.append(c)
            else:
                out_l[i] = _merge(out_l[i], c, path + (i,), diags)
        return _N(out_l, child.kpos, child.vpos)
    return child


def _resolve(file: str, chain: list[str], files: list[str], texts: dict[str, str],
             diags: list[Diagnostic]) -> _N | None:
    tree, text, found = _load_tree(file)
    diags += found
    if text is not None:
        files.append(file)
        texts[file] = text
    if tree is None or not isinstance(tree.v, dict) or "extends" not in tree.v:
        return tree
    ext = tree.v.pop("extends")
    if not isinstance(ext.v, str):
        diags.append(_d(ext.vpos, ("extends",), "wrong-type",
                        f"expected string (a path relative to this file), got {describe_value(ext.v)}"))
        return tree
    base_file = os.path.normpath(os.path.join(os.path.dirname(file), ext.v))
    here = chain + [file]
    real = [os.path.realpath(f) for f in here]
    if os.path.realpath(base_file) in real:
        start = real.index(os.path.realpath(base_file))
        diags.append(_d(ext.vpos, ("extends",), "extends-cycle",
                        "extends cycle: " + " -> ".join(here[start:] + [base_file]),
                        "a spec cannot extend itself, directly or through its bases"))
        return tree
    if not os.path.isfile(base_file):
        diags.append(_d(ext.vpos, ("extends",), "extends-missing", f"extends target {ext.v!r} does not exist",
                        f"looked for {base_file} (paths are relative to the including file)"))
        return tree
    base = _resolve(base_file, here, files, texts, diags)
    if base is None or not isinstance(base.v, dict):
        return tree
    return _merge(base, tree, (), diags)


def resolve_spec(path: str | Path) -> LocatedDoc:
    """Load ``path`` and, recursively, the bases named by top-level ``extends``, merged.

    Merge rules are in the module docstring.  Problems from every file read are
    collected and raised together as one SpecError; ``extends`` problems are
    ``extends-missing``, ``extends-cycle`` (showing the chain) and ``wrong-type``,
    each at the ``extends`` value that caused them.
    """
    file = os.fspath(path)
    files: list[str] = []
    texts: dict[str, str] = {}
    diags: list[Diagnostic] = []
    tree = _resolve(file, [], files, texts, diags)
    if diags or tree is None:
        raise SpecError(diags)
    return _to_doc(tree, files, texts)


# --------------------------------------------------------------------------- schema


def validate_schema(doc: "LocatedDoc", schema: dict) -> list[Diagnostic]:
    """Validate ``doc`` against ``schema``; see ``compiler.schema_errors.validate_schema``."""
    from batchsafe.compiler.schema_errors import validate_schema as _validate

    return _validate(doc, schema)
