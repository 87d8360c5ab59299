"""The live driver scales its worker pool from the same scale decisions as the simulator; a
scale-up the pool cannot place is recorded as a decision, and nothing is lost."""

from __future__ import annotations

import asyncio

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import ScaleDecision
from controlplane.live.driver import LiveDriver
from controlplane.live.placement import NoFreeDevice, WorkerSlots
from controlplane.live.pool_thread import LocalThreadPool
from tests.live.test_driver import config, rows, run


class _Steps(Plugin):
    """Wants ``targets[i]`` replicas from ``times[i]`` seconds after ``t0`` on (one before ``t0`` is set)."""

    name = "steps"

    def __init__(self, times, targets) -> None:
        super().__init__()
        self.times, self.targets = times, targets
        self.t0: float | None = None

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        want = 1
        for t, n in zip(self.times, self.targets):
            if self.t0 is not None and ctx.now_s >= self.t0 + t:
                want = n
        return ScaleDecision(model, want, f"test wants {want}")


def _run(cfg, plugin, pool, body):
    return run(cfg, body, pool=pool, extra_plugins=[plugin])


async def _complete(d: LiveDriver, n: int):
    return await asyncio.gather(*(d.generate(f"hello number {i}", max_tokens=4, ignore_eos=True) for i in range(n)))


def test_the_pool_follows_scale_decisions_up_and_down(tmp_path):
    cfg = config(tmp_path, model={"cold_start_s": 0})
    pool = LocalThreadPool(cpu_threads=1)
    seen: list[int] = []
    steps = _Steps([0.5, 6.0], [2, 1])

    async def body(d: LiveDriver):
        await _complete(d, 2)
        steps.t0 = d.now_s()
        for _ in range(600):  # up to 2 at +0.5 s, back to 1 at +6 s
            seen.append(len([w for w in pool.worker_ids() if pool.alive(w)]))
            if d.now_s() > steps.t0 + 8.0:
                break
            await asyncio.sleep(0.05)
        return await _complete(d, 3)

    replies, summary, d = _run(cfg, steps, pool, body)
    assert max(seen) == 2 and seen[-1] == 1  # a second worker started, then drained and stopped
    assert summary["num_completed"] == 5 and all(r.text for r in replies)
    scale = [r for r in rows(cfg.storage.url, d.run_id, "decisions") if r["action"] == "scale"]
    assert [(r["payload"]["from"], r["payload"]["to"]) for r in scale] == [(1, 2), (2, 1)]


def test_an_unplaceable_scale_up_is_a_decision_row_and_loses_nothing(tmp_path, caplog):
    cfg = config(tmp_path, model={"cold_start_s": 0})
    pool = LocalThreadPool(cpu_threads=1, max_workers=1)

    steps = _Steps([0.0], [3])

    async def body(d: LiveDriver):
        steps.t0 = d.now_s()
        await asyncio.sleep(1.0)
        return await _complete(d, 3)

    replies, summary, d = _run(cfg, steps, pool, body)
    assert summary["num_completed"] == 3 and all(r.text for r in replies)
    decisions = rows(cfg.storage.url, d.run_id, "decisions")
    unplaced = [r for r in decisions if r["action"] == "scale_unplaced"]
    assert unplaced and unplaced[0]["subject"] == "tiny" and unplaced[0]["payload"]["placed"] is False
    assert "could not be placed" in unplaced[0]["reason"] and "worker slots" in unplaced[0]["reason"]
    # retried after a pause, not at every tick
    assert len(unplaced) <= 2 * (1 + int(d.now_s() // 15))
    assert summary["peak_replicas"] == 1  # the replicas that found no slot never existed (they read 3)
    # a warning saying why, naming every replica not placed, not an ERROR "could not start" as if the worker had
    # failed; nor "scale 1 -> 3 replicas" as if they were placed (and a WARNING for the first unplaced one alone)
    scaled = [r for r in caplog.records if r.getMessage().startswith("model tiny: scale 1 -> 3 replicas")]
    assert scaled[0].levelname == "WARNING", [r.getMessage() for r in scaled]
    assert scaled[0].getMessage().startswith(
        "model tiny: scale 1 -> 3 replicas asked, 0 of 2 placed: tiny-1, tiny-2 were not placed (no free slot for "
        "tiny-1: all 1 worker slots of this pool are in use; no free slot for tiny-2: "), scaled[0].getMessage()
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "could not start" in r.getMessage()]


def test_a_scale_up_placed_in_part_logs_what_was_placed(tmp_path, caplog):
    """``model tiny: scale 1 -> 3 replicas`` was logged when one of the two new replicas found no slot: the line
    now comes once the pool placed or refused them, saying which were placed."""
    cfg = config(tmp_path, model={"cold_start_s": 0})
    pool = LocalThreadPool(cpu_threads=1, max_workers=2)
    steps = _Steps([0.0], [3])

    async def body(d: LiveDriver):
        steps.t0 = d.now_s()
        await asyncio.sleep(1.0)
        return await _complete(d, 1)

    with caplog.at_level("INFO", logger="controlplane.live.driver"):
        _run(cfg, steps, pool, body)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model tiny: scale 1 -> 3")]
    assert lines and lines[0].startswith("model tiny: scale 1 -> 3 replicas asked, 1 of 2 placed: tiny-2 was not "
                                         "placed (no free slot for tiny-2: all 2 worker slots"), lines


def test_worker_slots_refuse_beyond_the_limit():
    slots = WorkerSlots(2)
    slots.check("a", 0)
    slots.check("b", 1)
    with pytest.raises(NoFreeDevice, match="unplaceable: no free slot for c"):
        slots.check("c", 2)
    with pytest.raises(ValueError):
        WorkerSlots(0)


def test_a_shadow_policy_is_recorded_live_and_applies_nothing(tmp_path):
    base = ["queue-limit", "exact-cache", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
            "sampled-guardian", "builtin-latency-models", "shadow"]
    cfg = config(tmp_path, model={"cold_start_s": 0}, plugins={
        "enabled": base, "settings": {"shadow": {"policies": ["slo-planner"],
                                                 "settings": {"slo-planner": {"min_replicas": 2, "max_replicas": 4}}}}})
    pool = LocalThreadPool(cpu_threads=1)

    async def body(d: LiveDriver):
        out = await _complete(d, 3)
        await asyncio.sleep(0.5)
        return out, len(pool.worker_ids())

    (replies, workers), summary, d = _run(cfg, _Steps([], []), pool, body)
    assert summary["num_completed"] == 3 and workers == 1  # the shadow wanted 2; nothing was applied
    decisions = rows(cfg.storage.url, d.run_id, "decisions")
    shadow = [r for r in decisions if r["action"] == "shadow_scale"]
    assert shadow and shadow[0]["plugin"] == "slo-planner" and shadow[0]["payload"]["to"] >= 2
    assert shadow[0]["payload"]["active_to"] == 1 and "learned" in shadow[0]["reason"]  # no latency model live
    assert not [r for r in decisions if r["action"] == "scale"]


def test_the_daemon_passes_its_worker_limit_to_the_pool(tmp_path):
    from controlplane.live.daemon import Daemon, DaemonOptions

    d = Daemon(config(tmp_path), DaemonOptions(pool="thread", max_workers=2), record=False)
    assert d.driver.pool._slots.limit == 2


def test_unplaced_retries_are_logged_once_and_never_as_loading(tmp_path, caplog, monkeypatch):
    """Each retry of a full pool logged INFO "starting: loading" then a WARNING, forever."""
    import controlplane.worker_lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "UNPLACED_RETRY_S", 0.5)  # retries within the test
    cfg = config(tmp_path, model={"cold_start_s": 0})
    pool = LocalThreadPool(cpu_threads=1, max_workers=1)
    steps = _Steps([0.0], [2])

    async def body(d: LiveDriver):
        steps.t0 = d.now_s()
        await asyncio.sleep(3.5)
        return await _complete(d, 1)

    with caplog.at_level("DEBUG", logger="controlplane.live.driver"):
        _replies, _summary, d = _run(cfg, steps, pool, body)
    unplaced = [r for r in rows(cfg.storage.url, d.run_id, "decisions") if r["action"] == "scale_unplaced"]
    said = [r for r in caplog.records if "not started: no device or worker slot" in r.getMessage()]
    assert len(unplaced) >= 2 and len(said) == len(unplaced) and {r.levelname for r in said} == {"DEBUG"}
    asked = [r for r in caplog.records if "replicas asked, 0 of 1 placed" in r.getMessage()]  # each retry, one line
    assert len(asked) == len(unplaced) and [r.levelname for r in asked] == ["WARNING"] + ["INFO"] * (len(asked) - 1)
    loading = [r.getMessage() for r in caplog.records if "starting: loading" in r.getMessage()]
    assert len(loading) == 1  # the one placed worker only


def test_no_worker_starts_once_draining(tmp_path):
    """kpa decided 3 -> 4 after SIGTERM: a worker loaded only to be stopped."""
    cfg = config(tmp_path, model={"cold_start_s": 0})
    pool = LocalThreadPool(cpu_threads=1)
    steps = _Steps([0.0], [2])

    async def body(d: LiveDriver):
        await _complete(d, 1)
        d.begin_drain()
        steps.t0 = d.now_s()
        await asyncio.sleep(1.5)
        return len(pool.worker_ids())

    workers, _summary, d = _run(cfg, steps, pool, body)
    assert workers == 1
    unplaced = [r for r in rows(cfg.storage.url, d.run_id, "decisions") if r["action"] == "scale_unplaced"]
    assert unplaced and "draining" in unplaced[0]["reason"]


def test_an_unplaced_start_is_recorded_as_failed_only_and_bills_nothing(tmp_path):
    """Each start a full pool refused was recorded (and counted on /metrics) as ``starting`` and then ``failed``:
    starting - ready - failed was no longer the starts in progress, and its milliseconds were billed."""
    cfg = config(tmp_path, model={"cold_start_s": 0})
    pool = LocalThreadPool(cpu_threads=1, max_workers=1)
    steps = _Steps([0.0], [3])

    async def body(d: LiveDriver):
        steps.t0 = d.now_s()
        await asyncio.sleep(1.5)
        return await _complete(d, 2)

    _replies, summary, d = _run(cfg, steps, pool, body)
    unplaced = {r["payload"]["worker"] for r in rows(cfg.storage.url, d.run_id, "decisions")
                if r["action"] == "scale_unplaced"}
    assert unplaced
    events = rows(cfg.storage.url, d.run_id, "worker_events")
    for wid in unplaced:  # one row: its failure, said to be unplaced
        assert [(e["kind"], e["detail"].get("unplaced")) for e in events if e["worker_id"] == wid] == [("failed", True)]
    get = d.metrics.registry.get_sample_value
    counted = {k: get("controlplane_worker_events_total", {"kind": k}) or 0.0
               for k in ("starting", "ready", "failed", "unplaced")}
    assert counted == {"starting": 1.0, "ready": 1.0, "failed": 0.0, "unplaced": float(len(unplaced))}
    # the GPU time billed is the placed replica's span in the worker events, from `starting` to its end
    spans = {}
    for e in events:
        if e["kind"] in ("starting", "stopped", "failed"):
            spans.setdefault(e["worker_id"], []).append(e["time_s"])
    billed = sum(s[-1] - s[0] for s in spans.values())
    assert abs(summary["gpu_seconds"] - billed) < 1e-6
