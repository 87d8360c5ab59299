"""A live run that served a warm-up before its traffic and recorded where the traffic began
(``warm_up_until_s`` in its summary, as benchmarks/fidelity.py's runs do): `controlplane calibrate` fits the
traffic's iterations, not the warm-up's, unless told otherwise (``--from-s``)."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from controlplane.cli import bench
from controlplane.live.iteration_log import read_live_run
from controlplane.storage import make_engine


@pytest.fixture(scope="module")
def warmed_run(tmp_path_factory):
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import make_config

    url = f"sqlite:///{tmp_path_factory.mktemp('warm') / 'live.db'}"
    cfg = make_config(storage={"url": url, "record_iterations": True}, cluster={"models": [
        {"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}}]})

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            await (await driver.submit([7] * 30, max_tokens=8, ignore_eos=True, request_id="warm-up-0")).result()
            traffic_from = driver.now_s()
            handles = [await driver.submit([5 + i] * (4 + 3 * i), max_tokens=4, ignore_eos=True, request_id=f"t{i}")
                       for i in range(3)]
            results = [await h.result() for h in handles]
            assert all(r.ok for r in results)
        finally:
            await driver.close(extra={"warm_up_until_s": traffic_from})
        return driver.run_id, traffic_from

    run_id, traffic_from = asyncio.run(main())
    return url, run_id, traffic_from


def test_the_warm_ups_iterations_are_left_out_unless_asked_for(warmed_run):
    url, run_id, traffic_from = warmed_run
    engine = make_engine(url)
    try:
        everything = read_live_run(engine, run_id, from_s=0)
        traffic = read_live_run(engine, run_id)
    finally:
        engine.dispose()
    assert everything.left_out == 0 and len(everything.samples) >= 8 + 4  # (the warm-up's 8 steps, then the traffic)
    assert traffic.from_s == traffic_from and traffic.left_out >= 8
    assert len(traffic.samples) == len(everything.samples) - traffic.left_out
    assert all(s.start_s >= traffic_from for s in traffic.samples)


def test_calibrate_says_what_it_left_out(warmed_run, tmp_path):
    url, run_id, _ = warmed_run
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "-o", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert f"run {run_id}: " in res.output and "left out (its warm-up; --from-s 0 keeps them)" in res.output
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--from-s", "1e6",
                                         "-o", str(tmp_path / "q.json")])
    assert res.exit_code != 0 and "has no iteration from 1e+06 s on" in res.output
