"""Explain JSON Schema errors in the spec's own terms: one positioned Diagnostic per problem.

Split from ``compiler.yamlspec`` (which loads YAML and resolves ``extends``); this module
only maps jsonschema's ``iter_errors`` output to messages, codes and hints.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from jsonschema import Draft202012Validator

from batchsafe.compiler.diagnostics import (Diagnostic, describe_value, did_you_mean, first_sentence, join_names, show_value, sort_key)
from batchsafe.compiler.yamlspec import LocatedDoc, diag_at


_RANGE = {
    "minimum": ("value {v} is below the minimum {m}", None),
    "maximum": ("value {v} is above the maximum {m}", None),
    "exclusiveMinimum": ("value {v} must be greater than {m}", None),
    "exclusiveMaximum": ("value {v} must be less than {m}", None),
    "minItems": ("list has {n} item{s}, at least {m} required", len),
    "maxItems": ("list has {n} item{s}, at most {m} allowed", len),
    "minProperties": ("mapping has {n} key{s}, at least {m} required", len),
    "maxProperties": ("mapping has {n} key{s}, at most {m} allowed", len),
    "minLength": ("string {v} is shorter than the minimum length {m}", None),
    "maxLength": ("string {v} is longer than the maximum length {m}", None),
}
_TYPES = {"object": "mapping", "array": "list"}


class _Explainer:
    """Maps jsonschema errors to Diagnostics (one per problem, never 'not valid under any')."""

    def __init__(self, doc: LocatedDoc, validator: Draft202012Validator) -> None:
        self.doc, self.validator, self.root = doc, validator, validator.schema

    def deref(self, s: Any) -> Any:
        for _ in range(32):  # pydantic only emits local `#/$defs/...` refs
            if not (isinstance(s, dict) and str(s.get("$ref", "")).startswith("#")):
                break
            target: Any = self.root
            for part in s["$ref"][1:].split("/")[1:]:
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
            s = target
        return s

    def explain(self, err: Any, desc: str = "") -> list[Diagnostic]:
        path, kw, inst, val = tuple(err.absolute_path), err.validator, err.instance, err.validator_value
        sch = err.schema if isinstance(err.schema, dict) else {}
        desc = sch.get("description") or desc
        # propertyNames errors carry the key as instance and the mapping as path: point at the key.
        on_key = list(err.absolute_schema_path)[-2:-1] == ["propertyNames"] and isinstance(inst, str)
        path = path + (inst,) if on_key else path
        at = lambda code, msg, hint="", p=path, key=on_key: [diag_at(self.doc, p, code, msg, hint, key=key)]  # noqa: E731
        if kw in ("additionalProperties", "unevaluatedProperties") and isinstance(inst, dict):
            allowed = sorted(sch.get("properties", {}))
            pats = list(sch.get("patternProperties", {}))
            names = self.validator.evolve(schema=sch.get("propertyNames", True))
            return [d for k in inst if k not in allowed and not any(re.search(p, k) for p in pats)
                    and names.is_valid(k)  # keys refused by propertyNames are reported there
                    for d in at("unknown-key", f"unknown key {k!r}",
                                did_you_mean(k, allowed) or ("allowed keys: " + join_names(allowed) if allowed else
                                                             "keys must match " + " or ".join(pats) if pats else
                                                             "no keys are allowed here"),
                                path + (k,), True)]
        if kw == "required" and isinstance(inst, dict):
            props = sch.get("properties", {})
            return [d for k in val if k not in inst
                    for d in at("missing-key", f"missing required key {k!r}",
                                first_sentence(props.get(k, {}).get("description")), key=True)]
        if kw == "type":
            names = [_TYPES.get(t, t) for t in ([val] if isinstance(val, str) else val)]
            hint = ""
            if isinstance(inst, str) and {"integer", "number"} & set(names) and re.fullmatch(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?", inst.strip()):
                hint = f"write it as a plain number: {inst.strip()}"
            elif "string" in names and isinstance(inst, (int, float)):
                hint = f"quote it to make it a string: '{show_value(inst)}'"
            elif names == ["list"] and isinstance(inst, (str, int, float)):
                hint = f"write a list, e.g. [{show_value(inst)}]"
            return at("wrong-type", f"expected {' or '.join(names)}, got {describe_value(inst)}", hint)
        if kw in _RANGE:
            text, count = _RANGE[kw]
            n = count(inst) if count else 0
            text = text.replace("string", "key", 1) if on_key else text
            return at("out-of-range", text.format(v=show_value(inst), m=show_value(val), n=n, s="" if n == 1 else "s"),
                      first_sentence(desc))
        if kw == "multipleOf":
            return at("out-of-range", f"value {show_value(inst)} is not a multiple of {show_value(val)}", first_sentence(desc))
        if kw == "enum":
            return at("invalid-value", f"{show_value(inst)} is not one of: {join_names(list(val))}", did_you_mean(inst, list(val)))
        if kw == "const":
            return at("invalid-value", f"expected {show_value(val)}, got {show_value(inst)}", did_you_mean(inst, [val]))
        if kw == "pattern":
            return at("invalid-value", f"{'key ' if on_key else ''}{show_value(inst)} does not match the required format",
                      first_sentence(desc) or f"must match the pattern {val}")
        if kw == "uniqueItems" and isinstance(inst, list):
            for j, item in enumerate(inst):
                i = next((i for i in range(j) if _same(inst[i], item)), None)
                if i is not None:
                    return at("invalid-value", f"duplicate list item {show_value(item)}",
                              f"items must be unique; same as item [{i}]", path + (j,))
        if kw in ("anyOf", "oneOf"):
            return self.union(err, path, sch, desc)
        return at("invalid-value", err.message if len(err.message) < 200 else err.message[:197] + "...")

    def union(self, err: Any, path: tuple, sch: dict, desc: str) -> list[Diagnostic]:
        inst, branches = err.instance, err.validator_value
        groups: dict[int, list] = defaultdict(list)
        for e in err.context:
            groups[e.relative_schema_path[0]].append(e)
        # The union's description fits the value and its list items, not keys deeper inside it.
        explain_branch = lambda i: [d for e in groups[i] for d in self.explain(  # noqa: E731
            e, "" if any(isinstance(p, str) for p in e.relative_path) else desc)]
        prop = (sch.get("discriminator") or {}).get("propertyName")
        if prop:
            if not isinstance(inst, dict):
                return [diag_at(self.doc, path, "wrong-type", f"expected mapping, got {describe_value(inst)}")]
            values = self.disc_values(sch, branches, prop)
            if prop not in inst:
                return [diag_at(self.doc, path, "missing-key", f"missing required key {prop!r}",
                                f"{prop} selects the variant: one of {join_names(list(values))}", key=True)]
            v = inst[prop]
            if not isinstance(v, (str, int)) or v not in values:
                return [diag_at(self.doc, path + (prop,), "invalid-value", f"{show_value(v)} is not one of: {join_names(list(values))}",
                                did_you_mean(v, list(values)))]
            if groups[values[v]]:
                return explain_branch(values[v])
        cands = [i for i, b in enumerate(branches) if self.deref(b).get("type") != "null" or inst is None]
        if not err.context:
            return [diag_at(self.doc, path, "invalid-value", "value matches more than one alternative")]
        rejected = lambda i: any(not e.relative_path and e.validator in ("type", "const", "enum") for e in groups[i])  # noqa: E731
        viable = [i for i in cands if not rejected(i)]
        if viable:  # fewest errors, then deepest, then first
            best = min(viable, key=lambda i: (len(groups[i]), -max(len(e.absolute_path) for e in groups[i]), i))
            return explain_branch(best)
        if len(cands) == 1:
            return explain_branch(cands[0])
        # Every branch rejects the value itself: say what would have been accepted.
        values: list = []
        kinds: list[str] = []
        for i in cands:
            b = self.deref(branches[i])
            if "const" in b or "enum" in b:
                values += [b["const"]] if "const" in b else list(b["enum"])
            else:
                t = b.get("type", "object")
                kinds += [_TYPES.get(x, x) for x in ([t] if isinstance(t, str) else t)]
        typed = all(any(not e.relative_path and e.validator == "type" for e in groups[i]) for i in cands)
        code = "wrong-type" if typed else "invalid-value"
        if not kinds:
            return [diag_at(self.doc, path, code, f"{show_value(inst)} is not one of: {join_names(values)}",
                            did_you_mean(inst, values))]
        alts = " or ".join(list(dict.fromkeys(kinds)) + [show_value(v) for v in values])
        return [diag_at(self.doc, path, code, f"expected {alts}, got {describe_value(inst)}", did_you_mean(inst, values))]

    def disc_values(self, sch: dict, branches: list, prop: str) -> dict[Any, int]:
        mapping = (sch.get("discriminator") or {}).get("mapping") or {}
        refs = [b.get("$ref") if isinstance(b, dict) else None for b in branches]
        out = {k: refs.index(r) for k, r in mapping.items() if r in refs}
        for i, b in enumerate(branches):
            p = self.deref(self.deref(b).get("properties", {}).get(prop, {}))
            for v in ([p["const"]] if "const" in p else p.get("enum", [])):
                out.setdefault(v, i)
        return out


def _same(a: Any, b: Any) -> bool:
    """JSON equality (as uniqueItems uses it): 1 and true differ, 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def validate_schema(doc: LocatedDoc, schema: dict) -> list[Diagnostic]:
    """Validate ``doc.data`` against a JSON Schema (Draft 2020-12, e.g. from pydantic).

    Returns every problem as a Diagnostic, sorted and deduplicated; ``[]`` means
    valid.  Codes: unknown-key (at the key, with a did-you-mean or the allowed
    keys), missing-key (at the parent), wrong-type, out-of-range, invalid-value.
    Unions are explained through the branch that was meant (non-null branch of an
    Optional, the discriminated variant, else the closest branch).
    """
    validator = Draft202012Validator(schema)
    explainer = _Explainer(doc, validator)
    out = {d for err in validator.iter_errors(doc.data) for d in explainer.explain(err)}
    return sorted(out, key=sort_key)
