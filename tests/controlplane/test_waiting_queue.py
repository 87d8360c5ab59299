"""`Worker.waiting` keeps its requests' totals as they come and go (controlplane/waiting_queue.py)."""

from __future__ import annotations

import copy
import pickle
import random
from collections import Counter, deque
from dataclasses import replace

import pytest

from controlplane import hookimpl
from controlplane.testing import ScaleCycle, make_requests, make_trace, make_worker, replay_with
from controlplane.types import Worker
from controlplane.waiting_queue import WaitingQueue, request_tokens
from plugins.routing import LeastLoaded


def _sum(q) -> int:
    return sum(r.prompt_tokens + r.max_output_tokens for r in q)


def _walked(q) -> tuple:
    """Every total a `WaitingQueue` keeps, summed afresh over ``q``'s requests."""
    return (_sum(q), sum(r.remaining_prefill_tokens for r in q), sum(r.remaining_output_tokens for r in q),
            dict(Counter(r.priority for r in q)), _prefill_by_priority(q), _by_tenant(q),
            dict(Counter((r.output_tokens, r.max_output_tokens) for r in q)))


def _prefill_by_priority(q) -> dict:
    out: dict = {}
    for r in q:
        out[r.priority] = out.get(r.priority, 0) + r.remaining_prefill_tokens
    return out


def _by_tenant(q) -> dict:
    """Each tenant's requests (their ids) in queue order, found afresh."""
    out: dict = {}
    for r in q:
        out.setdefault(r.tenant, []).append(r.request_id)
    return out


def _inversions(q) -> int:
    """Neighbours out of arrival order, counted afresh."""
    q = list(q)
    return sum(b.arrival_s < a.arrival_s for a, b in zip(q, q[1:]))


def _kept(q: WaitingQueue) -> tuple:
    return (q.tokens, q.remaining_prefill_tokens, q.remaining_output_tokens, q.priorities, q.prefill_by_priority,
            {t: [r.request_id for r in d] for t, d in q.tenants.items()}, q.lengths)


def _pool(n: int = 40):
    """Requests with progress (prefix hits, preempted output to recompute) and priorities of their own."""
    pool = make_requests(n, prompt_tokens=[7 * i + 1 for i in range(n)], output_tokens=[i % 9 + 1 for i in range(n)])
    for i, r in enumerate(pool):
        r.output_tokens = i % 3 if r.max_output_tokens > 2 else 0
        r.recompute_tokens = r.output_tokens * (i % 2)
        r.num_computed_tokens = (i * 5) % r.prompt_tokens
        r.priority = i % 4 - 1
        r.tenant = (None, "a", "b")[i % 3]
    return pool


def test_every_method_that_adds_or_removes_keeps_the_totals():
    pool = _pool()
    rnd = random.Random(3)
    for i, r in enumerate(pool):
        r.arrival_s = float((i * 7) % 11)  # (ties and disorder: the kept count of neighbours out of arrival order)
    q, mirror = WaitingQueue(pool[:5]), deque(pool[:5])
    ops = ["append", "appendleft", "extend", "extendleft", "insert", "pop", "popleft", "remove", "del", "set",
           "iadd", "rotate", "reverse", "clear", "imul", "insert-neg", "del-neg", "set-neg"]
    seen = set()
    for step in range(3000):
        op = rnd.choice(ops)
        absent = [r for r in pool if all(r is not x for x in mirror)]  # (a request waits in one place, once)
        if not absent and op in ("append", "appendleft", "extend", "extendleft", "insert", "set", "iadd",
                                 "insert-neg", "set-neg"):
            continue
        new = rnd.choice(absent) if absent else None
        if op in ("pop", "popleft", "remove", "del", "set", "del-neg", "set-neg") and not mirror:
            continue
        if op in ("clear", "imul") and rnd.random() > 0.02:
            continue
        times = rnd.choice((0, 1))  # (imul: more than once would queue a request twice)
        for d in (q, mirror):
            if op in ("append", "appendleft"):
                getattr(d, op)(new)
            elif op in ("extend", "extendleft"):
                getattr(d, op)(iter(absent[step % 7:step % 7 + 3]))  # (an iterator: read once)
            elif op == "insert":
                d.insert(step % (len(d) + 1), new)
            elif op in ("pop", "popleft", "clear", "reverse"):
                getattr(d, op)()
            elif op == "remove":
                d.remove(mirror[step % len(mirror)])
            elif op == "del":
                del d[step % len(mirror)]
            elif op == "set":
                d[step % len(mirror)] = new
            elif op == "insert-neg":
                d.insert(-(step % (len(d) + 3)), new)  # (beyond the left end: inserted first, as a list does)
            elif op == "del-neg":
                del d[-(step % len(mirror)) - 1]
            elif op == "set-neg":
                d[-(step % len(mirror)) - 1] = new
            elif op == "iadd":
                d += absent[:2]
            elif op == "rotate":
                d.rotate(step % 5)
            elif op == "imul":
                d *= times
        assert list(q) == list(mirror), op
        assert _kept(q) == _walked(mirror), op  # (a priority or a pair of lengths none waits with is not listed)
        assert q.inversions == _inversions(mirror), op
        assert type(q) is WaitingQueue
        seen.add(op)
    assert seen == set(ops)
    with pytest.raises(ValueError):
        WaitingQueue().remove(pool[0])
    with pytest.raises(IndexError):
        WaitingQueue().popleft()


def test_copies_and_pickles_recount_and_a_worker_always_holds_one():
    reqs = make_requests(4, prompt_tokens=100, output_tokens=[1, 2, 3, 4])
    reqs[3].num_computed_tokens, reqs[3].output_tokens, reqs[3].priority = 40, 2, 5
    q = WaitingQueue(reqs)
    assert q.tokens == 410 == sum(map(request_tokens, reqs))
    totals = (410, 360, 8, {0: 3, 5: 1}, {0: 300, 5: 60}, {None: ["r0", "r1", "r2", "r3"]},
              {(0, 1): 1, (0, 2): 1, (0, 3): 1, (2, 4): 1})
    assert _kept(q) == totals
    for other in (copy.copy(q), copy.deepcopy(q), pickle.loads(pickle.dumps(q)), q.copy()):
        assert type(other) is WaitingQueue and _kept(other) == _walked(other) == totals
    # a deque or a list given to a worker becomes one (the constructor, make_worker)
    assert type(Worker("w", "m").waiting) is WaitingQueue
    assert Worker("w", "m", waiting=deque(reqs)).waiting.tokens == 410
    assert make_worker(waiting=deque(reqs[:2])).waiting.tokens == 203


class _QueueCheckedLeastLoaded(LeastLoaded):
    """least-loaded by tokens, every candidate's kept queue totals checked against a walk of its queue."""

    name = "queue-checked-least-loaded"

    def __init__(self, settings=None) -> None:
        super().__init__(LeastLoaded.Settings(by="tokens"))
        self.checked, self.differ, self.longest, self.progressed = 0, [], 0, 0

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        for w in workers:
            if _kept(w.waiting) != _walked(w.waiting):
                self.differ.append((request.request_id, w.worker_id, _kept(w.waiting), _walked(w.waiting)))
            self.checked += 1
            self.longest = max(self.longest, len(w.waiting))
            self.progressed += sum(r.num_computed_tokens > 0 or r.output_tokens > 0 for r in w.waiting)
        return super().cp_route_request(ctx=ctx, request=request, workers=workers)


def test_the_kept_totals_hold_through_prefix_hits_preemptions_and_drains():
    # Overloaded (queues of hundreds), replicas started and drained (a drained queue is re-routed), prefix hits
    # (asked as a queued request's prefill starts: it leaves the queue first) and preemptions (a preempted request
    # re-enters the queue with its KV dropped), priorities of several values.
    trace = [replace(t, hash_ids=(i % 5, 100 + i % 3, 1000 + i), hash_block_tokens=16, priority=i % 3)
             for i, t in enumerate(make_trace(1500, qps=60.0, prompt_tokens=48, output_tokens=200, seed=5))]
    router = _QueueCheckedLeastLoaded()
    res = replay_with(router, ScaleCycle(), trace=trace,
                      plugins={"enabled": ["prefix-cache", "least-loaded", "continuous-batching", "fixed-replicas",
                                           "static-memory", "builtin-latency-models"]},
                      cluster={"models": [{"name": "default", "replicas": 2, "cold_start_s": 3.0, "max_num_seqs": 32,
                                           "num_kv_blocks": 100}]})
    assert res.summary["num_completed"] == 1500 and res.summary["num_plugin_errors"] == 0
    assert router.differ == [] and router.checked > 1500 and router.longest > 100
    assert res.summary["num_preemptions"] > 20 and router.progressed > 0
    assert sum(r.cached_tokens > 0 for r in res.requests) > 500
    assert any(d.action == "scale" for d in res.decisions)
