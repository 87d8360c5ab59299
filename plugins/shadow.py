"""Advisory (shadow) autoscaling: any autoscaler runs beside the active one and sees the same signals
(queue, arrivals, latencies, workers) and events; its would-be decisions are recorded next to the real
ones (action ``shadow_scale``) and never applied. Each shadow's replica count is its own (`_own_count`):
it decides from its previous target, as it would running active, not from the active policy's count.
A `cp_scale` wrapper, so it works with whichever policy decides, in simulation and live alike."""

from __future__ import annotations

import inspect
import zlib
from dataclasses import replace
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import ScaleDecision
from controlplane.errors import did_you_mean
from controlplane.hookspecs import PROJECT_NAME
from controlplane.plugin_manager import discover_plugins, instantiate


class _ShadowContext:
    """The run's context with the shadow's own random stream: a shadow never draws from the run's
    ``ctx.rng`` (that would change the active run)."""

    def __init__(self, ctx, name: str) -> None:
        self._ctx = ctx
        self.rng = np.random.default_rng([int(ctx.run.seed), zlib.crc32(name.encode())])

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._ctx, attr)


def _own_count(scaling, count: int):
    """``scaling`` with the shadow's own replica count ``count`` (its last target): as many of them ready as
    the active cluster has ready (at most ``count``), the rest starting. The signals stay the active cluster's."""
    if count == scaling.num_ready + scaling.num_starting:
        return scaling
    ready = min(count, scaling.num_ready)
    return replace(scaling, num_ready=ready, num_starting=count - ready)


def _why_not_advisory(name: str, target: Any) -> str | None:
    """Why plugin ``name`` cannot run in advisory mode (None: it can): it is no autoscaler, or it wraps one."""
    impl = getattr(target, "cp_scale", None)
    if not callable(impl):
        return f"{name!r} is not an autoscaler (no cp_scale)"
    if (getattr(impl, f"{PROJECT_NAME}_impl", None) or {}).get("wrapper"):  # (its answer: a generator)
        return f"{name!r} wraps another autoscaler's decision (a wrapper): it cannot run in advisory mode by itself"
    return None


def _call(fn, **kwargs):
    """Call a hook implementation with the arguments it names (pluggy passes a subset)."""
    names = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in kwargs.items() if k in names})


class ShadowScaling(Plugin):
    """Run other autoscalers in advisory mode: record what they would do, apply nothing."""

    name = "shadow"

    class Settings(PluginSettings):
        policies: list[str] = Field(default_factory=list)  # autoscaler plugins to run in advisory mode
        settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # their settings, by name

        @field_validator("policies")
        @classmethod
        def _known_autoscalers(cls, policies: list[str]) -> list[str]:
            found = discover_plugins()
            for name in policies:
                if name not in found:  # (the choices: the autoscalers it can run, not every plugin installed)
                    able = sorted(n for n, p in found.items() if _why_not_advisory(n, p.target) is None)
                    raise ValueError(f"unknown plugin {name!r}{did_you_mean(name, able)}; installed autoscalers "
                                     f"that can run in advisory mode: {', '.join(able)}")
                why = _why_not_advisory(name, found[name].target)
                if why is not None:
                    raise ValueError(why)
            if len(set(policies)) != len(policies):
                raise ValueError(f"a policy listed twice: {policies}")
            return policies

        @model_validator(mode="after")
        def _settings_of_policies(self):
            unknown = set(self.settings) - set(self.policies)
            if unknown:
                raise ValueError(f"settings for {sorted(unknown)}, which are not in policies")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        found = discover_plugins()
        # built with the run (their settings are checked like every plugin's: errors name the key)
        self.shadows: dict[str, object] = {
            name: instantiate(found[name], self.settings.settings.get(name),
                              key=f"plugins.settings.{self.name}.settings.{name}")
            for name in self.settings.policies}
        self._contexts: dict[str, _ShadowContext] = {}
        self._counts: dict[tuple[str, str], int] = {}  # (shadow, model) -> its last target: its own "current"
        self.num_errors = 0

    def _ctx(self, ctx, name: str) -> _ShadowContext:
        c = self._contexts.get(name)
        if c is None or c._ctx is not ctx:
            c = self._contexts[name] = _ShadowContext(ctx, name)
        return c

    @hookimpl
    def cp_run_started(self, ctx):
        for name, shadow in self.shadows.items():
            hook = getattr(shadow, "cp_run_started", None)
            if callable(hook):
                _call(hook, ctx=self._ctx(ctx, name))

    @hookimpl
    def cp_on_event(self, ctx, event):
        for name, shadow in self.shadows.items():
            hook = getattr(shadow, "cp_on_event", None)
            if not callable(hook):
                continue
            try:
                _call(hook, ctx=self._ctx(ctx, name), event=event)
            except Exception:  # noqa: BLE001 - a failing shadow must not touch the run
                self.num_errors += 1

    @hookimpl(wrapper=True)
    def cp_scale(self, ctx, model, workers, scaling):
        decision = yield
        if decision is None or not self.shadows:
            return decision
        advisory = []
        for name, shadow in self.shadows.items():
            # its own count: the cluster's at the first call, then its last target (never applied, so never the
            # active policy's, whose count a shadow's hold or lock would otherwise keep or release)
            own = _own_count(scaling, self._counts.get((name, model), scaling.num_current))
            try:
                d = _call(shadow.cp_scale, ctx=self._ctx(ctx, name), model=model, workers=workers, scaling=own)
            except Exception as exc:  # noqa: BLE001 - isolated: recorded as the shadow's decision
                self.num_errors += 1
                d = ScaleDecision(model, own.num_current, f"shadow {name} failed: {type(exc).__name__}: {exc}",
                                  signals={"shadow_failed": 1.0})  # (stored when it starts failing)
            if d is not None:
                self._counts[(name, model)] = max(0, d.target_replicas)
                advisory.append((name, d))
        return replace(decision, advisory=(*decision.advisory, *advisory))
