"""Admission: the queue limit."""

from __future__ import annotations

from collections import deque

import pytest

from controlplane.testing import make_context, make_requests, make_worker
from controlplane.events import IterationTimed, RequestFinished
from controlplane.types import RequestStatus, WorkerState
from plugins.admission import QueueLimit


def _ask(settings: dict, workers, prompt_tokens: int = 100):
    request = make_requests(1, prompt_tokens=prompt_tokens, model="default")[0]
    plugin = QueueLimit(QueueLimit.Settings(**settings))
    return plugin.cp_admit_request(ctx=make_context(workers=workers), request=request)


def test_admits_everything_by_default():
    w = make_worker(waiting=deque(make_requests(1000)))
    assert _ask({}, [w]) is None  # it defers: admission policies listed after it still decide


def test_max_queued_counts_every_replica_of_the_model():
    a = make_worker("default-0", waiting=deque(make_requests(3)))
    b = make_worker("default-1", waiting=deque(make_requests(2, prefix="b")))
    other = make_worker("chat-0", model="chat", waiting=deque(make_requests(50, prefix="c")))
    assert _ask({"max_queued": 6}, [a, b, other]) is None
    d = _ask({"max_queued": 5}, [a, b, other])
    assert not d.admit and d.reason == "queue full: 5 waiting >= limit 5"


def test_max_queued_per_replica_scales_with_replicas_that_accept_requests():
    a = make_worker("default-0", waiting=deque(make_requests(4)))
    b = make_worker("default-1")
    assert _ask({"max_queued_per_replica": 2}, [a, b]).admit is False
    assert _ask({"max_queued_per_replica": 3}, [a, b]) is None
    b.state = WorkerState.DRAINING
    assert _ask({"max_queued_per_replica": 3}, [a, b]).admit is False


def test_max_prompt_tokens():
    d = _ask({"max_prompt_tokens": 50}, [make_worker()], prompt_tokens=51)
    assert not d.admit and d.reason == "prompt too long: 51 > 50 tokens"


def test_settings_are_validated():
    with pytest.raises(ValueError):
        QueueLimit.Settings(max_queued=-1)


def test_without_a_limit_it_withdraws_its_hook():
    """No limit set: every request would be deferred, so it is not asked (`Plugin.withdraw`)."""
    marked = "controlplane_impl"
    assert getattr(QueueLimit().cp_admit_request, marked, None) is None
    for limit in ({"max_queued": 3}, {"max_queued_per_replica": 1}, {"max_prompt_tokens": 10}):
        assert getattr(QueueLimit(QueueLimit.Settings(**limit)).cp_admit_request, marked, None) is not None


def _busy_worker(**fields):
    from controlplane.testing import make_worker as mw

    running = make_requests(4, prefix="run", model="default")
    for r in running:
        r.max_output_tokens, r.output_tokens, r.scheduled_s = 100, 0, 0.0
        r.num_computed_tokens = r.prompt_tokens  # prefilled (make_worker would sample its first token too)
    return mw(running=running, max_num_seqs=4, **fields)


def _timed_queue_limit(w, iteration_s: float) -> tuple[QueueLimit, float]:
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=8))
    plugin._finish.look(w, 0.0)
    for r in w.running:
        r.output_tokens += 10
    plugin._finish.look(w, 10 * iteration_s)
    return plugin, 10 * iteration_s


def test_max_finish_s_refuses_what_cannot_finish_in_time_with_an_honest_retry_after():
    w = _busy_worker()
    plugin, now = _timed_queue_limit(w, 0.05)
    w.waiting = deque(make_requests(4, prefix="q", model="default"))
    for r in w.waiting:
        r.max_output_tokens = 100
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 100
    ctx = make_context(workers=[w], now_s=now + 0.01)  # (before the next look: the same iteration time)
    d = plugin.cp_admit_request(ctx=ctx, request=new)
    # ahead: 4 x 90 + 4 x 100 = 760 tokens over 4 slots at 0.05 s = 9.5 s, then 5 s of its own
    assert d is not None and not d.admit and d.code.value == "admission_denied"
    assert "predicted to finish in 14.5 s > max_finish_s 8 s" in d.reason
    assert abs(d.retry_after_s - 6.5) < 1e-6
    new.max_output_tokens = 1
    w.waiting.clear()  # a free slot? none (4 running of 4): 4 x 90 / 4 x 0.05 + 0.05 = 4.55 s
    assert plugin.cp_admit_request(ctx=ctx, request=new) is None


def test_max_finish_s_admits_to_free_slots_before_any_time_and_always_to_an_idle_replica():
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=8))
    new = make_requests(1, prefix="new", model="default")[0]
    w = _busy_worker()
    strict = QueueLimit(QueueLimit.Settings(max_finish_s=8, untimed_waiting_per_slot=0))
    d = strict.cp_admit_request(ctx=make_context(workers=[w]), request=new)  # full batch, nothing timed
    assert not d.admit and "no iteration was timed yet" in d.reason
    w.max_num_seqs = 8
    assert plugin.cp_admit_request(ctx=make_context(workers=[w]), request=new) is None
    slow = _busy_worker()
    plugin, now = _timed_queue_limit(slow, 10.0)  # 10 s an iteration: nothing fits in 8 s
    slow.running.clear()
    ctx = make_context(workers=[slow], now_s=now)
    assert plugin.cp_admit_request(ctx=ctx, request=new) is None  # idle: it learns again


def test_max_finish_s_still_refuses_a_burst_after_the_replicas_sat_idle_past_the_horizon():
    """Timed, then idle 70 s (past ``iteration_horizon_s``), then a burst of long requests with
    batch slots free: the last known time predicts them late and they are refused (429), where
    forgetting it admitted the whole burst blind to the free slots and all of it timed out."""
    w = _busy_worker()
    plugin, now = _timed_queue_limit(w, 0.05)
    w.max_num_seqs = 128
    for r in w.running:
        r.max_output_tokens, r.output_tokens = 300, 10
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 300
    d = plugin.cp_admit_request(ctx=make_context(workers=[w], now_s=now + 70.0), request=new)
    assert d is not None and not d.admit and "predicted to finish in 30.0 s > max_finish_s 8 s" in d.reason  # (300 at 0.1 s: 0.05 at 4, batch 5)


def test_max_finish_s_predicts_from_the_workers_own_iteration_timings_before_any_span():
    """One short answer (20 iterations in 60 ms: no span of ``SAMPLE_S``) was all a daemon served, so
    nothing counted as timed and a burst of long requests was admitted blind to 128 free slots (all of
    them timed out); the worker's own timing of its decode iterations now predicts them late."""
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=8))
    short = make_requests(1, prefix="short", model="default")[0]
    short.max_output_tokens, short.scheduled_s = 20, 0.0
    w = make_worker(running=[short], max_num_seqs=128)
    ctx = make_context(workers=[w], now_s=0.0)
    prefill = {"num_prefill_seqs": 1, "num_prefill_tokens": 11, "num_decode_seqs": 0, "iteration_s": 0.008}
    plugin.cp_on_event(ctx=ctx, event=IterationTimed(0.008, w.worker_id, 0, 0.0, prefill))
    for i in range(1, 20):
        short.output_tokens = i
        row = {"num_prefill_seqs": 0, "num_decode_seqs": 1, "iteration_s": 0.003}
        plugin.cp_on_event(ctx=ctx, event=IterationTimed(0.008 + 0.003 * i, w.worker_id, i, 0.005 + 0.003 * i, row))
    burst = make_requests(100, prefix="burst", model="default")
    for r in burst:
        r.max_output_tokens, r.scheduled_s = 300, 70.0
    w.running = burst
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 300
    d = plugin.cp_admit_request(ctx=make_context(workers=[w], now_s=70.0), request=new)
    assert d is not None and not d.admit and "3 ms per iteration" not in d.reason  # (at 128: 3 ms x 128)
    assert "predicted to finish in" in d.reason and "384 ms per iteration" in d.reason, d.reason


def test_max_finish_s_is_off_by_default_so_the_simulator_is_unchanged():
    marked = "controlplane_impl"
    plugin = QueueLimit()
    assert getattr(plugin.cp_on_event, marked, None) is None
    assert getattr(QueueLimit(QueueLimit.Settings(max_finish_s=5)).cp_on_event, marked, None) is not None


def test_max_finish_s_times_a_lone_long_request_from_its_iterations():
    """A live worker running one long request, nothing arriving or finishing for 120 s (past
    ``iteration_horizon_s``): its iterations (``IterationTimed``) keep its time measured, so a
    request arriving then is predicted, not refused as if nothing had been timed."""
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=8, untimed_waiting_per_slot=0))
    lone = make_requests(1, prefix="lone", model="default")[0]
    lone.max_output_tokens, lone.output_tokens, lone.scheduled_s = 100_000, 0, 0.0
    w = make_worker(running=[lone], max_num_seqs=1)
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 10
    ctx = make_context(workers=[w], now_s=0.0)
    assert "no iteration was timed yet" in plugin.cp_admit_request(ctx=ctx, request=new).reason  # a look
    now = 0.0
    for i in range(1200):  # 0.1 s an iteration: its reply, then the core counts its token
        plugin.cp_on_event(ctx=ctx, event=IterationTimed(now + 0.1, w.worker_id, i, now, {}))
        lone.output_tokens += 1
        now += 0.1
    assert plugin._finish.iteration_s("default", 1, now) == pytest.approx(0.1, rel=1e-9)
    ctx = make_context(workers=[w], now_s=now)
    d = plugin.cp_admit_request(ctx=ctx, request=new)  # waits for the lone request's 1-slot batch
    assert d is not None and "predicted to finish in" in d.reason and "100 ms per iteration" in d.reason
    plugin.cp_on_event(ctx=ctx, event=IterationTimed(now, "gone-0", 0, now - 0.1, {}))  # not a worker: no-op


def _long_max_tokens_case(answer_tokens: int | None, answers: int = 20):
    """4 of 4 slots running (60 tokens made, max_tokens 4096) at 50 ms an iteration, a new request
    asking max_tokens 4096, after ``answers`` answers of ``answer_tokens`` finished (None: none)."""
    w = _busy_worker()
    for r in w.running:
        r.max_output_tokens, r.output_tokens = 4096, 50
    plugin, now = _timed_queue_limit(w, 0.05)
    ctx = make_context(workers=[w], now_s=now + 0.01)
    if answer_tokens is not None:
        for r in make_requests(answers, prefix="done", model="default"):
            r.status, r.output_tokens, r.max_output_tokens = RequestStatus.COMPLETED, answer_tokens, 4096
            plugin.cp_on_event(ctx=ctx, event=RequestFinished(now, r))
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 4096
    return plugin.cp_admit_request(ctx=ctx, request=new)


def test_max_finish_s_admits_a_large_max_tokens_request_when_the_runs_answers_are_short():
    # ahead: 4 x (100 - 60) expected tokens over 4 slots at 0.05 s = 2 s, then 100 tokens: 7 s <= 8 s
    assert _long_max_tokens_case(answer_tokens=100) is None
    # counting max_tokens in full: 4 x 4036 / 4 x 0.05 + 4096 x 0.05 = 406.6 s
    d = _long_max_tokens_case(answer_tokens=None)
    assert not d.admit and "predicted to finish in 406.6 s" in d.reason and "(4096 tokens at 50 ms" in d.reason


def test_max_finish_s_still_refuses_when_the_runs_answers_are_long():
    d = _long_max_tokens_case(answer_tokens=3000)  # 4 x 2940 / 4 x 0.05 + 3000 x 0.05 = 297 s
    assert not d.admit and "predicted to finish in 297.0 s" in d.reason
    assert "(3000 of max_tokens 4096 expected at 50 ms per iteration" in d.reason


def test_max_finish_s_counts_max_tokens_until_enough_answers_finished():
    d = _long_max_tokens_case(answer_tokens=100, answers=19)  # output_min_finished 20: cold start
    assert not d.admit and "predicted to finish in 406.6 s" in d.reason


def test_max_finish_s_counts_the_work_ahead_at_the_mean_answer_and_the_request_at_the_quantile():
    w = _busy_worker()
    for r in w.running:
        r.max_output_tokens = 4096
    plugin, now = _timed_queue_limit(w, 0.05)  # 4 of 4 slots running, 10 tokens made each
    w.waiting = deque(make_requests(4, prefix="q", model="default"))
    for r in w.waiting:
        r.max_output_tokens = 4096
    ctx = make_context(workers=[w], now_s=now + 0.01)
    for i, tokens in enumerate([20] * 16 + [200] * 4):  # p90 (nearest rank) 200, mean 56
        r = make_requests(1, prefix=f"done{i}-", model="default")[0]
        r.status, r.output_tokens, r.max_output_tokens = RequestStatus.COMPLETED, tokens, 4096
        plugin.cp_on_event(ctx=ctx, event=RequestFinished(now, r))
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 40
    # ahead: 4 x (56 - 10) + 4 x 56 = 408 tokens over 4 slots at 0.05 s = 5.1 s, then 40: 7.1 s <= 8 s
    # (at the quantile for each: 4 x 190 + 4 x 200 = 1560 tokens: 19.5 s + 2 s, refused)
    assert plugin.cp_admit_request(ctx=ctx, request=new) is None
    new.max_output_tokens = 4096  # its own length at the quantile: 5.1 s + 200 x 0.05 s = 15.1 s
    d = plugin.cp_admit_request(ctx=ctx, request=new)
    assert not d.admit and "predicted to finish in 15.1 s" in d.reason and "(200 of max_tokens 4096" in d.reason
    for r in w.running:  # 30 made: longer than the 20s, so one of the 200s: 4 x 170 + 4 x 56 = 904 tokens
        r.output_tokens = 30
    d = plugin.cp_admit_request(ctx=ctx, request=new)
    assert not d.admit and "predicted to finish in 21.3 s" in d.reason


def test_iteration_horizon_s_reaches_the_estimator_and_is_validated():
    assert QueueLimit(QueueLimit.Settings(max_finish_s=5, iteration_horizon_s=7))._finish.horizon_s == 7
    with pytest.raises(ValueError):
        QueueLimit.Settings(iteration_horizon_s=0)


def test_output_length_settings_are_validated():
    with pytest.raises(ValueError, match="output_min_finished"):
        QueueLimit.Settings(max_finish_s=5, output_window=10, output_min_finished=11)
    with pytest.raises(ValueError):
        QueueLimit.Settings(output_quantile=0)


# --- max_finish_s and the router ---------------------------------------------------------------------------------

def _round_robin_overload(route_on_time: bool, qps: float = 4.0, limit: float = 10.0):
    """Two replicas, the router alternating between them, every other prompt 40 times longer than the next: round
    robin sends the long prompts to one replica, which falls behind while the other is always in time. Returns
    (plugin errors, refused, share of the admitted finishing within ``limit``, the admitted requests' reroutes)."""
    from dataclasses import replace

    import numpy as np

    from controlplane.testing import decisions_in, make_trace, replay_with

    trace = make_trace(1200, qps=qps, prompt_tokens=2000, output_tokens=30, seed=4)
    trace = [replace(t, prompt_tokens=t.prompt_tokens * 2 if i % 2 == 0 else max(1, t.prompt_tokens // 20))
             for i, t in enumerate(trace)]
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=limit))
    if not route_on_time:
        plugin.withdraw("cp_route_request")  # the router's choice stands, as before
    res = replay_with(plugin, trace=trace,
                      plugins={"enabled": ["round-robin", "continuous-batching", "fixed-replicas", "static-memory",
                                           "builtin-latency-models"],
                               "settings": {"continuous-batching": {"policy": "sarathi"}}},
                      cluster={"models": [{"name": "default", "replicas": 2}]})
    admitted = [r for r in res.requests if r.status is not RequestStatus.REJECTED]
    e2e = np.array([r.finish_s - r.arrival_s for r in admitted])
    moved = [d for d in decisions_in(res.events) if d.action == "route" and "queue-limit:" in (d.reason or "")]
    return res.summary["num_plugin_errors"], res.summary["num_rejected"], float(np.mean(e2e <= limit)), moved


def test_a_request_admitted_for_the_replicas_in_time_is_not_routed_to_a_late_one():
    errors, refused, within, moved = _round_robin_overload(route_on_time=False)
    assert errors == 0 and refused == 0 and within < 0.7 and not moved  # one replica always in time: all admitted
    errors, refused, within, moved = _round_robin_overload(route_on_time=True)
    assert errors == 0 and within > 0.98 and len(moved) > 20
    d = moved[0]
    assert d.plugin == "round-robin" and d.payload["worker"] in d.reason.split("max_finish_s")[1]
    assert "predicted to finish it after max_finish_s 10 s" in d.reason


def _route(plugin: QueueLimit, ctx, worker, request) -> None:
    """Route ``request`` to ``worker`` as the core does: the routing hook (the plugin wraps the router's choice),
    then the replica's queue."""
    route = plugin.cp_route_request(ctx=ctx, request=request, workers=[worker])
    next(route)
    with pytest.raises(StopIteration):
        route.send(None)  # (no router's choice: it stands)
    worker.waiting.append(request)


def test_before_any_time_a_full_replica_still_takes_a_batch_of_waiting_requests():
    """At a daemon's cold start 31 of 60 requests got 429 for the ~28 s of the first worker's load: before any
    iteration was timed, a request was refused as soon as the batch slots were taken, however long the timeout.
    Until then a replica (starting ones too) now takes ``untimed_waiting_per_slot`` (1) waiting requests per
    batch slot; beyond them the refusal says so."""
    from controlplane.testing import make_worker as mw

    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=480))
    starting = mw(max_num_seqs=4, state=WorkerState.STARTING)
    ctx = make_context(workers=[starting])
    admitted = 0
    for r in make_requests(20, prefix="cold", model="default"):
        if plugin.cp_admit_request(ctx=ctx, request=r) is None:
            admitted += 1
            _route(plugin, ctx, starting, r)
    assert admitted == 8  # its 4 batch slots, then 4 waiting behind them
    d = plugin.cp_admit_request(ctx=ctx, request=make_requests(1, prefix="late", model="default")[0])
    assert not d.admit and "untimed_waiting_per_slot 1 allows until then (up to 8 waiting)" in d.reason
    half = QueueLimit(QueueLimit.Settings(max_finish_s=480, untimed_waiting_per_slot=0.5))
    assert half.cp_admit_request(ctx=ctx, request=make_requests(1, prefix="x", model="default")[0]) is not None


def _cold_burst(stages: list[str]) -> tuple[int, list[str]]:
    """40 requests at once on one replica of 8 batch slots, before any iteration was timed, a sync guardian
    (0.5 s a check, one at a time) checking ``stages``: (how many were admitted, the refusals' reasons)."""
    from sim.traces.record import TraceRequest

    from controlplane.testing import replay_with

    trace = [TraceRequest(str(i), 0.0, 16, 4) for i in range(40)]
    res = replay_with(
        trace=trace, cluster={"models": [{"name": "default", "replicas": 1, "max_num_seqs": 8}]},
        guardians={"models": [{"name": "g", "replicas": 4, "latency": {"base_s": 0.5, "max_batch": 40}}]},
        plugins={"settings": {"queue-limit": {"max_finish_s": 600},
                              "sampled-guardian": {"rate": 1.0, "mode": "sync", "guardian": "g", "stages": stages}}})
    refused = [r.reason for r in res.requests if r.status is RequestStatus.REJECTED]
    return len(res.requests) - len(refused), refused


def test_before_any_time_requests_held_by_their_prompts_check_take_the_waiting_places_too():
    """An SRE soak: 40 requests at once on one loading replica of 8 slots, with a sync guardian checking prompts and
    answers: 27 admitted (8 slots + 8 waiting = 16 expected); checking answers only, 16. Requests admitted while
    their prompts were checked were on no replica yet, so the places looked free (the replica idle), and they were
    routed after their verdicts without being asked again. They now count against the places until routed."""
    admitted, refused = _cold_burst(["input", "output"])
    assert admitted == 16
    assert "(up to 0 waiting, and 16 admitted are not routed yet (their prompts' checks hold them))" in refused[0]
    assert _cold_burst(["output"])[0] == 16


def test_requests_admitted_and_not_routed_leave_the_count_once_routed_or_finished():
    from controlplane.testing import make_worker as mw

    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=480))
    starting = mw(max_num_seqs=2, state=WorkerState.STARTING)
    ctx = make_context(workers=[starting])
    held = make_requests(4, prefix="held", model="default")
    assert all(plugin.cp_admit_request(ctx=ctx, request=r) is None for r in held)  # 2 slots + 2 places
    assert plugin.cp_admit_request(ctx=ctx, request=make_requests(1, prefix="x", model="default")[0]).admit is False
    held[0].status = RequestStatus.REJECTED  # (refused by an admission policy after this one)
    plugin.cp_on_event(ctx=ctx, event=RequestFinished(1.0, held[0]))
    _route(plugin, ctx, starting, held[1])  # routed: waiting there, no longer counted apart
    assert plugin.cp_admit_request(ctx=ctx, request=make_requests(1, prefix="y", model="default")[0]) is None
