"""A batching plugin's unusable BatchPlan is its recorded error; the built-in batching decides instead."""

from __future__ import annotations

import dataclasses
import math

import pytest

from controlplane import batch_scheduling, policy_calls
from controlplane.batch_plan_checks import plan_error
from controlplane.config import DEFAULT_PLUGINS
from controlplane.decisions import BatchPlan
from controlplane.hookspecs import hookimpl
from controlplane.plugin import Plugin
from controlplane.testing import make_requests, make_trace, make_worker, replay_with
from controlplane.types import RequestStatus
from plugins.batching import ContinuousBatching
from tests.fixtures.common import assert_conserved


def _worker_with(waiting: int = 1, running: int = 2):
    w = make_worker("w0")
    reqs = make_requests(waiting + running)
    for r in reqs:
        r.worker_id = "w0"
    for r in reqs[waiting:]:
        r.status = RequestStatus.RUNNING
        r.num_computed_tokens = r.prompt_tokens
        w.running.append(r)
    w.waiting.extend(reqs[:waiting])
    return w, reqs[:waiting], reqs[waiting:]


def test_a_usable_plan_has_no_error():
    import numpy as np

    w, waiting, running = _worker_with()
    n = waiting[0].prompt_tokens
    assert plan_error(BatchPlan(prefill=((waiting[0], np.int64(n)),)), w) is None
    w.max_num_seqs = 2  # a smaller memory plan than the running set: a plan adding nobody is still usable
    assert plan_error(BatchPlan(decode=tuple(running)), w) is None
    w.max_num_seqs = 3
    assert plan_error(BatchPlan(preempt=(running[0],), expire=((waiting[0], "late"),)), w) is None
    assert plan_error(BatchPlan(prefill=((waiting[0], n),), decode=tuple(running)), w) is None
    assert plan_error(BatchPlan(), w) is None
    assert plan_error(BatchPlan(wake_after_s=0.5), w) is None


@pytest.mark.parametrize("case, expected", [
    ("other worker", "not on worker w0"),
    ("zero tokens", "prefill of 0 tokens"),
    ("too many tokens", "left to prefill"),
    ("decode waiting", "not running on worker w0"),
    ("twice", "in the plan twice"),
    ("decode preempted", "which the plan preempts"),
    ("preempt waiting", "preempt of"),
    ("expire running", "expire of"),
    ("expire other worker", "not waiting on worker w0"),
    ("iterations", "max_iterations"),
    ("wake negative", "wake_after_s"),
    ("wake nan", "wake_after_s"),
    ("request alone", "prefill entries must be (request, tokens) pairs, got Request"),
    ("tokens as text", "tokens must be a whole number, got str '10'"),
    ("fractional tokens", "tokens must be a whole number, got float 10.5"),
    ("prefill and expire", "which the plan also expires"),
    ("expire without reason", "expire entries must be (request, reason) pairs"),
    ("over max_num_seqs", "3 sequences running after it (1 joining), more than the worker's max_num_seqs of 2"),
    ("prefill not a tuple", "a malformed BatchPlan (TypeError"),
])
def test_each_unusable_plan_says_why(case, expected):
    w, waiting, running = _worker_with()
    r = waiting[0]
    plans = {
        "other worker": lambda: (setattr(r, "worker_id", "w1"), BatchPlan(prefill=((r, 1),)))[1],
        "zero tokens": lambda: BatchPlan(prefill=((r, 0),)),
        "too many tokens": lambda: BatchPlan(prefill=((r, r.prompt_tokens + 1),)),
        "decode waiting": lambda: BatchPlan(decode=(r,)),
        "twice": lambda: BatchPlan(decode=(running[0], running[0])),
        "decode preempted": lambda: BatchPlan(decode=(running[0],), preempt=(running[0],)),
        "preempt waiting": lambda: BatchPlan(preempt=(r,)),
        "expire running": lambda: BatchPlan(expire=((running[0], "late"),)),
        "expire other worker": lambda: (setattr(r, "worker_id", "w1"), BatchPlan(expire=((r, "late"),)))[1],
        "iterations": lambda: BatchPlan(decode=(running[0],), max_iterations=0),
        "wake negative": lambda: BatchPlan(wake_after_s=-1.0),
        "wake nan": lambda: BatchPlan(wake_after_s=math.nan),
        "request alone": lambda: BatchPlan(prefill=(r,)),
        "tokens as text": lambda: BatchPlan(prefill=((r, "10"),)),
        "fractional tokens": lambda: BatchPlan(prefill=((r, 10.5),)),
        "prefill and expire": lambda: BatchPlan(prefill=((r, 1),), expire=((r, "late"),)),
        "expire without reason": lambda: BatchPlan(expire=(r,)),
        "over max_num_seqs": lambda: (setattr(w, "max_num_seqs", 2), BatchPlan(prefill=((r, 1),)))[1],
        "prefill not a tuple": lambda: BatchPlan(prefill=5),
    }
    assert expected in plan_error(plans[case](), w)


class OverPrefiller(Plugin):
    """Plans a prefill of one token more than the prompt has: the core cannot carry it out."""

    name = "over-prefiller"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.waiting:
            r = worker.waiting[0]
            return BatchPlan(prefill=((r, r.remaining_prefill_tokens + 1),))
        return None


def test_an_unusable_plan_is_the_plugins_error_and_the_run_completes():
    res = replay_with(OverPrefiller(), trace=make_trace(8))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_form_batch", "over-prefiller")}
    assert "ValueError: an unusable BatchPlan for worker" in errors[0].reason
    assert "left to prefill" in errors[0].reason
    batches = [d for d in res.decisions if d.action == "batch"]
    assert {d.plugin for d in batches} >= {"continuous-batching (fallback)"}
    assert res.summary["num_completed"] == 8
    assert res.summary["num_plugin_errors"] == len(errors)
    assert_conserved(res.summary, res.requests)


class PreemptsWaiting(Plugin):
    """Preempts a waiting request (not running): the core ignored it and asked again, forever."""

    name = "preempts-waiting"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        return BatchPlan(preempt=(worker.waiting[0],)) if worker.waiting and not worker.running else None


class ExpiresRunning(Plugin):
    """Expires a running request (expiry is for waiting ones): ignored, the plan read as empty, and every
    running request on the worker failed as stalled."""

    name = "expires-running"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        return BatchPlan(expire=((worker.running[0], "bye"),)) if worker.running else None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("plugin", "why"), [(PreemptsWaiting(), "preempt of"), (ExpiresRunning(), "expire of")])
def test_a_plan_preempting_or_expiring_the_wrong_requests_is_the_plugins_error(plugin, why):
    res = replay_with(plugin, trace=make_trace(12, qps=4))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_form_batch", plugin.name)}
    assert why in errors[0].reason
    assert res.summary["num_completed"] == 12
    assert_conserved(res.summary, res.requests)


def test_the_built_in_batchings_own_unusable_plan_is_a_defect_not_hidden(monkeypatch):
    def broken(self, ctx, worker):
        r = worker.waiting[0] if worker.waiting else None
        return BatchPlan(prefill=((r, 0),)) if r is not None else None

    monkeypatch.setattr(ContinuousBatching, "cp_form_batch", hookimpl(broken))
    with pytest.raises(RuntimeError, match="the built-in batching continuous-batching planned an invalid prefill"):
        replay_with(trace=make_trace(2))
    # Checked like another plugin's, it is still not hidden: nothing else can plan instead.
    monkeypatch.setattr(policy_calls, "_is_own", lambda plugin: False)
    with pytest.raises(RuntimeError, match="the built-in batching continuous-batching made an unusable BatchPlan"):
        replay_with(trace=make_trace(2))


@pytest.mark.parametrize("enabled, settings", [
    ("continuous-batching", {}),
    ("continuous-batching", {"policy": "sarathi", "chunk_size": 256}),
    ("priority-continuous-batching", {}),
    ("dynamic-batching", {"max_batch_size": 4, "max_wait_s": 0.05}),
    ("static-batching", {}),
    ("fair-share", {}),
    ("priority-classes", {"classes": [{"name": "interactive", "min_priority": 1, "queue_timeout_s": 0.3},
                                      {"name": "batch", "queue_timeout_s": 0.6}]}),
])
def test_the_projects_own_batching_plugins_make_only_usable_plans(monkeypatch, enabled, settings):
    """The core trusts the plans of the project's own plugins (`PolicyCalls.own_plugins`, not checked per
    batch): here every plan of each is checked, on a load that queues, preempts (a tight KV cache) and
    mixes lengths, and none may be unusable."""
    monkeypatch.setattr(policy_calls, "_is_own", lambda plugin: False)
    checked = []
    real = batch_scheduling.plan_error
    monkeypatch.setattr(batch_scheduling, "plan_error", lambda plan, w: checked.append(1) or real(plan, w))
    trace = make_trace(300, qps=12, prompt_tokens=700, output_tokens=96)
    for i, t in enumerate(trace):
        trace[i] = dataclasses.replace(t, prompt_tokens=50 + (t.prompt_tokens * (i % 7)) % 1500,
                                       output_tokens=4 + (37 * i) % 200, priority=i % 3, tenant=f"t{i % 4}")
    # (priority-classes only expires requests past their class's timeout: the batcher beside it plans the rest)
    plugins = [n for n in DEFAULT_PLUGINS if n != "continuous-batching" or enabled == "priority-classes"] + [enabled]
    res = replay_with(trace=trace, plugins={"enabled": plugins, "settings": {enabled: settings}},
                      cluster={"models": [{"name": "default", "replicas": 2, "num_kv_blocks": 400}]})
    assert len(checked) > 100
    assert res.summary["num_plugin_errors"] == 0, [d.reason for d in res.decisions if d.is_error][:3]
    assert_conserved(res.summary, res.requests)


# -- the KV cache: a plan may not hold more blocks than the worker has -----------------------------------------

_TIGHT = {"models": [{"name": "default", "replicas": 1, "latency_model": "linear", "kv_block_size": 4,
                      "num_kv_blocks": 12, "latency": {"base_s": 0.01, "prefill_s_per_token": 0,
                                                       "decode_s_per_seq": 0, "decode_s_per_context_token": 0}}]}


def _tight_trace():
    from sim.traces import TraceRequest

    return [TraceRequest("A", 0.0, 8, 10), TraceRequest("B", 0.0, 8, 20), TraceRequest("C", 0.0, 8, 30)]


def test_a_plan_over_the_kv_cache_says_so():
    w, waiting, running = _worker_with(waiting=1, running=2)
    w.kv_block_size, w.num_kv_blocks = 4, 8
    for r in running:  # 12 tokens each: 3 blocks each, 6 held
        r.prompt_tokens = r.num_computed_tokens = 12
    assert plan_error(BatchPlan(decode=tuple(running)), w) is None
    waiting[0].prompt_tokens = 9  # 3 more blocks: 9 of 8
    error = plan_error(BatchPlan(prefill=((waiting[0], 9),), decode=tuple(running)), w)
    assert error is not None and "9 KV blocks" in error and "num_kv_blocks of 8" in error
    # what it preempts frees its blocks; a request running but not decoded still holds them
    assert plan_error(BatchPlan(prefill=((waiting[0], 9),), decode=(running[0],), preempt=(running[1],)), w) is None
    assert "9 KV blocks" in plan_error(BatchPlan(prefill=((waiting[0], 9),), decode=(running[0],)), w)
    assert plan_error(BatchPlan(prefill=((waiting[0], 8),), decode=tuple(running)), w) is None  # 2 blocks: 8 of 8
    running[0].output_tokens = 1  # 13 tokens: a fourth block, 7 held
    w.num_kv_blocks = 6
    assert "7 KV blocks" in plan_error(BatchPlan(decode=tuple(running)), w)


class NaiveDecode(Plugin):
    """Decodes every running request, never preempts: the KV cache overflowed with no error and no preemption."""

    name = "naive-decode"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.waiting or not worker.running or not all(r.is_decoding for r in worker.running):
            return None
        return BatchPlan(decode=tuple(worker.running), reason="decode all")


def test_a_decode_set_over_the_kv_cache_is_the_plugins_error_and_the_built_in_preempts():
    built_in = replay_with(trace=_tight_trace(), cluster=_TIGHT, sim={"exact": True})
    res = replay_with(NaiveDecode(), trace=_tight_trace(), cluster=_TIGHT, sim={"exact": True})
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_form_batch", "naive-decode")}
    assert all("more than the worker's num_kv_blocks of 12" in d.reason for d in errors)
    assert res.summary["num_plugin_errors"] == len(errors)
    assert res.summary["num_preemptions"] == built_in.summary["num_preemptions"] > 0
    assert res.summary["num_completed"] == 3
    assert_conserved(res.summary, res.requests)


class LongDecode(Plugin):
    """Prefills what waits, then decodes every running request for as many iterations as the outputs allow, and
    preempts the newest when the KV cache is full: the simulator's fast mode ran its decodes past the cache."""

    name = "long-decode"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.waiting and not worker.running:
            return BatchPlan(prefill=tuple((r, r.remaining_prefill_tokens) for r in worker.waiting))
        if not worker.running:
            return None
        run = list(worker.running)
        preempt = []
        while sum(-(-r.context_tokens // worker.kv_block_size) for r in run) > worker.num_kv_blocks:
            preempt.append(run.pop())
        if not run:
            return BatchPlan(preempt=tuple(preempt))
        return BatchPlan(decode=tuple(run), preempt=tuple(preempt), max_iterations=10**6)


def test_a_plugins_multi_iteration_batch_stops_where_the_kv_cache_is_full():
    """Fast mode runs a plugin's batch of several iterations only while its blocks fit: then it is asked again, as
    the exact mode asks it at every iteration, and both preempt alike."""
    fast = replay_with(LongDecode(), trace=_tight_trace(), cluster=_TIGHT)
    exact = replay_with(LongDecode(), trace=_tight_trace(), cluster=_TIGHT, sim={"exact": True})
    assert exact.summary["num_preemptions"] > 0
    assert fast.summary["num_preemptions"] == exact.summary["num_preemptions"]
    assert {r.request_id: r.finish_s for r in fast.requests} == pytest.approx(
        {r.request_id: r.finish_s for r in exact.requests})
    assert fast.summary["num_plugin_errors"] == exact.summary["num_plugin_errors"] == 0
