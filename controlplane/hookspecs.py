"""Hook specifications: the whole plugin interface of the control plane.

Three kinds of hooks:

* **policy hooks** (``firstresult=True``): given a read-only context, return a decision or
  ``None`` to let the next implementation (and finally the built-in default) decide;
* **observer hooks**: every implementation runs; they return nothing;
* **registration hooks**: receive a ``register`` callback, so the host can validate names.

Implementations may take fewer arguments than the spec; call sites always pass keywords.
Policies never read the wall clock or the global random module: ``ctx.now_s`` is the run's
time and ``ctx.rng`` its seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from controlplane.context import PolicyContext
    from controlplane.decisions import (
        Admission,
        BatchPlan,
        CacheHit,
        GuardianPlan,
        MemoryPlan,
        RouteDecision,
        ScaleDecision,
    )
    from controlplane.scaling import ScalingContext
    from controlplane.types import Request, Worker

PROJECT_NAME = "controlplane"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- registration ----------------------------------------------------------------------------


@hookspec
def cp_register_latency_models(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register latency-model factories by name: ``register("my-gpu-model", factory)``."""


# --- run lifecycle ---------------------------------------------------------------------------


@hookspec
def cp_run_started(ctx: PolicyContext) -> None:
    """A run (simulation replay or daemon session) starts; ``ctx.run`` describes it."""


@hookspec
def cp_run_finished(ctx: PolicyContext, summary: dict[str, Any]) -> None:
    """A run ends; ``summary`` holds its metrics."""


# --- admission and queueing ------------------------------------------------------------------


@hookspec(firstresult=True)
def cp_admit_request(ctx: PolicyContext, request: Request) -> Admission | None:
    """Admit or reject an arriving request (rate limits, queue caps, tenant quotas, priority)."""


# --- response caching ------------------------------------------------------------------------


@hookspec(firstresult=True)
def cp_cache_lookup(ctx: PolicyContext, request: Request) -> CacheHit | None:
    """Answer an admitted request from a response cache (exact or semantic), or ``None``."""


@hookspec
def cp_cache_store(ctx: PolicyContext, request: Request) -> None:
    """Offer a completed response to the caches; each cache decides whether to keep it."""


# --- prefix (KV-block) caching ---------------------------------------------------------------


@hookspec(firstresult=True)
def cp_prefix_lookup(ctx: PolicyContext, worker: Worker, request: Request) -> int | None:
    """Prompt tokens of ``request`` whose KV blocks ``worker`` already holds (a prefix hit), or ``None``."""


@hookspec(firstresult=True)
def cp_prefix_peek(ctx: PolicyContext, worker: Worker, request: Request) -> int | None:
    """Like ``cp_prefix_lookup`` but read-only: no hit counted, no LRU order changed. Routers ask
    it through ``ctx.prefix_match(worker, request)`` to score replicas by their actual cache."""


@hookspec
def cp_prefix_store(ctx: PolicyContext, worker: Worker, request: Request) -> None:
    """``request``'s prompt KV blocks are now computed on ``worker``; prefix caches may keep them."""


# --- routing and load balancing --------------------------------------------------------------


@hookspec(firstresult=True)
def cp_route_request(
    ctx: PolicyContext, request: Request, workers: Sequence[Worker]
) -> RouteDecision | None:
    """Choose the worker for a request among ``workers`` (ready or starting, serving its model)."""


# --- batching --------------------------------------------------------------------------------


@hookspec(firstresult=True)
def cp_form_batch(ctx: PolicyContext, worker: Worker) -> BatchPlan | None:
    """Form the next batch for an idle worker from its ``waiting`` and ``running`` requests."""


# --- autoscaling -----------------------------------------------------------------------------


@hookspec(firstresult=True)
def cp_scale(
    ctx: PolicyContext, model: str, workers: Sequence[Worker], scaling: ScalingContext
) -> ScaleDecision | None:
    """Decide ``model``'s replica count at a tick from its fresh ``scaling`` context (alive ``workers``)."""


# --- GPU memory planning ---------------------------------------------------------------------


@hookspec(firstresult=True)
def cp_plan_memory(ctx: PolicyContext, worker: Worker, trigger: str) -> MemoryPlan | None:
    """Plan a worker's batch and KV-cache limits; ``trigger`` is "ready" or "out_of_memory"."""


# --- guardians -------------------------------------------------------------------------------


@hookspec(firstresult=True)
def cp_guardian_plan(ctx: PolicyContext, request: Request, stage: str) -> GuardianPlan | None:
    """Decide whether and how guardian models check a request: its prompt on arrival (``stage``
    "input", before generation) or its completed response ("output")."""


# --- observers -------------------------------------------------------------------------------


@hookspec
def cp_on_event(ctx: PolicyContext, event: Any) -> None:
    """See every event and decision of the run (recorders, exporters, progress bars)."""
