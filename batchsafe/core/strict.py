"""The strict pydantic base of every spec model, and the patterns spec blocks share.

On the floor because the engine modules (``runtime/engines/*``) define their spec blocks
with it and the compiler reads those blocks: both sides import it from here, neither from
the other.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field

SHA256_PATTERN = r"^sha256:[0-9a-f]{64}$"
IMAGE_PATTERN = r"^[a-z0-9][a-z0-9._/\-:]*(@sha256:[0-9a-f]{64})?$"

Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, description="A digest written as sha256:<64 lowercase hex>.")]
Scalar = Union[str, int, float, bool]


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)
