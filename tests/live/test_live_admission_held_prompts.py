"""queue-limit live, as in the simulator (`tests/plugins/test_admission.py`): before any iteration was timed, the
requests a sync guardian holds for their prompts' checks take a replica's waiting places too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.live.driver import LiveDriver
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.testing import make_config

pytest.importorskip("torch")


def _admitted_of_a_burst(tmp_path: Path, stages: list[str]) -> int:
    """40 requests at once, as the run starts, on one replica of 8 batch slots (a daemon's --request-timeout sets
    max_finish_s), a rules guardian checking ``stages`` of every request before its reply: how many were admitted."""
    cfg = make_config(
        storage={"url": f"sqlite:///{tmp_path / ('_'.join(stages) + '.db')}"},
        cluster={"models": [{"name": "tiny", "replicas": 1, "max_num_seqs": 8, "worker": {"preset": "tiny-llama"}}]},
        guardians={"models": [{"name": "rules", "kind": "rules", "blocklist": ["never said"]}]},
        plugins={"settings": {"queue-limit": {"max_finish_s": 600},
                              "sampled-guardian": {"rate": 1.0, "mode": "sync", "stages": stages,
                                                   "guardians": ["rules"]}}})

    async def main() -> list[str]:
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start()
        try:
            handles = [await driver.submit(f"prompt {i}", max_tokens=2) for i in range(40)]
            return [r.status for r in await asyncio.gather(*(h.result() for h in handles))]
        finally:
            await driver.close()

    return sum(status != "rejected" for status in asyncio.run(main()))


def test_a_cold_burst_checked_for_its_prompts_is_admitted_as_one_checked_for_its_answers_only(tmp_path):
    """An SRE soak: 27 of 40 admitted where 8 slots + 8 waiting places allow 16, with prompts checked (16 without)."""
    assert _admitted_of_a_burst(tmp_path, ["input", "output"]) == 16
    assert _admitted_of_a_burst(tmp_path, ["output"]) == 16
