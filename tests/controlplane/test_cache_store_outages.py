"""A run's summary carries its cache stores' outages (``cache_store_outages``, ``cache_store_down_s``), whatever its
record level: a sweep with ``record: summary`` hid a Redis outage (hit rates fell, 0.8993 to 0.8477, and nothing said
why; the ``cache_store_down`` decisions are stored only with ``record: full``)."""

from __future__ import annotations

import shutil

import pytest

from controlplane import Plugin, hookimpl
from controlplane.testing import make_config, replay_with
from sim.traces.record import TraceRequest
from tests.fixtures.common import REDIS_URL
from tests.plugins.test_cache_backends import OwnRedis

pytest.importorskip("redis")


def _trace(n: int = 30) -> list[TraceRequest]:
    return [TraceRequest(f"r{i}", 1.0 * i, 12, 4, prompt=f"question {i % 3}") for i in range(n)]


def _on(url: str) -> dict:
    return {"enabled": make_config().plugins.enabled,
            "settings": {"exact-cache": {"backend": "redis", "redis_url": url, "retry_after_s": 0.0}}}


def _outages(summary: dict) -> tuple:
    return summary["cache_store_outages"], summary["cache_store_down_s"]


def test_a_run_without_a_store_that_can_fail_says_null():
    assert _outages(replay_with(trace=_trace()).summary) == (None, None)  # exact-cache in memory


def test_an_unreachable_redis_is_one_outage_lasting_from_the_first_lookup_to_the_runs_end():
    s = replay_with(trace=_trace(), plugins=_on("redis://127.0.0.1:1/3")).summary  # nobody listens on port 1
    assert s["cache_hits"] == 0
    assert _outages(s) == (1, pytest.approx(s["sim_end_s"] - 0.0))


class _StopsRedis(Plugin):
    """Stops the test's own Redis at the lookup of request r10 and starts it again at r20's (the decision is the
    cache's: this plugin answers nothing)."""

    name = "stops-redis"

    def __init__(self, server: OwnRedis) -> None:
        super().__init__()
        self.server = server

    @hookimpl
    def cp_cache_lookup(self, ctx, request):
        if request.request_id == "r10":
            self.server.stop()
        elif request.request_id == "r20":
            self.server.start()
        return None


def test_a_redis_stopped_mid_run_is_counted_with_the_run_time_it_was_down():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis()
    server.start()
    try:
        up = replay_with(trace=_trace(), plugins=_on(f"redis://127.0.0.1:{server.port}/0")).summary
        assert _outages(up) == (0, 0.0) and up["cache_hits"] == 27
        down = replay_with(_StopsRedis(server), trace=_trace(), plugins=_on(f"redis://127.0.0.1:{server.port}/0"))
    finally:
        server.stop()
    s = down.summary
    assert _outages(s) == (1, 10.0)  # down at r10's lookup (10 s), up again at r20's (20 s)
    assert s["cache_hits"] < up["cache_hits"]
    stored = [d.action for d in down.decisions if d.action.startswith("cache_store_")]
    assert stored == ["cache_store_down", "cache_store_up"]


def test_shared_redis_up_is_zero_outages():
    s = replay_with(trace=_trace(), plugins=_on(REDIS_URL)).summary
    assert _outages(s) == (0, 0.0) and s["cache_hits"] > 0
