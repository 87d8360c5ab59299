"""The Ray pool against a cluster that is missing, full or gone, with a stand-in for Ray (fast):

- an address with nothing listening is refused at once, without ``ray.init`` (which retried for minutes);
- nothing calls Ray once the pool closed it: a start still running at shutdown called ``ray.kill``
  after ``ray.shutdown()``, and Ray's implicit ``ray.init()`` started a new local Ray instance;
- an actor the cluster cannot place fails its start with `NoFreeDevice` (it stayed `starting` forever);
- a head whose GCS stops answering fails every worker with that reason and tells ``on_broken``, and
  no Ray call is made after it (each would block its thread until Ray's client ends the process).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import types

import pytest

from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.placement import NoFreeDevice
from controlplane.live.pool_ray import RayWorkerPool
from controlplane.live.worker_messages import WorkerStartError

SETTINGS = WorkerModelSettings(preset="tiny-llama", precision="fp32", device="cpu", max_seq_len=64)


class _ActorDied(Exception):
    pass


class FakeRay(types.SimpleNamespace):
    """What the pool calls of Ray; ``calls`` in order. Calls made while not initialised are recorded
    as ``<name> while shut down`` (the real Ray would start a local instance there)."""

    def __init__(self, *, total=None, free=None, gcs=None):
        super().__init__(initialized=False, calls=[], actors=[], total=total or {"CPU": 2.0},
                         free=free if free is not None else {"CPU": 2.0}, gcs=gcs)
        self.exceptions = types.SimpleNamespace(RayActorError=_ActorDied)

    def _call(self, name):
        self.calls.append(name if self.initialized else f"{name} while shut down")

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.calls.append("init")
        self.initialized = True

    def shutdown(self):
        self._call("shutdown")
        self.initialized = False

    def kill(self, actor, no_restart=True):
        self._call("kill")
        actor.killed = True

    def cluster_resources(self):
        self._call("cluster_resources")
        return dict(self.total)

    def available_resources(self):
        self._call("available_resources")
        return dict(self.free)

    def get_runtime_context(self):
        return types.SimpleNamespace(gcs_address=self.gcs)

    def remote(self, cls):
        fake = self

        class Remote:
            def options(self, **opts):
                return self

            def remote(self, *args):
                fake._call("create_actor")
                actor = FakeActor()
                fake.actors.append(actor)
                return actor

        return Remote()


class FakeActor:
    """Each method's calls are futures the test resolves (``answer``); unanswered, they wait."""

    def __init__(self):
        self.killed = False
        self.pending: dict[str, list[asyncio.Future]] = {}

    def __getattr__(self, method):
        if method.startswith("_"):
            raise AttributeError(method)

        def remote(*args):
            fut = asyncio.get_running_loop().create_future()
            self.pending.setdefault(method, []).append(fut)
            return fut

        return types.SimpleNamespace(remote=remote)

    def answer(self, method, value=None, exc=None):
        for fut in self.pending.get(method, []):
            if not fut.done():
                fut.set_exception(exc) if exc else fut.set_result(value)


@pytest.fixture
def fake_ray(monkeypatch):
    def make(**kw):
        ray = FakeRay(**kw)
        monkeypatch.setitem(sys.modules, "ray", ray)
        return ray

    return make


async def _until(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_with_nothing_listening_is_refused_without_ray_init(fake_ray):
    ray = fake_ray()
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(WorkerStartError, match=rf"could not join the Ray cluster at 127.0.0.1:{port}: nothing answers"):
        RayWorkerPool(address=f"127.0.0.1:{port}").open()
    assert time.monotonic() - t0 < 5 and ray.calls == []


def test_a_start_running_at_shutdown_calls_ray_no_more(fake_ray):
    ray = fake_ray()

    async def main():
        pool = RayWorkerPool(health_interval_s=60)
        start = asyncio.ensure_future(pool.start("w-0", SETTINGS))
        await _until(lambda: ray.actors)
        actor = ray.actors[0]
        actor.answer("ping", 1)  # placed; now loading its model
        await _until(lambda: "start" in actor.pending)
        await pool.close()  # (SIGTERM while it loads: the driver closes the pool, then settles the start)
        actor.answer("start", exc=_ActorDied("the actor's driver left"))
        with pytest.raises(WorkerStartError):
            await start
        with pytest.raises(WorkerStartError, match="closed"):
            await asyncio.wait_for(pool.start("w-1", SETTINGS), 5)  # (a start after the close: no new Ray instance)

    asyncio.run(main())
    assert ray.calls[-1] == "shutdown" and ray.calls.count("init") == 1
    assert not [c for c in ray.calls if "while shut down" in c], ray.calls


def test_ray_s_implicit_init_is_off():
    pytest.importorskip("ray")
    from controlplane.live.pool_ray import import_ray

    ray = import_ray()
    from ray._private import auto_init_hook

    assert auto_init_hook.enable_auto_connect is False and not ray.is_initialized()


def test_an_actor_the_cluster_cannot_place_fails_its_start_unplaced(fake_ray):
    ray = fake_ray(total={"CPU": 2.0}, free={})  # two workers hold both CPUs

    async def main():
        pool = RayWorkerPool(placement_timeout_s=0.2, health_interval_s=60)
        with pytest.raises(NoFreeDevice, match=r"unplaceable: ray could not place w-2 in 0.2 s: it needs 1 CPU, "
                                               r"and the cluster has 0 CPU free"):
            await asyncio.wait_for(pool.start("w-2", SETTINGS), 5)  # (its ping never answers: Ray keeps it pending)
        assert pool.worker_ids() == [] and ray.actors[0].killed
        await pool.close()

    asyncio.run(main())


def test_a_worker_needing_more_than_the_whole_cluster_is_refused_at_once(fake_ray):
    ray = fake_ray(total={"CPU": 2.0})

    async def main():
        pool = RayWorkerPool(num_cpus_per_worker=1, num_gpus_per_worker=1, health_interval_s=60)
        with pytest.raises(NoFreeDevice, match="it needs 1 CPU, 1 GPU, and the whole cluster has 2 CPU, 0 GPU"):
            await asyncio.wait_for(pool.start("w-0", SETTINGS), 5)
        assert pool.worker_ids() == [] and not ray.actors
        await pool.close()

    asyncio.run(main())


def test_a_slow_actor_start_with_free_resources_is_waited_for(fake_ray):
    ray = fake_ray(free={"CPU": 1.0})

    async def main():
        pool = RayWorkerPool(placement_timeout_s=0.05, health_interval_s=60)
        start = asyncio.ensure_future(pool.start("w-0", SETTINGS))
        await _until(lambda: ray.calls.count("available_resources") >= 2)  # past the placement timeout, twice
        ray.actors[0].answer("ping", 1)
        await _until(lambda: "start" in ray.actors[0].pending)
        ray.actors[0].answer("start", {"pid": 7})
        assert (await start)["pid"] == 7 and pool.alive("w-0")
        await pool.close()

    asyncio.run(main())


def test_a_head_that_stops_answering_fails_every_worker_and_breaks_the_pool(fake_ray):
    with socket.socket() as gcs:  # the head's GCS: listening at first
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        port = gcs.getsockname()[1]
        ray = fake_ray(gcs=f"127.0.0.1:{port}")
        failed, broken = [], []

        async def main():
            pool = RayWorkerPool(health_interval_s=0.05, head_lost_after=2)
            pool.bind(asyncio.get_running_loop(), lambda wid, why: failed.append((wid, why)))
            pool.on_broken = broken.append
            start = asyncio.ensure_future(pool.start("w-0", SETTINGS))
            await _until(lambda: ray.actors)
            ray.actors[0].answer("ping", 1)
            await _until(lambda: "start" in ray.actors[0].pending)
            ray.actors[0].answer("start", {"pid": 7})
            await start
            await asyncio.sleep(0.3)
            assert not broken  # (answering: nothing happens)
            gcs.close()  # the head dies
            await _until(lambda: broken)
            calls = len(ray.calls)
            await pool.stop("w-0")
            await pool.close()
            assert len(ray.calls) == calls  # (no kill, no shutdown: each would wait for the dead GCS)
            with pytest.raises(WorkerStartError, match="the Ray head is gone"):
                await pool.start("w-1", SETTINGS)

        asyncio.run(main())
    reason = f"the Ray head is gone: its GCS at 127.0.0.1:{port} does not answer"
    assert broken == [reason] and failed == [("w-0", reason)]
