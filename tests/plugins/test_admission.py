"""Admission: the queue limit."""

from __future__ import annotations

from collections import deque

import pytest

from controlplane.testing import make_context, make_requests, make_worker
from controlplane.types import WorkerState
from plugins.admission import QueueLimit


def _ask(settings: dict, workers, prompt_tokens: int = 100):
    request = make_requests(1, prompt_tokens=prompt_tokens, model="default")[0]
    plugin = QueueLimit(QueueLimit.Settings(**settings))
    return plugin.cp_admit_request(ctx=make_context(workers=workers), request=request)


def test_admits_everything_by_default():
    w = make_worker(waiting=deque(make_requests(1000)))
    assert _ask({}, [w]) is None  # it defers: admission policies listed after it still decide


def test_max_queued_counts_every_replica_of_the_model():
    a = make_worker("default-0", waiting=deque(make_requests(3)))
    b = make_worker("default-1", waiting=deque(make_requests(2, prefix="b")))
    other = make_worker("chat-0", model="chat", waiting=deque(make_requests(50, prefix="c")))
    assert _ask({"max_queued": 6}, [a, b, other]) is None
    d = _ask({"max_queued": 5}, [a, b, other])
    assert not d.admit and d.reason == "queue full: 5 waiting >= limit 5"


def test_max_queued_per_replica_scales_with_replicas_that_accept_requests():
    a = make_worker("default-0", waiting=deque(make_requests(4)))
    b = make_worker("default-1")
    assert _ask({"max_queued_per_replica": 2}, [a, b]).admit is False
    assert _ask({"max_queued_per_replica": 3}, [a, b]) is None
    b.state = WorkerState.DRAINING
    assert _ask({"max_queued_per_replica": 3}, [a, b]).admit is False


def test_max_prompt_tokens():
    d = _ask({"max_prompt_tokens": 50}, [make_worker()], prompt_tokens=51)
    assert not d.admit and d.reason == "prompt too long: 51 > 50 tokens"


def test_settings_are_validated():
    with pytest.raises(ValueError):
        QueueLimit.Settings(max_queued=-1)


def test_without_a_limit_it_withdraws_its_hook():
    """No limit set: every request would be deferred, so it is not asked (`Plugin.withdraw`)."""
    marked = "controlplane_impl"
    assert getattr(QueueLimit().cp_admit_request, marked, None) is None
    for limit in ({"max_queued": 3}, {"max_queued_per_replica": 1}, {"max_prompt_tokens": 10}):
        assert getattr(QueueLimit(QueueLimit.Settings(**limit)).cp_admit_request, marked, None) is not None
