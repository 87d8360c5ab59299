"""A guardian past its capacity, live as simulated (`controlplane.live.guardian_queue`,
`sim.guardian_pool`): its checks wait in one queue; one that times out still queued never runs, one
that times out running runs to its end, its worker in flight with it meanwhile; the live summary has
each guardian's mean check time and mean wait."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from controlplane.live.driver import LiveDriver
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.testing import make_config, replay_with
from sim.traces.record import TraceRequest

pytest.importorskip("torch")

N = 5  # checks asked at once of a guardian whose one worker is busy past their timeout
TIMEOUT_S = 0.2


class _CountingPool(LocalThreadPool):
    """The thread pool, counting the guardian checks its workers answered."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.answered = 0

    async def command(self, worker_id: str, cmd: Any) -> Any:
        out = await super().command(worker_id, cmd)
        if type(out).__name__ == "GuardianVerdict":
            self.answered += 1
        return out


def _hold(pool: LocalThreadPool, wid: str) -> threading.Event:
    """Keep a thread-pool worker busy (as a slow model would) until the event is set."""
    release = threading.Event()
    pool._workers[wid].executor.submit(release.wait, 120)
    return release



def _rules_config(db, timeout_s, **more):
    """One tiny served model and a rules guardian of ``timeout_s``, stored in the SQLite file ``db``."""
    return make_config(
        storage={"url": f"sqlite:///{db}"},
        cluster={"models": [{"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama", "max_seq_len": 256}}]},
        guardians={"models": [{"name": "rules", "kind": "rules", "blocklist": ["forbidden"], "timeout_s": timeout_s}]},
        **more)

def test_live_checks_that_time_out_queued_never_run_and_the_running_one_stays_in_flight(tmp_path):
    # Before, every check went to the worker at once: the 5 that timed out left `inflight` at 0 at
    # their timeout while all 5 stayed queued on the worker and ran there, one after the other.
    cfg = _rules_config(tmp_path / "live.db", TIMEOUT_S)
    pool = _CountingPool(cpu_threads=1)

    async def main():
        async with LiveDriver(cfg, pool=pool) as driver:
            await driver.wait_ready(120)
            guardians = driver.guardians
            g = guardians.guardians["rules"]
            host = g.hosts["guardian-rules-0"]
            release = _hold(pool, "guardian-rules-0")
            try:
                answers = await asyncio.gather(*(guardians.check("rules", f"text {i}") for i in range(N)))
                held = (host.inflight, len(g.queue), guardians.worker_listing(pool)[0]["inflight"])
            finally:
                release.set()
            deadline = time.monotonic() + 30
            while host.inflight:  # the timed-out check that reached the worker ends now
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            ran_after_release = pool.answered
            later = await guardians.check("rules", "a forbidden text")
            return answers, held, ran_after_release, later, guardians.summary()["guardians"]["rules"]

    answers, held, ran, later, summary = asyncio.run(main())
    assert [a[0] for a in answers] == ["timeout"] * N
    assert held == (1, 0, 1)  # the one the worker took stays in flight; the queued ones left the queue
    assert ran == 1  # only the check the worker had taken ran
    assert later[0] == "block"  # the worker is free again: the next check gets its verdict
    assert pool.answered == 2
    assert summary["timeouts"] == N and summary["checks_run"] == 2
    assert summary["mean_check_s"] == pytest.approx(summary["busy_s"] / 2, abs=1e-6)  # (both rounded to 1 us)
    # waits: ~0 (the first, taken at once), the whole timeout for the 4 never taken, ~0 for the later one
    assert summary["mean_wait_s"] == pytest.approx((N - 1) * TIMEOUT_S / (N + 1), abs=0.02)


def test_the_simulator_runs_only_the_check_a_replica_took_of_those_that_timed_out():
    # The same guardian in the simulator: N checks asked at one instant of one replica that takes one
    # at a time and runs it for 3 s, past the 0.2 s timeout: one runs to its end, the others never run.
    trace = [TraceRequest(str(i), 0.0, 16, 1) for i in range(N)]
    slow = {"name": "slow", "replicas": 1, "timeout_s": TIMEOUT_S, "gpus_per_replica": 0,
            "latency": {"base_s": 3.0, "max_batch": 1}}
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": N}]},
                      guardians={"models": [slow]},
                      plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync", "guardian": "slow"}}})
    g = res.summary["guardians"]["slow"]
    assert [r.guardian_verdict for r in res.requests] == ["timeout"] * N
    assert g["timeouts"] == N and g["batches"] == 1 and g["busy_s"] == pytest.approx(3.0)
    assert g["mean_wait_s"] == pytest.approx((N - 1) * TIMEOUT_S / N, abs=0.01)


def test_a_queued_check_whose_request_was_cancelled_never_runs_and_answers_cancelled(tmp_path):
    # An SRE soak: a request cancelled at 251.118 s had its queued rules and judge checks answered at 251.130 and
    # 251.164 s (10 such checks in the run, some using up a judge's timeout); guardian_check rows outnumbered
    # guardian_outcome rows and answers_checked_by.rules (2,635) exceeded answers_checked (2,630).
    from controlplane.testing import stored_rows

    cfg = _rules_config(tmp_path / "left.db", 60,
                        plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync", "guardian": "rules"}}})
    pool = _CountingPool(cpu_threads=1)

    async def main():
        async with LiveDriver(cfg, pool=pool) as driver:
            await driver.wait_ready(120)
            guardians = driver.guardians
            g = guardians.guardians["rules"]
            release = _hold(pool, "guardian-rules-0")
            try:
                ahead = asyncio.ensure_future(guardians.check("rules", "taken by the worker first"))
                handle = await driver.submit("hello", max_tokens=2, ignore_eos=True)
                deadline = time.monotonic() + 60
                while not g.queue:  # generated; its answer's check waits behind the one the worker took
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                handle.cancel("client disconnected")
                result = await handle.result()
            finally:
                release.set()
            await ahead
            deadline = time.monotonic() + 30
            while guardians.summary()["guardians"]["rules"]["cancelled"] == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            return result, handle.request_id, driver.run_id, guardians.summary()["guardians"]["rules"]

    result, rid, run_id, summary = asyncio.run(main())
    assert result.status == "cancelled"
    assert pool.answered == 1  # only the check the worker had taken ran
    assert summary["cancelled"] == 1 and summary["checks_run"] == 1 and len(summary["workers"]) == 1
    verdicts = [(d["payload"]["verdict"], d["reason"]) for d in stored_rows(cfg.storage.url, run_id, "decisions")
                if d["action"] == "guardian_verdict" and d["subject"] == rid]
    assert verdicts == [("cancelled", "not run: its request left (cancelled) before a worker took it")]


def test_the_simulator_skips_a_queued_check_whose_request_left_as_live():
    from controlplane.types import RequestStatus
    from controlplane import actions as act
    from controlplane.testing import make_requests
    from sim.guardian_pool import SimGuardianPool

    timers: list[tuple[float, Any, Any]] = []
    clock = [0.0]

    class _Timer:
        def __init__(self, value: Any) -> None:
            self._value = value

    def after(delay: float, fn: Any, value: Any) -> None:
        timers.append((clock[0] + delay, fn, value))

    delivered: list[tuple[str, str]] = []
    cfg = make_config(guardians={"models": [{"name": "g", "replicas": 1, "timeout_s": 60,
                                             "latency": {"base_s": 1.0, "max_batch": 1}}]})
    pool = SimGuardianPool(cfg, seed=0, after=after, now=lambda: clock[0],
                           deliver=lambda rid, verdict, *rest: delivered.append((rid, verdict)))
    first, second = make_requests(2, prompt_tokens=8)
    for r in (first, second):
        pool.submit(act.RunGuardian(r, "g", "sync", "input"))
    second.status = RequestStatus.CANCELLED  # it left while its check waited behind the first
    while timers:
        timers.sort(key=lambda t: t[0])
        at, fn, value = timers.pop(0)
        clock[0] = at
        fn(_Timer(value))
    assert [v for _, v in delivered] == ["pass", "cancelled"] or [v for _, v in delivered] == ["block", "cancelled"]
    g = pool.summary(clock[0])["guardians"]["g"]
    assert g["cancelled"] == 1 and g["batches"] == 1 and g["busy_s"] == pytest.approx(1.0)
