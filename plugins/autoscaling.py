"""Autoscaling: how many replicas each model runs."""

from __future__ import annotations

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import ScaleDecision
from controlplane.events import WorkerChanged
from controlplane.scaling import SteadyScaleDecision


class FixedReplicas(Plugin):
    """Keep each model at its configured replica count, replacing failed replicas.

    Replacements back off exponentially while replicas keep failing (a model that cannot
    load must not be restarted at every tick), and the backoff resets when one becomes ready.
    Failures count per round of replacements: those before the next restore (workers dying
    together) are one failure, so the first replacement of them all is immediate. A held restart
    carries ``held_target`` (the core records it once per hold as a ``scale_held`` decision).
    """

    name = "fixed-replicas"
    observes = (WorkerChanged,)

    class Settings(PluginSettings):
        restart_backoff_s: float = Field(5.0, ge=0)  # wait after a second failure in a row; doubles after each
        max_restart_backoff_s: float = Field(300.0, ge=0)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._failures: dict[str, int] = {}  # consecutive failures per model (a round of them counts once)
        self._last_failure_s: dict[str, float] = {}
        self._counted: set[str] = set()  # models whose failure since the last restore is counted already
        self._steady: dict[str, ScaleDecision] = {}  # model -> its "at configured replicas" decision

    @hookimpl
    def cp_on_event(self, ctx, event):
        if type(event) is not WorkerChanged or event.kind not in ("failed", "ready"):
            return
        w = ctx.workers.get(event.worker_id)
        if w is None:
            return
        if event.kind == "ready":
            self._failures.pop(w.model, None)
            self._counted.discard(w.model)
            return
        if w.model not in self._counted:  # another worker failing before the next restore: the same round
            self._counted.add(w.model)
            self._failures[w.model] = self._failures.get(w.model, 0) + 1
        self._last_failure_s[w.model] = event.time_s

    @hookimpl
    def cp_scale(self, ctx, model, workers, scaling):
        # The spec's four arguments (``workers`` unused): the core then calls it as it is, with no
        # adapter in between (every tick). `ScalingContext.num_current`, without the property's call.
        replicas = scaling.configured_replicas  # the deployment's `replicas` (not looked up in the config each tick)
        alive = scaling.num_ready + scaling.num_starting
        if alive == replicas:  # the same (unmodified) decision object each time; it holds until a worker changes
            steady = self._steady.get(model)
            if steady is None or steady.target_replicas != alive:
                steady = self._steady[model] = SteadyScaleDecision(model, alive, "at configured replicas")
            return steady
        failures = self._failures.get(model, 0)
        if alive < replicas and failures > 1:  # the first replacement is immediate
            s = self.settings
            wait = min(s.max_restart_backoff_s, s.restart_backoff_s * 2 ** (failures - 2))
            if ctx.now_s - self._last_failure_s[model] < wait:
                return ScaleDecision(model, alive, f"{failures} failure(s) in a row: next restart after {wait:g} s",
                                     next_start_s=self._last_failure_s[model] + wait, held_target=replicas)
        if alive < replicas:
            self._counted.discard(model)  # a new round: its replacements' failures count again
        return ScaleDecision(model, replicas, f"restore configured {replicas} replicas")
