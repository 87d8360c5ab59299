"""The core's worker lifecycle (`controlplane.worker_lifecycle`): what happens to requests when a
model's workers cannot start. Driven event by event, as the live driver drives it."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane import Plugin, hookimpl
from controlplane import actions as act
from controlplane import events as ev
from controlplane.decisions import ScaleDecision
from controlplane.session import RunSession
from controlplane.testing import EventLog, make_config, make_trace, replay_with, stored_rows
from controlplane.worker_lifecycle import RUN_ENDED
from controlplane.types import UNLIMITED_KV_BLOCKS, ReasonCode, Request, RequestStatus, WorkerState

ERROR = "could not start: OSError: no file named model.safetensors\n  in /models/x"


class Run:
    """A one-model run whose workers start only when told (`WorkerReady` / `WorkerFailed` by hand)."""

    def __init__(self, replicas: int = 1, *plugins: Any) -> None:
        self.log = EventLog()
        cfg = make_config(cluster={"models": [{"name": "m", "replicas": replicas}], "max_retries": 2})
        self.core = RunSession(cfg, mode="live", record=False, extra_plugins=[*plugins, self.log]).core
        self.actions: list[Any] = list(self.core.start())

    def handle(self, event: Any) -> list[Any]:
        out = self.core.handle(event)
        self.actions.extend(out)
        return out

    def started(self) -> list[str]:
        return [a.worker_id for a in self.actions if isinstance(a, act.StartWorker)]

    def arrive(self, rid: str, t: float) -> Request:
        r = Request(rid, t, 10, 4, model="m")
        self.handle(ev.RequestArrived(t, r))
        return r

    def finished(self) -> list[str]:
        return [a.request.request_id for a in self.actions if isinstance(a, act.FinishRequest)]


def test_a_failed_start_refuses_at_once_the_requests_that_have_no_worker_to_wait_for():
    run = Run()
    (w0,) = run.started()
    waiting = run.arrive("q0", 0.1)  # a start is in progress: it waits, on the starting worker
    assert waiting.status is RequestStatus.WAITING and waiting.worker_id == w0
    assert run.core.models_down() == {}
    run.handle(ev.WorkerFailed(0.5, w0, ERROR))
    # The start failed and none is in progress: the waiting request is refused, not left to time out.
    assert waiting.status is RequestStatus.REJECTED and waiting.reason_code is ReasonCode.UNAVAILABLE
    assert waiting.reason == ("model 'm' has no worker up or starting; its last start failed: could not start: "
                              "OSError: no file named model.safetensors in /models/x")  # one line
    late = run.arrive("q1", 0.6)
    assert late.status is RequestStatus.REJECTED and late.reason == waiting.reason and late.finish_s == 0.6
    assert run.finished() == ["q0", "q1"]  # each one answered, none dropped
    rejects = [d for d in run.log.decisions if d.action == "reject"]
    assert [(d.subject, d.hook, d.plugin, d.payload) for d in rejects] == [
        (rid, "cp_route_request", "core", {"code": "unavailable"}) for rid in ("q0", "q1")]
    assert run.core.models_down() == {"m": waiting.reason.split("its last start failed: ")[1]}
    summary = run.core.finish()
    assert summary["num_rejected"] == 2


def test_requests_wait_again_while_a_new_start_is_in_progress_and_a_ready_worker_clears_the_failure():
    run = Run()
    (w0,) = run.started()
    run.handle(ev.WorkerFailed(0.5, w0, ERROR))
    run.handle(ev.Tick(1.0))  # fixed-replicas starts a replacement
    (_, w1) = run.started()
    assert run.core.workers[w1].state is WorkerState.STARTING and run.core.models_down() == {}
    r = run.arrive("q0", 1.1)
    assert r.status is RequestStatus.WAITING and r.worker_id == w1
    run.handle(ev.WorkerReady(2.0, w1))
    assert r.status is RequestStatus.RUNNING
    run.handle(ev.WorkerFailed(3.0, w1, "worker process 42 was killed by SIGKILL"))  # a crash, not a start
    lost = run.arrive("q1", 3.1)
    assert lost.status is RequestStatus.WAITING and lost in run.core.unrouted  # waits for the replacement
    assert r.status is RequestStatus.WAITING and r.num_retries == 1  # re-routed, waiting too
    assert run.core.models_down() == {}


def test_requests_waiting_for_a_replacement_are_refused_when_its_start_fails():
    run = Run()
    (w0,) = run.started()
    run.handle(ev.WorkerReady(0.1, w0))
    run.handle(ev.WorkerFailed(0.2, w0, "worker process 42 was killed by SIGKILL"))
    r = run.arrive("q0", 0.3)
    assert r in run.core.unrouted
    run.handle(ev.Tick(1.0))
    (_, w1) = run.started()
    assert r.status is RequestStatus.WAITING and r.worker_id == w1  # waits on the start in progress
    run.handle(ev.WorkerFailed(1.5, w1, "could not start: CUDA out of memory"))
    assert r.status is RequestStatus.REJECTED and r.reason_code is ReasonCode.UNAVAILABLE
    assert r.reason.endswith("its last start failed: could not start: CUDA out of memory")
    assert not run.core.unrouted


def test_requests_that_waited_for_a_worker_go_to_the_one_started_ahead_of_later_arrivals():
    # They waited in `unrouted` until the first worker was ready while later arrivals queued on the starting
    # worker, so the requests that woke the model were served last (scale-to-zero: TTFT 57 s against 20 s)
    run = Run()
    (w0,) = run.started()
    run.handle(ev.WorkerReady(0.1, w0))
    run.handle(ev.WorkerFailed(0.2, w0, "worker process 42 was killed by SIGKILL"))
    first = [run.arrive(f"q{i}", 0.3 + i / 10) for i in range(3)]
    assert all(r in run.core.unrouted for r in first)
    run.handle(ev.Tick(1.0))  # fixed-replicas starts a replacement
    (_, w1) = run.started()
    assert not run.core.unrouted and [r.worker_id for r in first] == [w1] * 3
    later = run.arrive("late", 1.1)
    assert [r.request_id for r in run.core.workers[w1].waiting] == ["q0", "q1", "q2", "late"]
    run.handle(ev.WorkerReady(2.0, w1))
    assert all(r.status is RequestStatus.RUNNING for r in first) and later.status is RequestStatus.RUNNING


def test_one_failed_start_of_two_leaves_the_requests_to_the_other():
    run = Run(replicas=2)
    w0, w1 = run.started()
    run.handle(ev.WorkerFailed(0.5, w0, ERROR))
    r = run.arrive("q0", 0.6)
    assert r.status is RequestStatus.WAITING and r.worker_id == w1
    assert run.core.models_down() == {}


def test_a_failed_start_beside_a_ready_worker_is_not_taken_for_a_model_that_cannot_start():
    run = Run(replicas=2)
    w0, w1 = run.started()
    run.handle(ev.WorkerReady(0.1, w0))
    run.handle(ev.WorkerFailed(0.2, w1, ERROR))  # the second replica cannot start, the first serves
    assert run.core.models_down() == {}
    r = run.arrive("q0", 0.3)
    run.handle(ev.WorkerFailed(0.4, w0, "worker process 42 was killed by SIGKILL"))  # then it crashes
    assert r.status is RequestStatus.WAITING and r in run.core.unrouted  # waits for a replacement
    run.handle(ev.Tick(10.0))  # after fixed-replicas' backoff (two failures in a row)
    replacements = run.started()[2:]
    assert len(replacements) == 2 and r.worker_id in replacements  # waits on one of them
    for i, wid in enumerate(replacements):
        run.handle(ev.WorkerFailed(10.1 + i / 10, wid, ERROR))
    assert r.status is RequestStatus.REJECTED and r.reason_code is ReasonCode.UNAVAILABLE  # now it cannot start


def test_the_summary_counts_the_replicas_busy_gpu_seconds_not_their_idle_time():
    log = EventLog()
    cfg = make_config(cluster={"models": [{"name": "m", "replicas": 1, "gpus_per_replica": 2}]})
    core = RunSession(cfg, mode="live", record=False, extra_plugins=[log]).core
    (start,) = [a for a in core.start() if isinstance(a, act.StartWorker)]
    core.handle(ev.WorkerReady(0.0, start.worker_id))
    out = core.handle(ev.RequestArrived(1.0, Request("q0", 1.0, 10, 1, model="m")))
    (batch,) = [a for a in out if isinstance(a, act.StartBatch)]
    core.handle(ev.BatchFinished(1.5, start.worker_id, batch.batch.batch_id, 1, busy_s=0.25))
    core.handle(ev.Tick(100.0))
    summary = core.finish()
    assert summary["gpu_busy_seconds"] == 0.5  # 0.25 s on 2 GPUs; held 100 s
    assert summary["gpu_seconds"] == 200.0


def test_the_refusal_says_when_to_retry_the_next_tick_or_the_autoscalers_backoff():
    """Retry-After of a model that cannot start: one tick after the first failure (fixed-replicas
    restarts at once), then until the restart its backoff holds back (`ScaleDecision.next_start_s`)."""
    run = Run()
    (w0,) = run.started()
    run.handle(ev.WorkerFailed(0.5, w0, ERROR))
    first = run.arrive("q0", 0.6)
    assert first.status is RequestStatus.REJECTED and first.retry_after_s == 1.0  # control.tick_s
    run.handle(ev.Tick(1.0))
    w1 = run.started()[-1]
    assert w1 != w0  # the first replacement is immediate
    run.handle(ev.WorkerFailed(1.5, w1, ERROR))
    run.handle(ev.Tick(2.0))  # 2 failures in a row: the next restart waits 5 s after the last
    assert run.started()[-1] == w1
    held = run.arrive("q1", 2.1)
    assert held.status is RequestStatus.REJECTED and abs(held.retry_after_s - (1.5 + 5.0 - 2.1)) < 1e-9


def test_a_scale_decision_for_another_model_does_not_set_this_models_retry_after():
    from controlplane import Plugin, hookimpl
    from controlplane.decisions import ScaleDecision

    class Confused(Plugin):
        name = "confused-scaler"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):  # another model's answer, with a far next start
            return ScaleDecision("other", 1, "keyed by the wrong name", next_start_s=ctx.now_s + 500.0)

    run = Run(1, Confused())
    (w0,) = run.started()
    run.handle(ev.WorkerFailed(0.5, w0, ERROR))
    run.handle(ev.Tick(1.0))  # the confused answer: recorded as the plugin's error, not applied
    refused = run.arrive("q0", 1.1)
    assert refused.status is RequestStatus.REJECTED and refused.retry_after_s == 1.0  # one tick, not 500 s


def test_requests_waiting_for_a_start_that_fails_are_told_to_ask_again_after_the_next_tick():
    """The autoscaler answers a failure (a new start, or its backoff) at its next tick: the requests
    refused as the start fails get one tick, and a retry then the backoff (docs/daemon.md)."""
    run = Run()
    (w0,) = run.started()
    run.handle(ev.WorkerFailed(0.5, w0, ERROR))
    run.handle(ev.Tick(1.0))
    w1 = run.started()[-1]
    waiting = run.arrive("q0", 1.2)
    assert waiting.worker_id == w1
    run.handle(ev.WorkerFailed(1.5, w1, ERROR))  # 2 in a row: fixed-replicas holds the next start 5 s
    assert waiting.status is RequestStatus.REJECTED and waiting.retry_after_s == 1.0
    run.handle(ev.Tick(2.0))
    retried = run.arrive("q0-again", 2.5)
    assert retried.status is RequestStatus.REJECTED and abs(retried.retry_after_s - (1.5 + 5.0 - 2.5)) < 1e-9


def test_scale_ups_none_of_whose_replicas_was_placed_are_not_counted_as_scale_events():
    """A full pool (``--max-workers``) refuses each retry of a scale-up: one change took effect (1 -> 2 placed
    one of two), the retries changed nothing; the worker events say "unplaced", not a plain crash."""
    from controlplane import Plugin, hookimpl
    from controlplane.decisions import ScaleDecision
    from controlplane.worker_lifecycle import UNPLACEABLE, UNPLACED_RETRY_S

    class Three(Plugin):
        name = "three"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            return ScaleDecision(model, 3, "wants 3")

    run = Run(1, Three())
    (w0,) = run.started()
    run.handle(ev.WorkerReady(0.1, w0))
    run.handle(ev.Tick(1.0))
    w1, w2 = run.started()[1:]
    run.handle(ev.WorkerReady(1.1, w1))
    run.handle(ev.WorkerFailed(1.1, w2, f"{UNPLACEABLE}: no free slot for {w2}"))
    t = 1.1
    for _ in range(4):  # each retry after the hold: one start, not placed
        t += UNPLACED_RETRY_S + 1.0
        run.handle(ev.Tick(t))
        retry = run.started()[-1]
        run.handle(ev.WorkerFailed(t, retry, f"{UNPLACEABLE}: no free slot for {retry}"))
    assert len(run.started()) == 7
    summary = run.core.finish()
    assert summary["num_scale_events"] == 1  # not 5
    failed = [e for e in run.log.events if isinstance(e, ev.WorkerChanged) and e.kind == "failed"]
    assert len(failed) == 5 and all(e.detail["unplaced"] is True for e in failed)


def test_a_request_re_routed_after_a_worker_failure_says_so_before_its_route():
    """The route after a failure read only the router's reason (``least loaded (10 queued+running)``), nothing of
    the failed worker: a ``reroute`` decision now comes first, naming the worker, why, and the retry."""
    run = Run(2)
    w0, w1 = run.started()
    run.handle(ev.WorkerReady(0.1, w0))
    run.handle(ev.WorkerReady(0.1, w1))
    r = run.arrive("q0", 0.2)
    lost = r.worker_id
    run.handle(ev.WorkerFailed(0.3, lost, "worker process 42 was killed by SIGKILL"))
    mine = [d for d in run.log.decisions if d.subject == "q0"]
    assert [d.action for d in mine] == ["route", "reroute", "route"]
    reroute = mine[1]
    assert (reroute.hook, reroute.plugin) == ("cp_route_request", "core")
    assert reroute.reason == (f"retry 1 of max_retries 2: worker {lost} failed: worker process 42 was killed by "
                              "SIGKILL")
    assert reroute.payload == {"worker": lost, "retry": 1}
    assert mine[2].payload["worker"] != lost and r.num_retries == 1


def test_a_request_waiting_on_a_start_that_failed_is_re_routed_without_a_retry():
    run = Run(2)
    w0, w1 = run.started()
    run.handle(ev.WorkerReady(0.1, w1))
    r = Request("q0", 0.2, 10, 4, model="m")
    run.core.workers[w0].waiting.append(r)  # (queued on the starting worker)
    r.worker_id = w0
    run.core.active[r.request_id] = r
    run.handle(ev.WorkerFailed(0.3, w0, ERROR))
    (reroute,) = [d for d in run.log.decisions if d.action == "reroute"]
    assert reroute.reason.startswith(f"worker {w0} failed: could not start") and reroute.reason.endswith(
        "before it was ready (no retry counted)")
    assert reroute.payload == {"worker": w0, "retry": 0} and r.worker_id == w1


def test_an_unlimited_kv_cache_is_stored_as_null_in_the_memory_plan():
    """No KV budget (no ``num_kv_blocks``, no known model): the plan's `UNLIMITED_KV_BLOCKS` sentinel (2**30) was
    stored as the payload's ``num_kv_blocks``, a capacity SQL sums would take for real; it is null now, and a
    budget from the config is stored as it is."""
    run = Run(1)
    run.handle(ev.WorkerReady(1.0, "m-0"))
    cfg = make_config(cluster={"models": [{"name": "m", "replicas": 1, "num_kv_blocks": 500}]})
    log = EventLog()
    core = RunSession(cfg, mode="live", record=False, extra_plugins=[log]).core
    core.start()
    core.handle(ev.WorkerReady(1.0, "m-0"))
    (unlimited,) = [d for d in run.log.decisions if d.action == "memory_plan"]
    (limited,) = [d for d in log.decisions if d.action == "memory_plan"]
    assert "unlimited" in unlimited.reason and unlimited.payload["num_kv_blocks"] is None
    assert run.core.workers["m-0"].num_kv_blocks == UNLIMITED_KV_BLOCKS  # (the core's own view is unchanged)
    assert limited.payload["num_kv_blocks"] == 500


class _UpThenDown(Plugin):
    """Three replicas from 5 s, one again from 15 s: replicas that start, stop, and stay until the run's end."""

    name = "up-then-down"

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return ScaleDecision(model, 3 if 5.0 <= ctx.now_s < 15.0 else 1, "by the clock")


def test_a_simulated_run_end_stops_every_replica_and_the_worker_events_give_its_gpu_seconds(tmp_path):
    """A simulated run recorded no stop for the replicas alive at its end (a daemon's close stops its own): their
    lifetimes were missing from ``worker_event``. Now each gets a ``stopped`` event at ``sim_end_s`` ("run
    ended"), and every replica's start-to-stop spans, times its GPUs, add up to the summary's ``gpu_seconds``."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    res = replay_with(_UpThenDown(), trace=make_trace(120, qps=4), db_url=url,
                      cluster={"models": [{"name": "default", "replicas": 1, "gpus_per_replica": 2}]})
    s = res.summary
    rows = stored_rows(url, res.run_id, "worker_events")
    spans: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "starting":
            spans[row["worker_id"]] = [row["time_s"]]
        elif row["kind"] in ("stopped", "failed"):
            spans[row["worker_id"]].append(row["time_s"])
    assert len(spans) >= 3 and all(len(span) == 2 for span in spans.values()), spans  # one start, one end each
    ended = [row for row in rows if row["detail"] == {"reason": RUN_ENDED}]
    assert ended and all(row["kind"] == "stopped" and row["time_s"] == s["sim_end_s"] for row in ended)
    assert any(row["kind"] == "stopped" and row["detail"] is None for row in rows)  # a scale-down's, before the end
    assert sum(2 * (end - start) for start, end in spans.values()) == pytest.approx(s["gpu_seconds"], abs=1e-6)


def test_a_live_run_ending_with_requests_in_flight_stops_its_replicas_once():
    run = Run(1)
    run.handle(ev.WorkerReady(1.0, "m-0"))
    run.arrive("q0", 2.0)
    run.core.clock.now_s = 9.0
    summary = run.core.finish()
    stops = [e for e in run.log.events if isinstance(e, ev.WorkerChanged) and e.kind == "stopped"]
    assert [(e.time_s, e.worker_id, e.detail) for e in stops] == [(9.0, "m-0", {"reason": RUN_ENDED})]
    assert summary["gpu_seconds"] == 9.0 and summary["num_in_flight"] == 1
    run.handle(ev.WorkerFailed(10.0, "m-0", "killed as the daemon closed"))  # a late report: ignored
    assert not [e for e in run.log.events if isinstance(e, ev.WorkerChanged) and e.kind == "failed"]


def test_a_scale_up_held_back_after_an_unplaced_one_is_stored_naming_the_wait_and_starts_no_cooldown():
    """After an unplaced scale-up the core dropped the next ones for UNPLACED_RETRY_S without a row, while
    `scaling-rules` started its cooldown at each one it let through: the stored holds blamed a cooldown that did not
    exist (``cooldown: 3s left`` at 16.5 s with a 5 s cooldown and the last change at 7.0 s), and the retry came
    21 s after the unplaced start rather than 15. The core now stores the wait as a ``scale_held`` row, and the cooldown runs from changes
    the core applied (`ScalingContext.last_scale_s`): a scale-up none of whose replicas was placed starts none (it
    held the next tick's want as ``cooldown: 0s left``, live); one that placed a replica does."""
    from plugins.scaling_rules import ScalingRules
    from controlplane.worker_lifecycle import UNPLACEABLE, UNPLACED_RETRY_S

    class Three(Plugin):
        name = "three"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            return ScaleDecision(model, 3, "wants 3")

    run = Run(1, Three(), ScalingRules(ScalingRules.Settings(cooldown_s=4.0)))
    (w0,) = run.started()
    run.handle(ev.WorkerReady(0.1, w0))
    run.handle(ev.Tick(7.0))
    for w in run.started()[1:]:
        run.handle(ev.WorkerFailed(7.0, w, f"{UNPLACEABLE}: no free slot for {w}"))
    assert run.core._last_scale_s == {}  # (no change took effect)
    t = 7.0
    while t < 7.0 + UNPLACED_RETRY_S + 1.0:
        t += 0.5
        run.handle(ev.Tick(t))
        if t == 7.0 + UNPLACED_RETRY_S:  # the retry: one of its two replicas placed, the other not
            placed, refused = run.started()[-2:]
            run.handle(ev.WorkerReady(t, placed))
            run.handle(ev.WorkerFailed(t, refused, f"{UNPLACEABLE}: no free slot for {refused}"))
    scales = [d for d in run.log.decisions if d.hook == "cp_scale"]
    held = [(d.time_s, d.plugin, d.reason) for d in scales if d.action == "scale_held"]
    assert [h[:2] for h in held] == [(7.5, "core"), (22.5, "three")]  # the wait alone, once, naming itself
    assert "unplaced" in held[0][2] and f"waits until {7.0 + UNPLACED_RETRY_S:.1f}s" in held[0][2]
    assert "cooldown" not in held[0][2]
    assert [d.payload for d in scales if d.action == "scale_held"][0] == {
        "from": 1, "to": 1, "wanted": 3, "unplaced_retry_s": 7.0 + UNPLACED_RETRY_S}
    assert "rules: 3 -> 2 (cooldown: 4s left)" in held[1][2]  # the retry placed a replica: its cooldown runs
    ups = [d.time_s for d in scales if d.action == "scale"]
    assert ups == [7.0, 7.0 + UNPLACED_RETRY_S]  # the retry after the wait, not a cooldown later
