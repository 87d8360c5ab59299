"""The control loop's ticks: a scaler's steady answer is not asked again until a worker changes, and the
ticks that skip the question write the same gauges, samples and decisions as ticks that ask it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import plugins.autoscaling as autoscaling
from controlplane import Plugin, hookimpl
from controlplane import actions as act
from controlplane import events as ev
from controlplane.decisions import ScaleDecision
from controlplane.scaling import RecentLatencies, SteadyScaleDecision, build_scaling_context, count_queued
from controlplane.testing import make_config, make_trace, make_worker, replay_with
from controlplane.types import Decision, Request, WorkerState
from plugins.autoscaling import FixedReplicas


def _count_fixed_replicas_questions(monkeypatch) -> list[float]:
    """Patch `fixed-replicas`' ``cp_scale`` to note the time of every question (before the plugin is made)."""
    asked: list[float] = []
    original = FixedReplicas.cp_scale

    @hookimpl
    def cp_scale(self, ctx, model, workers, scaling):
        asked.append(ctx.now_s)
        return original(self, ctx, model, workers, scaling)

    monkeypatch.setattr(FixedReplicas, "cp_scale", cp_scale)
    return asked


def test_a_steady_answer_is_asked_again_only_after_a_worker_changes(harness, monkeypatch):
    asked = _count_fixed_replicas_questions(monkeypatch)
    h = harness(cluster={"models": [{"name": "default", "replicas": 2}]})
    assert "cp_scale" in h.core.calls.single_answer  # fixed-replicas alone answers
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):  # a sample at 1 and at 6: not asked at either
        h.handle(ev.Tick(t))
    assert asked == [1.0]
    h.handle(ev.WorkerFailed(6.5, h.worker_ids[0], "test"))
    started = [a for t in (7.0, 8.0, 9.0) for a in h.handle(ev.Tick(t)) if isinstance(a, act.StartWorker)]
    assert asked == [1.0, 7.0, 8.0]  # the restore (a worker starts: a change), then steady again at 8
    assert len(started) == 1
    h.handle(ev.WorkerReady(9.5, started[0].worker_id))
    h.handle(ev.Tick(10.0))
    h.handle(ev.Tick(11.0))
    assert asked == [1.0, 7.0, 8.0, 10.0]


class _AlsoScales(Plugin):
    """A second ``cp_scale`` implementation that defers: fixed-replicas is no longer the only answerer."""

    name = "also-scales"

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return None


def test_with_a_second_scaler_the_steady_answer_is_asked_every_tick(harness, monkeypatch):
    asked = _count_fixed_replicas_questions(monkeypatch)
    h = harness(_AlsoScales(), cluster={"models": [{"name": "default", "replicas": 1}]})
    assert "cp_scale" not in h.core.calls.single_answer
    for t in (1.0, 2.0, 3.0):
        h.handle(ev.Tick(t))
    assert asked == [1.0, 2.0, 3.0]


class _SteadyThirdParty(Plugin):
    """Another project's autoscaler that keeps two replicas and says so with a steady answer."""

    name = "steady-third-party"

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        self.asked.append(ctx.now_s)
        return SteadyScaleDecision(model, 2, "two, whatever the load")


def test_a_third_party_scalers_steady_answer_is_trusted_when_it_alone_answers():
    # fixed-replicas not enabled: it is only the fallback, never asked while the plugin answers
    scaler = _SteadyThirdParty()
    enabled = ["builtin-latency-models", "continuous-batching", "least-loaded"]
    res = replay_with(scaler, trace=make_trace(40, qps=2), plugins={"enabled": enabled})
    assert res.summary["num_completed"] == 40 and res.summary["num_scale_events"] == 0
    assert scaler.asked == [1.0]  # a tick a second for 20 s: asked once, no worker changed after


ONE_MODEL = {"models": [{"name": "a", "replicas": 1, "max_num_seqs": 4}]}
TWO_MODELS = {"models": [{"name": "a", "replicas": 1, "max_num_seqs": 4}, {"name": "b", "replicas": 2}]}


def _run(trace: list[Any], cluster: dict[str, Any], steady: bool) -> tuple[dict[str, Any], list[Any], list[dict]]:
    """A replay with fixed-replicas, its stay a `SteadyScaleDecision` or a plain one: its summary, decisions,
    samples and worker changes, and the gauges as the batching policy sees them."""
    gauges: list[dict[str, float]] = []

    class _Gauges(Plugin):
        name = "gauges-after-ticks"

        @hookimpl
        def cp_form_batch(self, ctx, worker):  # the gauges as a policy reads them between ticks
            gauges.append(dict(ctx.metrics))
            return None

    with pytest.MonkeyPatch.context() as mp:
        if not steady:
            mp.setattr(autoscaling, "SteadyScaleDecision", ScaleDecision)
        res = replay_with(_Gauges(), trace=trace, cluster=cluster, control={"tick_s": 0.5, "metrics_interval_s": 2.0})
    summary = {k: v for k, v in res.summary.items() if k != "wall_s"}
    return summary, [repr(e) for e in res.events if isinstance(e, (Decision, ev.MetricSample, ev.WorkerChanged))], \
        gauges


@pytest.mark.parametrize("cluster", [ONE_MODEL, TWO_MODELS], ids=["one model", "two models"])
def test_ticks_that_skip_the_question_record_what_asking_ticks_record(cluster):
    models = [m["name"] for m in cluster["models"]]
    trace = [dataclasses.replace(t, model=models[i % len(models)])
             for i, t in enumerate(make_trace(300, qps=8, seed=7))]
    steady = _run(trace, cluster, steady=True)
    plain = _run(trace, cluster, steady=False)
    assert steady[0]["num_completed"] > 0 and len(steady[1]) > 100
    assert any(g.get("queue:a", 0) > 0 for g in steady[2])
    assert steady == plain


def test_count_queued_is_the_contexts_num_queued():
    ready, starting, draining = make_worker("m-0"), make_worker("m-1", state=WorkerState.STARTING), \
        make_worker("m-2", state=WorkerState.DRAINING)
    dead = make_worker("m-3", state=WorkerState.STOPPED)
    for i, w in enumerate((ready, starting, draining, dead)):
        w.waiting.extend(Request(f"w{i}-{j}", 0.0, 4, 4) for j in range(i + 1))
    unrouted = [Request("u0", 0.0, 4, 4, model="m"), Request("u1", 0.0, 4, 4, model="other")]
    for queue in (unrouted, ()):
        s = build_scaling_context("m", 1.0, 2, [ready, starting, draining, dead], queue, 0, 1.0, RecentLatencies(9.0))
        assert count_queued("m", [ready, starting, draining, dead], queue) == s.num_queued
    assert s.num_queued == 6


def test_a_steady_decision_is_a_scale_decision_with_its_fields():
    d = SteadyScaleDecision("m", 2, "at configured replicas")
    assert isinstance(d, ScaleDecision) and (d.model, d.target_replicas, d.reason, d.advisory) == \
        ("m", 2, "at configured replicas", ())
    assert not hasattr(d, "__dict__")


def test_ctx_metrics_hold_every_gauge_from_the_run_start():
    """``ctx.metrics`` had no ``queue:<model>`` nor ``arrivals_per_s`` until the first tick: a router reading
    ``ctx.metrics["queue:default"]`` in the run's first second met a KeyError. They are 0 from the start, and
    each tick sets them (a snapshot as of the last tick)."""
    seen: list[tuple[str, float, dict[str, float]]] = []

    class Reader(Plugin):
        name = "metrics-reader"

        @hookimpl
        def cp_run_started(self, ctx):
            seen.append(("start", ctx.now_s, dict(ctx.metrics)))

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            seen.append(("route", ctx.now_s, dict(ctx.metrics)))

    config = make_config(cluster={"models": [{"name": "default", "replicas": 1}, {"name": "other", "replicas": 1}]})
    replay_with(Reader(), trace=make_trace(40, qps=20), config=config)
    assert seen[0] == ("start", 0.0, {"queue:default": 0, "queue:other": 0, "arrivals_per_s": 0.0})
    routes = [(t, m) for kind, t, m in seen if kind == "route"]
    assert any(t < 1.0 for t, _ in routes) and any(t > 1.0 for t, _ in routes)  # before and after the first tick
    for t, metrics in routes:
        assert {"queue:default", "queue:other", "arrivals_per_s"} <= set(metrics), (t, metrics)
    assert [m for t, m in routes if t < 1.0][-1]["arrivals_per_s"] == 0.0  # no tick yet
    assert [m for t, m in routes if t > 1.0][0]["arrivals_per_s"] > 0  # the first tick's count
