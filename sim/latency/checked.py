"""A plugin's latency model with its iteration times checked: what a replay builds around a model that is not
one of the built-in ones (`checked`).

A time that is not a finite number >= 0 (NaN, an infinity, a negative number, ``None``, a string) would
otherwise end the run as SimPy's bare ``Negative delay -0.58``, a ``TypeError`` from an addition, or,
for NaN, a run stored ``finished`` whose completed requests have no finish time. It is a
`LatencyTimeError` (a ``ValueError``) naming the latency model, the deployment and the value, which fails
the run. The built-in models (their classes in ``sim.latency``) check their settings when they are made
and are left as they are: the default replay's hot path gains nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import IterationShape, LatencyModel, decode_run_args

__all__ = ["CheckedLatencyModel", "LatencyTimeError", "checked"]


class LatencyTimeError(ValueError):
    """A latency model gave an iteration time that is not a finite number of seconds >= 0."""


def checked(model: LatencyModel, registered_as: str, deployment: str) -> LatencyModel:
    """``model`` itself when its class is one of the built-in models' (defined in ``sim.latency``), else
    it wrapped so that each time it gives is checked (`CheckedLatencyModel`)."""
    if type(model).__module__.startswith("sim.latency."):
        return model
    return CheckedLatencyModel(model, registered_as, deployment)


class CheckedLatencyModel(LatencyModel):
    """``inner``'s times, each checked: a finite number >= 0 (a NumPy scalar too); anything else is a
    `LatencyTimeError` naming the model (as registered), the deployment, the call and the value. Other
    attributes (``max_context``, ``idle_prefill_extra_s``, ...) are the inner model's."""

    def __init__(self, inner: LatencyModel, registered_as: str, deployment: str) -> None:
        self.inner = inner
        self.registered_as = registered_as
        self.deployment = deployment
        self.name = getattr(inner, "name", registered_as)

    def __getattr__(self, attr: str) -> Any:  # (only for what this class does not have)
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _error(self, call: str, value: object, why: str) -> LatencyTimeError:
        return LatencyTimeError(
            f"latency model {self.registered_as!r} ({type(self.inner).__name__}) of deployment {self.deployment!r} "
            f"(cluster.models[{self.deployment}]) gave {value!r} from {call}: {why}; an iteration time must be a "
            "finite number of seconds >= 0")

    def iteration_s(self, shape: IterationShape) -> float:
        value = self.inner.iteration_s(shape)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._error(_shape_call(shape), value, f"a {type(value).__name__}, not a number")
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise self._error(_shape_call(shape), value, "not finite" if not math.isfinite(seconds) else "negative")
        return seconds

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        ctx, n = decode_run_args(decode_context_tokens, num_iterations)
        out = self.inner.decode_run_s(ctx, n)
        call = f"decode_run_s(a batch of {ctx.size} decodes, {n} iterations)"
        try:
            durations = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise self._error(call, out, "not an array of numbers") from None
        if durations.shape != (n,):
            raise self._error(call, out, f"{durations.size} durations in shape {durations.shape}, not {n}")
        if n and not (np.isfinite(durations).all() and durations.min() >= 0):
            bad = durations[~np.isfinite(durations) | (durations < 0)]
            raise self._error(call, float(bad[0]), "not finite" if not np.isfinite(bad[0]) else "negative")
        return durations

    def __repr__(self) -> str:
        return f"<checked {self.inner!r}>"


def _shape_call(shape: IterationShape) -> str:
    return (f"iteration_s(a batch of {len(shape.prefill_chunk_tokens)} prefills, {shape.num_prefill_tokens} "
            f"tokens, and {len(shape.decode_context_tokens)} decodes)")
