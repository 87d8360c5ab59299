

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
