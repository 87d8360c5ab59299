"""Scheduled scaling: replica counts from a timetable, like a cron scaler (KEDA's `cron` trigger).

For load that is known in advance (business hours, a nightly batch, a launch), and for the
autoscaling benchmark's clairvoyant bound: a schedule derived from the trace itself, which no
online policy can know, tells how far a policy is from what perfect foresight would spend.

Times are seconds of the run's clock (`ctx.now_s`: simulated seconds in a replay, seconds since
the daemon started live). Before the first entry the model keeps its configured replicas.
"""

from __future__ import annotations

import bisect
import logging

from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import ScaleDecision


class ScheduledReplicas(Plugin):
    """Each model at the replica count its timetable gives for now (configured replicas before it)."""

    name = "scheduled-replicas"

    class Settings(PluginSettings):
        # [[from second, replicas], ...] in time order, for every model unless `models` names it
        schedule: list[tuple[float, int]] = Field(default_factory=list)
        models: dict[str, list[tuple[float, int]]] = Field(default_factory=dict)  # per-model timetables

        @model_validator(mode="after")
        def _ordered(self):
            for name, table in [("schedule", self.schedule), *((f"models.{m}", t) for m, t in self.models.items())]:
                times = [t for t, _ in table]
                if times != sorted(times):
                    raise ValueError(f"{name}: entries must be in time order, got times {times}")
                if any(n < 0 for _, n in table):
                    raise ValueError(f"{name}: replica counts must be >= 0")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._times: dict[str, list[float]] = {}

    @hookimpl
    def cp_run_started(self, ctx):
        """Warn of a timetable for a model the cluster does not serve: most likely a misspelling, and that model
        would follow ``schedule`` (or its configured replicas) instead."""
        served = [d.name for d in ctx.config.cluster.models]
        unknown = [m for m in self.settings.models if m not in served]
        if unknown:
            logging.getLogger(__name__).warning(
                "plugins.settings.%s.models names %s, which cluster.models does not serve (served: %s); "
                "its timetable is never used", self.name, ", ".join(map(repr, unknown)), ", ".join(served))

    def _table(self, model: str) -> list[tuple[float, int]]:
        return self.settings.models.get(model, self.settings.schedule)

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        table = self._table(model)
        times = self._times.get(model)
        if times is None:
            times = self._times[model] = [t for t, _ in table]
        i = bisect.bisect_right(times, scaling.now_s) - 1
        if i < 0:
            configured = ctx.config.cluster.deployment(model).replicas
            return ScaleDecision(model, configured, f"schedule: configured {configured} replicas until "
                                 + (f"{times[0]:g} s" if times else "an entry is given"))
        start, count = table[i]
        until = f" until {times[i + 1]:g} s" if i + 1 < len(times) else ""
        return ScaleDecision(model, count, f"schedule: {count} replicas from {start:g} s{until}",
                             signals={"scheduled_replicas": float(count)})
