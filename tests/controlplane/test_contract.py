"""The core-driver contract: typed actions and events, exhaustive tables, reason codes."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane import actions as act
from controlplane import events as ev
from controlplane.core import ControlPlane
from controlplane.decisions import Admission, BatchPlan
from controlplane.types import ReasonCode, Request, RequestStatus
from sim.driver import SimDriver


def test_dispatch_table_names_missing_and_unknown_handlers():
    full = {t: print for t in act.ACTION_TYPES}
    assert act.dispatch_table(full, "X") == full
    partial = {t: print for t in act.ACTION_TYPES if t is not act.PreemptRequest}
    with pytest.raises(TypeError, match="X: no handler for PreemptRequest"):
        act.dispatch_table(partial, "X")
    with pytest.raises(TypeError, match="handlers for unknown action types int"):
        act.dispatch_table({**full, int: print}, "X")


def test_both_drivers_and_the_core_cover_every_type(harness):
    h = harness()
    assert set(h.core._handlers) == set(ev.INBOUND_EVENTS)
    driver = SimDriver(h.core, {}, cold_start_s={})
    assert set(driver._handlers) == set(act.ACTION_TYPES)


def test_a_core_missing_an_event_handler_fails_at_construction(harness, monkeypatch):
    class Unhandled:
        time_s = 0.0

    monkeypatch.setattr(ev, "INBOUND_EVENTS", (*ev.INBOUND_EVENTS, Unhandled))
    with pytest.raises(TypeError, match="no handler for Unhandled"):
        harness()


class _PreemptOnce(Plugin):
    """Runs both requests, then preempts the second one once."""

    name = "preempt-once"

    def __init__(self) -> None:
        super().__init__()
        self.done = False

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.waiting:
            return BatchPlan(prefill=tuple((r, r.remaining_prefill_tokens) for r in worker.waiting))
        if not self.done and len(worker.running) == 2:
            self.done = True
            return BatchPlan(decode=(worker.running[0],), preempt=(worker.running[1],))
        return None


def test_a_preemption_is_an_action_for_the_driver(harness):
    h = harness(_PreemptOnce(), cluster={"models": [{"name": "default", "replicas": 1}]})
    wid = h.worker_ids[0]
    h.handle(ev.RequestArrived(0.0, Request("a", 0.0, 8, 4)))
    h.handle(ev.RequestArrived(0.0, Request("b", 0.0, 8, 4)))
    preempts: list[act.PreemptRequest] = []
    for step in range(1, 6):  # a's prefill, b's prefill, then the policy preempts b
        out = h.handle(ev.BatchFinished(0.1 * step, wid, h.batches(h.actions)[-1].batch_id))
        preempts = [a for a in out if isinstance(a, act.PreemptRequest)]
        if preempts:
            break
    assert [(a.worker_id, a.request_id) for a in preempts] == [(wid, "b")]
    assert h.core.active["b"].num_preemptions == 1


class _Refuse(Plugin):
    name = "refuse"

    @hookimpl
    def cp_admit_request(self, ctx, request):
        if request.request_id == "limited":
            return Admission(False, "tenant over quota", code=ReasonCode.RATE_LIMITED)
        if request.request_id == "plain":
            return Admission(False, "no")
        return None


def test_rejections_carry_a_code_beside_the_reason(harness):
    h = harness(_Refuse(), cluster={"models": [{"name": "default", "replicas": 1, "max_model_len": 64}]})
    for rid, model, prompt in (("limited", None, 4), ("plain", None, 4), ("unknown", "nope", 4),
                               ("long", None, 100)):
        h.handle(ev.RequestArrived(0.0, Request(rid, 0.0, prompt, 4, model=model)))
    finished = {r.request_id: r for r in h.log.finished}
    assert {rid: finished[rid].reason_code for rid in finished} == {
        "limited": ReasonCode.RATE_LIMITED, "plain": ReasonCode.ADMISSION_DENIED,
        "unknown": ReasonCode.UNKNOWN_MODEL, "long": ReasonCode.TOO_LONG,
    }
    assert all(r.status is RequestStatus.REJECTED for r in finished.values())
    rejects = [d for d in h.log.decisions if d.action == "reject"]
    assert {d.payload["code"] for d in rejects} == {"rate_limited", "admission_denied", "unknown_model", "too_long"}


def test_a_request_failed_after_too_many_worker_failures_has_a_code(harness):
    h = harness(cluster={"models": [{"name": "default", "replicas": 1}], "max_retries": 0})
    h.handle(ev.RequestArrived(0.0, Request("r", 0.0, 8, 4)))
    h.handle(ev.WorkerFailed(0.1, h.worker_ids[0], "crashed"))
    (r,) = h.log.finished
    assert r.status is RequestStatus.FAILED and r.reason_code is ReasonCode.WORKER_FAILED


def test_iteration_timings_pass_through_the_core_to_observers(harness):
    h = harness()
    row = {"num_prefill_tokens": 8, "num_prefill_seqs": 1, "num_decode_seqs": 0, "sum_decode_context": 0,
           "sum_prefill_context": 0, "iteration_s": 0.01}
    assert h.handle(ev.IterationTimed(0.5, h.worker_ids[0], 3, 0.49, row)) == []
    timed = [e for e in h.log.events if isinstance(e, ev.IterationTimed)]
    assert len(timed) == 1 and timed[0].row == row


def test_multi_iteration_batches_only_when_the_driver_runs_them(harness):
    for multi in (True, False):
        h = harness(cluster={"models": [{"name": "default", "replicas": 1}]})
        h.core._multi_iteration = multi
        wid = h.worker_ids[0]
        h.handle(ev.RequestArrived(0.0, Request("r", 0.0, 8, 50)))
        (prefill,) = h.batches(h.actions)
        assert prefill.max_iterations == (50 if multi else 1)
        h.handle(ev.BatchFinished(0.1, wid, prefill.batch_id, num_iterations=prefill.max_iterations))


def test_live_sessions_plan_one_iteration_per_batch():
    from controlplane.session import RunSession
    from controlplane.testing import make_config

    for mode, exact, multi in (("sim", False, True), ("sim", True, False), ("live", False, False)):
        with RunSession(make_config(sim={"exact": exact}), mode=mode, record=False) as s:
            assert isinstance(s.core, ControlPlane) and s.core._multi_iteration is multi


def test_a_request_the_driver_cannot_serve_fails_with_its_code(harness):
    h = harness(cluster={"models": [{"name": "default", "replicas": 1}]})
    wid = h.worker_ids[0]
    h.handle(ev.RequestArrived(0.0, Request("a", 0.0, 8, 4)))
    h.handle(ev.RequestArrived(0.0, Request("waiting", 0.0, 8, 4)))
    (batch,) = h.batches(h.actions)
    h.handle(ev.RequestFailed(0.05, "waiting", "quarantined", ReasonCode.WORKER_FAILED))  # not running: at once
    h.handle(ev.RequestFailed(0.05, "a", "bad logits", ReasonCode.INVALID))  # in the batch: at its boundary
    assert [r.request_id for r in h.log.finished] == ["waiting"]
    h.handle(ev.BatchFinished(0.1, wid, batch.batch_id))
    failed = {r.request_id: r for r in h.log.finished}
    assert failed["a"].status is RequestStatus.FAILED and failed["a"].reason_code is ReasonCode.INVALID
    assert failed["waiting"].reason_code is ReasonCode.WORKER_FAILED and failed["a"].reason == "bad logits"
    assert {d.action for d in h.log.decisions if d.subject in ("a", "waiting")} >= {"fail"}


def test_iteration_timings_go_to_the_plugin_set_bound_last(harness):
    from controlplane.session import fallback_plugins
    from controlplane.plugin_manager import discover_plugins
    from controlplane.testing import EventLog, make_plugin_set

    h = harness()
    after = EventLog()
    h.core.bind_plugins(make_plugin_set(after), fallback_plugins(discover_plugins()))
    row = {"num_prefill_tokens": 8, "num_prefill_seqs": 1, "num_decode_seqs": 0, "sum_decode_context": 0,
           "sum_prefill_context": 0, "iteration_s": 0.01}
    h.handle(ev.IterationTimed(0.5, h.worker_ids[0], 3, 0.49, row))
    assert [e for e in after.events if isinstance(e, ev.IterationTimed)]  # the reloaded set's observers
    assert not [e for e in h.log.events if isinstance(e, ev.IterationTimed)]  # not the set bound before
