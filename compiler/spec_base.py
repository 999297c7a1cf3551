"""Shared building blocks of the spec models: patterns, constrained types, the strict base."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from batchsafe.core.strict import IMAGE_PATTERN, SHA256_PATTERN, Scalar, Sha256, Strict  # noqa: F401  (re-exported)

from .datasets import FORMATS as _LOADER_FORMATS

SPEC_SCHEMA_VERSION = 1

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
GIT_REV_PATTERN = r"^[0-9a-f]{40}$"
SCORER_PATTERN = r"^[a-z][a-z0-9_]*@[0-9]+(\.[0-9]+)*$"
METRIC_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=80)]
Quant = Literal["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q4_1", "Q3_K_M", "Q2_K"]

# One list of formats: the loader registry (compiler.datasets) is the source of truth.
DATASET_FORMATS = _LOADER_FORMATS
DatasetFormat = Literal[DATASET_FORMATS]  # type: ignore[valid-type]


