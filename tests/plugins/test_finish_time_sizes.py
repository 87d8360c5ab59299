"""queue-limit's max_finish_s at batch sizes smaller than any measured (`plugins.finish_time`): predicted down from
the least measured size, not at its time."""

from __future__ import annotations

from collections import deque

import pytest

from controlplane.testing import make_context, make_requests, make_worker, replay_with
from controlplane.types import RequestStatus
from plugins.admission import QueueLimit
from plugins.finish_time import FinishTimes

from .test_finish_time import _running, _timed


def _burst(n: int, *, max_tokens: int = 300, prefix: str = "b"):
    rs = make_requests(n, prefix=prefix, model="default")
    for r in rs:
        r.max_output_tokens = max_tokens
    return rs


def test_one_size_measured_at_40_does_not_refuse_a_batch_of_2_at_its_time():
    """The operator's run (tiny-llama on CPU, max_finish_s 5): a burst of 40 measured 39 ms an iteration, the only
    size measured; a burst of 12 then saw 11 refused, 'predicted to finish in 11.7 s > max_finish_s 5 s (300 tokens
    at 39 ms per iteration)', each for a batch of 2 to 12 taken at the batch of 40's time, where the one admitted ran
    at about 4.5 ms. Below the least measured size the time is now taken down in proportion: all 12 are admitted."""
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=5))
    w = make_worker(running=_running(40, max_tokens=300), max_num_seqs=256)
    now = _timed(plugin._finish, w, 0.039)
    assert plugin._finish.iteration_s("default", 40, now) == pytest.approx(0.039)
    w.running.clear()  # burst a finished; burst b arrives at once
    admitted = []
    for r in _burst(12):
        d = plugin.cp_admit_request(ctx=make_context(workers=[w], now_s=now + 1.0), request=r)
        if d is None or d.admit:
            admitted.append(r)
            w.waiting.append(r)
    assert len(admitted) == 12  # (was 1: the idle replica's first, then 11 refused at 11.7 s)
    # the batch the 12th joins (12: bucket 16), in proportion from 39 ms at 40 (bucket 64)
    assert plugin._finish.iteration_s("default", 12, now) == pytest.approx(0.039 * 16 / 64)
    assert plugin._finish.iteration_s("default", 2, now) == pytest.approx(0.039 * 2 / 64)


def test_below_the_least_size_measured_the_prediction_is_monotone_and_meets_it():
    ft = FinishTimes()
    now = _timed(ft, make_worker(running=_running(40)), 0.039)
    times = [ft.iteration_s("default", b, now) for b in range(1, 129)]
    assert all(a <= b for a, b in zip(times, times[1:]))
    assert times[0] > 0 and times[63] == pytest.approx(0.039)  # (at 64, the bucket of 40: the time measured)


def test_with_two_sizes_measured_a_smaller_one_follows_the_line_through_them_down():
    """A GPU's iteration barely grows with its batch (its fixed cost is most of it): measured flat at 16 and 64, a
    batch of 2 is predicted at that time, not 8 or 32 times faster in proportion (which would admit a burst that then
    runs late); measured in proportion, in proportion."""
    ft = FinishTimes()
    _timed(ft, make_worker("default-0", running=_running(16)), 0.020, iterations=20)
    now = _timed(ft, make_worker("default-1", running=_running(64)), 0.021, iterations=20)
    assert ft.iteration_s("default", 2, now) == pytest.approx(0.020 - 0.001 / 48 * 14)
    ft = FinishTimes()  # CPU-like: about in proportion
    _timed(ft, make_worker("default-0", running=_running(16)), 0.016, iterations=20)
    now = _timed(ft, make_worker("default-1", running=_running(64)), 0.064, iterations=10)
    assert ft.iteration_s("default", 2, now) == pytest.approx(0.002)
    ft = FinishTimes()  # slower at 16 than at 64 (noise): flat, and no slower than the larger size's time
    _timed(ft, make_worker("default-0", running=_running(16)), 0.030, iterations=20)
    now = _timed(ft, make_worker("default-1", running=_running(64)), 0.020, iterations=20)
    assert ft.iteration_s("default", 2, now) == pytest.approx(0.020)


def test_replayed_a_burst_measured_at_one_size_does_not_shut_out_the_next_smaller_bursts():
    """The same in the simulator: 40 requests of 200 tokens, then bursts of 12 a minute apart, on one replica with
    max_finish_s 1.5 s. The first burst is measured at one size only (9 ms an iteration at 40: 1.8 s for 200 tokens);
    each later burst had 11 of 12 refused ('predicted to finish in 1.8 s') and the one admitted ran alone, leaving
    no time at a smaller size, so every burst after it was refused alike. They run 12 at a time in 1.2 s."""
    from sim.traces.record import TraceRequest

    first = [TraceRequest(f"a{i}", i * 0.01, 12, 200) for i in range(40)]
    later = [TraceRequest(f"b{k}-{i}", 60.0 * k, 12, 200) for k in (1, 2) for i in range(12)]
    enabled = ["least-loaded", "continuous-batching", "fixed-replicas", "static-memory", "builtin-latency-models"]
    cluster = {"models": [{"name": "default", "replicas": 1}]}
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=1.5))
    replay_with(plugin, trace=first, plugins={"enabled": enabled}, cluster=cluster)
    assert list(plugin._finish._times["default"]) == [64]  # one size measured
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=1.5))
    res = replay_with(plugin, trace=first + later, plugins={"enabled": enabled}, cluster=cluster)
    assert res.summary["num_plugin_errors"] == 0
    bursts = [r for r in res.requests if r.request_id.startswith("b")]
    assert all(r.status is RequestStatus.COMPLETED for r in bursts)  # (was 2 of 24)
    assert max(r.finish_s - r.arrival_s for r in bursts) < 1.5


def test_the_size_predicted_is_the_batch_the_request_joins():
    ft = FinishTimes()
    w = make_worker(running=_running(40), max_num_seqs=8)
    now = _timed(ft, w, 0.039)
    w.running = _running(3)
    w.waiting = deque(_running(2))
    new = _burst(1, max_tokens=10)[0]
    p = ft.predict([w], new, now + 0.01)[0]
    assert p.token_s == pytest.approx(0.039 * 8 / 64)  # 3 running + 2 waiting + itself: 6, bucket 8
