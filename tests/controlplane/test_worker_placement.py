"""A driver that places its workers (the live pools: `WorkerLifecycle.confirms_placement`) says when each start
found a device or slot (`WorkerPlaced`): the start's ``starting`` worker event and its GPU time begin there, and a
start no device or slot was free for records no ``starting`` and bills no GPU time."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane import events as ev
from controlplane.decisions import ScaleDecision
from controlplane.worker_lifecycle import UNPLACEABLE
from tests.controlplane.test_worker_lifecycle import Run


class Three(Plugin):
    name = "three"

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return ScaleDecision(model, 3, "wants 3")


def test_an_unplaced_start_records_no_starting_event_and_bills_no_gpu_time():
    run = Run(0, Three())  # (no initial replica: the scale-up's starts are the ones told apart)
    run.actions = list(run.core.start(confirms_placement=True))
    run.handle(ev.Tick(1.0))
    w0, w1, w2 = run.started()
    worker_events = [e for e in run.log.events if isinstance(e, ev.WorkerChanged)]
    assert worker_events == []  # nothing is recorded before the driver placed a start
    run.handle(ev.WorkerPlaced(1.25, w0))
    run.handle(ev.WorkerFailed(1.5, w1, f"{UNPLACEABLE}: no free slot for {w1}"))
    run.handle(ev.WorkerReady(2.0, w2))  # ready without a WorkerPlaced: placed then
    run.handle(ev.WorkerReady(2.0, w0))
    run.core.clock.now_s = 11.0
    summary = run.core.finish()
    kinds = [(e.worker_id, e.kind, e.time_s) for e in run.log.events if isinstance(e, ev.WorkerChanged)]
    assert kinds == [(w0, "starting", 1.25), (w1, "failed", 1.5), (w2, "starting", 2.0), (w2, "ready", 2.0),
                     (w0, "ready", 2.0), (w0, "stopped", 11.0), (w2, "stopped", 11.0)]
    failed = next(e for e in run.log.events if isinstance(e, ev.WorkerChanged) and e.kind == "failed")
    assert failed.detail["unplaced"] is True
    # each placed replica from its `starting` to its end; the unplaced one none (not its 0.5 s from the decision)
    assert summary["gpu_seconds"] == (11.0 - 1.25) + (11.0 - 2.0)
    # starting - ready - failed - stopped: the starts in progress (none)
    count = {k: sum(1 for _, kind, _t in kinds if kind == k) for k in ("starting", "ready", "stopped")}
    assert count["starting"] - count["ready"] == 0 and count["starting"] == count["stopped"]


def test_a_start_that_fails_for_another_reason_before_it_was_placed_still_records_its_start():
    run = Run(0, Three())
    run.actions = list(run.core.start(confirms_placement=True))
    run.handle(ev.Tick(1.0))
    w0 = run.started()[0]
    run.handle(ev.WorkerFailed(1.5, w0, "could not start: OSError: no such file"))
    kinds = [(e.kind, e.time_s) for e in run.log.events if isinstance(e, ev.WorkerChanged) and e.worker_id == w0]
    assert kinds == [("starting", 1.5), ("failed", 1.5)]
