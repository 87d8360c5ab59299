

def test_scale_decisions_store_their_confidence_and_signals():
    from controlplane.testing import make_trace, replay_with

    res = replay_with(trace=make_trace(400, qps=40, seed=5),
                      plugins={"enabled": ["seed-autoscaler", "queue-limit", "exact-cache", "least-loaded",
                                           "continuous-batching", "static-memory", "sampled-guardian",
                                           "builtin-latency-models"],
                               "settings": {"seed-autoscaler": {"hold_s": 5.0}}},
                      cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": 2.0}]})
    scales = [d for d in res.decisions if d.action == "scale" and d.plugin == "seed-autoscaler"]
    assert scales, "the load should make it scale"
    for d in scales:
        assert 0.0 <= d.payload["confidence"] <= 1.0
        assert {"score", "utilization", "queue", "error_rate"} <= set(d.payload["signals"])


def test_a_keep_carries_its_confidence_and_signals():
    """A keep had neither, though its reason states its confidence (a shadow stored it so; and a keep scaling-rules
    raises to its bounds is stored as a scale without them)."""
    from plugins.autoscaling_seed import SeedAutoscaler

    seed = SeedAutoscaler(SeedAutoscaler.Settings())
    keep = seed.decide(1.0, "default", _zero_scaling(1.0, running=1, replicas=1))
    assert keep.target_replicas == 1 and keep.reason.startswith("keep 1: ") and not keep.holding
    assert keep.confidence == 0.25 and {"score", "utilization", "queue", "error_rate"} <= set(keep.signals)


def _zero_scaling(now_s: float, waiting: int = 0, running: int = 0, replicas: int = 0):
    """A model with ``replicas`` idle ready replicas (one holding ``running`` requests), ``waiting`` unrouted."""
    from collections import deque

    from controlplane.scaling import RecentLatencies, build_scaling_context
    from controlplane.testing import make_requests, make_worker

    workers = [make_worker(f"default-{i}", running=make_requests(running if i == 0 else 0, prefix=f"w{i}-"),
                           waiting=deque(), max_num_seqs=16) for i in range(replicas)]
    return build_scaling_context(model="default", now_s=now_s, configured_replicas=1, workers=workers,
                                 unrouted=tuple(make_requests(waiting, prefix="u-", model="default")), arrivals=0, tick_s=1.0,
                                 recent=RecentLatencies(60.0))


def test_min_replicas_zero_scales_back_up_when_requests_wait_even_in_the_hold():
    from plugins.autoscaling_seed import SeedAutoscaler

    seed = SeedAutoscaler(SeedAutoscaler.Settings(min_replicas=0))
    down = seed.decide(1.0, "default", _zero_scaling(1.0, replicas=1))
    assert down.target_replicas == 0  # no load at all: zero is allowed
    up = seed.decide(2.0, "default", _zero_scaling(2.0, waiting=3))  # within the 300 s hold
    assert up.target_replicas == 1 and "from zero (3 waiting)" in up.reason
    assert seed.decide(3.0, "default", _zero_scaling(3.0)).target_replicas == 0  # still no load: stays at zero


def test_min_replicas_zero_keeps_the_last_replica_while_requests_run():
    from plugins.autoscaling_seed import SeedAutoscaler

    seed = SeedAutoscaler(SeedAutoscaler.Settings(min_replicas=0))
    d = seed.decide(1.0, "default", _zero_scaling(1.0, running=1, replicas=1))  # score below 0.5
    assert d.target_replicas == 1


def test_min_replicas_zero_replay_finishes_every_request():
    """It went to zero at t=1 s and never came back: 4 of 3,000 requests completed, the rest left in flight."""
    from controlplane.testing import make_trace, replay_with

    res = replay_with(trace=make_trace(300, qps=5, seed=3),
                      plugins={"enabled": ["seed-autoscaler", "queue-limit", "exact-cache", "least-loaded",
                                           "continuous-batching", "fixed-replicas", "static-memory",
                                           "sampled-guardian", "builtin-latency-models"],
                               "settings": {"seed-autoscaler": {"min_replicas": 0}}},
                      cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": 20.0}]})
    assert res.summary["num_in_flight"] == 0 and res.summary["num_completed"] == 300


def _busy_scaling(now_s: float, arrivals: int):
    """One ready replica holding 8 running requests, ``arrivals`` this tick."""
    from collections import deque

    from controlplane.scaling import RecentLatencies, build_scaling_context
    from controlplane.testing import make_requests, make_worker

    worker = make_worker("default-0", running=make_requests(8, prefix=f"t{now_s:g}-"), waiting=deque(), max_num_seqs=16)
    return build_scaling_context(model="default", now_s=now_s, configured_replicas=1, workers=[worker], unrouted=(),
                                 arrivals=arrivals, tick_s=1.0, recent=RecentLatencies(60.0))


def test_the_forecast_signal_is_zero_for_a_forecast_of_zero_and_named_when_there_is_no_rate():
    """A last bucket with no arrivals made the forecast signal the utilisation: 'forecast 0.30 [0.00/s in 300s vs
    0.00/s]', lifting the score; min(1, utilisation x forecast / rate) is 0 for a forecast of 0/s."""
    from plugins.autoscaling_seed import SeedAutoscaler

    seed = SeedAutoscaler(SeedAutoscaler.Settings(sample_interval_s=10.0))
    for t in range(1, 42):  # four buckets without arrivals, a replica busy
        sig, _ = seed.signals("default", float(t), _busy_scaling(float(t), 0))
    assert sig.utilization > 0 and sig.rate == 0 and sig.forecast_rate == 0 and sig.forecast == 0.0
    assert "forecast 0.00 [0.00/s in 300s vs 0.00/s])" in seed.decide(42.0, "default", _busy_scaling(42.0, 0)).reason
    seed = SeedAutoscaler(SeedAutoscaler.Settings(sample_interval_s=10.0))
    for t in range(1, 72):  # arrivals rising, then a bucket without any: a forecast above 0 and no rate now
        sig, _ = seed.signals("default", float(t), _busy_scaling(float(t), 0 if t > 61 else t // 10 + 1))
    assert sig.rate == 0 < sig.forecast_rate and sig.forecast == sig.utilization > 0
    assert "vs 0.00/s: no rate now, the utilisation])" in seed.decide(72.0, "default", _busy_scaling(72.0, 0)).reason
