"""Per-model figures of a run that serves several models: its summary's ``by_model``.

A cluster serving specialist models judges each on its own: one model's TTFT p99 of 22 s hides in a
cluster-wide p99 of 1.1 s. Each model gets a `controlplane.metrics.RunStats` of its own, fed the same
arrivals, finished requests and replica spans as the run's; a one-model run keeps none (its summary is
the model's). Requests for a model no deployment serves are counted under the name they asked for.
"""

from __future__ import annotations

from typing import Any

from controlplane.config import RunConfig, SLOConfig
from controlplane.hardware.cost import run_cost
from controlplane.metrics import RunStats
from controlplane.types import Request

__all__ = ["ModelStats", "BY_MODEL_KEYS"]

#: The keys of each model's entry in ``by_model`` (of its own `RunStats.summary`), with its cost.
BY_MODEL_KEYS = ("num_requests", "num_completed", "num_rejected", "num_failed", "num_in_flight", "num_cancelled",
                 "num_blocked", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p50_s", "e2e_p99_s",
                 "slo_attainment", "gpu_seconds", "peak_replicas")


class ModelStats:
    """One `RunStats` per model, made as each model is first seen."""

    __slots__ = ("_stats", "_config")

    def __init__(self, config: RunConfig) -> None:
        self._config = config
        self._stats: dict[str, RunStats] = {d.name: RunStats() for d in config.cluster.models}

    @staticmethod
    def for_run(config: RunConfig) -> ModelStats | None:
        """A collector for a run of several models; None for one model (its figures are the run's)."""
        return ModelStats(config) if len(config.cluster.models) > 1 else None

    def _of(self, model: str) -> RunStats:
        stats = self._stats.get(model)
        if stats is None:
            stats = self._stats[model] = RunStats()
        return stats

    def on_arrival(self, r: Request, model: str) -> None:
        self._of(model).on_arrival(r)

    def on_finished(self, r: Request, slo: SLOConfig, latencies: Any) -> None:
        self._of(r.model or "-").on_finished(r, slo, latencies)

    def replica_stopped(self, model: str, since: float, now: float, gpu: str, gpu_s: float) -> None:
        """A placed replica of ``model`` stopped (or the run ended): its span and GPU-seconds."""
        stats = self._of(model)
        stats.replica_spans.append((since, now))
        stats.gpu_seconds += gpu_s
        stats.gpu_seconds_by_gpu[gpu] += gpu_s

    def summary(self, end_s: float) -> dict[str, dict[str, Any]]:
        """``by_model``: per model, `BY_MODEL_KEYS` and its ``gpu_hours`` and ``cost_usd`` (None without a price)."""
        out: dict[str, dict[str, Any]] = {}
        for model, stats in self._stats.items():
            whole = stats.summary(end_s)
            entry = {k: whole.get(k) for k in BY_MODEL_KEYS}
            entry["gpu_hours"] = float(f"{stats.gpu_seconds / 3600.0:.9g}")
            try:
                entry["cost_usd"] = float(f"{run_cost(stats.gpu_seconds_by_gpu, self._config.cluster.gpu_prices):.9g}")
            except KeyError:  # a GPU type without a price: the run's cost_error says which
                entry["cost_usd"] = None
            out[model] = entry
        return out
