"""Autoscaling: how many replicas each model runs."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane.decisions import ScaleDecision
from controlplane.types import WorkerState


class FixedReplicas(Plugin):
    """Keep each model at its configured replica count, replacing failed replicas."""

    name = "fixed-replicas"

    @hookimpl
    def cp_scale(self, ctx, model, workers):
        deployment = ctx.config.cluster.deployment(model)
        alive = sum(1 for w in workers if w.state in (WorkerState.READY, WorkerState.STARTING))
        if alive == deployment.replicas:
            return ScaleDecision(model, alive, "at configured replicas")
        return ScaleDecision(model, deployment.replicas, f"restore configured {deployment.replicas} replicas")
