"""What autoscalers see: a fresh per-model ScalingContext at every tick, and no dead workers."""

from __future__ import annotations

import random
import struct
from collections import deque
from dataclasses import FrozenInstanceError, fields

import numpy as np
import pytest

from controlplane import Plugin, hookimpl
from controlplane import events as ev
from controlplane.decisions import ScaleDecision
from controlplane.scaling import LATENCY_KINDS, RecentLatencies, ScalingContext, build_scaling_context
from controlplane.testing import make_trace, make_worker, replay_with
from controlplane.types import Request, WorkerState


class _Watch(Plugin):
    """Keeps every ScalingContext it is given, with the ``workers`` argument and the model's queue
    gauge beside it; defers the decision."""

    name = "watch-scaling"

    def __init__(self) -> None:
        super().__init__()
        self.seen = []
        self.workers = []
        self.queue_gauges = []

    @hookimpl
    def cp_scale(self, ctx, model, workers, scaling):
        assert list(workers) == list(scaling.workers)
        self.seen.append(scaling)
        self.workers.append(workers)
        self.queue_gauges.append(ctx.metrics["queue:" + model])
        return None


def test_counts_replicas_queue_and_kv_in_one_pass():
    ready, starting, draining = make_worker("m-0"), make_worker("m-1", state=WorkerState.STARTING), \
        make_worker("m-2", state=WorkerState.DRAINING)
    dead = make_worker("m-3", state=WorkerState.STOPPED)
    ready.waiting.extend(Request(f"w{i}", 0.0, 4, 4) for i in range(3))
    ready.running.append(Request("run", 0.0, 4, 4))
    ready.num_kv_blocks, ready.num_kv_blocks_used = 100, 25
    unrouted = [Request("u0", 0.0, 4, 4, model="m"), Request("u1", 0.0, 4, 4, model="other")]
    s = build_scaling_context(model="m", now_s=10.0, configured_replicas=2, workers=[ready, starting, draining, dead],
                              unrouted=unrouted, arrivals=6, tick_s=2.0, recent=RecentLatencies(60.0))
    assert (s.num_ready, s.num_starting, s.num_draining, s.num_current) == (1, 1, 1, 2)
    assert (s.num_queued, s.num_unrouted, s.num_running) == (4, 1, 1)
    assert s.arrivals_per_s == 3.0 and s.kv_utilization == 0.25
    assert s.workers == (ready, starting, draining)


def test_the_context_filled_through_its_slots_equals_the_constructors():
    # build_scaling_context fills a writable twin of the frozen dataclass (same slots), then makes it a
    # ScalingContext by assigning __class__ (it runs every tick)
    ready, starting = make_worker("m-0"), make_worker("m-1", state=WorkerState.STARTING)
    ready.num_kv_blocks, ready.num_kv_blocks_used = 100, 40
    starting.waiting.append(Request("w0", 0.0, 4, 4))
    recent = RecentLatencies(60.0)

    def estimate(prefill, decodes, context):
        return 0.01

    s = build_scaling_context(model="m", now_s=5.0, configured_replicas=3, workers=[ready, starting],
                              unrouted=deque([Request("u0", 0.0, 4, 4, model="m")]), arrivals=4, tick_s=2.0,
                              recent=recent, iteration_s=estimate, cold_start_s=12.5)
    want = ScalingContext(model="m", now_s=5.0, configured_replicas=3, num_ready=1, num_starting=1, num_draining=0,
                          num_queued=2, num_unrouted=1, num_running=0, arrivals_per_s=2.0, kv_utilization=0.4,
                          workers=(ready, starting), recent=recent, iteration_s=estimate, cold_start_s=12.5)
    assert type(s) is ScalingContext and s == want and repr(s) == repr(want)
    assert [getattr(s, f.name) for f in fields(ScalingContext)] == [getattr(want, f.name) for f in fields(ScalingContext)]
    with pytest.raises(FrozenInstanceError):
        s.num_ready = 2
    empty = build_scaling_context(model="m", now_s=5.0, configured_replicas=1, workers=[], unrouted=(), arrivals=0,
                                  tick_s=1.0, recent=recent)
    assert (empty.num_queued, empty.kv_utilization, empty.iteration_s, empty.cold_start_s) == (0, 0.0, None, None)


def test_latency_percentiles_cover_the_window_only():
    recent = RecentLatencies(10.0)
    for t in range(20):
        recent.add(float(t), ttft_s=float(t), e2e_s=2.0 * t, queue_s=0.0)
    s = build_scaling_context(model="m", now_s=19.0, configured_replicas=1, workers=[], unrouted=[], arrivals=0,
                              tick_s=1.0, recent=recent)
    assert s.num_recent == 11  # completed at 9..19 s
    assert s.latency_percentile("ttft", 50) == 14.0 and s.latency_percentile("e2e", 100) == 38.0
    assert s.latency_percentile("tpot", 50) is None  # none of them has one
    with pytest.raises(ValueError, match="unknown latency"):
        s.latency_percentile("itl", 50)
    empty = RecentLatencies(10.0)
    assert empty.percentile("ttft", 99) is None


def test_a_latency_percentile_asked_as_a_share_is_refused():
    """q is on numpy's 0-100 scale: q=0.9 returned about the 0.9th percentile (near the fastest request), where a
    reader of the docs' other quantile settings (shares: 0.9, 0.95) meant p90."""
    recent = RecentLatencies(100.0)
    for t in range(1, 101):
        recent.add(float(t), ttft_s=float(t))
    s = build_scaling_context(model="m", now_s=100.0, configured_replicas=1, workers=[], unrouted=[], arrivals=0,
                              tick_s=1.0, recent=recent)
    for q in (0.9, 0.5, 0.99):
        with pytest.raises(ValueError, match=r"percentile from 0 to 100 .*not a share: got 0\.9"
                           if q == 0.9 else "not a share"):
            s.latency_percentile("ttft", q)
    assert s.latency_percentile("ttft", 90) == pytest.approx(float(np.percentile(range(1, 101), 90)))
    assert s.latency_percentile("ttft", 1) == pytest.approx(float(np.percentile(range(1, 101), 1)))  # p1
    assert s.latency_percentile("ttft", 0) == 1.0 and s.latency_percentile("ttft", 100) == 100.0


@pytest.mark.parametrize("seed", range(3))
def test_a_window_asked_at_every_tick_answers_as_numpy_on_the_walked_window(seed):
    """Once asked, a latency's values are kept sorted as requests come and go: every answer equals numpy's linear
    percentile of the window walked afresh, bit for bit (ties, windows past the length numpy then sorts itself,
    a latency that some requests lack), and a latency that takes a NaN, an infinity or a -0.0 is walked again."""
    rng = random.Random(seed)
    recent, mirror = RecentLatencies(5.0), RecentLatencies(5.0)  # (the mirror is never asked: walked here)
    t, asked, longest = 0.0, 0, 0
    for step in range(6000):
        t += rng.expovariate(300.0 if step // 1500 % 2 else 20.0)  # (windows of ~100 and ~1,500 requests)
        row = dict(ttft_s=rng.choice([0.25, 0.5, rng.lognormvariate(-1.0, 1.0)]), e2e_s=rng.uniform(0.0, 9.0),
                   queue_s=rng.choice([None, 0.0, rng.random()]), tpot_s=rng.choice([None, rng.random() / 10]))
        if seed == 2 and step == 4000:
            row["queue_s"] = -0.0
        for r in (recent, mirror):
            r.add(t, **row)
            r.prune(t)
        longest = max(longest, len(recent))
        if step % 7 == 0:
            for kind in LATENCY_KINDS:
                q = rng.choice([50, 90, 99, 100, 0, rng.uniform(0.0, 100.0)])
                values = [it[1 + LATENCY_KINDS.index(kind)] for it in mirror._items]
                values = [v for v in values if v is not None]
                want = float(np.percentile(values, q)) if values else None
                got = recent.percentile(kind, q)
                assert (got is None) == (want is None)
                assert got is None or struct.pack("<d", got) == struct.pack("<d", want)  # (bit for bit)
                asked += 1
    assert len(recent) == len(mirror) and asked > 3000
    assert set(recent._ranked) == ({1, 2, 3} if seed == 2 else {1, 2, 3, 4})  # (queue: walked after its -0.0)
    assert longest > 1000  # (past the 512 values `short_percentile` sorts itself)


def test_the_scaler_sees_this_tick_s_queue_and_arrivals_per_model():
    watch = _Watch()
    res = replay_with(watch, trace=make_trace(200, qps=20, seed=1),
                      cluster={"models": [{"name": "default", "replicas": 1, "max_num_seqs": 2}]},
                      control={"tick_s": 1.0, "metrics_interval_s": 5.0})
    assert len(watch.seen) >= 10
    # Every tick's context is new and counts at that tick: the queue gauge sampled every 5 s
    # would repeat itself between samples; the context does not have to.
    queues = [s.num_queued for s in watch.seen]
    assert len(set(queues)) > len(queues) // 5
    assert sum(s.arrivals_per_s for s in watch.seen) == pytest.approx(200, abs=20)
    assert any(s.num_recent > 0 and s.latency_percentile("ttft", 50) is not None for s in watch.seen)
    assert res.summary["num_completed"] == 200


def test_the_stored_arrival_rate_counts_every_arrival_since_the_last_sample():
    """It was the last tick's rate alone: a burst between two samples vanished from the series and the plot."""
    from controlplane.events import MetricSample
    from dataclasses import replace

    trace = [replace(t, arrival_s=2.5 + 0.01 * i) for i, t in enumerate(make_trace(40, seed=1))]  # a burst at 2.5 s
    trace += [replace(t, request_id=f"late{i}", arrival_s=6.5 + i) for i, t in enumerate(make_trace(3, seed=2))]
    trace += [replace(trace[0], request_id="last", arrival_s=20.0)]  # the run goes on past the samples at 11 and 16
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 2}]},
                      control={"tick_s": 1.0, "metrics_interval_s": 5.0})
    rates = [(e.time_s, e.value) for e in res.events if isinstance(e, MetricSample) and e.name == "arrivals_per_s"]
    rates = [(t, v) for t, v in rates if t <= 16.0]
    windows = [t - before for (t, _), before in zip(rates, [0.0] + [t for t, _ in rates])]
    assert sum(v * w for (_, v), w in zip(rates, windows)) == pytest.approx(43)  # every arrival, once
    assert max(v for _, v in rates) == pytest.approx(40 / 5.0)  # the burst, over the 5 s it fell in


@pytest.mark.parametrize("multi_model", [False, True])
def test_the_stored_arrival_rate_ends_with_a_closing_sample_of_the_arrivals_since_the_last(multi_model):
    """docs/schema.md says the samples add up to every arrival; those after the last sample were missing (13
    arrivals at 0..12 s summed to 12): the run's end takes a closing, partial sample, per model."""
    from controlplane.events import MetricSample
    from dataclasses import replace

    trace = [replace(t, arrival_s=float(i), model="default") for i, t in enumerate(make_trace(13, seed=3))]
    models = [{"name": "default", "replicas": 1}] + ([{"name": "other", "replicas": 1}] if multi_model else [])
    res = replay_with(trace=trace, cluster={"models": models}, control={"tick_s": 1.0, "metrics_interval_s": 5.0})
    samples = [e for e in res.events if isinstance(e, MetricSample)]
    rates = [(e.time_s, e.value) for e in samples if e.name == "arrivals_per_s" and e.labels["model"] == "default"]
    windows = [t - before for (t, _), before in zip(rates, [0.0] + [t for t, _ in rates])]
    assert sum(v * w for (_, v), w in zip(rates, windows)) == pytest.approx(13)  # every arrival, once
    end = res.summary["sim_end_s"]
    assert rates[-1][0] == pytest.approx(end) and 10.0 < end and all(w > 0 for w in windows)
    last = {e.name for e in samples if e.time_s == rates[-1][0] and e.labels["model"] == "default"}
    assert last == {"replicas", "replicas_starting", "queue_length", "running", "kv_utilization", "arrivals_per_s"}
    if multi_model:
        other = [e.value for e in samples if e.name == "arrivals_per_s" and e.labels["model"] == "other"]
        assert other and sum(other) == 0


class _UpThenDown(Plugin):
    """Three replicas for 5 s, then one: two drain and stop."""

    name = "up-then-down"

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return ScaleDecision(model, 3 if ctx.now_s < 5 else 1, "test")


def test_stopped_workers_are_forgotten():
    watch = _Watch()
    res = replay_with(watch, _UpThenDown(), trace=make_trace(120, qps=10, seed=2),  # (watch first: it answers none)
                      cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": 1.0}]})
    stopped = {e.worker_id for e in res.events if isinstance(e, ev.WorkerChanged) and e.kind == "stopped"
               and e.detail is None}  # (scaled down: not the run end's stops, "run ended")
    assert len(stopped) >= 2
    late = [s for s in watch.seen if s.now_s > 8]
    assert late and all(len(s.workers) == 1 and s.num_draining == 0 for s in late)
    assert all(w.worker_id not in stopped for s in late for w in s.workers)
    assert res.summary["num_completed"] == 120


def test_error_rate_counts_rejections_and_failures_in_the_window():
    recent = RecentLatencies(10.0)
    recent.add(1.0, ttft_s=0.1, e2e_s=1.0, queue_s=0.0, tpot_s=0.02)
    recent.add(12.0, ttft_s=0.1, e2e_s=1.0, queue_s=0.0, tpot_s=None)
    recent.add_error(2.0)
    recent.add_error(13.0)
    s = build_scaling_context(model="m", now_s=15.0, configured_replicas=1, workers=[], unrouted=[], arrivals=0,
                              tick_s=1.0, recent=recent)
    assert (s.num_recent, s.recent.num_errors, s.error_rate) == (1, 1, 0.5)
    assert s.latency_percentile("tpot", 50) is None  # the one left in the window has no TPOT


def test_the_scaler_sees_rejections_as_errors():
    watch = _Watch()
    replay_with(watch, trace=make_trace(60, qps=10, seed=4),
                cluster={"models": [{"name": "default", "replicas": 1, "max_model_len": 300}]})
    assert max(s.error_rate for s in watch.seen) > 0


def test_arguments_by_position_as_the_core_passes_them_build_the_same_context():
    ready = make_worker("m-0")
    recent = RecentLatencies(60.0)
    by_name = build_scaling_context(model="m", now_s=3.0, configured_replicas=2, workers=[ready], unrouted=(),
                                    arrivals=5, tick_s=1.0, recent=recent, iteration_s=None, cold_start_s=4.0)
    assert build_scaling_context("m", 3.0, 2, [ready], (), 5, 1.0, recent, None, 4.0) == by_name


def test_the_scaler_gets_the_contexts_alive_workers_as_they_are():
    watch = _Watch()
    replay_with(watch, trace=make_trace(20, qps=10, seed=3), cluster={"models": [{"name": "default", "replicas": 2}]})
    assert watch.seen and all(w is s.workers and type(w) is tuple for w, s in zip(watch.workers, watch.seen))


def test_each_models_queue_gauge_and_configured_replicas_are_its_own_at_every_tick():
    watch = _Watch()
    replay_with(watch, trace=make_trace(60, qps=20, seed=5),
                cluster={"models": [{"name": "a", "replicas": 1, "max_num_seqs": 2}, {"name": "b", "replicas": 2}]})
    assert {s.model for s in watch.seen} == {"a", "b"}
    assert all(g == s.num_queued for g, s in zip(watch.queue_gauges, watch.seen))
    assert any(s.num_queued > 0 for s in watch.seen if s.model == "a")
    assert {(s.model, s.configured_replicas) for s in watch.seen} == {("a", 1), ("b", 2)}


def test_an_iteration_estimate_says_whether_it_takes_a_prefill_context():
    import functools

    from controlplane.scaling import takes_prefill_context

    def three(prefill_tokens, decode_seqs, decode_context_tokens):
        return 0.01

    def four(model, prefill_tokens, decode_seqs, decode_context_tokens, prefill_context_tokens=0):
        return 0.01

    assert not takes_prefill_context(None) and not takes_prefill_context(three)
    assert takes_prefill_context(functools.partial(four, "m"))  # bound to a model, as the core binds it
    assert not takes_prefill_context(functools.partial(three, 1))
    assert takes_prefill_context(lambda *args: 0.01)
    assert not takes_prefill_context(max)  # a builtin whose signature cannot be read: no error, and no


def test_a_tick_a_little_early_still_takes_its_sample():
    """Live ticks come a little early or late: with metrics_interval_s = tick_s, a tick 0.999 s after the last
    skipped its sample (half of them lost, the /metrics gauges updated every 2 s)."""
    from controlplane.events import MetricSample, Tick
    from controlplane.session import RunSession
    from controlplane.testing import EventLog, make_config

    log = EventLog()
    session = RunSession(make_config(control={"tick_s": 1.0, "metrics_interval_s": 1.0}), mode="live", record=False,
                         extra_plugins=[log])
    session.core.start()
    times = [1.0, 1.999, 2.998, 4.001, 4.999]
    for t in times:
        session.core.handle(Tick(t))
    sampled = sorted({e.time_s for e in log.events if isinstance(e, MetricSample) and e.name == "replicas"})
    assert sampled == times
