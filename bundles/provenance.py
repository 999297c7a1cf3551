"""The bundle's provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate.

Every bundle batchsafe writes carries ``attestation/provenance.intoto.json``. Its
subjects are the bundle's other files with their sha256 (the statement cannot list
itself, and ``manifest.json`` is not a bundle file); its predicate says how the bundle
was built:

* ``buildDefinition.externalParameters``: the plan hash, the experiment, the spec
  files (path + digest) and the bundle kind (and parent, for derived bundles);
* ``internalParameters``: each engine's flags, env, version and kernel variants from the
  plan, and, where the runtime launched servers, the argv/env of each launch record;
* ``resolvedDependencies``: image digests, model digests and revisions, the data files,
  the scorer versions, batchsafe's version and git commit, the parent bundle;
* ``runDetails``: the builder, an invocation id and the run's start and end times.

Why it is a pure function of the files it describes: the bundle id is the hash of the
manifest, so a statement that carried the time of bundling (or a random invocation id)
would give every re-bundling of one run a new id. Instead the times come from the run's
own ``volatile/timings.jsonl`` (already bundle content) and the invocation id is derived
from that file's digest: identical content still gives an identical id, and ``verify``
can rebuild the statement from the bundle and compare it field by field
(``batchsafe.verification.provenance``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batchsafe.core import layout
from batchsafe.core.canonical import canonical_bytes, hash_file, sha256_tag
from batchsafe.core.version import __version__

STATEMENT_NAME = "attestation/provenance.intoto.json"
"""Bundle name of the statement (checked by verify's ``provenance`` stage)."""
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:batchsafe:build-type:bundle:v1"
BUILDER_ID = "urn:batchsafe:builder:local"
PLAN, TIMINGS, ENVIRONMENT, LAUNCH_PREFIX = layout.PLAN, layout.TIMINGS, layout.ENVIRONMENT, layout.LAUNCH_DIR

Reader = Callable[[str], bytes | None]
"""Returns a bundle file's bytes, or None when the bundle has no such (readable) file."""


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else digest


def _json(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _engine_params(plan: Any) -> list[dict[str, Any]]:
    """What the plan asks of each engine: flags, env, version, launch kind, kernel variants."""
    out = []
    for e in plan.engines:
        cfg = e.config
        variants = [v for p in plan.phases if p.engine == e.name for v in p.kernel_variants]
        out.append({"name": e.name, "kind": e.kind, "flags": [str(f) for f in cfg.get("flags") or []],
                    "env": {str(k): str(v) for k, v in (cfg.get("env") or {}).items()},
                    "version": None if cfg.get("version") is None else str(cfg.get("version")),
                    "launch": (cfg.get("launch") or {}).get("kind"),
                    "kernel_variants": variants})
    return out


def _launches(names: list[str], read: Reader) -> list[dict[str, Any]]:
    """argv / env of every launch record (the servers as really started)."""
    out = []
    for name in sorted(n for n in names if n.startswith(LAUNCH_PREFIX) and n.endswith(".json")):
        rec = _json(read(name))
        if isinstance(rec, dict):
            out.append({"record": name, "engine": rec.get("engine"), "kernel": rec.get("kernel"),
                        "argv": rec.get("argv"), "env": rec.get("env"), "inherited_env": rec.get("inherited_env")})
    return out


def _dependencies(plan: Any, env: Any, parent: str | None) -> list[dict[str, Any]]:
    """ResourceDescriptors of everything the bundle's content depends on."""
    deps: list[dict[str, Any]] = []
    for e in plan.engines:
        image = str(e.config.get("image") or "")
        if "@sha256:" in image:
            deps.append({"name": f"image:{e.name}", "uri": f"oci://{image}",
                         "digest": {"sha256": image.rsplit("@sha256:", 1)[1]}})
    for m in plan.models:
        if m.gguf_sha256:
            deps.append({"name": f"model:{m.name}", "uri": f"urn:batchsafe:gguf:{m.gguf_name or m.name}",
                         "digest": {"sha256": _hex(m.gguf_sha256)}})
        for quant, digest in sorted(m.variants.items()):
            deps.append({"name": f"model:{m.name}:{quant}", "uri": f"urn:batchsafe:gguf:{m.name}:{quant}",
                         "digest": {"sha256": _hex(digest)}})
        if m.hf_repo:
            d: dict[str, Any] = {"name": f"model:{m.name}:hf", "uri": f"https://huggingface.co/{m.hf_repo}"}
            digest = {**({"gitCommit": m.hf_revision} if m.hf_revision else {}),
                      **({"sha256": _hex(m.hf_weights_sha256)} if m.hf_weights_sha256 else {})}
            if digest:
                d["digest"] = digest
            deps.append(d)
        for tag, digest in sorted(m.ollama_digests.items()):
            deps.append({"name": f"model:{m.name}:ollama:{tag}", "uri": f"urn:batchsafe:ollama:{tag}",
                         "digest": {"sha256": _hex(digest)}})
    for i in plan.inputs:
        deps.append({"name": f"data:{i.dataset}", "uri": f"urn:batchsafe:{i.root}:{i.path}",
                     "digest": {"sha256": _hex(i.sha256)}, "annotations": {"rows": i.rows, "size": i.size}})
    for scorer in sorted({p.scorer for p in plan.prompts}):
        deps.append({"name": f"scorer:{scorer}", "uri": f"urn:batchsafe:scorer:{scorer}"})
    src = (env or {}).get("batchsafe") if isinstance(env, dict) else None
    src = src if isinstance(src, dict) else {}
    bs: dict[str, Any] = {"name": "batchsafe", "uri": f"pkg:pypi/batchsafe@{src.get('version') or plan.batchsafe_version}"}
    if isinstance(src.get("git_commit"), str):
        bs["digest"] = {"gitCommit": src["git_commit"]}
        bs["annotations"] = {"git_dirty": src.get("git_dirty")}
    deps.append(bs)
    if parent:
        deps.append({"name": "parent-bundle", "uri": f"urn:batchsafe:bundle:{parent}", "digest": {"sha256": _hex(parent)}})
    return deps


def _times(raw: bytes | None) -> tuple[str | None, str | None]:
    """First group start and last group end from volatile/timings.jsonl (None when absent)."""
    starts, ends = [], []
    for line in (raw or b"").splitlines():
        row = _json(line)
        if not isinstance(row, dict) or not isinstance(row.get("started"), str):
            continue
        try:
            t0 = datetime.fromisoformat(row["started"])
        except ValueError:
            continue
        starts.append(t0)
        wall = row.get("wall_s")
        ends.append(t0 + timedelta(seconds=float(wall)) if isinstance(wall, int | float) else t0)
    if not starts:
        return None, None
    return min(starts).isoformat().replace("+00:00", "Z"), max(ends).isoformat().replace("+00:00", "Z")


def build_statement(digests: Mapping[str, str], plan: Any, read: Reader, *, kind: str = "run",
                    parent: str | None = None) -> dict[str, Any]:
    """The statement for a bundle whose files (other than the statement) have ``digests``.

    ``digests``: bundle name -> ``sha256:<hex>``; ``read`` gives the bytes of the launch
    records, ``environment.json`` and ``volatile/timings.jsonl`` where the bundle has them.
    """
    names = sorted(n for n in digests if n != STATEMENT_NAME)
    timings = read(TIMINGS) if TIMINGS in digests else None
    env = _json(read(ENVIRONMENT)) if ENVIRONMENT in digests else None
    started, finished = _times(timings)
    seed = f"{plan.plan_hash}:{kind}:{parent or ''}:{digests.get(TIMINGS) or digests.get(layout.OUTPUTS, '')}"
    metadata: dict[str, Any] = {"invocationId": "urn:batchsafe:invocation:" + hashlib.sha256(seed.encode()).hexdigest()[:32]}
    if started:
        metadata["startedOn"], metadata["finishedOn"] = started, finished
    external: dict[str, Any] = {
        "plan_hash": plan.plan_hash, "experiment": plan.experiment.get("id"), "kind": kind,
        "spec": {"sha256": plan.spec.sha256, "files": [{"path": f.path, "digest": {"sha256": _hex(f.sha256)}}
                                                        for f in plan.spec.files]}}
    if parent:
        external["parent"] = parent
    internal: dict[str, Any] = {"engines": _engine_params(plan), "seed": plan.seed, "decoding": plan.decoding}
    launches = _launches(names, read)
    if launches:
        internal["launches"] = launches
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": _hex(digests[n])}} for n in names],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": external,
                                "internalParameters": internal,
                                "resolvedDependencies": _dependencies(plan, env, parent)},
            "runDetails": {"builder": {"id": BUILDER_ID, "version": {"batchsafe": __version__}},
                           "metadata": metadata},
        },
    }


def statement_bytes(statement: Mapping[str, Any]) -> bytes:
    """Canonical JSON (the bytes a bundle holds), so the same statement is always the same file."""
    return canonical_bytes(dict(statement))


def with_provenance(files: Mapping[str, bytes | Path], plan: Any, *, kind: str = "run",
                    parent: str | None = None) -> dict[str, bytes | Path]:
    """``files`` plus a fresh statement (an inherited one is replaced: its subjects are the parent's)."""
    out = {n: c for n, c in files.items() if n != STATEMENT_NAME}
    digests = {n: sha256_tag(bytes(c)) if isinstance(c, bytes | bytearray | memoryview) else hash_file(Path(c))[0]
               for n, c in out.items()}

    def read(name: str) -> bytes | None:
        c = out.get(name)
        return None if c is None else bytes(c) if isinstance(c, bytes | bytearray | memoryview) else Path(c).read_bytes()

    out[STATEMENT_NAME] = statement_bytes(build_statement(digests, plan, read, kind=kind, parent=parent))
    return out
