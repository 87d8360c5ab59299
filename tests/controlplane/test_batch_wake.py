"""`BatchPlan.wake_after_s` on a plan that runs: the core asks the batcher again at the first iteration boundary at
or after it, in the simulator's fast mode too (a batch of several iterations stops there), so fast == exact."""

from __future__ import annotations

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import BatchPlan
from controlplane.testing import make_trace, replay_with
from tests.fixtures.common import finish_time_mismatches


class DelayedPrefill(Plugin):
    """The plugin author's batcher (time-dependent): decode the running requests until the oldest waiting one has
    waited ``delay_s``, then prefill the queue; each decode plan runs until the first finish, and with ``wake`` says
    when to be asked again."""

    name = "delayed-prefill"

    class Settings(PluginSettings):
        delay_s: float = 0.2
        wake: bool = True

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        waited = ctx.now_s - worker.waiting[0].arrival_s if worker.waiting else 0.0
        if worker.waiting and (waited >= self.settings.delay_s or not worker.running):
            if waited < self.settings.delay_s:
                return BatchPlan(wake_after_s=self.settings.delay_s - waited, reason="wait")
            prefill, budget = [], worker.max_batch_tokens
            for r in worker.waiting:
                if r.remaining_prefill_tokens > budget or len(prefill) + len(worker.running) >= worker.max_num_seqs:
                    break
                prefill.append((r, r.remaining_prefill_tokens))
                budget -= r.remaining_prefill_tokens
            if prefill:
                return BatchPlan(prefill=tuple(prefill), reason="prefill")
        if not worker.running:
            return None
        k = min(r.remaining_output_tokens for r in worker.running)
        wake = self.settings.delay_s - waited if self.settings.wake and worker.waiting else None
        return BatchPlan(decode=tuple(worker.running), max_iterations=max(1, k), wake_after_s=wake, reason="decode")


def _replay(exact: bool, **settings):
    return replay_with(DelayedPrefill(settings), trace=make_trace(300, qps=6, output_tokens=200),
                       sim={"exact": exact})


def test_a_decode_plan_that_says_when_to_ask_again_stops_there_in_the_fast_mode():
    """The tester's timed.py: the wake was ignored for a plan that ran, and the fast mode's TTFT p50 was 0.378 s
    where the exact mode's was 0.270 s."""
    fast, exact = _replay(False), _replay(True)
    assert finish_time_mismatches(fast.requests, exact.requests) == []
    for key in ("num_completed", "ttft_p50_s", "ttft_p99_s", "e2e_p99_s"):
        assert abs(fast.summary[key] - exact.summary[key]) <= 1e-9 * abs(exact.summary[key]), key
    assert fast.summary["num_plugin_errors"] == 0
    batches = [d for d in fast.decisions if d.action == "batch"]
    assert len(batches) * 2 < len([d for d in exact.decisions if d.action == "batch"])  # still fused


def test_without_a_wake_the_fast_mode_runs_the_plan_whole():
    """A plan that does not say when to ask again runs its iterations until something changes (an arrival, a
    cancellation): the batcher promised nothing else does. Its waiting requests are prefilled late."""
    assert _replay(False, wake=False).summary["ttft_p50_s"] > _replay(True, wake=False).summary["ttft_p50_s"] * 1.2


class WakeOnce(Plugin):
    """Decodes every running request until the first finish; only its first decode plan asks for a wake."""

    name = "wake-once"

    def __init__(self, wake_after_s: float) -> None:
        super().__init__()
        self.wake_after_s = wake_after_s

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.waiting:
            return BatchPlan(prefill=tuple((r, r.remaining_prefill_tokens) for r in worker.waiting))
        if not worker.running:
            return None
        wake, self.wake_after_s = self.wake_after_s, None
        k = min(r.remaining_output_tokens for r in worker.running)
        return BatchPlan(decode=tuple(worker.running), max_iterations=k, wake_after_s=wake)


def test_a_wake_stops_only_the_batch_whose_plan_asked_for_it():
    """The first decode batch (wake after 5 s) ends at the short request's finish; the long one's batch after it
    asked for no wake and runs past 5 s uncut."""
    from sim.traces import TraceRequest

    trace = [TraceRequest("short", 0.0, 100, 10), TraceRequest("long", 0.0, 100, 3000)]
    one = {"models": [{"name": "default", "replicas": 1}]}
    res = replay_with(WakeOnce(5.0), trace=trace, cluster=one)
    batches = [d for d in res.decisions if d.action == "batch" and d.plugin == "wake-once"]
    assert [d.payload["iterations"] for d in batches] == [1, 1, 9, 2990]  # (the second arrived during the first prefill)
    assert batches[-1].time_s < 5.0 < max(r.finish_s for r in res.requests)
    assert not [d for d in res.decisions if d.action == "batch_cut"]
    cut = replay_with(WakeOnce(0.01), trace=trace, cluster=one)  # the first decode batch runs past its wake: stopped
    (decode, *_) = [d for d in cut.decisions if d.action == "batch" and d.payload["decode"]]
    (stopped,) = [d for d in cut.decisions if d.action == "batch_cut"]
    assert stopped.payload["batch"] == decode.payload["batch"] and stopped.payload["iterations"] < 9
    assert stopped.time_s >= decode.time_s + 0.01
