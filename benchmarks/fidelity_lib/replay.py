"""One slice replayed live (a fresh worker behind the live driver) or in the simulator, and the
per-request times each side reports.

Live: requests are injected at their arrival times with exact prompt and output lengths on a
fresh worker (warmed up on a few of the slice's shapes first, not timed: stored as ``warm-up-N``); the
slice's requests keep their trace ids, so ``runs compare LIVE SIM`` pairs them; the live run records its
iterations (``storage.record_iterations``) and where its traffic began (``warm_up_until_s`` in its summary)
so ``controlplane calibrate RUN_ID`` fits the traffic's iterations.
Simulated: the same config, the measured latency model on a profile, the arrivals as they
reached the live core (`observed_arrivals`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.config import RunConfig
from controlplane.events import RequestFinished
from controlplane.hookspecs import hookimpl
from controlplane.live.iteration_log import IterationLog
from controlplane.live.iteration_samples import IterationSample
from controlplane.request_latency import latencies
from fidelity_lib.host_cpu import CpuSampler, backend_by_window, contention
from sim.traces import TraceRequest


@dataclass
class RequestTimes:
    request_id: str
    arrival_s: float
    first_token_s: float | None
    finish_s: float | None
    output_tokens: int
    status: str
    client_e2e_s: float | None = None  # submit() to the result in the client's hands (wall clock)

    def latencies(self) -> dict[str, float | None]:
        if self.first_token_s is None or self.finish_s is None or self.status != "completed":
            return {"ttft": None, "tpot": None, "e2e": None}
        ttft, tpot, e2e, _ = latencies(self.arrival_s, None, self.first_token_s, self.finish_s, self.output_tokens)
        return {"ttft": ttft, "tpot": tpot, "e2e": e2e}


@dataclass
class LiveRun:
    requests: list[RequestTimes]
    samples: list[IterationSample]
    run_id: int | None
    wall_s: float
    facts: dict[str, Any] = field(default_factory=dict)
    # the worker probe (`worker_probe.WorkerProbe`) served before the first arrival: its iterations, and when
    # it ended and the run's first arrival was sent (monotonic clock); empty / None without a probe
    probe_samples: list[IterationSample] = field(default_factory=list)
    probe_taken_s: float | None = None
    started_s: float | None = None


def run_config(base: RunConfig, worker: dict[str, Any], db_url: str, *, name: str,
               profile: Path | None = None) -> RunConfig:
    """The benchmark's config: the user's plugins, one replica of the worker model, measured latency in the sim;
    live runs record their iterations (``storage.record_iterations``) so ``controlplane calibrate`` works on them.
    The deployment's precision is its worker's (as the daemon's is; ``auto``: not compared with the profile's)."""
    d = base.cluster.models[0].model_dump()
    d.update(name="fidelity", replicas=1, worker=worker, max_model_len=worker["max_seq_len"],
             precision=worker.get("precision", "auto"))
    if profile is not None:
        d.update(latency_model="measured", latency={"path": str(profile)})
    data = base.model_dump()
    data.update(name=name, cluster={**data["cluster"], "models": [d]}, storage={**data["storage"], "url": db_url,
                                                                                         "record_iterations": True})
    return RunConfig(**data)


class GcPauses:
    """The garbage collector's pauses in this process while it is installed (count, longest)."""

    def __init__(self) -> None:
        self.count, self.max_s, self._t0 = 0, 0.0, 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.count += 1
            self.max_s = max(self.max_s, time.perf_counter() - self._t0)

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


async def _replay_live(cfg: RunConfig, reqs: list[TraceRequest], *, threads: int, vocab: int, seed: int,
                       record: bool, pool: str = "process", observers: tuple[Any, ...] = (),
                       probe: Any = None) -> LiveRun:
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool import make_pool

    log = IterationLog()
    driver = LiveDriver(cfg, pool=make_pool(pool, cpu_threads=threads), record=record, extra_plugins=[log, *observers])
    await driver.start(wait_ready_s=300)
    rng = random.Random(seed)
    prompts = [[rng.randrange(4, vocab) for _ in range(r.prompt_tokens)] for r in reqs]
    # Warm the fresh worker up (allocator, lazy initialisation) on the slice's own shapes; not timed.
    warm = sorted(range(len(reqs)), key=lambda i: reqs[i].prompt_tokens)[:: max(1, len(reqs) // 6)]
    await asyncio.gather(*[(await driver.submit(prompts[i], max_tokens=min(8, reqs[i].output_tokens),
                                                ignore_eos=True, request_id=f"warm-up-{k}")).result()
                           for k, i in enumerate(warm)])
    log.clear()
    probe_samples, probe_taken = [], None
    if probe is not None:  # the serving worker's own pace, measured before the first arrival
        await probe.serve(driver, vocab, seed)
        probe_samples, probe_taken = list(log.samples), time.monotonic()
        log.clear()
    for o in observers:
        if hasattr(o, "clear"):
            o.clear()
    out: list[RequestTimes | None] = [None] * len(reqs)
    # The benchmark's own heap (earlier runs' samples and results) is not part of the system under
    # test: frozen, the collector does not walk it during this run. Its pauses are timed anyway.
    gc.collect()
    gc.freeze()
    pauses = GcPauses()
    cpu = CpuSampler(period_s=0.5).start()
    clock = (time.perf_counter(), driver.now_s())

    async def one(i: int, handle: Any, submitted: float) -> None:
        res = await handle.result()
        out[i] = RequestTimes(reqs[i].request_id, res.arrival_s, res.first_token_s, res.finish_s,
                              res.completion_tokens, res.status, time.perf_counter() - submitted)

    waiters = []
    started = time.monotonic()
    start = time.perf_counter()
    try:
        for i, r in enumerate(reqs):
            delay = start + r.arrival_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            submitted = time.perf_counter()
            handle = await driver.submit(prompts[i], max_tokens=r.output_tokens, ignore_eos=True,
                                         request_id=r.request_id)  # (stored under its trace id, as live-replay)
            waiters.append(asyncio.ensure_future(one(i, handle, submitted)))
        await asyncio.gather(*waiters)
        wall = time.perf_counter() - start
    finally:
        cpu.stop()
        pauses.stop()
        gc.unfreeze()
        # where the traffic began: `controlplane calibrate` leaves the warm-up's and probe's iterations out
        await driver.close(extra={"warm_up_until_s": clock[1]})
    # the host's other jobs during the run, and how much of its iterations' time the worker was on a core
    host = contention(cpu, clock, 0.0, backend_by_window(log.samples, 0.0), worker_is_child=pool == "process")
    facts = {**next(iter(driver.worker_facts.values()), {}), "gc_pauses": pauses.count,
             "gc_pause_max_ms": round(pauses.max_s * 1e3, 2), **host}
    return LiveRun([r for r in out if r is not None], log.samples, driver.run_id, wall, facts, probe_samples,
                   probe_taken, started)


def replay_live(cfg: RunConfig, reqs: list[TraceRequest], **kwargs: Any) -> LiveRun:
    return asyncio.run(_replay_live(cfg, reqs, **kwargs))


# --- simulated replay -----------------------------------------------------------------------------


class _Finished:
    name = "fidelity-finished"

    def __init__(self) -> None:
        self.requests: dict[str, Any] = {}

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is RequestFinished:
            self.requests[event.request.request_id] = event.request


def replay_sim(cfg: RunConfig, reqs: list[TraceRequest], *, record: bool,
               observers: tuple[Any, ...] = ()) -> tuple[list[RequestTimes], int | None]:
    from sim.replay import replay

    seen = _Finished()
    summary, _ = replay(reqs, cfg, trace_name="fidelity slice", record=record, extra_plugins=[seen, *observers])
    times = []
    for t in reqs:
        r = seen.requests.get(t.request_id)
        if r is not None:
            times.append(RequestTimes(t.request_id, r.arrival_s, r.first_token_s, r.finish_s, r.output_tokens,
                                      r.status.value))
    return times, summary.get("run_id")



def keyed(times: list[RequestTimes], round_index: int) -> list[RequestTimes]:
    """``times`` with request ids prefixed by the round, so rounds pool without colliding."""
    return [dataclasses.replace(t, request_id=f"{round_index}:{t.request_id}") for t in times]



def observed_arrivals(reqs: list[TraceRequest], live: LiveRun) -> list[TraceRequest]:
    """The slice with the arrival times the live core recorded (rebased to 0): the same load, minus injection jitter."""
    seen = {t.request_id: t.arrival_s for t in live.requests}
    t0 = min(seen.values()) if seen else 0.0
    out = [TraceRequest(r.request_id, seen.get(r.request_id, r.arrival_s + t0) - t0, r.prompt_tokens,
                        r.output_tokens, None, r.tenant, r.priority) for r in reqs]
    return sorted(out, key=lambda r: r.arrival_s)



def _vocab(settings: Any) -> int:
    from controlplane.live.model_source import build_config

    if settings.path is not None:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(settings.path, local_files_only=True).vocab_size)
    return int(build_config(settings).vocab_size)

