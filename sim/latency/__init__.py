"""Iteration latency models for the simulator (see docs/latency-models.md).

Heavy models (vidur, splitwise, roofline, measured) import pandas/scikit-learn, so they
load lazily on first attribute access; ``IterationShape``, ``LatencyModel`` and
``LinearLatencyModel`` are always cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import IterationShape, LatencyModel
from .linear import LinearLatencyModel

_LAZY = {
    "BUILTIN_LATENCY_MODELS": ".registry",
    "make_latency_model": ".registry",
    "VidurProfileModel": ".vidur_profile",
    "ProfileNotFoundError": ".vidur_files",
    "list_vidur_profiles": ".vidur_files",
    "SplitwiseModel": ".splitwise",
    "RooflineModel": ".roofline",
    "MeasuredProfileModel": ".measured",
    "write_profile": ".measured",
    "read_profile": ".measured",
}

__all__ = ["IterationShape", "LatencyModel", "LinearLatencyModel", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
