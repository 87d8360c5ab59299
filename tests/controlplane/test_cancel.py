"""Cancellation: a request the client gave up on leaves the system, recorded, never half-done."""

from __future__ import annotations

from controlplane import actions as act
from controlplane import events as ev
from controlplane.types import Request, RequestStatus
from tests.fixtures.common import assert_conserved

ONE = {"models": [{"name": "default", "replicas": 1}]}


def _finished(actions):
    return [a.request for a in actions if isinstance(a, act.FinishRequest)]


def test_a_waiting_request_leaves_at_once(harness):
    h = harness(cluster=ONE)
    a, b = Request("a", 0.0, 100, 50), Request("b", 0.01, 100, 50)
    h.handle(ev.RequestArrived(0.0, a))
    h.handle(ev.RequestArrived(0.01, b))
    assert b.status is RequestStatus.WAITING
    out = h.handle(ev.RequestCancelled(0.02, "b", "client disconnected"))
    assert _finished(out) == [b] and b.status is RequestStatus.CANCELLED and b.reason == "client disconnected"
    (w,) = h.core.workers.values()
    assert b not in w.waiting
    (d,) = [d for d in h.log.decisions if d.action == "cancel"]
    assert (d.subject, d.plugin, d.reason) == ("b", "core", "client disconnected")
    assert h.handle(ev.RequestCancelled(0.03, "b")) == []  # twice, or unknown: nothing happens
    assert h.handle(ev.RequestCancelled(0.03, "nobody")) == []


def test_a_running_request_leaves_at_its_batchs_next_boundary(harness):
    h = harness(cluster=ONE)
    r = Request("r", 0.0, 100, 50)
    (batch,) = h.batches(h.handle(ev.RequestArrived(0.0, r)))
    assert batch.max_iterations == 50  # the prefill, then its decodes
    out = h.handle(ev.RequestCancelled(0.1, "r"))
    assert [a.worker_id for a in out if isinstance(a, act.InterruptBatch)] == [batch.worker_id]
    assert r.status is RequestStatus.RUNNING  # the iteration in progress finishes first
    out = h.handle(ev.BatchFinished(0.12, batch.worker_id, batch.batch_id, num_iterations=3, first_end_s=0.05))
    assert _finished(out) == [r] and r.status is RequestStatus.CANCELLED
    assert (r.first_token_s, r.output_tokens) == (0.05, 3)  # what it got before leaving is kept
    (w,) = h.core.workers.values()
    assert not w.running and not w.busy and w.num_kv_blocks_used == 0
    summary = h.core.finish()
    assert summary["num_cancelled"] == 1
    assert_conserved(summary, h.log.finished)


def test_a_request_that_finishes_in_the_same_batch_completes(harness):
    h = harness(cluster=ONE)
    r = Request("r", 0.0, 100, 3)
    (batch,) = h.batches(h.handle(ev.RequestArrived(0.0, r)))
    h.handle(ev.RequestCancelled(0.01, "r"))
    out = h.handle(ev.BatchFinished(0.2, batch.worker_id, batch.batch_id, num_iterations=3, first_end_s=0.1))
    assert _finished(out) == [r] and r.status is RequestStatus.COMPLETED
    assert not h.core._cancelling


def test_a_cancelled_request_on_a_failed_worker_is_not_retried(harness):
    h = harness(cluster={"models": [{"name": "default", "replicas": 2}]})
    r = Request("r", 0.0, 100, 50)
    (batch,) = h.batches(h.handle(ev.RequestArrived(0.0, r)))
    h.handle(ev.RequestCancelled(0.01, "r"))
    out = h.handle(ev.WorkerFailed(0.02, batch.worker_id, "gone"))
    assert _finished(out) == [r] and r.status is RequestStatus.CANCELLED and r.num_retries == 0
    assert not h.batches(out)
