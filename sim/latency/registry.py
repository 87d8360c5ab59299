"""Name -> latency model factory, so configs can say ``latency_model: vidur``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import LatencyModel
from .linear import LinearLatencyModel
from .measured import MeasuredProfileModel
from .roofline import RooflineModel
from .splitwise import SplitwiseModel
from .vidur_profile import VidurProfileModel

__all__ = ["BUILTIN_LATENCY_MODELS", "make_latency_model"]


def _measured(path: str | Path) -> MeasuredProfileModel:
    """Fit a MeasuredProfileModel from a controlplane-profile/1 JSON file."""
    return MeasuredProfileModel.from_file(path)


BUILTIN_LATENCY_MODELS: dict[str, Callable[..., LatencyModel]] = {
    "linear": LinearLatencyModel,
    "vidur": VidurProfileModel,
    "splitwise": SplitwiseModel,
    "roofline": RooflineModel,
    "measured": _measured,
}


def _parameters(factory: Callable[..., LatencyModel]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(factory).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def make_latency_model(name: str, **settings: Any) -> LatencyModel:
    """Build a built-in model by name; unknown names or settings raise with the valid options."""
    try:
        factory = BUILTIN_LATENCY_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown latency model {name!r}; valid: {sorted(BUILTIN_LATENCY_MODELS)}") from None
    params = _parameters(factory)
    unknown = sorted(set(settings) - set(params))
    if unknown:
        raise ValueError(f"latency model {name!r} does not take {unknown}; valid settings: {sorted(params)}")
    missing = sorted(k for k, p in params.items() if p.default is p.empty and k not in settings)
    if missing:
        raise ValueError(f"latency model {name!r} needs {missing}; valid settings: {sorted(params)}")
    return factory(**settings)
