"""Name -> latency model factory, so configs can say ``latency_model: vidur``.

Factories import their module on first use: a replay on the linear model never loads pandas or
scikit-learn, and one on the Vidur profiles never loads the measured model's scikit-learn.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controlplane.errors import did_you_mean

from .base import LatencyModel

__all__ = ["BUILTIN_LATENCY_MODELS", "LazyFactory", "make_latency_model"]


class LazyFactory:
    """A latency model factory named by ``module:attribute``, imported when called or inspected."""

    __slots__ = ("path", "_target")

    def __init__(self, path: str) -> None:
        self.path = path
        self._target: Callable[..., LatencyModel] | None = None

    @property
    def target(self) -> Callable[..., LatencyModel]:
        if self._target is None:
            module, attr = self.path.split(":")
            try:
                target = getattr(importlib.import_module(module, __package__), attr)
            except (ImportError, AttributeError) as exc:
                raise LookupError(f"latency model factory {self.path!r} failed to load: {exc}") from exc
            if not callable(target):
                raise TypeError(f"latency model factory {self.path!r} is a {type(target).__name__}, not callable "
                                "(a LatencyModel class or a function returning one)")
            self._target = target
        return self._target

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.target)

    def __call__(self, *args: Any, **kwargs: Any) -> LatencyModel:
        return self.target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyFactory({self.path!r})"


def _measured(path: str | Path) -> LatencyModel:
    """Fit a MeasuredProfileModel from a controlplane-profile/1 JSON file."""
    from .measured import MeasuredProfileModel

    return MeasuredProfileModel.from_file(path)


BUILTIN_LATENCY_MODELS: dict[str, Callable[..., LatencyModel]] = {
    "linear": LazyFactory(".linear:LinearLatencyModel"),
    "vidur": LazyFactory(".vidur_profile:VidurProfileModel"),
    "splitwise": LazyFactory(".splitwise:SplitwiseModel"),
    "roofline": LazyFactory(".roofline:RooflineModel"),
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
        raise ValueError(f"unknown latency model {name!r}{did_you_mean(name, BUILTIN_LATENCY_MODELS)}; "
                         f"valid: {sorted(BUILTIN_LATENCY_MODELS)}") from None
    check_settings(name, factory, settings)
    return factory(**settings)


def check_settings(name: str, factory: Callable[..., LatencyModel], settings: Mapping[str, Any]) -> None:
    """A ValueError naming the settings ``factory`` does not take, or the ones it needs and lacks, with the valid
    ones (not Python's "got an unexpected keyword argument"); nothing for a factory taking ``**kwargs`` or whose
    signature cannot be read."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    params = _parameters(factory)
    unknown = sorted(set(settings) - set(params))
    if unknown:
        raise ValueError(f"latency model {name!r} does not take {unknown}; valid settings: {sorted(params)}")
    missing = sorted(k for k, p in params.items() if p.default is p.empty and k not in settings)
    if missing:
        raise ValueError(f"latency model {name!r} needs {missing}; valid settings: {sorted(params)}")
