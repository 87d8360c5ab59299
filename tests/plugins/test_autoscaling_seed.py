

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
