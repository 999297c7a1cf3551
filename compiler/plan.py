"""The locked plan: exactly what will run, with what, in which group, from which inputs.

The plan is the compiler's output and the runtime's only input. It separates
*identity* (what runs: hashed into ``plan_hash``) from *locators* (where things
are found: model download sources, server endpoints), so a model can move from a
PyPI package to a local file without changing the plan hash. The plan file holds
no timestamps and no absolute paths: two compiles of the same inputs are
byte-identical.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import json
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from batchsafe.core import layout
from batchsafe.core.artifact import artifact, check_version
from batchsafe.runtime.engines.catalogue import DISPATCH_MODES
from batchsafe.core.canonical import canonical_bytes, canonical_bytes_of_parsed, sha256_tag

from .plan_fast import fast_samples_groups

PLAN_SCHEMA_VERSION = 1

#: Plan fields left out of ``plan_hash``: the hash itself, locators, and the raw spec
#: texts (they contain locators and comments; the resolved spec without locators is hashed).
UNHASHED_FIELDS: dict[str, object] = {"plan_hash": True, "locators": True, "spec": {"files": True}}


class Frozen(BaseModel):
    """Base of every plan model: strict, immutable, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SpecFile(Frozen):
    """One spec file that went into the plan (the spec and the bases it extends)."""

    path: str
    """Path relative to the main spec's directory (the main spec is its bare file name)."""
    sha256: str
    """Digest of the file's bytes."""
    text: str
    """The file's exact text."""


class SpecInfo(Frozen):
    """The spec as compiled."""

    sha256: str
    """Digest of ``resolved`` (canonical JSON)."""
    files: list[SpecFile]
    """Spec files, main spec first, with their exact text (not hashed into plan_hash)."""
    resolved: dict[str, Any]
    """The extends-merged spec with locators (endpoints, model sources) removed."""


class InputFile(Frozen):
    """A data file read by the compiler."""

    dataset: str
    """Dataset name in the spec."""
    path: str
    """POSIX path relative to ``root``."""
    root: Literal["data_dir", "spec"] = "data_dir"
    """The data directory, or the main spec's directory (data shipped with the spec)."""
    sha256: str
    """Digest of the file's bytes."""
    size: int
    """Size in bytes."""
    rows: int
    """Records parsed from the file."""
    pinned: bool
    """Whether the spec pinned the digest (and it matched)."""


class Message(Frozen):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


class Prompt(Frozen):
    """A rendered prompt with everything its scorer needs."""

    id: str
    """Content-derived id: p_ + 16 hex of the canonical (task, messages, meta) digest."""
    task: str
    """Task name."""
    domain: Literal["safety", "capability"]
    """Safety or capability arm."""
    dataset: str
    """Dataset name."""
    records: list[str]
    """Source record ids (two for jailbreak prompts: template and goal)."""
    messages: list[Message]
    """Rendered chat messages."""
    scorer: str
    """Scorer as name@version."""
    meta: dict[str, Any]
    """Scorer metadata: answer keys, correct/incorrect answers, BBQ groups, categories."""


class Condition(Frozen):
    """The serving condition of a sample: one point of its phase's axes."""

    batch_size: int | None = None
    """Sequences dispatched together (batch-size and true-batch phases)."""
    cobatch: str | None = None
    """Co-batch composition (solo, benign, adversarial, safety)."""
    group_size: int | None = None
    """Group size of a co-batch condition (1 for solo)."""
    quant: str | None = None
    """Quantization variant."""
    concurrency: int | None = None
    """Concurrent clients."""
    kernel: str | None = None
    """Kernel-flag variant id."""
    repeat: int = 0
    """Repeat index (0 is the first run)."""
    tensor_parallel: int | None = Field(None, exclude_if=lambda v: v is None)
    """Tensor-parallel size of the server (left out when the phase has no TP axis, so
    conditions, sample ids and plan hashes of plans without one are unchanged)."""
    load: int | None = Field(None, exclude_if=lambda v: v is None)
    """Background requests kept in flight around the target (composition phases; left out
    elsewhere, so plans without one are unchanged)."""

    def label(self) -> str:
        """Compact human-readable label, e.g. bs=8 or q=Q2_K,c=4 or bs=8,tp=2."""
        parts = []
        for key, short in (("batch_size", "bs"), ("cobatch", "co"), ("quant", "q"), ("concurrency", "c"), ("kernel", "k"),
                           ("tensor_parallel", "tp"), ("load", "load")):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{short}={value}")
        if self.repeat:
            parts.append(f"r={self.repeat}")
        return ",".join(parts) or "default"


class Sample(Frozen):
    """One scored generation the runtime must produce exactly once."""

    id: str
    """Content-derived id: s_ + 16 hex of (phase, model, condition, prompt)."""
    phase: str
    model: str
    engine: str
    condition: Condition
    prompt: str
    """Prompt id."""
    baseline: str | None
    """Sample id this one is compared with; None when the sample is itself a baseline."""
    group: str
    """Id of the dispatch group it runs in."""
    position: int
    """Position inside that group."""


class Member(Frozen):
    """One sequence of a dispatch group."""

    prompt: str
    """Prompt id."""
    sample: str | None
    """Sample id, or None for a non-scored filler."""


class Group(Frozen):
    """Sequences that run together, in order, in one dispatch."""

    id: str
    """Content-derived id: g_ + 16 hex."""
    index: int
    """Position in the plan's run order."""
    phase: str
    model: str
    engine: str
    mode: Literal[DISPATCH_MODES]  # type: ignore[valid-type]  (the engine catalogue's modes)
    """Dispatch mode."""
    condition: Condition
    members: list[Member]


class PhaseSummary(Frozen):
    """Counts and settings of one phase."""

    id: str
    kind: str
    engine: str
    models: list[str]
    tasks: list[str]
    dispatch: str
    prompts: int
    """Target prompts per model."""
    conditions: int
    """Conditions per model."""
    samples: int
    groups: int
    kernel_variants: list[dict[str, Any]] = Field(default_factory=list)
    """Kernel-flag variants (id, env, flags) of this phase's kernel axis."""
    tensor_parallel: list[dict[str, Any]] = Field(default_factory=list, exclude_if=lambda v: not v)
    """Tensor-parallel variants (size, flags, env) of this phase's TP axis: what each size adds
    to its launched server (``compiler.tensor_parallel``); absent without the axis."""
    composition: dict[str, Any] | None = Field(None, exclude_if=lambda v: v is None)
    """The locked arrival schedule of a composition phase (``compiler.composition``): per target
    its arrival offset, per load level each background slot's prompt sequence; absent elsewhere."""


class ResolvedModel(Frozen):
    """A model's identity as used by the plan."""

    name: str
    family: str
    hf_repo: str | None = None
    hf_revision: str | None = None
    hf_weights_sha256: str | None = Field(None, exclude_if=lambda v: v is None)
    """Digest of the served weights directory (see the spec's ``hf.weights_sha256``)."""
    gguf_sha256: str | None = None
    gguf_name: str = ""
    gguf_quant: str | None = None
    variants: dict[str, str] = Field(default_factory=dict)
    """Pinned digests of quantization variants (llama.cpp) by quant."""
    ollama_tags: dict[str, str] = Field(default_factory=dict)
    ollama_digests: dict[str, str] = Field(default_factory=dict)
    alignment: str | None = Field(None, exclude_if=lambda v: v is None)
    """Alignment type from the spec (absent when unset, so older plans keep their hash)."""


class ResolvedEngine(Frozen):
    """An engine's identity: kind plus every setting that can change numerics."""

    name: str
    kind: str
    config: dict[str, Any]
    """Identity settings (image digest, flags, env, dtype, threads...), locators removed."""


class Locators(Frozen):
    """Where things are found. Not hashed: they may change without changing what runs."""

    model_sources: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    """Model name -> GGUF sources, tried in order."""
    endpoints: dict[str, str] = Field(default_factory=dict)
    """Engine name -> server base URL."""
    launch: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude_if=lambda v: not v)
    """Engine name -> where its launched server's parts are (python, model_dir, port, ready_timeout_s)."""


class Plan(Frozen):
    """The locked plan artifact (plan.lock.json)."""

    schema_version: Literal[1] = PLAN_SCHEMA_VERSION
    """Version of the plan format; readers refuse newer versions."""
    plan_hash: str = ""
    """sha256 of the canonical plan without plan_hash and locators."""
    batchsafe_version: str
    experiment: dict[str, Any]
    spec: SpecInfo
    seed: int
    """Global seed; derived seeds are sha256('<seed>:<purpose>')."""
    decoding: dict[str, Any]
    analysis: dict[str, Any]
    inputs: list[InputFile]
    prompts: list[Prompt]
    models: list[ResolvedModel]
    engines: list[ResolvedEngine]
    phases: list[PhaseSummary]
    samples: list[Sample]
    groups: list[Group]
    targets: list[dict[str, Any]]
    unpinned: list[str]
    """References compiled with --allow-unpinned (empty for a fully pinned plan)."""
    resolved_at_run: list[str] = Field(default_factory=list)
    """References the engine resolves when it runs (Ollama tags without a digest); the run records what they resolved to."""
    locators: Locators = Locators()

    def compute_hash(self) -> str:
        """Digest of the plan's identity (everything but plan_hash and locators)."""
        # A full dump and deleting keys is several times faster than pydantic's nested exclude.
        data = self.model_dump(mode="json")
        _drop(data, UNHASHED_FIELDS)
        # orjson's sorted dump of a JSON-mode dump is the canonical bytes (checked there), 10x json.dumps.
        return sha256_tag(canonical_bytes_of_parsed(data))

    def with_hash(self) -> "Plan":
        """Copy with plan_hash filled in."""
        return self.model_copy(update={"plan_hash": self.compute_hash()})

    def to_bytes(self) -> bytes:
        """The exact bytes of plan.lock.json (canonical JSON)."""
        return canonical_bytes_of_parsed(self.model_dump(mode="json"))

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary printed by ``plan show --json``."""
        return {
            "plan_hash": self.plan_hash,
            "samples": len(self.samples),
            "groups": len(self.groups),
            "prompts": len(self.prompts),
            "phases": {p.id: p.samples for p in self.phases},
            "models": [m.name for m in self.models],
            "engines": [e.name for e in self.engines],
            "inputs": len(self.inputs),
            "unpinned": list(self.unpinned),
            "resolved_at_run": list(self.resolved_at_run),
        }


def _drop(data: dict[str, Any], spec: dict[str, Any]) -> None:
    for key, sub in spec.items():
        if sub is True:
            data.pop(key, None)
        elif isinstance(data.get(key), dict):
            _drop(data[key], sub)


class PlanError(BatchsafeError):
    """A plan file that cannot be read: unreadable, malformed, newer, or tampered."""


def plan_header(data: bytes | str, where: str, error: type[Exception] = PlanError) -> tuple[dict[str, Any], bool]:
    """The parsed plan object and whether orjson parsed it; ``error`` for bad JSON, a non-object or a newer version.

    The one place a plan's bytes are parsed and version-gated: :func:`plan_from_bytes`
    validates the rest, and the registry's partial reader (``registry.ingest.parse_plan``)
    reads only the fields it records from the same object.
    """
    try:  # orjson is 2x faster on 30k-sample plans; json for what it refuses (ints over 64 bits)
        raw, by_orjson = orjson.loads(data), True
    except orjson.JSONDecodeError:
        try:
            raw, by_orjson = json.loads(data), False
        except ValueError as exc:
            raise error(f"{where}: cannot read plan: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{where}: not a plan (top level is not an object)")
    check_version(raw, PLAN_SCHEMA_VERSION, what="plan", where=where, error=error, required=True)
    return raw, by_orjson


def load_plan(path: str | Path, *, check_hash: bool = True) -> Plan:
    """Read plan.lock.json, refusing future schema versions and (by default) hash mismatches."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PlanError(f"{path}: cannot read plan: {exc}") from None
    return plan_from_bytes(data, str(path), check_hash=check_hash)


def plan_from_bytes(data: bytes | str, where: str = layout.PLAN, *, check_hash: bool = True) -> Plan:
    """The plan in ``data`` (bytes of a plan.lock.json); messages name ``where``.

    The one plan reader: refuses non-JSON, future schema versions, invalid fields and (by
    default) a ``plan_hash`` that does not match the content, each as a PlanError.
    """
    path = where
    raw, by_orjson = plan_header(data, where)
    # Samples and groups column by column when their validity is provable from the models
    # (plan_fast); otherwise, and for every message, pydantic validates the whole plan.
    fast = fast_samples_groups(raw, Sample, Group, Member, Condition) if by_orjson else None
    try:
        if fast is None:
            plan = Plan.model_validate(raw)
        else:
            plan = Plan.model_validate({**raw, "samples": [], "groups": []})
            plan.__dict__["samples"], plan.__dict__["groups"] = fast  # a fresh model: nothing else holds it
    except ValueError as exc:
        first = str(exc).splitlines()
        raise PlanError(f"{path}: invalid plan: {' '.join(first[:3])}") from None
    if check_hash:
        # Hash the JSON as stored, not a re-dump: fields added later with defaults must not
        # change the identity of plans written before them.
        stored = dict(raw)
        _drop(stored, UNHASHED_FIELDS)
        actual = sha256_tag(canonical_bytes_of_parsed(stored) if by_orjson else canonical_bytes(stored))
        if actual != plan.plan_hash:
            raise PlanError(f"{path}: plan_hash {plan.plan_hash} does not match its content ({actual})")
    return plan


# The plan as an artifact: its bundle file name, version and reader, declared once.
artifact("plan", version=PLAN_SCHEMA_VERSION, file=layout.PLAN, error=PlanError, reader=plan_from_bytes)(Plan)
