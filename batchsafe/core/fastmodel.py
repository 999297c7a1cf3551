"""Building pydantic models from values that are already valid, without re-validating them."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")

_FIELDS_SETS: dict[type, set[str]] = {}
"""The shared fields set of each class ``construct`` has built (its last key set)."""


def construct(cls: type[T], **values: Any) -> T:
    """An instance of the pydantic model ``cls`` holding ``values``, which must give every field.

    What ``model_construct`` does minus its per-field default handling. Only for values
    that come from validated models or are computed by batchsafe itself: tens of thousands
    of plan and flip-registry objects make that overhead a fifth of a compile or analysis.
    """
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    # One fields set per class and key set, shared: a set per instance was 728 bytes, 0.4 GB
    # over the 580k scored and flip rows of a 300k-sample verify. Sharing is safe: every
    # field is set, so pydantic's only in-place change (adding an assigned field's name on
    # a mutable model) adds a name the set holds, and ``model_copy`` copies the set.
    shared = _FIELDS_SETS.get(cls)
    if shared is None or values.keys() != shared:
        shared = _FIELDS_SETS[cls] = set(values)
    object.__setattr__(obj, "__pydantic_fields_set__", shared)
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj
