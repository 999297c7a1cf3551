"""The one YAML entry point: load, ``extends``-merge, schema-validate, locate errors.

Loading.  Files are read as UTF-8 and composed with ruamel.yaml (pure safe
loader); plain data is then built from the node graph here, which gives an exact
1-based (line, col) for every key and every value, including list items, block
scalars (the ``|``/``>`` indicator), quoted scalars (the opening quote) and flow
collections (the ``[``/``{``).  Aliases and ``<<`` merge keys are honoured (they
just copy data; an anchor may not be redefined, as an alias would then silently mean
the later one).  Everything reached through an alias is positioned at the alias (where
the value is *used*), with the anchor's own position kept as a secondary note, so a
wrong value copied into ``phases[3]`` is reported at ``phases[3]``, not at the anchor.  Specs carry no code, so
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
the base file's positions; nodes merged from both take the child's.  A deletion
(``key: null``) is remembered with its position, so a required key it removes is
reported at the deleting line.

Nesting deeper than ``MAX_DEPTH`` (flow or block, directly or through aliases) is
refused at the node that crosses the limit, before anything recurses that deep.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import ReusedAnchorWarning

from batchsafe.compiler.diagnostics import (Diagnostic, SpecError, describe_value, format_path,
                                  show_value)

from batchsafe.compiler.yaml_build import Pos, _Builder, _d, _N, _TooDeep
from batchsafe.compiler.yaml_syntax import MAX_DEPTH, AliasComposer, syntax_diag

__all__ = ["Pos", "LocatedDoc", "load_located", "resolve_spec", "diag_at"]




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
    origin: dict[tuple, Pos] = field(default_factory=dict)
    """Path tuple -> where a node reached through an alias was really written (the anchor side)."""
    deleted: dict[tuple, Pos] = field(default_factory=dict)
    """Path tuple -> position of the ``key: null`` that deleted a base key through ``extends``."""

    def pos(self, path: tuple, *, key: bool = False) -> Pos:
        """Position of ``path`` (its key if ``key``), else of its nearest known ancestor."""
        table = self.key_pos if key else self.value_pos
        p = tuple(path)
        while p not in table and p:
            p = p[:-1]
        return table.get(p, (self.files[0] if self.files else "<spec>", 1, 1))


    def origin_of(self, path: tuple) -> Pos | None:
        """Where the value at ``path`` (or its nearest ancestor) was written, when an alias copied it."""
        p = tuple(path)
        while p:
            if p in self.origin:
                return self.origin[p]
            if p in self.value_pos:
                return None  # positioned and not aliased: the primary position is the real one
            p = p[:-1]
        return self.origin.get(())


def diag_at(doc: LocatedDoc, path: tuple, code: str, message: str, hint: str = "", *, key: bool = False) -> Diagnostic:
    """Build a Diagnostic at ``path`` in ``doc`` (its key if ``key``; nearest known ancestor otherwise).

    A value reached through an alias is reported at the alias, with the anchor side as a
    note; a required key or a referenced entry that an ``extends`` deletion removed is
    reported at the deleting ``null`` (see :func:`compiler.spec_positions.deletion_cause`).
    """
    from batchsafe.compiler.spec_positions import deletion_cause

    path = tuple(path)
    pos, note = doc.pos(path, key=key), ""
    origin = doc.origin_of(path)
    if key and origin is not None:
        k = path
        while k not in doc.key_pos and k:
            k = k[:-1]
        if doc.key_pos.get(k) != doc.value_pos.get(k):
            origin = None  # the key itself was written here; only its value came through an alias
    if origin is not None and origin != pos:
        note = f"the value comes through an alias; the anchor side is at {_where(origin, pos)}"
    cause = deletion_cause(doc, path, code, message)
    if cause is not None:
        note = f"reported at the deleting null; the requirement is at {_where(pos, cause)}"
        pos = cause
    return Diagnostic(pos[0], pos[1], pos[2], format_path(path), code, message, hint, note)


def _where(pos: Pos, relative_to: Pos) -> str:
    """``line L, col C`` (with the file when it differs from ``relative_to``'s)."""
    return (f"line {pos[1]}, col {pos[2]}" if pos[0] == relative_to[0] else f"{pos[0]}:{pos[1]}:{pos[2]}")


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
                         f"invalid UTF-8 at byte {e.start} (0x{raw[e.start]:02x})", "save the spec as UTF-8")]


def _load_tree(file: str) -> tuple[_N | None, str | None, list[Diagnostic]]:
    """Read and build one file; the tree is None when nothing usable could be read."""
    text, diags = _read(file)
    if text is None:
        return None, None, diags
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = AliasComposer
    yaml._alias_targets = {}
    yaml.max_depth = MAX_DEPTH  # ruamel reports the crossing node; nothing recurses deeper
    try:
        with warnings.catch_warnings(record=True) as caught:  # ruamel warns on stderr; we report instead
            warnings.simplefilter("always")
            root = yaml.compose(text)
    except Exception as e:  # noqa: BLE001 - whatever ruamel raises on bad input is the user's syntax problem
        return None, text, [syntax_diag(file, text, e)]
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
    except _TooDeep as e:
        return None, text, [_d(e.pos, (), "yaml-syntax", f"the document is nested more than {MAX_DEPTH} levels deep",
                               "aliases count towards the nesting of the place they are used")]
    except RecursionError as e:
        return None, text, [syntax_diag(file, text, e)]
    if not isinstance(tree.v, dict):
        builder.diags.append(_d(tree.vpos, (), "wrong-type", f"the top level must be a mapping, got {describe_value(tree.v)}"))
    return tree, text, builder.diags


def _to_doc(tree: _N, files: list[str], texts: dict[str, str],
            deleted: dict[tuple, Pos] | None = None) -> LocatedDoc:
    kp: dict[tuple, Pos] = {}
    vp: dict[tuple, Pos] = {}
    origin: dict[tuple, Pos] = {}

    def plain(n: _N, path: tuple) -> Any:
        kp[path], vp[path] = n.kpos, n.vpos
        if n.origin is not None:
            origin[path] = n.origin
        if isinstance(n.v, dict):
            return {k: plain(c, path + (k,)) for k, c in n.v.items()}
        if isinstance(n.v, list):
            return [plain(c, path + (i,)) for i, c in enumerate(n.v)]
        return n.v

    data = plain(tree, ())
    return LocatedDoc(data, kp, vp, files, texts, origin, dict(deleted or {}))


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


def _merge(base: _N, child: _N, path: tuple, diags: list[Diagnostic], deleted: dict[tuple, Pos]) -> _N:
    """Deep-merge ``child`` over ``base`` (rules in the module docstring); deletions go to ``deleted``."""
    if isinstance(base.v, dict) and isinstance(child.v, dict):
        out = dict(base.v)
        for k, c in child.v.items():
            if k in base.v and c.v is None:
                del out[k]
                deleted[path + (k,)] = c.kpos
            else:
                out[k] = _merge(base.v[k], c, path + (k,), diags, deleted) if k in base.v else c
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
                out_l[i] = _merge(out_l[i], c, path + (i,), diags, deleted)
        return _N(out_l, child.kpos, child.vpos)
    return child


def _resolve(file: str, chain: list[str], files: list[str], texts: dict[str, str],
             diags: list[Diagnostic], deleted: dict[tuple, Pos]) -> _N | None:
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
    base = _resolve(base_file, here, files, texts, diags, deleted)
    if base is None or not isinstance(base.v, dict):
        return tree
    return _merge(base, tree, (), diags, deleted)


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
    deleted: dict[tuple, Pos] = {}
    tree = _resolve(file, [], files, texts, diags, deleted)
    if diags or tree is None:
        raise SpecError(diags)
    return _to_doc(tree, files, texts, deleted)
