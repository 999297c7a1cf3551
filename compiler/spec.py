"""The spec model: what a study is, as data.

A spec is validated twice: first as JSON Schema (generated from these models and
checked into ``schema/spec.schema.json``) so that every error can be reported at
its YAML line and column, then by pydantic to build typed objects, then by the
semantic checks in ``compiler.checks`` (references between sections, data files).

Specs carry no code: scorers and engines are referred to by registered name and
version, prompt templates use only ``{field}`` placeholders, targets are
structured comparisons, never expressions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from batchsafe.runtime.engines.catalogue import DISPATCH_MODES

from .composition_spec import CompositionConfig
from .spec_base import (DATASET_FORMATS, GIT_REV_PATTERN, IMAGE_PATTERN, METRIC_PATTERN, NAME_PATTERN,  # noqa: F401
                        SCORER_PATTERN, SHA256_PATTERN, SPEC_SCHEMA_VERSION, DatasetFormat, Name, Quant, Scalar,
                        Sha256, Strict)
from .spec_protocol import Protocol
from .spec_refs import (EngineSpec, GGUFRef, HFRef, HubFile, LocalFile, Model, ModelSource,  # noqa: F401
                        OllamaRef, PyPIChunks, PyPIFile)


class Experiment(Strict):
    """Who and what the study is."""

    id: Name
    """Short identifier of the study, used in bundle names and reports."""
    title: str
    """Human-readable title."""
    description: str = ""
    """Free text: purpose, caveats, provenance of the design."""


class Decoding(Strict):
    """Decoding policy shared by every sample."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature; 0.0 means greedy decoding."""
    max_tokens: int = Field(256, ge=1, le=32768)
    """Maximum generated tokens per sample."""
    warmup: int = Field(3, ge=0, le=100)
    """Warmup requests per engine instance before data collection (not recorded as samples)."""
    stop: list[str] = Field(default_factory=list)
    """Extra stop strings, besides the model's end-of-generation tokens."""


class Analysis(Strict):
    """Statistical settings used by the analysis stage."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    """Family-wise significance level."""
    tost_margin: float = Field(0.03, gt=0.0, lt=1.0)
    """Equivalence margin for TOST, as a proportion (0.03 = 3 percentage points)."""
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = "holm"
    """Multiple-testing correction applied within each test family."""
    ci_level: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of reported intervals."""
    protocol: Protocol | None = Field(None, exclude_if=lambda v: v is None)
    """Seed 003's paired testing protocol (Studies A-D); its statistics are computed only when set."""


class FileRef(Strict):
    """One input file (or a glob of files) below the data directory."""

    path: str = Field(min_length=1)
    """Data-dir-relative POSIX path; may be a glob such as mmlu/test/*_test.csv (matches are sorted)."""
    sha256: Sha256 | None = None
    """Expected content digest; a mismatch is an error naming the file. Not allowed on globs."""


class Dataset(Strict):
    """A dataset in one of the supported original file formats."""

    format: DatasetFormat
    """Loader for the original file format."""
    files: list[FileRef] = Field(min_length=1)
    """Files making up the dataset, loaded in order."""
    root: Literal["data_dir", "spec"] = "data_dir"
    """Where paths are relative to: the data directory (public datasets), or the directory of the main spec (data shipped with the spec)."""
    source: str = ""
    """Citation or origin (informational)."""
    license: str = ""
    """Licence of the data (informational)."""


class GoalSource(Strict):
    """Where a jailbreak template's harmful goal comes from."""

    dataset: Name
    """Dataset providing goals (e.g. advbench)."""
    field: str = "goal"
    """Field of that dataset's records holding the goal text."""


class Render(Strict):
    """How a dataset record becomes chat messages.

    Templates use ``{field}`` placeholders naming the record's normalised fields; ``{choices}``
    expands to lettered options for MCQ, ``{goal}`` to the harmful goal for jailbreaks.
    """

    kind: Literal["chat", "mcq", "jailbreak"] = "chat"
    """chat: template only; mcq: lettered choices and an answer key; jailbreak: template x goal."""
    template: str = Field(min_length=1)
    """User message template."""
    system: str | None = None
    """Optional system message (no placeholders)."""
    choice_labels: str = Field("ABCDEFGH", min_length=2)
    """Letters used to label MCQ options, in order."""
    goals: GoalSource | None = None
    """For kind jailbreak: the dataset whose goals fill the template."""
    placeholder: str = "[INSERT PROMPT HERE]"
    """For kind jailbreak: the text in a template replaced by the goal (appended when absent)."""


FlipDirection = Literal["refusal_to_compliance", "compliance_to_refusal", "safety_weakened", "safety_strengthened",
                        "capability_lost", "capability_gained"]
"""A flip direction of the flip registry (``analysis.records.Direction`` without ``none``)."""


class FromBundle(Strict):
    """Candidates restricted to the records whose prompts flipped, or scored near the boundary, in a prior bundle.

    This is how an enriched replication subset is built from an earlier study (TR138 v2's
    boundary-sensitive prompts from v1). The prior bundle is read from the bundle store and
    verified; its full id is part of the resolved spec, so it locks the selection.
    """

    bundle: Annotated[str, Field(pattern=SHA256_PATTERN)]
    """Full id of the prior bundle (sha256: and 64 lowercase hex); a prefix or tag is refused because the id is what locks the selection."""
    task: Name | None = None
    """Task name in the prior bundle whose prompts are meant; defaults to this task's name."""
    pick: Literal["flipped", "boundary"] = "flipped"
    """flipped: prompts with flipped rows in the prior flip registry; boundary: prompts whose mean prior score lies in score_range."""
    directions: list[FlipDirection] | None = Field(None, min_length=1)
    """For pick flipped: count only flips in these directions (e.g. refusal_to_compliance)."""
    models: list[Name] | None = Field(None, min_length=1)
    """Count only rows of these models (model names of the prior bundle)."""
    phases: list[Name] | None = Field(None, min_length=1)
    """Count only rows of these phases (phase ids of the prior bundle)."""
    conditions: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    """Count only rows of these conditions, written as condition labels such as bs=8 or q=Q2_K,c=4."""
    min_flips: int = Field(1, ge=1)
    """For pick flipped: a prompt must have flipped in at least this many rows."""
    score_range: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(None, min_length=2, max_length=2)
    """For pick boundary (required there): [low, high], inclusive bounds on the mean score of the prompt's prior samples."""


class Selection(Strict):
    """Which records of the pool become prompts: a seeded count, an explicit id list, or picks from a prior bundle."""

    count: int | None = Field(None, ge=1)
    """Number of prompts to select (seeded, deterministic); with from_bundle it may be left out to take every candidate."""
    ids: list[str] | None = None
    """Explicit record ids, in order (jailbreak tasks: '<template id>+<goal id>')."""
    seed: int | None = None
    """Selection seed; defaults to the spec's global seed."""
    stratify_by: str | None = None
    """Record field to stratify on (largest-remainder allocation, seeded within strata)."""
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    """Equality filters on record fields applied before selection (a list means any of)."""
    max_prompt_chars: int | None = Field(None, ge=1)
    """Drop rendered prompts longer than this many characters before selection."""
    from_bundle: FromBundle | None = None
    """Restrict the candidates to records picked from a prior bundle; then count, where and stratify_by apply as usual (no count: all of them)."""


class Task(Strict):
    """A scored task: a dataset, its rendering, its scorer and its prompt selection."""

    dataset: Name
    """Dataset name (a key of ``datasets``)."""
    domain: Literal["safety", "capability"]
    """Safety tasks are the treatment arm; capability tasks the control arm."""
    render: Render
    """Prompt rendering."""
    scorer: Annotated[str, Field(pattern=SCORER_PATTERN, description="A registered scorer as name@version, e.g. refusal@2.2.")]
    """Registered scorer as name@version."""
    select: Selection
    """Prompt selection."""


class FillerPool(Strict):
    """Non-scored prompts that share a group with a co-batch target."""

    tasks: list[Name] = Field(min_length=1)
    """Tasks whose selected prompts are the pool (the target itself is never its own filler)."""


class Cobatch(Strict):
    """Co-batch composition axis: who shares the batch with each target prompt."""

    conditions: list[Literal["solo", "benign", "adversarial", "safety"]] = Field(min_length=1)
    """solo runs the target alone; the others fill its group from the named pool."""
    group_size: int = Field(ge=2, le=1024)
    """Sequences per group for non-solo conditions (target + fillers)."""
    fillers: dict[str, FillerPool] = Field(default_factory=dict)
    """Filler pool per non-solo condition."""


class KernelVariant(Strict):
    """One setting of the kernel-flag ablation axis."""

    id: Name
    """Variant id used in conditions and reports, e.g. batch_invariant."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment overrides for the engine, e.g. VLLM_BATCH_INVARIANT: '1'."""
    flags: list[str] = Field(default_factory=list)
    """Extra engine flags."""


class Axes(Strict):
    """The conditions of a phase: the cross product of the axes that are set."""

    batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(None, min_length=1)
    """Sequences dispatched together per group."""
    cobatch: Cobatch | None = None
    """Co-batch composition."""
    quants: list[Quant] | None = Field(None, min_length=1)
    """Quantization variants."""
    concurrency: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(None, min_length=1)
    """Concurrent clients per group."""
    kernel: list[KernelVariant] | None = Field(None, min_length=1)
    """Kernel-flag variants (e.g. VLLM_BATCH_INVARIANT off/on)."""
    tensor_parallel: list[Annotated[int, Field(ge=1, le=64)]] | None = Field(None, min_length=1)
    """Tensor-parallel sizes (vLLM --tensor-parallel-size): one launched server per size, baseline 1."""
    repeats: int = Field(1, ge=1, le=1000)
    """Repeat each condition this many times (a repeat floor measures run-to-run nondeterminism)."""


class Phase(Strict):
    """One phase of the study: models x tasks x the conditions of its axes, on one engine."""

    id: Name
    """Phase id, unique in the spec."""
    kind: Literal["batch_size", "cobatch", "quant_concurrency", "true_batch", "kernel_ablation", "repeat_floor",
                  "tensor_parallel", "composition"]
    """Which analysis family the phase feeds."""
    description: str = ""
    """Free text."""
    models: list[Name] = Field(min_length=1)
    """Model names (keys of ``models``)."""
    engine: Name
    """Engine name (a key of ``engines``)."""
    tasks: list[Name] = Field(min_length=1)
    """Task names whose selected prompts are the phase's targets."""
    dispatch: Literal[DISPATCH_MODES]  # type: ignore[valid-type]  (the engine catalogue's modes)
    """How each group reaches the engine."""
    axes: Axes
    """Condition axes."""
    baseline: dict[str, Scalar] = Field(default_factory=dict)
    """Axis values of the baseline condition (others keep the sample's own value); defaults: batch_sizes 1, cobatch solo, repeat 0, tensor_parallel 1, else the first value."""
    pad_groups: bool = True
    """Fill an incomplete last group with non-scored filler prompts so every group has its exact size."""
    composition: CompositionConfig | None = None
    """Continuous-batch composition (kind composition only): load levels and the seeded arrival schedule."""


class Target(Strict):
    """A reproducibility target: a structured check on a metric, never an expression."""

    id: Name
    """Target id."""
    metric: Annotated[str, Field(pattern=METRIC_PATTERN, description="A dotted metric path such as plan.samples or stats.p1.flip_rate.safety.")]
    """Dotted path into the plan summary (plan.*) or the statistics (stats.*)."""
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "approx", "between"]
    """Comparison."""
    value: float | None = None
    """Reference value (for eq, ne, lt, le, gt, ge, approx)."""
    low: float | None = None
    """Lower bound (between)."""
    high: float | None = None
    """Upper bound (between)."""
    tolerance: float | None = Field(None, ge=0.0)
    """Absolute tolerance for approx (and eq on floats)."""
    description: str = ""
    """What the target means, with its source."""


class Spec(Strict):
    """A complete study specification."""

    schema_version: Literal[1]
    """Version of the spec language."""
    extends: str | None = None
    """Path of a base spec this one overrides (resolved by the loader, relative to this file)."""
    experiment: Experiment
    """Study metadata."""
    seed: int = 42
    """Global seed: selection, filler choice and engine seeds derive from it."""
    decoding: Decoding = Decoding()
    """Decoding policy."""
    analysis: Analysis = Analysis()
    """Statistical settings."""
    datasets: dict[Name, Dataset] = Field(min_length=1)
    """Datasets by name."""
    tasks: dict[Name, Task] = Field(min_length=1)
    """Tasks by name."""
    models: dict[Name, Model] = Field(min_length=1)
    """Models by name."""
    engines: dict[Name, EngineSpec] = Field(min_length=1)
    """Engines by name."""
    phases: list[Phase] = Field(min_length=1)
    """Phases, run in order."""
    targets: list[Target] = Field(default_factory=list)
    """Reproducibility targets."""


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec language, as checked into schema/spec.schema.json."""
    schema = Spec.model_json_schema()
    _name_keys(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://batchsafe.dev/schema/spec.schema.json"
    return schema


def _name_keys(node: Any) -> None:
    """Make mapping keys obey the name pattern in the schema too (pydantic only emits maxLength)."""
    if isinstance(node, dict):
        if "patternProperties" in node and "propertyNames" in node:
            node["propertyNames"] = {**node["propertyNames"], "pattern": NAME_PATTERN}
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _name_keys(value)
    elif isinstance(node, list):
        for value in node:
            _name_keys(value)
