"""Shared fixtures: small random-weight models built locally (no downloads), one torch thread.

One intra-op thread keeps timings sane on a shared 2-core machine (two OpenMP threads competing
with another busy process can make each step ~100x slower) and the tests deterministic.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from controlplane.live.backend import CausalLMBackend  # noqa: E402
from controlplane.live.model_source import WorkerModelSettings, load_model  # noqa: E402
from tests.live.daemon_process import wait_until_ready


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_settings() -> WorkerModelSettings:
    return WorkerModelSettings(preset="tiny-llama", precision="fp32", device="cpu", max_seq_len=256)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_settings):
    return load_model(tiny_settings)


@pytest.fixture()
def engine(tiny_loaded) -> CausalLMBackend:
    """A fresh engine over the shared fp32 model (engines hold no weights of their own)."""
    return CausalLMBackend(tiny_loaded, max_seq_len=256)


def record_timed_live_runs(url: str, count: int, models: list[dict] | None = None) -> list[tuple[int, list]]:
    """``count`` short live runs of the same requests into ``url``, their iterations timed (the driver's
    `IterationTimed` events, kept by an `IterationLog` and stored with ``storage.record_iterations``:
    what `calibrate` reads): ``[(run_id, samples), ...]``. With ``models`` (the config's), the requests
    go to each model in turn."""
    import asyncio

    from controlplane.live.driver import LiveDriver
    from controlplane.live.iteration_log import IterationLog
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import make_config

    models = models or [
        {"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}}]
    cfg = make_config(storage={"url": url, "record_iterations": True}, cluster={"models": models})
    names = [m["name"] for m in models]

    async def main():
        log = IterationLog()
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1), extra_plugins=[log])
        await driver.start(wait_ready_s=120)
        try:
            first = [await driver.submit([5 + i] * (4 + 3 * i), max_tokens=6, ignore_eos=True,
                                         model=names[i % len(names)]) for i in range(3)]
            await asyncio.sleep(0.02)
            later = [await driver.submit([9] * 20, max_tokens=4, ignore_eos=True, model=names[(i + 1) % len(names)])
                     for i in range(2)]
            results = [await h.result() for h in first + later]
        finally:
            await driver.close()
        assert all(r.ok for r in results)
        return driver.run_id, log.samples

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [asyncio.run(main()) for _ in range(count)]
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def timed_live_run(tmp_path_factory):
    """A short recorded live run with its iterations timed: ``(url, run_id, samples)``."""
    url = f"sqlite:///{tmp_path_factory.mktemp('live') / 'live.db'}"
    ((run_id, samples),) = record_timed_live_runs(url, 1)
    return url, run_id, samples


@pytest.fixture(scope="session")
def timed_live_repeats(tmp_path_factory):
    """Three recorded live runs of the same requests (repeats of one window of traffic): ``(url, [run_id, ...])``."""
    url = f"sqlite:///{tmp_path_factory.mktemp('repeats') / 'live.db'}"
    return url, [run_id for run_id, _ in record_timed_live_runs(url, 3)]


class StepCounter:
    """Counts the worker steps a pool runs (wraps its ``step``): invalid requests must cause none."""

    def __init__(self, pool) -> None:
        self.count = 0
        self._step = pool.step
        pool.step = self

    async def __call__(self, worker_id, cmd):
        self.count += 1
        return await self._step(worker_id, cmd)


@pytest.fixture(scope="session")
def api():
    """An in-process daemon on a thread pool (one tiny-llama worker, no recording) as a
    ``TestClient``, with its pool's steps counted: ``(client, daemon, steps)``."""

    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config

    cfg, _ = daemon_config(None, workers=1)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, default_max_tokens=4), record=False)
    with TestClient(daemon.app, raise_server_exceptions=False) as client:
        wait_until_ready(client)
        yield client, daemon, StepCounter(daemon.driver.pool)
