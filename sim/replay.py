"""Replay a trace through the control plane in the simulator: the library entry point."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controlplane.config import RunConfig
from controlplane.errors import ConfigError
from controlplane.hardware.memory_plan import deployment_cold_start_s
from controlplane.session import RunSession, latency_factories
from sim.driver import SimDriver
from sim.latency.base import LatencyModel
from sim.traces.record import TraceRequest


def build_latency_models(session: RunSession) -> dict[str, LatencyModel]:
    """One latency model per deployed model, from the factories plugins registered."""
    factories = latency_factories(session.plugins)
    models: dict[str, LatencyModel] = {}
    for d in session.config.cluster.models:
        factory = factories.get(d.latency_model)
        if factory is None:
            raise ConfigError(
                f"cluster.models[{d.name}].latency_model: unknown latency model {d.latency_model!r}; "
                f"registered: {', '.join(sorted(factories)) or 'none (is builtin-latency-models enabled?)'}"
            )
        try:
            models[d.name] = factory(**d.latency)
        except (TypeError, ValueError, LookupError) as exc:
            raise ConfigError(f"cluster.models[{d.name}].latency: {exc}") from None
    return models


def replay(
    trace: Iterable[TraceRequest],
    config: RunConfig,
    *,
    trace_name: str | None = None,
    trace_format: str | None = None,
    record: bool = True,
    extra_plugins: Iterable[object] = (),
    on_progress: Callable[[int, float], None] | None = None,
    available: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], RunSession]:
    """Run the simulation to the end; returns (summary, session). Results are in the database."""
    with RunSession(
        config,
        mode="sim",
        trace=trace_name,
        trace_format=trace_format,
        record=record,
        extra_plugins=extra_plugins,
        available=available,
    ) as session:
        models = build_latency_models(session)
        cold = {d.name: deployment_cold_start_s(d) for d in config.cluster.models}
        driver = SimDriver(session.core, models, cold_start_s=cold, seed=config.seed, on_progress=on_progress)
        summary = session.close(driver.run(trace))
    return summary, session
