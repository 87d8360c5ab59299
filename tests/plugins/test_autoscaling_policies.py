"""Autoscaling policies: seed-autoscaler, hpa, kpa — arithmetic on hand-built contexts, then replays."""

from __future__ import annotations

from collections import deque
from itertools import pairwise

import pytest

from controlplane.events import RequestFinished
from controlplane.scaling import RecentLatencies, build_scaling_context
from controlplane.testing import (
    EventLog,
    make_config,
    make_context,
    make_requests,
    make_trace,
    make_worker,
    replay_with,
)
from controlplane.types import RequestStatus, WorkerState
from plugins.autoscaling_hpa import HpaAutoscaler
from plugins.autoscaling_kpa import KpaAutoscaler
from plugins.autoscaling_seed import SeedAutoscaler, linear_fit
from tests.fixtures.common import assert_conserved


def _worker(i: int, waiting: int = 0, running: int = 0, state=WorkerState.READY, **fields):
    reqs = make_requests(waiting + running, prefix=f"w{i}-")
    return make_worker(f"default-{i}", state=state, waiting=deque(reqs[:waiting]), running=reqs[waiting:], **fields)


def _scaling(workers, now_s: float = 0.0, arrivals: int = 0, unrouted=()):
    return build_scaling_context(model="default", now_s=now_s, configured_replicas=1, workers=workers,
                                 unrouted=unrouted, arrivals=arrivals, tick_s=1.0, recent=RecentLatencies(60.0))


def _loaded(n: int, per_replica: int, now_s: float = 0.0, arrivals: int = 0):
    return _scaling([_worker(i, running=per_replica) for i in range(n)], now_s, arrivals)


def scale_events(result):
    return [(d.time_s, d.payload["from"], d.payload["to"]) for d in result.decisions if d.action == "scale"]


def replay_beside_a_shadow(trace, cluster, shadow: dict):
    """The same hpa run twice, without and with ``shadow`` (the shadow plugin's settings) beside it:
    each run's result and its finished requests' rows, to show advisory mode changes no request."""
    plugins = ["hpa", "queue-limit", "exact-cache", "least-loaded", "continuous-batching", "static-memory",
               "sampled-guardian", "builtin-latency-models"]
    settings = {"hpa": {"target": 4, "max_replicas": 8}}

    def replay(with_shadow: bool):
        cfg = make_config(cluster=cluster, slo={"ttft_s": 2.0, "tpot_s": 0.1}, plugins={
            "enabled": plugins + (["shadow"] if with_shadow else []),
            "settings": {**settings, **({"shadow": shadow} if with_shadow else {})}})
        log = EventLog()
        res = replay_with(log, trace=trace, config=cfg)
        rows = sorted((r.request_id, r.arrival_s, r.first_token_s, r.finish_s, r.worker_id) for r in log.finished)
        return res, rows

    return replay(False), replay(True)


def oscillations(events, window_s: float) -> int:
    """Scale-ups followed by a scale-down within ``window_s``."""
    return sum(1 for (t0, a0, b0), (t1, a1, b1) in pairwise(events)
               if b0 > a0 and b1 < a1 and t1 - t0 < window_s)


# --- hpa ---------------------------------------------------------------------------------------


def _hpa(**kw):
    kw = {"metric_window_s": 0, "sync_period_s": 0, "target": 8, **kw}
    return HpaAutoscaler(HpaAutoscaler.Settings(**kw))


def test_hpa_target_tracking_arithmetic():
    d = _hpa().decide(0.0, "default", _loaded(2, 12))  # 12 per replica vs 8: ceil(2 x 1.5) = 3
    assert d.target_replicas == 3 and "ceil(2 x 1.50) = 3" in d.reason
    d = _hpa().decide(0.0, "default", _loaded(4, 9))  # ratio 1.125 > 10% tolerance: ceil(4.5) = 5
    assert d.target_replicas == 5
    d = _hpa().decide(0.0, "default", _loaded(4, 8))
    assert d.target_replicas == 4 and "tolerance" in d.reason
    d = _hpa().decide(0.0, "default", _scaling([_worker(0, running=17), _worker(1, running=17)]))
    assert d.target_replicas == 5  # ceil(2 x 34/16) = ceil(4.25)


def test_hpa_other_metrics_and_bounds():
    ws = [_worker(i, running=1, num_kv_blocks=100, num_kv_blocks_used=90) for i in range(2)]
    d = _hpa(metric="kv_utilization", target=0.6).decide(0.0, "default", _scaling(ws))
    assert d.target_replicas == 3  # ceil(2 x 0.9 / 0.6)
    assert _hpa(max_replicas=4).decide(0.0, "default", _loaded(2, 40)).target_replicas == 4
    assert _hpa(min_replicas=2).decide(0.0, "default", _loaded(3, 0)).target_replicas == 3  # stabilised
    assert _hpa(min_replicas=2, scale_down_stabilization_s=0).decide(0.0, "default", _loaded(3, 0)).target_replicas == 2


def test_hpa_on_kv_utilization_gets_a_share_as_its_target():
    """`metric: kv_utilization` kept the default target 16, which a 0-1 share never reaches: 0 scale events."""
    settings = HpaAutoscaler.Settings(metric="kv_utilization", metric_window_s=0, sync_period_s=0)
    assert settings.target == 0.8 and HpaAutoscaler.Settings().target == 16.0
    ws = [_worker(i, running=1, num_kv_blocks=100, num_kv_blocks_used=90) for i in range(2)]
    assert HpaAutoscaler(settings).decide(0.0, "default", _scaling(ws)).target_replicas == 3  # ceil(2 x 0.9 / 0.8)
    with pytest.raises(ValueError, match="kv_utilization is a share from 0 to 1: target 16 is never reached"):
        HpaAutoscaler.Settings(metric="kv_utilization", target=16)


def test_hpa_scale_down_takes_the_max_recommendation_in_the_window():
    hpa = _hpa()
    assert hpa.decide(0.0, "default", _loaded(4, 8)).target_replicas == 4
    d = hpa.decide(100.0, "default", _loaded(4, 2))  # wants 1, but recommended 4 within 300 s
    assert d.target_replicas == 4 and "down-stabilisation" in d.reason
    assert hpa.decide(250.0, "default", _loaded(4, 4)).target_replicas == 4  # wants 2; 4 at t=0 still in window
    d = hpa.decide(301.0, "default", _loaded(4, 2))  # t=0 left the window: max(1 at 100, 2 at 250, 1) = 2
    assert d.target_replicas == 2


def test_hpa_decides_at_its_sync_period_and_averages_the_metric():
    hpa = HpaAutoscaler(HpaAutoscaler.Settings(target=8, sync_period_s=15, metric_window_s=30))
    assert hpa.decide(0.0, "default", _loaded(1, 8)).target_replicas == 1
    held = hpa.decide(5.0, "default", _loaded(1, 40))
    assert held.target_replicas == 1 and "between syncs" in held.reason
    d = hpa.decide(15.0, "default", _loaded(1, 8))  # average of 8, 40, 8 = 18.67 per replica
    assert d.target_replicas == 3


def test_hpa_averages_totals_so_a_changed_replica_count_does_not_inflate_the_metric():
    hpa = HpaAutoscaler(HpaAutoscaler.Settings(target=8, sync_period_s=0, metric_window_s=30))
    assert hpa.decide(0.0, "default", _loaded(1, 40)).target_replicas == 5
    # 15 s later 4 replicas hold the same 40 requests: 10 each (not the mean of 40 and 10 per replica)
    d = hpa.decide(15.0, "default", _loaded(4, 10))
    assert d.target_replicas == 5 and "per replica 10.00" in d.reason


def test_hpa_scale_up_is_limited_like_kubernetes_default_behaviour():
    d = _hpa().decide(0.0, "default", _loaded(2, 100))  # wants ceil(2 x 12.5) = 25: at most max(2 x 2, 2 + 4)
    assert d.target_replicas == 6 and "scale-up limit 6" in d.reason
    assert _hpa().decide(0.0, "default", _loaded(10, 100)).target_replicas == 20  # doubling beats +4
    free = _hpa(max_scale_up_percent=None, max_scale_up_replicas=None)
    assert free.decide(0.0, "default", _loaded(2, 100)).target_replicas == 25


def test_hpa_from_zero_replicas():
    unrouted = make_requests(20, model="default")
    d = _hpa(min_replicas=0).decide(0.0, "default", _scaling([], unrouted=unrouted))
    assert d.target_replicas == 3  # ceil(20 / 8)


@pytest.mark.parametrize("metric, target", [("kv_utilization", 0.8), ("running", 8)])
def test_hpa_from_zero_on_a_metric_nothing_has_at_zero_starts_one_for_a_queue(metric, target):
    """At zero replicas nothing runs or holds KV: hpa on those metrics stayed at zero for ever (6 of
    300 requests completed); a queue starts one replica."""
    unrouted = make_requests(5, model="default")
    d = _hpa(min_replicas=0, metric=metric, target=target).decide(0.0, "default", _scaling([], unrouted=unrouted))
    assert d.target_replicas == 1 and "5 queued with no replica" in d.reason
    idle = _hpa(min_replicas=0, metric=metric, target=target).decide(0.0, "default", _scaling([]))
    assert idle.target_replicas == 0


# --- kpa ---------------------------------------------------------------------------------------


def _kpa(**kw):
    return KpaAutoscaler(KpaAutoscaler.Settings(**{"target_concurrency": 10, "target_utilization": 1.0, **kw}))


def test_kpa_stable_window_arithmetic():
    kpa = _kpa()
    for t in range(60):
        d = kpa.decide(float(t), "default", _loaded(3, 10 if t < 30 else 14))
    # stable average over 60 s: (30 x 30 + 30 x 42) / 60 = 36 -> ceil(3.6) = 4; the panic window: 42 -> 5 < 2 x 3
    assert d.target_replicas == 4 and "stable 36.0" in d.reason and "panic 5" in d.reason


def test_kpa_panics_at_twice_the_replicas_and_never_scales_down_while_panicking():
    kpa = _kpa()
    for t in range(50):
        kpa.decide(float(t), "default", _loaded(2, 10))
    d = None
    for t in range(50, 56):
        d = kpa.decide(float(t), "default", _loaded(2, 40))  # panic window -> 8 >= 2 x 2
    assert "panic" in d.reason and d.target_replicas >= 4
    peak = d.target_replicas
    # load falls at once: still panicking for a stable window, so the count holds
    for t in range(56, 100):
        d = kpa.decide(float(t), "default", _loaded(peak, 1))
        assert d.target_replicas >= peak, d.reason
    for t in range(100, 200):
        d = kpa.decide(float(t), "default", _loaded(peak, 1))
    assert d.target_replicas < peak  # panic over, stable window low


def test_kpa_bounds_and_scale_to_zero():
    assert _kpa(max_replicas=3).decide(0.0, "default", _loaded(2, 100)).target_replicas == 3
    assert _kpa(min_replicas=2).decide(0.0, "default", _loaded(2, 0)).target_replicas == 2
    kpa = _kpa(min_replicas=0, scale_to_zero=True, scale_to_zero_grace_s=30, stable_window_s=20, panic_window_s=2)
    targets = [kpa.decide(float(t), "default", _loaded(1, 0)).target_replicas for t in range(40)]
    assert targets[10] == 1 and targets[-1] == 0  # one replica kept until 30 s idle
    d = kpa.decide(40.0, "default", _scaling([], now_s=40.0, unrouted=make_requests(3, model="default")))
    assert d.target_replicas == 1  # a request waits at zero replicas: start one at once
    with pytest.raises(ValueError):
        KpaAutoscaler.Settings(scale_to_zero=True, min_replicas=1)


def test_kpa_counts_a_tick_with_arrivals_as_not_idle_and_says_what_it_measured():
    """A request that arrived and finished between two ticks was never seen in flight: kpa went to zero 'after 30s
    idle' 27 s after it finished."""
    kpa = _kpa(min_replicas=0, scale_to_zero=True, scale_to_zero_grace_s=30, stable_window_s=20, panic_window_s=2)
    targets = {t: kpa.decide(float(t), "default", _loaded(1, 0, float(t), arrivals=int(t == 3))) for t in range(35)}
    assert targets[33].target_replicas == 1  # 29 s since the tick that saw the arrival
    assert targets[34].target_replicas == 0
    assert "scale to zero: no request in flight or arriving at the ticks of the last 30s (grace 30s)" in targets[34].reason


# --- seed-autoscaler ---------------------------------------------------------------------------


def test_linear_fit():
    a, b, r2 = linear_fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert (round(a, 9), round(b, 9), round(r2, 9)) == (1.0, 2.0, 1.0)
    assert linear_fit([5], [2]) == (2.0, 0.0, 0.0)


def _busy_workers(n: int, waiting: int, running: int, busy: bool = True):
    return [_worker(i, waiting=waiting, running=running, busy=busy, max_num_seqs=16) for i in range(n)]


def test_seed_scales_up_one_above_the_threshold_then_holds():
    seed = SeedAutoscaler()
    d = seed.decide(0.0, "default", _scaling(_busy_workers(2, 10, 16), arrivals=5))
    # util 1 (busy, full batch; no KV budget: no memory part), trend 0.5, queue 1, forecast 1: score 0.85
    assert d.target_replicas == 3 and "scale up" in d.reason
    for key in ("score", "util", "trend", "queue", "error", "forecast", "confidence"):
        assert key in d.reason
    held = seed.decide(299.0, "default", _scaling(_busy_workers(3, 10, 16), now_s=299.0, arrivals=5))
    assert held.target_replicas == 3 and held.reason.startswith("hold (1s left)")
    assert seed.decide(300.0, "default", _scaling(_busy_workers(3, 10, 16), now_s=300.0, arrivals=5)).target_replicas == 4


def test_seed_score_is_the_weighted_signals():
    seed = SeedAutoscaler(SeedAutoscaler.Settings(weight_utilization=1, weight_trend=0, weight_queue=0,
                                                  weight_error=0, weight_forecast=0, util_weight_busy=0,
                                                  util_weight_batch=1, util_weight_kv=0))
    d = seed.decide(0.0, "default", _scaling(_busy_workers(2, 0, 4)))  # 8 running / 32 slots
    assert "score 0.25" in d.reason and d.target_replicas == 1  # below 0.5: down one


def test_seed_scales_down_within_bounds():
    seed = SeedAutoscaler(SeedAutoscaler.Settings(min_replicas=2))
    idle = _scaling(_busy_workers(3, 0, 0, busy=False))
    assert seed.decide(0.0, "default", idle).target_replicas == 2
    assert seed.decide(1000.0, "default", _scaling(_busy_workers(2, 0, 0, busy=False), now_s=1000)).target_replicas == 2
    over = SeedAutoscaler(SeedAutoscaler.Settings(max_replicas=2))
    d = over.decide(0.0, "default", idle)
    assert d.target_replicas == 2 and "to bounds [1, 2]" in d.reason


def test_seed_trend_forecast_and_error_signals():
    s = SeedAutoscaler.Settings(sample_interval_s=10)
    seed = SeedAutoscaler(s)
    for t in range(101):  # the rate rises 0.1/s each second
        seed.decide(float(t), "default", _scaling(_busy_workers(2, 0, 4), now_s=float(t), arrivals=t // 10))
    sig, confidence = seed.signals("default", 101.0, _scaling(_busy_workers(2, 0, 4), now_s=101.0, arrivals=10))
    assert sig.slope == pytest.approx(0.1, rel=0.05) and sig.trend > 0.6
    assert sig.forecast_rate > sig.rate and sig.forecast > sig.utilization and confidence > 0.9
    ctx = make_context(now_s=101.0)
    for i, r in enumerate(make_requests(100)):
        r.status = RequestStatus.FAILED if i < 3 else RequestStatus.COMPLETED
        seed.cp_on_event(ctx=ctx, event=RequestFinished(100.0, r))
    sig, _ = seed.signals("default", 102.0, _scaling(_busy_workers(2, 0, 4), now_s=102.0))
    assert sig.error_rate == pytest.approx(0.03) and sig.error == 0.5


# --- replays -----------------------------------------------------------------------------------

POLICIES = {
    "seed-autoscaler": (lambda: SeedAutoscaler(), 300.0),
    "hpa": (lambda: HpaAutoscaler(), 300.0),
    "kpa": (lambda: KpaAutoscaler(), 60.0),
}
CLUSTER = {"models": [{"name": "default", "replicas": 2, "cold_start_s": 10.0}]}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_no_oscillation_on_a_steady_load_and_requests_are_conserved(name):
    make, window = POLICIES[name]
    result = replay_with(make(), trace=make_trace(2400, qps=8), cluster=CLUSTER)
    assert_conserved(result.summary, result.requests)
    assert result.summary["num_requests"] == 2400 and result.summary["num_plugin_errors"] == 0
    events = scale_events(result)
    assert oscillations(events, window) == 0, events
    assert all(d.plugin == name for d in result.decisions if d.action == "scale")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_scale_up_under_a_burst(name):
    make, _ = POLICIES[name]
    trace = make_trace(4000, qps=60, output_tokens=256)
    result = replay_with(make(), trace=trace, cluster={"models": [{"name": "default", "replicas": 1,
                                                                   "cold_start_s": 5.0}]})
    assert_conserved(result.summary, result.requests)
    assert any(to > frm for _, frm, to in scale_events(result)), name
