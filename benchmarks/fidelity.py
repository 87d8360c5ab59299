"""Simulator fidelity against a live worker: calibrate, replay one trace slice live and simulated, compare.

    python benchmarks/fidelity.py [--trace PATH --format F] [--limit 120] [--duration 45] [--device cpu]

1. Profile. Time the worker's iterations over a grid of batch shapes sized to the slice (what
   `controlplane profile` does; mixed prefill+decode shapes only when the batching policy runs them).
2. Replay LIVE, each on a fresh worker behind the live driver with the config's plugins, requests
   injected at their (sped-up) trace arrival times with exact prompt and output lengths, in
   ``--rounds`` rounds (4) of: a calibration run and the evaluated run. The calibration run
   replays the evaluated slice itself (a rehearsal, the same prompt tokens; before the evaluated run
   in odd rounds, after it in even ones), or with ``--calibrate-on neighbours`` the requests just
   before the evaluated ones and those just after them. Pooling rounds keeps the drift of the
   machine's speed (10-20% over seconds to a minute on a shared host) from reading as a model error.
   A round whose evaluated run the machine ran more than ``--max-pace-gap`` (5%) faster or slower
   than its calibration run - the backend's time over the grid profile's for the same batch
   shapes, the workload aside - is reported and replaced by another (up to ``--max-rounds``): a
   simulator calibrated on one machine is not asked to predict a slower one. ``all_rounds_*``
   in the JSON pools every round anyway.
3. Calibrate (`sim.calibration.calibrate`, what ``controlplane calibrate`` runs) on the calibration
   runs' iterations as the control plane saw them (the driver's ``IterationTimed`` events, kept by
   an `IterationLog` observer): from the core's start of a batch to the moment it could start the
   next one.
   The profile is those iterations (mean per shape, weighted by how many each mean stands for)
   plus the grid rows scaled by the live slowdown with the live per-iteration overhead added - a
   ``controlplane-profile/1`` file for the simulator's ``measured`` latency model. Stalls of the
   host or driver (an iteration's live-path time over 10x the median) are left out.
4. Replay the evaluated slice in the SIMULATOR: the same config, the calibrated profile brought
   to the machine's pace in the calibration runs nearest each round (``--pace``), each round's
   arrivals as they reached the live core.
5. Print predicted vs measured TTFT, TPOT and end-to-end p50/p90/p99, each side's requests pooled
   over the steady rounds, and each round on its own (the noise floor). Errors are signed,
   ``(sim - live) / live`` in %; the target (|p50 error| <= 10% for TTFT and E2E) uses absolute values.

Long-context traces are scaled to what a tiny CPU model serves: prompt and output lengths are
multiplied by a factor (``auto``: bring the slice's median to ``--prompt-p50`` / ``--output-p50``)
and capped, identically on both sides. Ends with one JSON line (``ttft_p50_err_pct``,
``e2e_p50_err_pct``, ...). Needs torch and transformers; builds a random-weight model (no download).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import itertools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from controlplane.config import RunConfig, load_config  # noqa: E402
from controlplane.events import RequestFinished  # noqa: E402
from controlplane.hardware.profile_format import write_profile  # noqa: E402
from controlplane.hookspecs import hookimpl  # noqa: E402
from controlplane.live.calibration_table import samples_table  # noqa: E402
from controlplane.live.iteration_log import IterationLog  # noqa: E402
from controlplane.live.iteration_samples import IterationSample, join_runs, split_stalls, with_handoffs  # noqa: E402
from controlplane.request_latency import latencies  # noqa: E402
from sim.calibration import calibrate, grid_model, live_slowdowns  # noqa: E402
from sim.traces import TraceRequest, apply_transforms, bundled_trace_path, read_trace  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 120)
METRICS = ("ttft", "tpot", "e2e")
PEAK_WINDOW_S = 10.0
#: Where the slices start in the bundled Azure trace by default: a busy minute (421 requests in 60 s).
#: The trace's first minutes are a trickle and then a flash crowd of ~110 requests in 6 s, which
#: no replay speed turns into a workload one CPU worker serves in a couple of minutes.
BUNDLED_START_S = 600.0
PCTS = (50, 90, 99)
TARGET_PCT = 10.0
#: --pace: how many pooled rounds either side of a round its simulated machine pace averages (None: all).
PACE_SPANS: dict[str, int | None] = {"round": 0, "neighbours": 1, "pooled": None}


# --- the trace slice ------------------------------------------------------------------------------


@dataclass
class Slices:
    """The calibration slices around the evaluated one: scaled lengths, arrivals from 0 at trace speed."""

    calibration: list[TraceRequest]  # the requests just before the evaluated ones
    evaluation: list[TraceRequest]
    prompt_scale: float
    output_scale: float
    after: list[TraceRequest] = field(default_factory=list)  # the requests just after them

    def at_speed(self, speed_up: float) -> tuple[list[TraceRequest], list[TraceRequest], list[TraceRequest]]:
        def fast(rs: list[TraceRequest]) -> list[TraceRequest]:
            return [TraceRequest(r.request_id, r.arrival_s / speed_up, r.prompt_tokens, r.output_tokens, None,
                                 r.tenant, r.priority) for r in rs]

        return fast(self.calibration), fast(self.evaluation), fast(self.after)


def _scale(value: str, values: list[int], target_p50: float) -> float:
    if value != "auto":
        return float(value)
    median = statistics.median(values) if values else 1
    return min(1.0, target_p50 / max(1.0, median))  # only ever shrink


def scaled(r: TraceRequest, arrival_s: float, prompt_scale: float, output_scale: float, max_prompt: int,
           max_output: int) -> TraceRequest:
    """``r`` with lengths scaled and capped, a new arrival time, and no prefix hashes (no live prefix cache)."""
    prompt = min(max_prompt, max(1, round(r.prompt_tokens * prompt_scale)))
    output = min(max_output, max(1, round(r.output_tokens * output_scale)))
    return TraceRequest(r.request_id, arrival_s, prompt, output, None, r.tenant, r.priority)


def load_slices(trace: Path, fmt: str | None, *, start_s: float | None, calibration: int, limit: int,
                prompt_scale: str, output_scale: str, prompt_p50: float, output_p50: float, max_prompt: int,
                max_output: int, seed: int, after: int = 0) -> Slices:
    """The calibration slice, the evaluation slice after it and up to ``after`` requests after that
    (a second calibration slice, when the trace has them), lengths scaled alike."""
    reader = read_trace(trace, fmt, rng=np.random.default_rng([seed, 11]))
    window = (start_s, None) if start_s is not None else None
    raw = list(itertools.islice(apply_transforms(reader, window=window), calibration + limit + after))
    if len(raw) < calibration + 2:
        raise SystemExit(f"{trace}: only {len(raw)} requests after {start_s or 0}s; need more than {calibration + 1}")
    cal_raw, ev_raw, after_raw = raw[:calibration], raw[calibration:calibration + limit], raw[calibration + limit:]
    ps = _scale(prompt_scale, [r.prompt_tokens for r in cal_raw + ev_raw], prompt_p50)
    os_ = _scale(output_scale, [r.output_tokens for r in cal_raw + ev_raw], output_p50)

    def rebase(rs: list[TraceRequest]) -> list[TraceRequest]:
        t0 = rs[0].arrival_s if rs else 0.0
        return [scaled(r, r.arrival_s - t0, ps, os_, max_prompt, max_output) for r in rs]

    return Slices(rebase(cal_raw), rebase(ev_raw), ps, os_, rebase(after_raw) if len(after_raw) > 1 else [])


def isolated_service_s(model: Any, r: TraceRequest) -> float:
    """Seconds the worker needs for ``r`` alone: its prefill, then its decodes at batch size 1."""
    from sim.latency.base import IterationShape

    prefill = model.iteration_s(IterationShape((r.prompt_tokens,), (0,), ()))
    decode = model.iteration_s(IterationShape((), (), (r.prompt_tokens + r.output_tokens // 2,)))
    return prefill + (r.output_tokens - 1) * decode


def peak_load(service_s: np.ndarray, arrival_s: np.ndarray, speed_up: float, window_s: float = PEAK_WINDOW_S) -> float:
    """The busiest ``window_s`` of the replay: service time arriving in it over its length."""
    t = arrival_s / speed_up
    ends = np.searchsorted(t, t + window_s, side="left")
    cum = np.concatenate([[0.0], np.cumsum(service_s)])
    return float(np.max(cum[ends] - cum[np.arange(len(t))]) / window_s)


def auto_speed_up(model: Any, reqs: list[TraceRequest], *, utilization: float, duration_s: float) -> float:
    """The fastest replay (at most towards ``duration_s``) whose busiest 10 s stay under ``utilization``.

    Load counts each request's service time alone: conservative (batching serves a burst
    faster), so a bursty trace stays servable instead of piling up a backlog whose length - not
    the simulator - would decide every latency, and which two live runs of the same slice do not
    even reproduce. A trace busier than the worker is slowed down (speed-up < 1), but the replay
    never lasts more than 3 x ``duration_s``.
    """
    span = reqs[-1].arrival_s - reqs[0].arrival_s
    if span <= 0:
        return 1.0
    service = np.array([isolated_service_s(model, r) for r in reqs])
    arrival = np.array([r.arrival_s for r in reqs])
    speed, floor = max(1.0, span / duration_s), span / (3 * duration_s)
    while speed > floor and peak_load(service, arrival, speed) > utilization:
        speed *= 0.95
    return max(speed, floor)


# --- live replay ----------------------------------------------------------------------------------


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


def run_config(base: RunConfig, worker: dict[str, Any], db_url: str, *, name: str,
               profile: Path | None = None) -> RunConfig:
    """The benchmark's config: the user's plugins, one replica of the worker model, measured latency in the sim;
    live runs record their iterations (``storage.record_iterations``) so ``controlplane calibrate`` works on them."""
    d = base.cluster.models[0].model_dump()
    d.update(name="fidelity", replicas=1, worker=worker, max_model_len=worker["max_seq_len"])
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
                       record: bool, pool: str = "process") -> LiveRun:
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool import make_pool

    log = IterationLog()
    driver = LiveDriver(cfg, pool=make_pool(pool, cpu_threads=threads), record=record, extra_plugins=[log])
    await driver.start(wait_ready_s=300)
    rng = random.Random(seed)
    prompts = [[rng.randrange(4, vocab) for _ in range(r.prompt_tokens)] for r in reqs]
    # Warm the fresh worker up (allocator, lazy initialisation) on the slice's own shapes; not timed.
    warm = sorted(range(len(reqs)), key=lambda i: reqs[i].prompt_tokens)[:: max(1, len(reqs) // 6)]
    await asyncio.gather(*[(await driver.submit(prompts[i], max_tokens=min(8, reqs[i].output_tokens),
                                                ignore_eos=True)).result() for i in warm])
    log.clear()
    out: list[RequestTimes | None] = [None] * len(reqs)
    # The benchmark's own heap (earlier runs' samples and results) is not part of the system under
    # test: frozen, the collector does not walk it during this run. Its pauses are timed anyway.
    gc.collect()
    gc.freeze()
    pauses = GcPauses()

    async def one(i: int, handle: Any, submitted: float) -> None:
        res = await handle.result()
        out[i] = RequestTimes(reqs[i].request_id, res.arrival_s, res.first_token_s, res.finish_s,
                              res.completion_tokens, res.status, time.perf_counter() - submitted)

    waiters = []
    start = time.perf_counter()
    try:
        for i, r in enumerate(reqs):
            delay = start + r.arrival_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            submitted = time.perf_counter()
            handle = await driver.submit(prompts[i], max_tokens=r.output_tokens, ignore_eos=True)
            waiters.append(asyncio.ensure_future(one(i, handle, submitted)))
        await asyncio.gather(*waiters)
        wall = time.perf_counter() - start
    finally:
        pauses.stop()
        gc.unfreeze()
        await driver.close()
    facts = {**next(iter(driver.worker_facts.values()), {}), "gc_pauses": pauses.count,
             "gc_pause_max_ms": round(pauses.max_s * 1e3, 2)}
    return LiveRun([r for r in out if r is not None], log.samples, driver.run_id, wall, facts)


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


def replay_sim(cfg: RunConfig, reqs: list[TraceRequest], *, record: bool) -> tuple[list[RequestTimes], int | None]:
    from sim.replay import replay

    seen = _Finished()
    summary, _ = replay(reqs, cfg, trace_name="fidelity slice", record=record, extra_plugins=[seen])
    times = []
    for t in reqs:
        r = seen.requests.get(t.request_id)
        if r is not None:
            times.append(RequestTimes(t.request_id, r.arrival_s, r.first_token_s, r.finish_s, r.output_tokens,
                                      r.status.value))
    return times, summary.get("run_id")


# --- calibration ----------------------------------------------------------------------------------


def profile_grid(reqs: list[TraceRequest], max_seq_len: int, repeats: int, *, mixed: bool = True):
    """Batch shapes sized to the slice: its prompt lengths, contexts and batch sizes up to 32; iterations
    that prefill and decode together only when the batching policy runs them (``mixed``)."""
    from controlplane.live.profiling import ProfileGrid

    prompts = np.array([r.prompt_tokens for r in reqs])
    contexts = np.array([r.prompt_tokens + r.output_tokens for r in reqs])
    tokens = sorted({int(np.percentile(prompts, q)) for q in (10, 50, 90)} | {int(prompts.max())} | {0})
    ctx = sorted({max(8, int(np.percentile(contexts, 50))), max(8, int(contexts.max()))})
    ctx = [c for c in ctx if c + 200 < max_seq_len] or [32]
    return ProfileGrid(prefill_tokens=tuple(tokens), prefill_seqs=(1, 4), decode_batch_sizes=(0, 1, 2, 4, 8, 16, 32),
                       context_lens=tuple(ctx), repeats=repeats, warmup=1, mixed=mixed, interleave=True, spread=True)


def policy_mixes(cfg: RunConfig) -> bool:
    """Whether the config's batching can put prefills and decodes in one iteration (all but vLLM-style)."""
    if "continuous-batching" not in cfg.plugins.enabled:
        return True  # another batching plugin: assume it may
    settings = cfg.plugins.settings.get("continuous-batching") or {}
    return settings.get("policy", "vllm") != "vllm"


def profile_worker(settings: Any, grid: Any, threads: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch

    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.profiling import profile_backend, profile_meta

    torch.set_num_threads(threads)
    backend = CausalLMBackend.from_settings(settings)
    rows = profile_backend(backend, grid)
    return rows, {**profile_meta(backend), "interleaved": grid.interleave, "spread": grid.spread}


# --- comparison -----------------------------------------------------------------------------------


def stats(times: list[RequestTimes]) -> dict[str, dict[int, float]]:
    """p50/p90/p99 of TTFT, TPOT and E2E (seconds) over completed requests."""
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for t in times:
        for m, v in t.latencies().items():
            if v is not None:
                values[m].append(v)
    return {m: {p: float(np.percentile(v, p)) if v else math.nan for p in PCTS} for m, v in values.items()}


def errors(live: dict, sim: dict) -> dict[str, dict[int, float]]:
    """Signed relative errors (sim - live) / live in %."""
    return {m: {p: 100.0 * (sim[m][p] - live[m][p]) / live[m][p] if live[m][p] else math.nan for p in PCTS}
            for m in METRICS}


def p50_standard_error(times: list[RequestTimes], metric: str, *, resamples: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of the p50 of ``metric`` over these requests, in % of the p50.

    What the p50 of a slice this size moves by when its requests vary: with ~100 requests and a
    clumpy latency distribution (output lengths), a few percent of per-request error can move a
    request across a gap at the median. Reported only, to read the p50 errors against.
    """
    values = np.array([v for t in times if (v := t.latencies()[metric]) is not None])
    if len(values) < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    p50 = np.percentile(rng.choice(values, (resamples, len(values))), 50, axis=1)
    return float(100.0 * p50.std() / np.percentile(values, 50))


def paired_abs_error(live: list[RequestTimes], sim: list[RequestTimes], metric: str) -> float:
    """Median over requests of |sim - live| / live for one metric (requests matched by trace id)."""
    by_id = {t.request_id: t.latencies()[metric] for t in sim}
    errs = []
    for t in live:
        lv, sv = t.latencies()[metric], by_id.get(t.request_id)
        if lv and sv is not None:
            errs.append(abs(sv - lv) / lv)
    return 100.0 * statistics.median(errs) if errs else math.nan


def comparison_table(title: str, live: dict, sim: dict, err: dict,
                     columns: tuple[str, str] = ("live (measured)", "sim (predicted)")) -> Table:
    t = Table(title=title, header_style="bold")
    for col in ("metric", *columns, "error"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for m in METRICS:
        for p in PCTS:
            e = err[m][p]
            style = "green" if abs(e) <= TARGET_PCT else ("yellow" if abs(e) <= 25 else "red")
            t.add_row(f"{m} p{p}", f"{live[m][p] * 1e3:.1f} ms", f"{sim[m][p] * 1e3:.1f} ms",
                      f"[{style}]{e:+.1f}%[/]")
    return t


def round_plan(index: int, before: list[TraceRequest], evaluated: list[TraceRequest], after: list[TraceRequest],
               *, neighbours: bool) -> list[tuple[str, list[TraceRequest], int]]:
    """The live runs of round ``index`` (from 0), in order: (kind, requests, prompt seed offset).

    ``neighbours``: the calibration slice before, the evaluated slice, the calibration slice after.
    Otherwise a calibration run of the evaluated slice itself (a rehearsal: the same requests, prompt
    tokens included, on a fresh worker) and the evaluated run, in alternating order so that neither
    side always runs first in its round.
    """
    if neighbours:
        plan = [("calibration", before, 1), ("live", evaluated, 2)]
        if after:
            plan.append(("calibration (after)", after, 3))
        return plan
    # The same prompt tokens as the evaluated run: on this engine the token ids move the
    # iteration times by ~5% (seen as the sign of `machine_drift` flipping with the seeds).
    plan = [("calibration (rehearsal)", evaluated, 2), ("live", evaluated, 2)]
    return plan[::-1] if index % 2 else plan


def round_plans(rounds: int, before: list[TraceRequest], evaluated: list[TraceRequest], after: list[TraceRequest],
                *, neighbours: bool) -> list[list[tuple[str, list[TraceRequest], int]]]:
    """`round_plan` for the first ``rounds`` rounds."""
    return [round_plan(i, before, evaluated, after, neighbours=neighbours) for i in range(rounds)]


@dataclass
class Round:
    """One round's live runs, with the backend's pace in each (its time over the grid profile's for
    the same batch shapes: the machine's speed then, whatever the workload)."""

    index: int
    calibration: list[LiveRun]
    live: LiveRun
    calibration_pace: float
    live_pace: float

    @property
    def pace_gap(self) -> float:
        """How much slower (+) or faster (-) the machine ran the evaluated run than its calibration."""
        return self.live_pace / self.calibration_pace - 1.0 if self.calibration_pace > 0 else math.inf

    def steady(self, max_gap: float) -> bool:
        return max_gap <= 0 or abs(self.pace_gap) <= max_gap


def pooled_rounds(rounds: list[Round], max_gap: float) -> list[Round]:
    """The rounds the comparison pools: those whose machine kept its pace between the calibration and
    the evaluated run (within ``max_gap``); all of them when none did."""
    return [r for r in rounds if r.steady(max_gap)] or list(rounds)


def play_rounds(live_run: Any, pace: Any, plan: Any, *, wanted: int, max_rounds: int, max_gap: float) -> list[Round]:
    """Run rounds (``plan(i)``: its live runs, each run by ``live_run(kind, i, requests, seed)``) until
    ``wanted`` of them are steady (`Round.steady`) or ``max_rounds`` have run; ``pace(samples)`` is the
    machine's pace in a run. Each round is reported as it ends."""
    rounds: list[Round] = []
    while sum(r.steady(max_gap) for r in rounds) < wanted and len(rounds) < max_rounds:
        i = len(rounds)
        runs: dict[str, list[LiveRun]] = {"calibration": [], "live": []}
        for kind, reqs, seed in plan(i):
            runs["live" if kind == "live" else "calibration"].append(live_run(kind, i, reqs, seed))
        cal_pace = pace([s for run in runs["calibration"] for s in run.samples])
        rnd = Round(i, runs["calibration"], runs["live"][0], cal_pace, pace(runs["live"][0].samples))
        rounds.append(rnd)
        console.print(f"round {i + 1}: backend pace {rnd.calibration_pace:.3f} (calibration) / {rnd.live_pace:.3f} "
                      f"(evaluated) x the grid profile, {rnd.pace_gap:+.1%} apart"
                      + ("" if rnd.steady(max_gap) else
                         f" [yellow]> {max_gap:.0%}: the machine changed pace; not pooled[/]"),
                      highlight=False)
    return rounds


def keyed(times: list[RequestTimes], round_index: int) -> list[RequestTimes]:
    """``times`` with request ids prefixed by the round, so rounds pool without colliding."""
    return [dataclasses.replace(t, request_id=f"{round_index}:{t.request_id}") for t in times]


def _in_run_order(cal_runs: list[LiveRun], live_runs: list[LiveRun]) -> list[tuple[LiveRun, str]]:
    tagged = [(r, "calibration") for r in cal_runs] + [(r, "evaluated") for r in live_runs]
    return sorted(tagged, key=lambda t: t[0].run_id or 0)


def observed_arrivals(reqs: list[TraceRequest], live: LiveRun) -> list[TraceRequest]:
    """The slice with the arrival times the live core recorded (rebased to 0): the same load, minus injection jitter."""
    seen = {t.request_id: t.arrival_s for t in live.requests}
    t0 = min(seen.values()) if seen else 0.0
    out = [TraceRequest(r.request_id, seen.get(r.request_id, r.arrival_s + t0) - t0, r.prompt_tokens,
                        r.output_tokens, None, r.tenant, r.priority) for r in reqs]
    return sorted(out, key=lambda r: r.arrival_s)


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", type=Path, default=None, help="trace file (default: the bundled Azure code trace)")
    ap.add_argument("--format", default=None, help="azure | mooncake | vidur | canonical (default: detect)")
    ap.add_argument("--start-s", type=float, default=None,
                    help=f"start the slices at this trace second (default: 0; {BUNDLED_START_S:g} in the bundled trace)")
    ap.add_argument("--limit", type=int, default=120, help="requests in the evaluated slice")
    ap.add_argument("--calibrate-on", choices=("slice", "neighbours"), default="slice",
                    help="what the live calibration runs replay: the evaluated slice itself on a fresh worker "
                         "(a rehearsal, the default) or the requests just before and after it (neighbours: "
                         "the latency model must also carry over to batch shapes the calibration saw less of)")
    ap.add_argument("--calibration", type=int, default=None,
                    help="--calibrate-on neighbours: requests in the calibration slice before it (default: a third "
                         "of --limit, at least 20)")
    ap.add_argument("--calibration-after", type=int, default=None,
                    help="--calibrate-on neighbours: requests in the calibration slice after it, replayed "
                         "after the evaluated run (default: as many as --calibration; 0: none)")
    ap.add_argument("--speed-up", default="auto",
                    help="divide arrival times by this (auto: towards --duration, at most --utilization of the worker)")
    ap.add_argument("--duration", type=float, default=45.0, help="target seconds of the evaluated slice (auto speed-up)")
    ap.add_argument("--utilization", type=float, default=0.5,
                    help="auto speed-up: the most load (service time alone) to offer in the busiest 10 s")
    ap.add_argument("--prompt-scale", default="auto", help="multiply prompt lengths (auto: median -> --prompt-p50)")
    ap.add_argument("--output-scale", default="auto", help="multiply output lengths (auto: median -> --output-p50)")
    ap.add_argument("--prompt-p50", type=float, default=64)
    ap.add_argument("--output-p50", type=float, default=16)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--max-output-tokens", type=int, default=48)
    ap.add_argument("--preset", default="tiny-llama", help="worker model preset (random weights)")
    ap.add_argument("--model-path", default=None, help="local Hugging Face model directory instead of a preset")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the worker (CPU)")
    ap.add_argument("--pool", default="process", help="where the live worker runs: process | thread")
    ap.add_argument("--repeats", type=int, default=4, help="timed iterations per profile grid point")
    ap.add_argument("--config", type=Path, default=None, help="run config whose plugins both sides use")
    ap.add_argument("--db", default=None, help="database URL for the runs (default: a temporary SQLite file)")
    ap.add_argument("--profile-out", type=Path, default=None, help="where to write the calibrated profile")
    ap.add_argument("--rounds", type=int, default=4,
                    help="live rounds of a calibration run and the evaluated run, pooled on both sides; an even "
                         "number balances a steady drift (C E, E C, ...); each round's live p50 against the "
                         "pooled one is the noise floor")
    ap.add_argument("--max-pace-gap", type=float, default=0.05,
                    help="a round whose evaluated run the machine ran more than this fraction faster or slower "
                         "than its calibration run (backend time over the grid profile's for the same shapes) is "
                         "reported, left out of the pool and replaced by another round (default %(default)s); 0: pool "
                         "every round")
    ap.add_argument("--pace", choices=tuple(PACE_SPANS), default="neighbours",
                    help="the machine's speed each round is simulated at: its own calibration run's (round), the "
                         "mean of its own and the rounds' either side (neighbours, the default) or all calibration "
                         "runs' (pooled)")
    ap.add_argument("--max-rounds", type=int, default=None,
                    help="replace unsteady rounds until this many have run in all (default: twice --rounds)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.max_pace_gap < 0:
        ap.error(f"--max-pace-gap must be 0 (pool every round) or more, got {args.max_pace_gap}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    trace = args.trace or bundled_trace_path()
    fmt = args.format or ("azure" if args.trace is None else None)
    tmp = tempfile.mkdtemp(prefix="cp-fidelity-")
    db_url = args.db or f"sqlite:///{tmp}/fidelity.db"
    profile_path = args.profile_out or Path(tmp) / "calibrated-profile.json"
    start_s = args.start_s if args.start_s is not None or args.trace is not None else BUNDLED_START_S
    neighbours = args.calibrate_on == "neighbours"
    before_n = after_n = 0  # a rehearsal replays the evaluated slice: no other requests needed
    if neighbours:
        before_n = max(20, args.limit // 3) if args.calibration is None else args.calibration
        after_n = before_n if args.calibration_after is None else args.calibration_after
    slices = load_slices(trace, fmt, start_s=start_s, calibration=before_n, limit=args.limit,
                         prompt_scale=args.prompt_scale, output_scale=args.output_scale, prompt_p50=args.prompt_p50,
                         output_p50=args.output_p50, max_prompt=args.max_prompt_tokens,
                         max_output=args.max_output_tokens, seed=args.seed, after=after_n)
    every = slices.calibration + slices.evaluation + slices.after
    max_seq = max(512, max(r.prompt_tokens + r.output_tokens for r in every) + 64)
    source = {"path": args.model_path} if args.model_path else {"preset": args.preset}
    worker = {**source, "precision": args.precision, "device": args.device, "max_seq_len": max_seq, "seed": args.seed}
    base = load_config(args.config)
    calibrating = (f"calibrated on {len(slices.calibration)} requests before and {len(slices.after)} after it"
                   if neighbours else "calibrated on rehearsals of the same requests")
    console.print(f"[bold]trace[/] {Path(trace).name}: {len(slices.evaluation)} evaluated requests, {calibrating}, "
                  f"{args.rounds} round(s); lengths x{slices.prompt_scale:.3g} (prompt) x{slices.output_scale:.3g} "
                  f"(output), capped at {args.max_prompt_tokens}/{args.max_output_tokens}", highlight=False)

    # 1. the grid profile of the worker, sized to the slices and to what the batching policy runs
    from controlplane.live.model_source import WorkerModelSettings

    settings = WorkerModelSettings(**worker)
    t = time.perf_counter()
    grid = profile_grid(every, max_seq, args.repeats, mixed=policy_mixes(base))
    grid_rows, meta = profile_worker(settings, grid, args.threads)
    grid_path = write_profile(Path(tmp) / "grid-profile.json", grid_rows, {**meta, "source": "grid profile"})
    console.print(f"profiled {len(grid_rows)} iterations over {len(list(grid.points()))} batch shapes in "
                  f"{time.perf_counter() - t:.1f}s -> {grid_path}", highlight=False)
    if args.speed_up == "auto":
        speed_up = auto_speed_up(grid_model(grid_rows, meta), slices.evaluation, utilization=args.utilization,
                                 duration_s=args.duration)
    else:
        speed_up = float(args.speed_up)
    cal_reqs, ev_reqs, after_reqs = slices.at_speed(speed_up)
    console.print(f"arrivals / {speed_up:.3g}: the evaluated slice lasts {ev_reqs[-1].arrival_s:.1f}s", highlight=False)
    vocab = int(settings.config["vocab_size"]) if settings.config else _vocab(settings)
    live_args = {"threads": args.threads, "vocab": vocab, "record": True, "pool": args.pool}

    # 2. live, in rounds of a calibration run and the evaluated run. The machine's pace moves by
    # 10-40% over seconds to a minute on a shared host: pooling rounds averages the small moves out,
    # and a round whose evaluated run the machine ran at another pace than its calibration run
    # (more than --max-pace-gap apart) is reported, left out of the pool and replaced by another.
    def pace(samples: list[IterationSample]) -> float:
        return live_slowdowns(grid_rows, meta, samples)["all"]

    def live_run(kind: str, i: int, reqs: list[TraceRequest], seed: int) -> LiveRun:
        return replay_live(run_config(base, worker, db_url, name=f"fidelity {kind} (round {i + 1})"), reqs,
                           seed=args.seed + seed, **live_args)

    max_rounds = max(args.rounds, args.max_rounds if args.max_rounds is not None else 2 * args.rounds)
    rounds = play_rounds(live_run, pace, lambda i: round_plan(i, cal_reqs, ev_reqs, after_reqs, neighbours=neighbours),
                         wanted=args.rounds, max_rounds=max_rounds, max_gap=args.max_pace_gap)
    pooled = pooled_rounds(rounds, args.max_pace_gap)
    steady = all(r.steady(args.max_pace_gap) for r in pooled)
    if not steady:
        console.print(f"[yellow]no round kept the machine's pace within {args.max_pace_gap:.0%}: pooling all "
                      f"{len(rounds)}; the host is too noisy for this comparison to mean much[/]")

    # 3-4. calibrate on the pooled rounds' calibration runs, simulate their evaluated runs
    common = dict(base=base, worker=worker, db_url=db_url, grid_rows=grid_rows, meta=meta, ev_reqs=ev_reqs,
                  workdir=Path(tmp), pace_span=PACE_SPANS[args.pace])
    cmp = compare(pooled, profile=profile_path, **common)
    every_round = cmp if len(pooled) == len(rounds) else compare(rounds, profile=Path(tmp) / "all-rounds.json",
                                                                  **common)
    # The same rounds simulated at the calibration runs' average pace (the comparison before --pace round).
    at_average = cmp if PACE_SPANS[args.pace] is None else compare(pooled, profile=Path(tmp) / "average-pace.json",
                                                           **{**common, "pace_span": None})
    calibration, overhead, slow = cmp.calibration, cmp.calibration.overhead, cmp.calibration.slowdowns
    console.print(samples_table(cmp.cal_samples, f"calibration runs {cmp.ids('calibration')}: live iterations"))
    console.print(f"folded in: live overhead {overhead.base_s * 1e3:.2f} ms + {overhead.per_seq_s * 1e6:.0f} us x "
                  f"sequences + {overhead.per_prompt_s * 1e3:.2f} ms x prompts per iteration (the hand-off to the "
                  f"next batch, {calibration.handoff_s * 1e3:.2f} ms, included; {calibration.stalls} stall(s) left out); live backend "
                  f"{slow.get('prefill', 1.0):.2f}x (prefills) / {slow.get('decode', 1.0):.2f}x (decodes) the grid "
                  f"profile; profile -> {profile_path}", highlight=False)

    # 5. compare
    live_stats, sim_stats, err = cmp.live_stats, cmp.sim_stats, cmp.err
    console.print(comparison_table(f"{Path(trace).name}: live runs {cmp.ids('live')} vs simulated runs "
                                   f"{cmp.sim_ids} (calibrated measured model), pooled over {len(pooled)} round(s)",
                                   live_stats, sim_stats, err))
    round_err = [errors(stats(lv), stats(sv)) for lv, sv in zip(cmp.live_by_round, cmp.sim_by_round)]
    # The noise floor: how far one round's live p50 lands from the pooled live p50.
    round_spread = [errors(live_stats, stats(lv)) for lv in cmp.live_by_round]
    if len(pooled) > 1:
        console.print("per pooled round, sim vs live p50 (TTFT / E2E): " + ", ".join(
            f"{e['ttft'][50]:+.1f}% / {e['e2e'][50]:+.1f}%" for e in round_err) + "; each round's live p50 vs the "
            "pooled live p50: " + ", ".join(f"{e['ttft'][50]:+.1f}% / {e['e2e'][50]:+.1f}%" for e in round_spread),
            highlight=False)
    if at_average is not cmp:
        console.print(f"simulated at the calibration runs' average pace instead of each round's own: TTFT p50 "
                      f"{at_average.err['ttft'][50]:+.1f}%, E2E p50 {at_average.err['e2e'][50]:+.1f}%", highlight=False)
    if every_round is not cmp:
        console.print(f"all {len(rounds)} rounds pooled (calibrated on all their calibration runs): TTFT p50 "
                      f"{every_round.err['ttft'][50]:+.1f}%, E2E p50 {every_round.err['e2e'][50]:+.1f}%", highlight=False)

    # The same simulation with a model fitted on the evaluated runs' own iterations (in-sample: a ceiling).
    own_path = Path(tmp) / "insample-profile.json"
    calibrate(cmp.live_samples, own_path, meta=meta, run_ids=cmp.ids("live"))
    own_cfg = run_config(base, worker, db_url, name="fidelity sim (in-sample)", profile=own_path)
    own = sum((keyed(replay_sim(own_cfg, a, record=False)[0], i) for i, a in enumerate(cmp.arrivals)), [])
    own_err = errors(live_stats, stats(own))
    live_all = cmp.live_all
    client = [r.client_e2e_s - r.latencies()["e2e"] for r in live_all if r.latencies()["e2e"] is not None]
    completed = sum(r.status == "completed" for r in live_all)
    console.print(f"live: {completed}/{len(ev_reqs) * len(pooled)} completed in "
                  f"{' + '.join(f'{r.live.wall_s:.1f}' for r in pooled)}s; per-request time outside the "
                  f"core (submit -> result in the client's hands) p50 {statistics.median(client) * 1e3:.2f} ms, "
                  f"not in either side's numbers. In-sample refit (the runs' own iterations): TTFT p50 "
                  f"{own_err['ttft'][50]:+.1f}%, E2E p50 {own_err['e2e'][50]:+.1f}%. The live backend ran "
                  f"{cmp.drift:.2f}x as long as during calibration for the same shapes (machine drift).",
                  highlight=False)
    pooled_index = {r.index for r in pooled}
    all_cal = [run for r in rounds for run in r.calibration]
    all_live = [r.live for r in rounds]
    result = {
        "ttft_p50_err_pct": round(err["ttft"][50], 2),
        "e2e_p50_err_pct": round(err["e2e"][50], 2),
        "tpot_p50_err_pct": round(err["tpot"][50], 2),
        "errors_are": "signed (sim - live) / live; the target uses absolute values",
        "target_met": abs(err["ttft"][50]) <= TARGET_PCT and abs(err["e2e"][50]) <= TARGET_PCT,
        **{f"{m}_p{p}_err_pct": round(err[m][p], 2) for m in METRICS for p in (90, 99)},
        "rounds": len(pooled),
        "rounds_run": len(rounds),
        "max_pace_gap": args.max_pace_gap,
        "pace": args.pace,
        "steady": steady,
        # Every round, pooled or not: the machine's pace in its calibration and evaluated run.
        "round_pace": [{"round": r.index + 1, "calibration": round(r.calibration_pace, 3),
                        "evaluated": round(r.live_pace, 3), "gap_pct": round(100 * r.pace_gap, 1),
                        "pooled": r.index in pooled_index} for r in rounds],
        "all_rounds_ttft_p50_err_pct": round(every_round.err["ttft"][50], 2),
        "all_rounds_e2e_p50_err_pct": round(every_round.err["e2e"][50], 2),
        "average_pace_ttft_p50_err_pct": round(at_average.err["ttft"][50], 2),
        "average_pace_e2e_p50_err_pct": round(at_average.err["e2e"][50], 2),
        "round_p50_err_pct": [{m: round(e[m][50], 2) for m in METRICS} for e in round_err],
        "live_round_p50_spread_pct": [{m: round(e[m][50], 2) for m in METRICS} for e in round_spread],
        "e2e_paired_median_abs_err_pct": round(paired_abs_error(live_all, cmp.sim_all, "e2e"), 2),
        "live_p50_bootstrap_se_pct": {m: round(p50_standard_error(live_all, m), 2) for m in ("ttft", "e2e")},
        "insample_ttft_p50_err_pct": round(own_err["ttft"][50], 2),
        "insample_e2e_p50_err_pct": round(own_err["e2e"][50], 2),
        "live_ms": {f"{m}_p{p}": round(live_stats[m][p] * 1e3, 3) for m in METRICS for p in PCTS},
        "sim_ms": {f"{m}_p{p}": round(sim_stats[m][p] * 1e3, 3) for m in METRICS for p in PCTS},
        "overhead_ms": {"base": round(overhead.base_s * 1e3, 3), "per_seq": round(overhead.per_seq_s * 1e3, 4),
                        "per_prompt": round(overhead.per_prompt_s * 1e3, 3),
                        "handoff": round(calibration.handoff_s * 1e3, 3), "median": round(overhead.median_s * 1e3, 3)},
        "stalls_left_out": calibration.stalls,
        "live_slowdown": round(calibration.slowdown or 1.0, 3),
        "live_slowdown_prefill": round(slow.get("prefill", 1.0), 3),
        "live_slowdown_decode": round(slow.get("decode", 1.0), 3),
        "machine_drift": round(cmp.drift, 3),
        # The backend's pace in each live run, in run order (grid profile = 1): the machine's drift.
        # with the run's stalls (iterations the calibration leaves out) and longest GC pause in the driver.
        "backend_slowdown_by_run": [{"run": run.run_id, "kind": kind,
                                     **{k: round(v, 3) for k, v in live_slowdowns(grid_rows, meta, run.samples).items()},
                                     "stalls": len(split_stalls(with_handoffs(run.samples))[1]),
                                     "gc_pause_max_ms": run.facts.get("gc_pause_max_ms")}
                                    for run, kind in _in_run_order(all_cal, all_live)],
        "trace": Path(trace).name,
        "requests": len(ev_reqs),
        "completed": completed,
        "calibrated_on": args.calibrate_on,
        "calibration_requests": [len(run.requests) for r in pooled for run in r.calibration],
        "prompt_scale": round(slices.prompt_scale, 5),
        "output_scale": round(slices.output_scale, 5),
        "speed_up": round(speed_up, 4),
        "start_s": start_s,
        "model": settings.source_name(),
        "device": str(rounds[0].live.facts.get("device", args.device)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "db": db_url,
        "runs": {"calibration": cmp.ids("calibration"), "live": cmp.ids("live"), "sim": cmp.sim_ids},
        "profile": str(profile_path),
        "grid_profile": str(grid_path),
        "wall_s": round(time.perf_counter() - wall0, 1),
    }
    print(json.dumps(result))
    return result


@dataclass
class Comparison:
    """Rounds pooled: the model calibrated on their calibration runs, their evaluated runs simulated on it."""

    rounds: list[Round]
    calibration: Any  # controlplane.live.calibration.Calibration (what `calibrate` folded in)
    cal_samples: list[IterationSample]
    live_samples: list[IterationSample]
    drift: float  # evaluated runs' backend time over the calibration runs' for the same shapes
    arrivals: list[list[TraceRequest]]
    live_by_round: list[list[RequestTimes]]
    sim_by_round: list[list[RequestTimes]]
    sim_ids: list[int | None]

    def ids(self, kind: str) -> list[int | None]:
        if kind == "live":
            return [r.live.run_id for r in self.rounds]
        return [run.run_id for r in self.rounds for run in r.calibration]

    @property
    def live_all(self) -> list[RequestTimes]:
        return sum(self.live_by_round, [])

    @property
    def sim_all(self) -> list[RequestTimes]:
        return sum(self.sim_by_round, [])

    @functools.cached_property
    def live_stats(self) -> dict[str, dict[int, float]]:
        return stats(self.live_all)

    @functools.cached_property
    def sim_stats(self) -> dict[str, dict[int, float]]:
        return stats(self.sim_all)

    @property
    def err(self) -> dict[str, dict[int, float]]:
        return errors(self.live_stats, self.sim_stats)


def compare(rounds: list[Round], *, base: RunConfig, worker: dict[str, Any], db_url: str, grid_rows: list[dict],
            meta: dict[str, Any], ev_reqs: list[TraceRequest], profile: Path, workdir: Path,
            pace_span: int | None = 1) -> Comparison:
    """Calibrate on the rounds' calibration runs (their iterations + the grid scaled to them, with their
    overhead; the profile written to ``profile``), then simulate each round's evaluated slice as it reached
    the live core; requests keyed by round and trace id, so rounds pool.

    ``pace_span``: each round is simulated on the same calibration brought to the machine's pace
    (`at_pace`) in the calibration runs nearest it in time: its own and those of the ``pace_span``
    rounds either side (mean); None: the average over all rounds (one profile). On a shared host the
    machine's pace drifts by tens of percent over the minutes the rounds take, and at the rounds'
    average pace the early rounds would be predicted too slow and the late ones too fast; a single
    run's pace is itself noisy by ~5%, hence the neighbours. The profiles go to ``workdir``.
    """
    cal_ids = [run.run_id for r in rounds for run in r.calibration]
    cal_samples = join_runs(*(run.samples for r in rounds for run in r.calibration))
    calibration = calibrate(cal_samples, profile, grid=(grid_rows, meta), run_ids=cal_ids).calibration
    live_samples = join_runs(*(r.live.samples for r in rounds))
    # How much slower the machine ran the evaluated slices than the calibration runs, the same grid
    # profile as yardstick: reported to tell machine drift from model error, never used to predict.
    drift = live_slowdowns(grid_rows, meta, live_samples)["all"] / (calibration.slowdown or 1.0)
    arrivals = [observed_arrivals(ev_reqs, r.live) for r in rounds]
    sims = []
    for i, (r, a) in enumerate(zip(rounds, arrivals)):
        path = profile
        if pace_span is not None and len(rounds) > 1 and calibration.slowdown:
            near = rounds[max(0, i - pace_span):i + pace_span + 1]
            pace = statistics.fmean(n.calibration_pace for n in near)
            path = workdir / f"{profile.stem}-round{r.index + 1}{profile.suffix}"
            calibrate(cal_samples, path, grid=(grid_rows, meta), pace=pace / calibration.slowdown, run_ids=cal_ids)
        cfg = run_config(base, worker, db_url, name=f"fidelity sim (round {r.index + 1})", profile=path)
        sims.append(replay_sim(cfg, a, record=True))
    return Comparison(rounds, calibration, cal_samples, live_samples, drift, arrivals,
                      [keyed(r.live.requests, i) for i, r in enumerate(rounds)],
                      [keyed(times, i) for i, (times, _) in enumerate(sims)], [run_id for _, run_id in sims])


def _vocab(settings: Any) -> int:
    from controlplane.live.model_source import build_config

    if settings.path is not None:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(settings.path, local_files_only=True).vocab_size)
    return int(build_config(settings).vocab_size)


if __name__ == "__main__":
    main()
