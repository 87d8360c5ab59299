"""Reading a config's values: every float of a settings model with its key, and whether two spellings of one
setting agree (`controlplane.config`'s checks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel


def settings_floats(value: Any, key: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], float]]:
    """Every float in a settings model, with its key: (("models", "0", "timeout_s"), 5.0), ..."""
    if isinstance(value, float):
        yield key, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from settings_floats(getattr(value, name), (*key, name))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from settings_floats(item, (*key, str(i)))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from settings_floats(item, (*key, str(k)))


def same_value(a: Any, b: Any) -> bool:
    """Whether two spellings of one setting agree: as numbers when both read as numbers (the environment's "1.0"
    and a file's 1), else as given."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return bool(a == b)
