"""Requests cut off by the daemon's stop: their clients are told 503 ``unavailable`` ("the daemon stopped before the
request finished"), and their rows now say the same (they said reason_code NULL, "still in the system when the run
ended", which no query for the code finds)."""

from __future__ import annotations

import asyncio

from controlplane.live.driver import LiveDriver
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.live.results import CUT_OFF
from controlplane.testing import stored_rows
from controlplane.types import ReasonCode
from tests.live.test_driver import config


def test_requests_cut_off_are_stored_as_their_clients_were_told(tmp_path):
    cfg = config(tmp_path)

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            answered = [await driver.submit(f"a long story {i}", max_tokens=400, ignore_eos=True) for i in range(2)]
            async for _ in answered[0]:  # (streaming: it runs)
                break
            assert driver.answer_pending() == 2  # a second Ctrl-C, a drain timed out: answered now
            at_close = await driver.submit("one more", max_tokens=400, ignore_eos=True)  # answered by the close
            await asyncio.sleep(0.05)
        finally:
            summary = await driver.close(status="interrupted")
        return [await h.result() for h in [*answered, at_close]], summary

    results, summary = asyncio.run(main())
    assert [(r.status, r.http_status, r.reason_code, r.reason) for r in results] == \
        [("in_flight", 503, ReasonCode.UNAVAILABLE, CUT_OFF)] * 3
    assert summary["num_in_flight"] == 3
    stored = {r["request_id"]: r for r in stored_rows(cfg.storage.url, summary["run_id"], "requests")}
    assert [(stored[r.request_id]["status"], stored[r.request_id]["reason_code"], stored[r.request_id]["reason"])
            for r in results] == [("in_flight", "unavailable", CUT_OFF)] * 3
