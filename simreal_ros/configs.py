"""Build config dataclasses from mappings (YAML sections, node parameters), refusing unknown keys."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """``cls(**data)``; a key that is not a field of ``cls`` raises ValueError naming it and ``where``."""
    allowed = {f.name for f in fields(cls)}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(allowed)})")
    return cls(**dict(data))
