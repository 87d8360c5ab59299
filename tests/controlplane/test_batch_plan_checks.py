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
