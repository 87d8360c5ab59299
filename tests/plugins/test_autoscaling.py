"""Autoscaling: fixed replicas."""

from __future__ import annotations

from controlplane.scaling import RecentLatencies, build_scaling_context
from controlplane.testing import make_config, make_context, make_worker
from controlplane.types import WorkerState
from plugins.autoscaling import FixedReplicas


def _scaling(workers, now_s: float = 0.0, replicas: int = 2):
    return build_scaling_context(model="default", now_s=now_s, configured_replicas=replicas, workers=workers,
                                 unrouted=(), arrivals=0, tick_s=1.0, recent=RecentLatencies(60.0))


def _decide(workers, replicas: int = 2):
    ctx = make_context(config=make_config(cluster={"models": [{"name": "default", "replicas": replicas}]}))
    return FixedReplicas().cp_scale(ctx=ctx, model="default", workers=(), scaling=_scaling(workers, replicas=replicas))


def test_at_configured_replicas():
    d = _decide([make_worker("default-0"), make_worker("default-1", state=WorkerState.STARTING)])
    assert (d.model, d.target_replicas, d.reason) == ("default", 2, "at configured replicas")


def test_restores_after_a_failure_and_ignores_draining_and_dead_workers():
    workers = [make_worker("default-0"), make_worker("default-1", state=WorkerState.FAILED),
               make_worker("default-2", state=WorkerState.DRAINING)]
    d = _decide(workers, replicas=3)
    assert d.target_replicas == 3 and d.reason == "restore configured 3 replicas"


def test_fixed_replicas_backs_off_while_replacements_keep_failing():
    from controlplane.events import WorkerChanged
    from controlplane.testing import make_config, make_context, make_worker
    from controlplane.types import WorkerState
    from plugins.autoscaling import FixedReplicas

    plugin = FixedReplicas(FixedReplicas.Settings(restart_backoff_s=10, max_restart_backoff_s=25))
    dead = make_worker("default-0")
    dead.state = WorkerState.FAILED
    cfg = make_config(cluster={"models": [{"name": "default", "replicas": 1}]})
    ctx = make_context(now_s=50.0, workers=[dead], config=cfg)
    plugin.cp_on_event(ctx=ctx, event=WorkerChanged(50.0, "default-0", "failed"))
    first = plugin.cp_scale(ctx=ctx, model="default", workers=(), scaling=_scaling([dead], replicas=1))
    assert first.target_replicas == 1  # first: at once
    for n, t in enumerate((100.0, 200.0, 300.0), start=1):
        ctx = make_context(now_s=t, workers=[dead], config=cfg)
        plugin.cp_on_event(ctx=ctx, event=WorkerChanged(t, "default-0", "failed"))
        wait = min(25, 10 * 2 ** (n - 1))
        held = plugin.cp_scale(ctx=make_context(now_s=t + wait - 1, workers=[dead], config=cfg), model="default",
                               workers=(), scaling=_scaling([dead], replicas=1))
        assert held.target_replicas == 0 and "next restart" in held.reason
        restored = plugin.cp_scale(ctx=make_context(now_s=t + wait, workers=[dead], config=cfg), model="default",
                                   workers=(), scaling=_scaling([dead], replicas=1))
        assert restored.target_replicas == 1
    ready = make_worker("default-1")
    plugin.cp_on_event(ctx=make_context(workers=[ready], config=cfg), event=WorkerChanged(400.0, "default-1", "ready"))
    assert plugin.cp_scale(ctx=make_context(now_s=401, workers=[dead], config=cfg), model="default", workers=(),
                           scaling=_scaling([dead], replicas=1)).target_replicas == 1


def test_the_configured_count_is_the_contexts():
    # cp_scale reads the deployment's replicas from its ScalingContext (built by the core from the
    # same config), not from ctx.config at every tick
    ctx = make_context(config=make_config(cluster={"models": [{"name": "default", "replicas": 2}]}))
    d = FixedReplicas().cp_scale(ctx=ctx, model="default", workers=(),
                                 scaling=_scaling([make_worker("default-0")], replicas=3))
    assert (d.target_replicas, d.reason) == (3, "restore configured 3 replicas")


def test_workers_dying_together_are_replaced_at_once_and_a_held_restart_is_recorded_once():
    """Two ready workers killed together counted as two failures in a row: neither was replaced for
    `restart_backoff_s`, and the hold left no decision. One round of failures counts once; a hold is a
    ``scale_held`` decision, stored once."""
    from controlplane import actions as act
    from controlplane import events as ev
    from controlplane.testing import decisions_in
    from tests.controlplane.conftest import CoreHarness

    h = CoreHarness(cluster={"models": [{"name": "default", "replicas": 2}]})
    h.handle(ev.Tick(1.0))
    h.handle(ev.WorkerFailed(6.50, h.worker_ids[1], "killed by SIGKILL"))
    h.handle(ev.WorkerFailed(6.52, h.worker_ids[0], "killed by SIGKILL"))
    started = [a.worker_id for a in h.handle(ev.Tick(7.0)) if isinstance(a, act.StartWorker)]
    assert len(started) == 2  # the first replacement is immediate, for both
    for wid in started:  # the replacements fail to start, together: the second failure in a row
        h.handle(ev.WorkerFailed(7.5, wid, "cannot load"))
    held = [a for t in (8.0, 9.0, 12.0) for a in h.handle(ev.Tick(t)) if isinstance(a, act.StartWorker)]
    assert held == []
    holds = [d for d in decisions_in(h.log.events) if d.action == "scale_held"]
    assert [(d.subject, d.reason, d.payload) for d in holds] == [
        ("default", "2 failure(s) in a row: next restart after 5 s", {"from": 0, "to": 0, "wanted": 2})]
    again = [a for a in h.handle(ev.Tick(13.0)) if isinstance(a, act.StartWorker)]
    assert len(again) == 2  # 5 s after the last failure
