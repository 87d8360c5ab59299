"""`Worker.waiting` keeps its requests' tokens as they come and go (controlplane/waiting_queue.py)."""

from __future__ import annotations

import copy
import pickle
import random
from collections import deque

import pytest

from controlplane.testing import make_requests, make_worker
from controlplane.types import Worker
from controlplane.waiting_queue import WaitingQueue, request_tokens


def _sum(q) -> int:
    return sum(r.prompt_tokens + r.max_output_tokens for r in q)


def test_every_method_that_adds_or_removes_keeps_the_total():
    pool = make_requests(40, prompt_tokens=[7 * i + 1 for i in range(40)], output_tokens=[i % 9 + 1 for i in range(40)])
    rnd = random.Random(3)
    q, mirror = WaitingQueue(pool[:5]), deque(pool[:5])
    ops = ["append", "appendleft", "extend", "extendleft", "insert", "pop", "popleft", "remove", "del", "set",
           "iadd", "rotate", "reverse", "clear", "imul"]
    for step in range(3000):
        op = rnd.choice(ops)
        new = rnd.choice(pool)
        if op in ("pop", "popleft", "remove", "del", "set") and not mirror:
            continue
        if op == "clear" and rnd.random() > 0.02 or op == "imul" and (rnd.random() > 0.02 or len(mirror) > 20):
            continue
        for d in (q, mirror):
            if op in ("append", "appendleft"):
                getattr(d, op)(new)
            elif op in ("extend", "extendleft"):
                getattr(d, op)(iter(pool[step % 7:step % 7 + 3]))  # (an iterator: read once)
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
            elif op == "iadd":
                d += pool[:2]
            elif op == "rotate":
                d.rotate(step % 5)
            elif op == "imul":
                d *= 2
        assert list(q) == list(mirror), op
        assert q.tokens == _sum(mirror), op
        assert type(q) is WaitingQueue
    with pytest.raises(ValueError):
        WaitingQueue().remove(pool[0])
    with pytest.raises(IndexError):
        WaitingQueue().popleft()


def test_copies_and_pickles_recount_and_a_worker_always_holds_one():
    reqs = make_requests(4, prompt_tokens=100, output_tokens=[1, 2, 3, 4])
    q = WaitingQueue(reqs)
    assert q.tokens == 410 == sum(map(request_tokens, reqs))
    for other in (copy.copy(q), copy.deepcopy(q), pickle.loads(pickle.dumps(q)), q.copy()):
        assert type(other) is WaitingQueue and other.tokens == _sum(other) == 410
    # a deque or a list given to a worker becomes one (the constructor, make_worker)
    assert type(Worker("w", "m").waiting) is WaitingQueue
    assert Worker("w", "m", waiting=deque(reqs)).waiting.tokens == 410
    assert make_worker(waiting=deque(reqs[:2])).waiting.tokens == 203
