"""A run's cutoff (``--until``, a Ctrl-C's stop at the next tick) in the fast mode: a multi-iteration batch still
running has the iterations it finished by then counted, so its requests' tokens, first tokens and the busy time are
the exact mode's (one batch per iteration)."""

from __future__ import annotations

import pytest

from controlplane import events as ev
from controlplane.session import RunSession
from controlplane.testing import EventLog, make_config, replay_with
from sim.driver import SimDriver
from sim.replay import build_latency_models
from sim.stepped_decode import steps_boundary, steps_completed
from sim.traces import TraceRequest

# The tester's trace: two long requests running at the cutoff (2 s), one arriving after it.
CANON = [TraceRequest("a", 0.0, 100, 2000), TraceRequest("b", 0.5, 100, 2000), TraceRequest("c", 5.0, 100, 10)]
VIDUR = {"latency_model": "vidur", "latency": {"model": "meta-llama/Meta-Llama-3-8B", "gpu": "a100",
                                               "tensor_parallel": 1, "attention": "scaled"}}


def _cluster(replicas, **deployment):
    return {"models": [{"name": "default", "replicas": replicas, **deployment}]}


def _outcome(requests):
    return {r.request_id: (r.status.value, r.output_tokens, r.first_token_s, r.scheduled_s) for r in requests}


def _assert_same(fast, exact):
    assert fast.keys() == exact.keys()
    for rid, f in fast.items():
        e = exact[rid]
        assert f[:2] == e[:2], rid
        for fv, xv in zip(f[2:], e[2:]):
            assert fv == xv if xv is None else fv == pytest.approx(xv, rel=1e-12, abs=1e-12), rid


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("deployment", [{}, VIDUR], ids=["linear", "vidur"])
def test_fast_and_exact_agree_on_requests_running_at_until(replicas, deployment):
    cluster = _cluster(replicas, **deployment)
    fast = replay_with(trace=CANON, cluster=cluster, sim={"until_s": 2.0})
    exact = replay_with(trace=CANON, cluster=cluster, sim={"until_s": 2.0, "exact": True})
    f, e = _outcome(fast.requests), _outcome(exact.requests)
    _assert_same(f, e)
    assert f["a"][:2] == ("in_flight", e["a"][1]) and e["a"][1] > 100  # (it had 46 at the last batch boundary)
    assert f["b"][1] > 50 and f["b"][2] is not None  # (with two replicas it had no token and no first_token_s)
    assert "c" not in f
    assert fast.summary["gpu_busy_seconds"] == pytest.approx(exact.summary["gpu_busy_seconds"], rel=1e-9)
    assert fast.summary["sim_end_s"] == exact.summary["sim_end_s"] == 2.0


def test_a_request_arriving_just_before_until_waits_in_both_modes():
    # It cut the running batch short at the next iteration boundary, after the cutoff: the iterations settled at
    # the cutoff plan no next batch (it would start before the request arrived), as in the exact mode.
    trace = [*CANON[:2], TraceRequest("c", 1.999, 100, 10)]
    fast = replay_with(trace=trace, cluster=_cluster(1), sim={"until_s": 2.0})
    exact = replay_with(trace=trace, cluster=_cluster(1), sim={"until_s": 2.0, "exact": True})
    f, e = _outcome(fast.requests), _outcome(exact.requests)
    _assert_same(f, e)
    assert f["c"] == ("in_flight", 0, None, None)


def _stopped_at_a_tick(exact: bool, **deployment):
    """The canonical trace until a Ctrl-C's stop (`SimDriver.stop_requested`, set at the tick at 1 s): the run ends
    at the next tick (2 s)."""
    log = EventLog()
    session = RunSession(make_config(cluster=_cluster(1, **deployment), sim={"exact": exact}), mode="sim",
                         record=False, extra_plugins=[log])
    driver = SimDriver(session.core, build_latency_models(session), cold_start_s={})
    handle = session.core.handle

    def stopping(e):
        if type(e) is ev.Tick and e.time_s >= 1.0:
            driver.stop_requested = True
        return handle(e)

    driver._core_handle = stopping
    summary = driver.run(CANON)
    return summary, _outcome(log.finished)


@pytest.mark.parametrize("deployment", [{}, VIDUR], ids=["linear", "vidur"])
def test_fast_and_exact_agree_on_requests_running_at_a_ctrl_c_stop(deployment):
    fast, f = _stopped_at_a_tick(False, **deployment)
    exact, e = _stopped_at_a_tick(True, **deployment)
    _assert_same(f, e)
    assert f["a"][0] == f["b"][0] == "in_flight" and f["a"][1] > 100 and f["b"][1] > 50
    assert fast["sim_end_s"] == exact["sim_end_s"] == 2.0
    assert fast["gpu_busy_seconds"] == pytest.approx(exact["gpu_busy_seconds"], rel=1e-9)


def test_steps_completed_counts_the_iterations_ended_by_a_time_at_steps_boundary_s_boundaries():
    steps = [(3, 0.5), (2, 0.25), (4, 1.0)]
    ends = [0.5, 1.0, 1.5, 1.75, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert steps_completed(steps, 0.0) == (0, 0.0)
    assert steps_completed(steps, 0.49) == (0, 0.0)
    for k, end in enumerate(ends, 1):
        assert steps_completed(steps, end) == (k, end) == steps_boundary(steps, end)
        assert steps_completed(steps, end + 0.01) == (k, end)
    assert steps_completed(steps, 100.0) == (9, 6.0)
