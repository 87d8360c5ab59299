"""The daemon's probes and metrics: ``GET /healthz`` (the process answers), ``GET /readyz`` (a
worker is ready and the daemon is not draining) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from controlplane.live.daemon_deps import DaemonDep, DriverDep
from controlplane.live.prometheus import CONTENT_TYPE_LATEST

__all__ = ["models_never_started", "router", "scales_from_zero"]

router = APIRouter()


def _models_down(driver: Any) -> dict[str, str]:
    """Models with no worker up or starting whose last start failed (their requests get 503 at once)."""
    return driver.core.models_down() if driver.core is not None else {}


def models_never_started(driver: Any) -> dict[str, str]:
    """Models configured with no replica, none alive, whose only autoscaler is `fixed-replicas` (it
    keeps the configured count, so never starts one): their requests would only time out."""
    core = driver.core
    if core is None or driver.session is None:
        return {}
    return {model: why.replace("(replicas: 0)", "(replicas: 0, --workers 0)")
            for model, why in core.never_served().items()}  # (the core refuses their requests: `never_served`)


@router.api_route("/healthz", methods=["GET", "HEAD"])  # HEAD: load balancers' checks
async def healthz(driver: DriverDep) -> dict[str, Any]:
    """Liveness: 200 while the process answers (a restart would not fix a model that cannot load),
    naming the models that cannot start."""
    body: dict[str, Any] = {"status": "ok", "draining": driver.draining}
    down = _models_down(driver)
    if down:
        body["cannot_start"] = down
    return body


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(driver: DriverDep) -> JSONResponse:
    states: dict[str, int] = {}
    if driver.core is not None:
        for w in driver.core.workers.values():
            states[w.state.value] = states.get(w.state.value, 0) + 1
    down = _models_down(driver)
    ready = driver.ready or (not down and _scaled_to_zero(driver, states))
    body: dict[str, Any] = {"ready": ready, "draining": driver.draining, "workers": states}
    if down:  # requests for these get 503 at once, ready or not (another model may be up)
        body["cannot_start"] = down
    if ready and not driver.ready:
        body["reason"] = "scaled to zero: a request starts a worker (it waits for the worker's start)"
    elif not driver.ready:
        body["reason"] = "draining" if driver.draining else "no worker is ready yet"
        if not driver.draining and down:
            body["reason"] += "; " + "; ".join(f"model {m!r} cannot start (no worker up or starting, the last "
                                               f"start failed): {why[:500]}" for m, why in down.items())
        elif not driver.draining and driver.last_worker_failure:  # e.g. a model its workers cannot load
            body["reason"] += f"; the last worker failure: {driver.last_worker_failure[:500]}"
    idle = {} if driver.draining else models_never_started(driver)
    if idle:  # (ready for the other models too: a model never served is named all the same)
        never = "; ".join(f"model {m!r}: {why}" for m, why in idle.items())
        body["reason"] = f"{body['reason']}; {never}" if body.get("reason") else never
    return JSONResponse(body, 200 if ready else 503)


def _scaled_to_zero(driver: Any, states: dict[str, int]) -> bool:
    """No worker at all (none starting either: a daemon still starting is not ready), while serving, and an
    autoscaler runs that keeps a model at zero on purpose and starts one for a request (`scales_from_zero`):
    `kpa`/`slo-planner` with scale-to-zero, `hpa` from min 0. It reads ready, else a load balancer following
    /readyz never sends the request that wakes it. Workers that died under `fixed-replicas` (or an autoscaler
    whose floor is one or more) are not that: their replacements are on their way, and until one is ready the
    daemon is not."""
    if states or driver.draining or driver.core is None or not getattr(driver, "_started", False):
        return False
    return scales_from_zero(driver.core) and not models_never_started(driver)


def scales_from_zero(core: Any) -> bool:
    """Whether an enabled autoscaler may keep a model at zero replicas and start one when a request comes: its
    settings say ``scale_to_zero: true`` or ``min_replicas: 0`` (`kpa`, `slo-planner`, `hpa`, `seed-autoscaler`;
    a third-party autoscaler is read the same way)."""
    for p in core.plugins.loaded:
        if "cp_scale" not in p.info.hooks:
            continue
        settings = getattr(p.instance, "settings", None)
        if getattr(settings, "scale_to_zero", False) is True or getattr(settings, "min_replicas", None) == 0:
            return True
    return False


@router.get("/metrics")
async def metrics(daemon: DaemonDep) -> Response:
    return Response(daemon.metrics.render(), media_type=CONTENT_TYPE_LATEST)
