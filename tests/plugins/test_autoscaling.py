"""Autoscaling: fixed replicas."""

from __future__ import annotations

from controlplane.testing import make_config, make_context, make_worker
from controlplane.types import WorkerState
from plugins.autoscaling import FixedReplicas


def _decide(workers, replicas: int = 2):
    ctx = make_context(config=make_config(cluster={"models": [{"name": "default", "replicas": replicas}]}))
    return FixedReplicas().cp_scale(ctx=ctx, model="default", workers=workers)


def test_at_configured_replicas():
    d = _decide([make_worker("default-0"), make_worker("default-1", state=WorkerState.STARTING)])
    assert (d.model, d.target_replicas, d.reason) == ("default", 2, "at configured replicas")


def test_restores_after_a_failure_and_ignores_draining_and_dead_workers():
    workers = [make_worker("default-0"), make_worker("default-1", state=WorkerState.FAILED),
               make_worker("default-2", state=WorkerState.DRAINING)]
    d = _decide(workers, replicas=3)
    assert d.target_replicas == 3 and d.reason == "restore configured 3 replicas"
