"""Risk-based sampling: what it keeps per check in flight leaves when the check ends, however it ends."""

from __future__ import annotations

from controlplane.testing import make_trace, replay_with
from plugins.guardian_risk import RiskSampledGuardian
from sim.traces.record import TraceRequest

ENABLED = ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
           "builtin-latency-models"]


class _Watch(RiskSampledGuardian):
    """The real planner, remembering the most checks it held in flight at once."""

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.most = 0

    def plan(self, ctx, request, stage):
        plan = super().plan(ctx, request, stage)
        self.most = max(self.most, len(self._tenant_of))
        return plan


def _run(trace, models: list[dict], **settings) -> tuple[_Watch, dict]:
    planner = _Watch(RiskSampledGuardian.Settings(rate=1.0, min_rate=1.0, **settings))
    seen: dict = {}

    class Peek:  # what the planner held just before the run's end
        name = "peek"

        from controlplane import hookimpl

        @hookimpl(tryfirst=True)
        def cp_run_finished(self, ctx, summary):
            seen["before_end"] = dict(planner._tenant_of)

    res = replay_with(planner, Peek(), trace=trace, sim={"guardian_block_rate": 0.1},
                      guardians={"models": models}, plugins={"enabled": ENABLED})
    actions = [d.action for d in res.decisions]
    return planner, {**res.summary, **seen, "actions": actions}


def test_checks_that_time_out_leave_nothing_behind():
    # a judge far too slow for the traffic: most checks time out in its queue
    slow = [{"name": "guardian", "replicas": 1, "timeout_s": 0.5, "latency": {"base_s": 0.4, "max_batch": 1}}]
    planner, s = _run(make_trace(1500, qps=20), slow)
    assert s["guardians"]["guardian"]["timeouts"] > 1000
    assert s["before_end"] == {} and planner._tenant_of == {}
    assert planner.most < 100  # bounded by the checks in flight, not by the run's length


def test_cached_verdicts_and_back_offs_leave_nothing_behind():
    # a few prompts over and over (verdicts cached), arriving faster than the judge answers (back-offs)
    trace = [TraceRequest(f"r{i}", 0.01 * i, 12, 8, prompt=f"prompt {i % 7}") for i in range(800)]
    judge = [{"name": "guardian", "replicas": 1, "latency": {"base_s": 0.05, "max_batch": 1}}]
    planner, s = _run(trace, judge, verdict_ttl_s=3600.0, max_inflight_per_replica=2)
    assert s["actions"].count("guardian_cached") > 100 and s["actions"].count("guardian_backoff") > 0
    assert s["before_end"] == {} and planner._tenant_of == {}


def test_with_several_guardians_their_outcome_ends_the_check():
    two = [{"name": "a", "latency": {"base_s": 0.01}}, {"name": "b", "timeout_s": 0.2, "latency": {"base_s": 0.3}}]
    planner, s = _run(make_trace(600, qps=20), two, guardians=("a", "b"), combine="any")
    assert s["guardians"]["b"]["timeouts"] > 0
    assert s["before_end"] == {} and planner._tenant_of == {}
