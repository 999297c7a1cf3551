"""Verification stage ``provenance``: the in-toto statement says what the bundle holds and how it was built.

The statement (``attestation/provenance.intoto.json``, written by
``batchsafe.bundles.provenance``) is checked three ways:

1. **shape**: the in-toto Statement v1 / SLSA Provenance v1 fields a consumer needs
   are present with the right types (``statement_problems``), so an external tool that
   reads it finds what the specifications promise;
2. **subjects against the manifest**: exactly the bundle's other files, each with the
   sha256 the manifest lists. This is the check a consumer of the statement alone relies
   on, so a subject digest edited (and the manifest re-hashed to match) fails here;
3. **predicate against the plan**: the statement is a pure function of the bundle's
   content, so it is rebuilt from the plan, launch records, environment and timings and
   every differing field is named by its path.

Also: ``vsa`` builds a SLSA Verification Summary Attestation v1 from a verify report.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from batchsafe.bundles.manifest import DEFAULT_MAX_JSON_DEPTH, json_depth_exceeds
from batchsafe.bundles.provenance import PREDICATE_TYPE, STATEMENT_NAME, STATEMENT_TYPE, build_statement
from batchsafe.core import layout
from batchsafe.core.version import __version__

from .checks import PLAN, Context
from .report import Stage, VerifyReport

VSA_PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "urn:batchsafe:verifier"
POLICY_URI = "urn:batchsafe:policy:verify:v1"


def statement_problems(stmt: Any) -> list[str]:
    """Where ``stmt`` breaks the in-toto Statement v1 + SLSA Provenance v1 structure (empty: sound)."""
    if not isinstance(stmt, dict):
        return ["the statement is not a JSON object"]
    problems = []
    if stmt.get("_type") != STATEMENT_TYPE:
        problems.append(f"_type is {stmt.get('_type')!r}, not {STATEMENT_TYPE}")
    if stmt.get("predicateType") != PREDICATE_TYPE:
        problems.append(f"predicateType is {stmt.get('predicateType')!r}, not {PREDICATE_TYPE}")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not subjects:
        problems.append("subject: a non-empty list is required")
        subjects = []
    for i, s in enumerate(subjects):
        digest = s.get("digest") if isinstance(s, dict) else None
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(digest, dict) \
                or not isinstance(digest.get("sha256"), str) or len(digest["sha256"]) != 64:
            problems.append(f"subject[{i}]: needs a name and a digest with a 64-hex sha256")
    pred = stmt.get("predicate")
    if not isinstance(pred, dict):
        return [*problems, "predicate: an object is required"]
    bd, rd = pred.get("buildDefinition"), pred.get("runDetails")
    if not isinstance(bd, dict):
        problems.append("predicate.buildDefinition: an object is required")
    else:
        if not isinstance(bd.get("buildType"), str) or ":" not in bd["buildType"]:
            problems.append("predicate.buildDefinition.buildType: a URI is required")
        if not isinstance(bd.get("externalParameters"), dict):
            problems.append("predicate.buildDefinition.externalParameters: an object is required")
        for key in ("internalParameters",):
            if key in bd and not isinstance(bd[key], dict):
                problems.append(f"predicate.buildDefinition.{key}: must be an object")
        for i, d in enumerate(bd.get("resolvedDependencies") or []):
            if not isinstance(d, dict) or not ({"uri", "digest", "content"} & set(d)):
                problems.append(f"predicate.buildDefinition.resolvedDependencies[{i}]: needs a uri, digest or content")
    if not isinstance(rd, dict) or not isinstance(rd.get("builder"), dict) or \
            not isinstance(rd["builder"].get("id"), str):
        problems.append("predicate.runDetails.builder.id: a URI is required")
    return problems


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    """Append 'path: statement X, rebuilt Y' for every leaf where ``a`` (bundle) and ``b`` (rebuilt) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: the statement says {str(a)[:120]!r}, the bundle's plan and files give {str(b)[:120]!r}")


def check_provenance(ctx: Context) -> Stage:
    """The ``provenance`` stage (SKIP for bundles written before statements existed)."""
    st = Stage(name="provenance")
    src = ctx.src
    if not src.has(STATEMENT_NAME):
        return st.skip(f"the bundle has no {STATEMENT_NAME} (written before provenance statements)")
    if STATEMENT_NAME in ctx.bad:
        return st.skip(f"{STATEMENT_NAME} failed an earlier stage")
    raw = src.read(STATEMENT_NAME)
    try:
        text = raw.decode("utf-8")
        if json_depth_exceeds(text, DEFAULT_MAX_JSON_DEPTH):
            st.fail(f"{STATEMENT_NAME}: JSON nested deeper than {DEFAULT_MAX_JSON_DEPTH} levels")
            return st
        stmt = orjson.loads(raw)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        st.fail(f"{STATEMENT_NAME}: not JSON: {exc}")
        return st
    for p in statement_problems(stmt):
        st.fail(f"{STATEMENT_NAME}: {p}")
    if st.status == "FAIL":
        return st
    listed = {e.name: e.sha256.split(":", 1)[1] for e in src.manifest.files if e.name != STATEMENT_NAME}
    claimed: dict[str, str] = {}
    for s in stmt["subject"]:
        if s["name"] in claimed:
            st.fail(f"{STATEMENT_NAME}: subject {s['name']} is listed twice")
        claimed[s["name"]] = s["digest"]["sha256"]
    for name in sorted(set(listed) | set(claimed)):
        if name not in claimed:
            st.fail(f"{STATEMENT_NAME}: {name} is in the manifest but not a subject")
        elif name not in listed:
            st.fail(f"{STATEMENT_NAME}: subject {name} is not a file of the bundle")
        elif claimed[name] != listed[name]:
            st.fail(f"{STATEMENT_NAME}: subject {name} has sha256 {claimed[name]}, the manifest says {listed[name]}")
    if ctx.plan is None:
        st.summary = f"{len(claimed)} subjects match the manifest; predicate not rebuilt ({PLAN} unreadable)"
        return st
    digests = {n: f"sha256:{h}" for n, h in listed.items()}

    def read(name: str) -> bytes | None:
        return src.read(name) if ctx.usable(name) else None

    rebuilt = build_statement(digests, ctx.plan, read, kind=src.manifest.kind, parent=src.manifest.parent)
    differ: list[str] = []
    _diff(stmt.get("predicate"), rebuilt["predicate"], "predicate", differ)
    for d in differ:
        st.fail(f"{STATEMENT_NAME}: {d}")
    deps = len(stmt["predicate"]["buildDefinition"].get("resolvedDependencies") or [])
    st.summary = (f"in-toto Statement v1 / SLSA Provenance v1: {len(claimed)} subjects match the manifest, "
                  f"plan {ctx.plan.plan_hash[:19]}…, {deps} resolved dependencies rebuilt from the bundle")
    if st.status == "FAIL":
        st.summary = f"{st.n_problems} problem(s) in {STATEMENT_NAME}"
    return st


def vsa(report: VerifyReport, *, resource_uri: str, now: datetime | None = None,
        statement_sha256: str | None = None) -> dict[str, Any]:
    """A SLSA Verification Summary Attestation v1 (an in-toto statement) for ``report``.

    Subject: the bundle, by its id (the manifest's sha256). ``verifiedLevels`` claims
    SLSA Build L1 ("provenance exists and describes the build") only when every stage
    passed and the provenance stage actually ran.
    """
    prov = next((s for s in report.stages if s.name == "provenance"), None)
    passed = report.ok and report.bundle_id is not None
    levels = ["SLSA_BUILD_LEVEL_1"] if passed and prov is not None and prov.status == "PASS" else []
    pred: dict[str, Any] = {
        "verifier": {"id": VERIFIER_ID, "version": {"batchsafe": __version__}},
        "timeVerified": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "resourceUri": resource_uri,
        "policy": {"uri": POLICY_URI},
        "verificationResult": "PASSED" if passed else "FAILED",
        "verifiedLevels": levels,
        "slsaVersion": "1.0",
    }
    if prov is not None and prov.status == "PASS" and statement_sha256:
        pred["inputAttestations"] = [{"uri": STATEMENT_NAME, "digest": {"sha256": statement_sha256.split(":")[-1]}}]
    bid = (report.bundle_id or "sha256:").split(":", 1)[1]
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": layout.MANIFEST, "digest": {"sha256": bid}}] if bid else [],
            "predicateType": VSA_PREDICATE_TYPE, "predicate": pred}
