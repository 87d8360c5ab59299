"""The seed's dynamic batcher, the static baseline and priority-aware continuous batching."""

from __future__ import annotations

from collections import deque

import pytest

from controlplane.testing import EventLog, make_context, make_requests, make_worker, replay_with
from controlplane.types import ReasonCode, Request, RequestStatus
from plugins.batching import PriorityContinuousBatching
from plugins.dynamic_batching import DynamicBatching, StaticBatching
from sim.traces.record import TraceRequest


def _plan(plugin, w, now=0.0):
    return plugin.cp_form_batch(ctx=make_context(now_s=now, workers=[w]), worker=w)


def _req(rid, arrival, prio=0, params=(), prompt=100, out=10):
    return Request(rid, arrival, prompt, out, model="default", priority=prio, params=params)


def test_priority_then_age_order():
    reqs = [_req("old-low", 0.0), _req("new-high", 0.05, prio=5), _req("old-high", 0.01, prio=5),
            _req("mid", 0.02, prio=1)]
    w = make_worker(waiting=deque(reqs))
    plan = _plan(DynamicBatching(DynamicBatching.Settings(max_wait_s=0.0)), w, now=1.0)
    assert [r.request_id for r, _ in plan.prefill] == ["old-high", "new-high", "mid", "old-low"]


def test_waits_until_max_wait_then_starts():
    w = make_worker(waiting=deque([_req("a", 0.3), _req("b", 0.35)]))
    plugin = DynamicBatching()
    plan = _plan(plugin, w, now=0.35)
    assert not plan.prefill and plan.wake_after_s == pytest.approx(0.05, abs=1e-12)
    plan = _plan(plugin, w, now=0.3 + 0.1)
    assert [r.request_id for r, _ in plan.prefill] == ["a", "b"]


def test_a_full_batch_starts_at_once():
    w = make_worker(waiting=deque(_req(f"r{i}", 0.0) for i in range(9)))
    plan = _plan(DynamicBatching(), w, now=0.0)
    assert len(plan.prefill) == 8 and plan.wake_after_s is None


def test_max_wait_is_honoured_to_the_simulated_microsecond():
    """One request alone: its batch starts max_wait_s after it arrived, not at the next event."""
    trace = [TraceRequest("0", 0.0, 64, 4), TraceRequest("1", 5.123457, 64, 4)]
    res = replay_with(trace=trace, plugins={"enabled": ["dynamic-batching", "least-loaded", "fixed-replicas",
                                                        "static-memory", "builtin-latency-models"],
                                            "settings": {"dynamic-batching": {"max_wait_s": 0.1}}},
                      cluster={"models": [{"replicas": 1}]})
    by_id = {r.request_id: r for r in res.requests}
    assert by_id["0"].scheduled_s == pytest.approx(0.1, abs=1e-6)
    assert by_id["1"].scheduled_s == pytest.approx(5.223457, abs=1e-6)


def test_groups_requests_with_the_same_generation_parameters():
    hot = (("temperature", 0.0),)
    cold = (("temperature", 1.0),)
    reqs = [_req("c0", 0.0, params=cold), _req("h0", 0.01, params=hot), _req("c1", 0.02, params=cold),
            _req("h1", 0.03, params=hot)]
    w = make_worker(waiting=deque(reqs))
    plan = _plan(DynamicBatching(DynamicBatching.Settings(max_wait_s=0.0)), w, now=1.0)
    assert [r.request_id for r, _ in plan.prefill] == ["c0", "c1"]
    plan = _plan(DynamicBatching(DynamicBatching.Settings(max_wait_s=0.0, group_by_params=False)), w, now=1.0)
    assert len(plan.prefill) == 4


def test_a_seed_is_no_batching_key_nor_top_p_of_a_greedy_request():
    """Each request draws from its own seeded generator (controlplane.live.sampling): seeded requests were
    groups of one, so 8 concurrent ones ran 8 batches (tests/live/test_seeded_batching.py on a live worker)."""
    sampled = [_req(f"s{i}", 0.01 * i, params=(("seed", i), ("temperature", 0.8), ("top_p", 0.9)))
               for i in range(4)]
    greedy = [_req(f"g{i}", 0.1 + 0.01 * i, params=(("seed", i), ("temperature", 0.0), ("top_p", 0.5 + 0.1 * i)))
              for i in range(3)]
    other = [_req("t1", 0.3, params=(("seed", 9), ("temperature", 1.0), ("top_p", 0.9)))]
    stops = [_req("stop", 0.4, params=(("stop", ("x",)), ("temperature", 0.0)))]
    w = make_worker(waiting=deque(sampled + greedy + other + stops))
    plugin = DynamicBatching(DynamicBatching.Settings(max_wait_s=0.0))
    assert [r.request_id for r, _ in _plan(plugin, w, now=1.0).prefill] == ["s0", "s1", "s2", "s3"]
    w = make_worker(waiting=deque(greedy + other + stops))
    assert [r.request_id for r, _ in _plan(plugin, w, now=1.0).prefill] == ["g0", "g1", "g2"]
    w = make_worker(waiting=deque(other + stops))  # other temperatures and stop strings still batch apart
    assert [r.request_id for r, _ in _plan(plugin, w, now=1.0).prefill] == ["t1"]


def test_a_running_batch_runs_to_completion():
    running = make_requests(2, prefix="run")
    for r in running:
        r.status = RequestStatus.RUNNING
        r.num_computed_tokens = r.prompt_tokens
        r.output_tokens = 1
    w = make_worker(running=running, waiting=deque([_req("late", 0.0)]))
    plan = _plan(DynamicBatching(DynamicBatching.Settings(max_wait_s=0.0)), w, now=1.0)
    assert not plan.prefill and set(plan.decode) == set(running)


def test_token_budget_and_kv_blocks_are_never_exceeded():
    reqs = [_req(f"r{i}", 0.0, prompt=300) for i in range(8)]
    w = make_worker(waiting=deque(reqs), max_batch_tokens=1000, num_kv_blocks=60, kv_block_size=16)
    plan = _plan(DynamicBatching(DynamicBatching.Settings(max_wait_s=0.0)), w, now=1.0)
    assert sum(n for _, n in plan.prefill) <= 1000
    assert sum(-(-r.prompt_tokens // 16) for r, _ in plan.prefill) <= 60
    assert len(plan.prefill) == 3  # 3 x 300 tokens; a fourth would pass 1000 (and 76 > 60 blocks)


def test_full_queue_refuses_with_code_and_reason():
    w = make_worker(waiting=deque(_req(f"q{i}", 0.0) for i in range(3)))
    plugin = DynamicBatching(DynamicBatching.Settings(max_queued=3))
    ctx = make_context(workers=[w])
    a = plugin.cp_admit_request(ctx=ctx, request=_req("new", 0.0))
    assert a is not None and not a.admit and a.code is ReasonCode.QUEUE_FULL and "queue full" in a.reason
    w.waiting.pop()
    assert plugin.cp_admit_request(ctx=ctx, request=_req("new", 0.0)) is None


def test_full_queue_in_a_replay_rejects_and_loses_nothing():
    trace = [TraceRequest(str(i), 0.001 * i, 2000, 200) for i in range(300)]
    log = EventLog()
    res = replay_with(log, trace=trace, plugins={"enabled": ["dynamic-batching", "least-loaded", "fixed-replicas",
                                                             "static-memory", "builtin-latency-models"]},
                      cluster={"models": [{"replicas": 1}]})
    rejected = [r for r in res.requests if r.status is RequestStatus.REJECTED]
    assert rejected and all(r.reason_code is ReasonCode.QUEUE_FULL for r in rejected)
    ids = [r.request_id for r in res.requests]
    assert sorted(ids, key=int) == [str(i) for i in range(300)]  # each once: none lost, none twice
    assert res.summary["num_completed"] + len(rejected) == 300


def test_static_batching_runs_one_request_at_a_time():
    trace = [TraceRequest(str(i), 0.0, 128, 8) for i in range(5)]
    res = replay_with(trace=trace, plugins={"enabled": ["static-batching", "least-loaded", "fixed-replicas",
                                                        "static-memory", "builtin-latency-models"]},
                      cluster={"models": [{"replicas": 1}]})
    spans = sorted((r.scheduled_s, r.finish_s) for r in res.requests)
    assert len(spans) == 5
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 1e-9  # the next starts only when the previous finished
    assert StaticBatching().settings.max_batch_size == 1


def test_priority_continuous_schedules_higher_first_and_preempts_it_last():
    waiting = [_req("low", 0.0, prio=0), _req("high", 0.5, prio=3)]
    w = make_worker(waiting=deque(waiting), max_num_seqs=1)
    plan = _plan(PriorityContinuousBatching(), w, now=1.0)
    assert [r.request_id for r, _ in plan.prefill] == ["high"]
    # KV runs out while decoding: the low-priority request goes, though it is the older one.
    running = [_req("hi-run", 0.5, prio=3, prompt=64), _req("lo-run", 0.0, prio=0, prompt=64)]
    for r in running:
        r.status = RequestStatus.RUNNING
        r.num_computed_tokens = 64
        r.output_tokens = 1
    w = make_worker(running=running, num_kv_blocks=6, kv_block_size=16)
    plan = _plan(PriorityContinuousBatching(), w, now=1.0)
    assert [r.request_id for r in plan.preempt] == ["lo-run"]


def _sorted_group(queue, size, by_params):
    """What the batcher takes, by definition: the queue sorted by priority then age, the first request's
    generation parameters, the first ``size`` of them; and the oldest arrival."""
    from plugins.batching import priority_then_age

    order = sorted(queue, key=priority_then_age)
    group = [r for r in order if not by_params or r.params == order[0].params][:size]
    return group, min(r.arrival_s for r in queue)


@pytest.mark.parametrize("seed", range(40))
def test_the_first_group_is_the_sorted_queues_without_sorting_it(seed):
    import random

    from controlplane.waiting_queue import WaitingQueue
    from plugins.batching import in_priority_order
    from plugins.dynamic_batching import _first_group

    rng = random.Random(seed)
    classes = rng.choice([1, 1, 3])  # most seeds: one priority class, as a replay without priorities has
    q, t = WaitingQueue(), 0.0
    for i in range(rng.randint(1, 60)):
        t += rng.choice([0.0, 0.01, 0.2])  # ties in arrival too
        r = _req(f"r{i}", t, prio=rng.randrange(classes), params=(("temperature", rng.choice([0, 0, 1])),))
        q.appendleft(r) if rng.random() < 0.05 else q.append(r)  # a re-routed or preempted one: out of order
    for size in (1, 3, 8, 100):
        for by_params in (True, False):
            got, oldest = _first_group(q, size, by_params)
            want, want_oldest = _sorted_group(q, size, by_params)
            assert [r.request_id for r in got] == [r.request_id for r in want] and oldest == want_oldest
    assert in_priority_order(q) == (classes == 1 and all(a.arrival_s <= b.arrival_s for a, b in zip(q, list(q)[1:])))


def test_an_overloaded_replay_plans_as_the_sorting_batcher_did(monkeypatch):
    """Static batching on a queue of hundreds, with three priority classes and with one: the same rows as a batcher
    that sorts and filters the whole queue for every batch (what `_first_group` stands for)."""
    from plugins import dynamic_batching

    def sorting(q, size, by_params):
        return _sorted_group(q, size, by_params)

    enabled = ["static-batching", "least-loaded", "fixed-replicas", "static-memory", "builtin-latency-models"]
    for classes in (1, 3):
        trace = [TraceRequest(str(i), 0.01 * i, 300, 40, priority=i % classes) for i in range(600)]
        rows = []
        for fast in (True, False):
            if not fast:
                monkeypatch.setattr(dynamic_batching, "_first_group", sorting)
            res = replay_with(trace=trace, plugins={"enabled": enabled}, cluster={"models": [{"replicas": 2}]})
            rows.append([(r.request_id, r.worker_id, r.scheduled_s, r.finish_s) for r in res.requests])
            monkeypatch.undo()
        assert rows[0] == rows[1]
        assert max(r[2] for r in rows[0]) > 20.0  # overloaded: the last starts long after the last arrival (6 s)


@pytest.mark.parametrize("plugin", [DynamicBatching, StaticBatching])
@pytest.mark.parametrize("key,value", [("policy", "sarathi"), ("chunk_size", 64), ("watermark", 0.3),
                                       ("max_padding", 1.5)])
def test_continuous_batchings_iteration_settings_are_refused_not_ignored(plugin, key, value):
    # policy: sarathi and chunk_size were accepted and ignored: runs read the same to the last digit as without
    from controlplane.errors import SettingsError

    with pytest.raises(SettingsError, match=f"{key}: continuous-batching settings that dynamic-batching"):
        plugin({key: value})
    assert plugin({"long_prompts": "reject", "max_iterations": 4}).settings.long_prompts == "reject"  # these it takes


def test_a_config_giving_dynamic_batching_a_sarathi_policy_fails_naming_the_setting():
    with pytest.raises(Exception, match=r"dynamic-batching.*chunk_size, policy: continuous-batching settings"):
        replay_with(trace=[TraceRequest("0", 0.0, 64, 4)],
                    plugins={"enabled": ["dynamic-batching", "least-loaded", "fixed-replicas", "static-memory",
                                         "builtin-latency-models"],
                             "settings": {"dynamic-batching": {"policy": "sarathi", "chunk_size": 512}}})


def test_a_batch_cut_short_says_what_cut_it():
    # "full batch: batch of 1 (7436 prefill tokens)" with max_batch_size 8: the token budget was the limit, unsaid
    queue = [_req("long", 0.0, prompt=7436), *(_req(f"r{i}", 0.0, prompt=2000) for i in range(7))]
    w = make_worker(waiting=deque(queue), max_batch_tokens=8192)
    plan = _plan(DynamicBatching(), w, now=0.0)
    assert [r.request_id for r, _ in plan.prefill] == ["long"]
    assert plan.reason == ("full batch: batch of 1 of 8 (7436 prefill tokens); token budget: r0's 2000 prompt tokens "
                           "would pass max_batch_tokens 8192")
    w = make_worker(waiting=deque(_req(f"r{i}", 0.0, prompt=100) for i in range(8)), num_kv_blocks=20,
                    kv_block_size=16)  # 7 blocks a prompt: two fit
    plan = _plan(DynamicBatching(), w, now=0.0)
    assert plan.reason == "full batch: batch of 2 of 8 (200 prefill tokens); KV cache: r2 needs 7 blocks, 6 free"
    w = make_worker(waiting=deque([_req("huge", 0.0, prompt=9000)]), max_batch_tokens=8192)
    plan = _plan(DynamicBatching(), w, now=1.0)
    assert plan.reason == ("max wait reached: batch of 1 (9000 prefill tokens); prompt over max_batch_tokens 8192: "
                           "alone")
