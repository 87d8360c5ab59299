"""Measure a live worker's iteration times as the control plane sees them; fold them into a profile.

A grid profile (`controlplane.live.profiling`) times the batching engine alone. The simulator
needs what one iteration costs *in the live system*: from the moment the core starts a batch
to the moment it can start the next one on that worker. This module measures that on a live
run and turns it into a ``controlplane-profile/1`` profile (``latency_model: measured``):

* `TimedPool` wraps any worker pool and records every step as an `IterationSample`: the batch's
  shape (the backend's profile row plus the padded counts), the backend's own time, when the
  core started the batch and when the reply was back on the driver's loop. Each sample is also
  an ``iteration`` decision of the run, so `run_iterations` reads them back from SQL.
* `with_handoffs` adds the hand-off after the reply - the time until the core starts the next
  batch on that worker (the driver delivering the tokens and feeding ``BatchFinished``, this
  pool's own bookkeeping). Consecutive iterations then tile the worker's busy time exactly, as
  they do in the simulator, where the next batch starts the instant the last one ends.
* `fit_overhead` fits the live path's time on top of the backend's (effective - backend) as
  ``base + per decode sequence + per prefilled prompt``: a prompt costs more than a decode row
  (it is registered with the backend, its prompt shipped to the worker, its arrival routed).
* `live_slowdowns` compares the live backend's times with what the grid profile predicts for
  the same shapes, separately for iterations that prefill and those that only decode.
* `machine_speed` separates the machine's speed from the shapes' costs: on a machine shared with
  other jobs a decode step takes 5 ms one second and 7 ms the next, and the rare shapes (large
  batches, bursts of prompts) are only timed during a burst, i.e. at one moment of it. Each
  backend time is divided by the speed around it (the median of its neighbours' times over their
  shapes' costs), so every shape is costed at the run's average speed.
* `calibrate_rows` makes the profile: the run's own iterations (mean per shape at the average
  speed plus the live overhead, weighted by the number of one-second windows it was timed in, so
  the fit follows the shapes the workload runs most while a burst counts as one observation),
  plus - with a grid profile - the grid's rows scaled by the slowdowns with the overhead added, so
  shapes the run never reached are still priced. `join_runs` puts several runs (a calibration
  slice before and one after the evaluated one) on one timeline.

The measured model (`sim.latency.measured`) fits these rows by weighted relative error, with a
fixed cost for iterations that prefill and decode together and a correction per batch size.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controlplane.hookspecs import hookimpl
from controlplane.live.pool import StepCommand, StepReply, WorkerPool
from controlplane.types import Decision
from controlplane.hardware.profile_format import PADDED_FIELDS as PADDED_KEYS
from controlplane.hardware.profile_format import ROW_FIELDS as ROW_KEYS
from controlplane.hardware.profile_format import WEIGHT_FIELD

if TYPE_CHECKING:
    from controlplane.live.model_source import WorkerModelSettings

__all__ = [
    "HANDOFF_MAX_S",
    "STALL_FACTOR",
    "ITERATION_ACTION",
    "WINDOW_S",
    "PADDED_KEYS",
    "ROW_KEYS",
    "Calibration",
    "IterationSample",
    "Overhead",
    "TimedPool",
    "add_overhead",
    "aggregate_rows",
    "calibrate_rows",
    "fit_overhead",
    "iteration_kind",
    "at_pace",
    "join_runs",
    "split_stalls",
    "live_rows",
    "machine_speed",
    "live_slowdown",
    "live_slowdowns",
    "run_iterations",
    "samples_table",
    "with_handoffs",
    "worker_meta",
]

#: The ``action`` of the decisions a `TimedPool` records, one per worker iteration.
ITERATION_ACTION = "iteration"
#: Iterations timed within one window of this length are one observation of a shared machine's
#: speed (see `live_rows`).
WINDOW_S = 1.0
#: The span over which `machine_speed` takes the machine's speed as one.
SPEED_WINDOW_S = 3.0
#: A next batch starting this soon after a reply followed it at once (the worker stayed busy);
#: a later one waited for an arrival, and the iteration gets the run's typical hand-off instead.
HANDOFF_MAX_S = 0.002
#: An iteration whose live-path time (effective - backend) is more than this many times the run's
#: median is a stall of the host or the driver (a scheduler hiccup, a long GC pause): the simulator
#: does not model those, and spread over every iteration as a mean they would bias every prediction.
STALL_FACTOR = 10.0


def iteration_kind(row: dict[str, Any]) -> str:
    """``"prefill"`` for an iteration that prefills (mixed ones included), else ``"decode"``."""
    return "prefill" if row["num_prefill_seqs"] else "decode"


@dataclass(frozen=True, slots=True)
class IterationSample:
    """One live iteration: its shape and backend time (``row``) and when the core started and saw it end."""

    worker_id: str
    batch_id: int
    start_s: float  # run time the core started the batch
    end_s: float  # run time the reply was back on the driver's loop
    row: dict[str, float]  # the backend's profile row (shape + its own iteration_s) and the padded counts
    handoff_s: float | None = None  # reply -> the core's next batch on the worker (`with_handoffs`); None: not yet

    @property
    def backend_s(self) -> float:
        return float(self.row["iteration_s"])

    @property
    def wall_s(self) -> float:
        """The batch's start to its reply on the driver's loop."""
        return self.end_s - self.start_s

    @property
    def effective_s(self) -> float:
        """What the iteration costs the worker's timeline: its wall time plus the hand-off."""
        return self.wall_s + (self.handoff_s or 0.0)

    @property
    def num_seqs(self) -> int:
        return int(self.row["num_prefill_seqs"]) + int(self.row["num_decode_seqs"])

    @property
    def num_prefill_seqs(self) -> int:
        return int(self.row["num_prefill_seqs"])

    def wall_row(self) -> dict[str, float]:
        """The profile row with the time the control plane saw (effective) instead of the backend's."""
        return {**self.row, "iteration_s": self.effective_s}


def with_handoffs(samples: Iterable[IterationSample], max_gap_s: float = HANDOFF_MAX_S) -> list[IterationSample]:
    """The samples (same order) with ``handoff_s`` set: time from the reply to the next batch on the worker.

    In the live driver a reply is followed by the delivery of its tokens, the ``BatchFinished``
    the core plans the next batch on, and the timing pool's bookkeeping; the simulator starts the
    next batch the instant an iteration ends, so this time belongs to the iteration. Where the
    worker went idle after an iteration (no batch within ``max_gap_s``), the run's median
    hand-off stands in for it.
    """
    samples = list(samples)
    by_worker: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_worker.setdefault(s.worker_id, []).append(i)
    gaps: dict[int, float] = {}
    for idx in by_worker.values():
        idx.sort(key=lambda i: samples[i].start_s)
        for a, b in zip(idx, idx[1:]):
            gap = samples[b].start_s - samples[a].end_s
            if 0.0 <= gap <= max_gap_s:
                gaps[a] = gap
    typical = statistics.median(gaps.values()) if gaps else 0.0
    return [dataclasses.replace(s, handoff_s=gaps.get(i, typical)) for i, s in enumerate(samples)]


class _BatchStarts:
    """Observer: the run time at which the core started each batch."""

    name = "step-timer"

    def __init__(self) -> None:
        self.start_s: dict[int, float] = {}

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is Decision and event.action == "batch" and event.payload:
            self.start_s[event.payload["batch"]] = event.time_s


class TimedPool(WorkerPool):
    """A worker pool that times every iteration as the control plane sees it (wraps another pool).

    Give ``pool.observer`` to the driver as an extra plugin (it sees when the core starts each
    batch) and call ``attach(driver)`` after building the driver: each step is then kept in
    ``samples`` and sent to the run's event bus as an ``iteration`` decision, which the SQL
    recorder stores for ``controlplane calibrate``. ``samples`` hold the reply times; pass them
    through `with_handoffs` (`calibrate_rows` does) for the effective iteration times.
    """

    kind = "timed"

    def __init__(self, inner: WorkerPool, *, emit: bool = True) -> None:
        super().__init__(cpu_threads=inner.cpu_threads)
        self.inner = inner
        self.emit = emit
        self.observer = _BatchStarts()
        self.samples: list[IterationSample] = []
        self._driver: Any = None
        self._kv: dict[str, dict[str, int]] = {}  # worker -> request -> tokens it holds in the KV cache

    def attach(self, driver: Any) -> TimedPool:
        self._driver = driver
        return self

    def _now(self) -> float:
        now = getattr(self._driver, "_now", None)  # the driver's run clock (LiveDriver has no public one yet)
        return now() if now is not None else time.monotonic()

    def bind(self, loop: Any, on_failure: Any) -> None:
        super().bind(loop, on_failure)
        self.inner.bind(loop, on_failure)

    def threads_for(self, expected_workers: int) -> int:
        return self.inner.threads_for(expected_workers)

    async def start(self, worker_id: str, settings: WorkerModelSettings, *, expected_workers: int = 1) -> dict[str, Any]:
        return await self.inner.start(worker_id, settings, expected_workers=expected_workers)

    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        called = self._now()
        padded = self._padded(worker_id, cmd)
        reply = await self.inner.step(worker_id, cmd)
        end = self._now()
        self._advance(worker_id, cmd, reply)
        if reply.profile and (reply.profile.get("num_prefill_tokens") or reply.profile.get("num_decode_seqs")):
            starts = self.observer.start_s
            start = starts.pop(cmd.batch_id, called)
            if len(starts) > 4096:  # batches that never reached a worker (middle prefill chunks)
                for b in [b for b in starts if b < cmd.batch_id - 1024]:
                    del starts[b]
            sample = IterationSample(worker_id, cmd.batch_id, start, end, {**reply.profile, **padded})
            self.samples.append(sample)
            if self.emit:
                self._record(sample)
        return reply

    def _padded(self, worker_id: str, cmd: StepCommand) -> dict[str, int]:
        """What the padded backend computes: prefills x the longest prompt, decodes x the KV length."""
        kv = self._kv.setdefault(worker_id, {})
        for rid in cmd.removes:
            kv.pop(rid, None)
        for a in cmd.adds:
            kv.pop(a.request_id, None)
        lengths = {a.request_id: len(a.prompt_ids) + len(a.generated) for a in cmd.adds}
        width = max((lengths.get(rid, 0) for rid in cmd.prefill_ids), default=0)
        columns = max(kv.values(), default=0) if cmd.decode_ids else 0
        return {"padded_prefill_tokens": len(cmd.prefill_ids) * width,
                "padded_decode_context": len(cmd.decode_ids) * columns}

    def _advance(self, worker_id: str, cmd: StepCommand, reply: StepReply) -> None:
        kv = self._kv[worker_id]
        lengths = {a.request_id: len(a.prompt_ids) + len(a.generated) for a in cmd.adds}
        for rid in cmd.decode_ids:
            kv[rid] = kv.get(rid, 0) + 1
        for rid in cmd.prefill_ids:
            kv[rid] = lengths.get(rid, 0)
        for o in reply.outputs:
            if o.finished:
                kv.pop(o.request_id, None)

    def _record(self, s: IterationSample) -> None:
        driver = self._driver
        session = getattr(driver, "session", None)
        if session is None or driver.core is None:
            return
        payload = {"batch": s.batch_id, **s.row, "start_s": s.start_s, "wall_s": s.wall_s}
        session.plugins.hook.cp_on_event(
            ctx=driver.core.ctx,
            event=Decision(s.end_s, "worker", self.observer.name, ITERATION_ACTION, s.worker_id, None, payload),
        )

    async def stop(self, worker_id: str) -> None:
        await self.inner.stop(worker_id)

    def alive(self, worker_id: str) -> bool:
        return self.inner.alive(worker_id)

    def info(self, worker_id: str) -> dict[str, Any]:
        return self.inner.info(worker_id)

    async def close(self) -> None:
        await self.inner.close()

    def worker_ids(self) -> list[str]:
        return self.inner.worker_ids()


# --- the live overhead ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Overhead:
    """Time the live path adds to the backend's per iteration:
    ``base_s + per_seq_s`` x sequences ``+ per_prompt_s`` x prompts it prefills."""

    base_s: float
    per_seq_s: float
    samples: int
    median_s: float
    per_prompt_s: float = 0.0

    def at(self, num_seqs: int, num_prefill_seqs: int = 0) -> float:
        return self.base_s + self.per_seq_s * num_seqs + self.per_prompt_s * num_prefill_seqs

    def as_dict(self) -> dict[str, float]:
        return {"overhead_base_s": self.base_s, "overhead_per_seq_s": self.per_seq_s,
                "overhead_per_prompt_s": self.per_prompt_s, "overhead_median_s": self.median_s,
                "overhead_samples": self.samples}


def fit_overhead(samples: Iterable[IterationSample]) -> Overhead:
    """Fit the live per-iteration overhead (effective - backend) as a + b x sequences + c x prompts.

    A least-squares (mean) fit, not a median: latencies add up iteration times, so the odd
    stall (a GC pause, a noisy neighbour taking the CPU) belongs in the expectation.
    Coefficients are non-negative; a term the samples cannot tell apart from the others
    (no prefills, one batch size) is left at 0.
    """
    import numpy as np
    from sklearn.linear_model import LinearRegression

    triples = [(s.num_seqs, s.num_prefill_seqs, max(0.0, s.effective_s - s.backend_s)) for s in samples]
    if not triples:
        raise ValueError("no live iterations to measure the overhead from")
    extra = np.array([x for _, _, x in triples])
    median = float(np.median(extra))
    columns = [np.ones(len(triples))]
    names = ["base"]
    for name, values in (("seqs", [n for n, _, _ in triples]), ("prompts", [p for _, p, _ in triples])):
        if len(set(values)) > 1:
            columns.append(np.array(values, dtype=float))
            names.append(name)
    if len(names) == 1:
        return Overhead(float(extra.mean()), 0.0, len(triples), median)
    coef = LinearRegression(positive=True, fit_intercept=False).fit(np.column_stack(columns), extra).coef_
    got = dict(zip(names, (float(c) for c in coef)))
    return Overhead(got["base"], got.get("seqs", 0.0), len(triples), median, got.get("prompts", 0.0))


def split_stalls(samples: Sequence[IterationSample], factor: float = STALL_FACTOR,
                 ) -> tuple[list[IterationSample], list[IterationSample]]:
    """(steady iterations, stalls): a stall's live-path time (effective - backend) is more than
    ``factor`` x the median over ``samples``.

    A 290 ms pause on one of 1,600 iterations (seen on a shared host, on the driver's side) delays
    the few requests in flight then; folded into a mean per-prompt overhead it added 2.8 ms to
    every prompt of its run and moved the predicted TTFT p50 by several percent. Stalls are left
    out of the calibration and counted (`Calibration.stalls`).
    """
    extra = [max(0.0, s.effective_s - s.backend_s) for s in samples]
    if not extra:
        return [], []
    cap = factor * statistics.median(extra)
    if cap <= 0:
        return list(samples), []
    steady = [s for s, x in zip(samples, extra) if x <= cap]
    return steady, [s for s, x in zip(samples, extra) if x > cap]


def add_overhead(rows: Iterable[dict[str, Any]], overhead: Overhead) -> list[dict[str, Any]]:
    """Profile rows with the live overhead added to each iteration's time."""
    out_rows = []
    for r in rows:
        seqs = int(r["num_prefill_seqs"]) + int(r["num_decode_seqs"])
        out_rows.append({**r, "iteration_s": float(r["iteration_s"]) + overhead.at(seqs, int(r["num_prefill_seqs"]))})
    return out_rows


# --- profile rows --------------------------------------------------------------------------------


def _shape_key(r: dict[str, Any], buckets_per_octave: int) -> tuple:
    """Same sequence counts, token and context counts within a fraction of an octave."""
    nd = r["num_decode_seqs"]
    ctx = r["sum_decode_context"] / nd if nd else 0.0
    return (r["num_prefill_seqs"], round(math.log2(r["num_prefill_tokens"] + 1) * buckets_per_octave), nd,
            round(math.log2(ctx + 1) * buckets_per_octave))


def _mean_row(members: Sequence[dict[str, Any]], weights: Sequence[float]) -> dict[str, Any]:
    total = sum(weights)
    keys = [k for k in members[0] if k != WEIGHT_FIELD and all(k in m for m in members)]
    return {k: sum(w * float(m[k]) for w, m in zip(weights, members)) / total for k in keys}


def aggregate_rows(rows: Iterable[dict[str, Any]], *, buckets_per_octave: int = 2) -> list[dict[str, Any]]:
    """Mean row per shape (same sequence counts, token and context counts within a fraction of an octave).

    Each mean row says how many iterations it stands for (``samples``, summed when the rows
    carry their own), which the measured model weights its fit by. Fitting means instead of
    single noisy iterations keeps the relative-error fit from leaning low.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_shape_key(r, buckets_per_octave), []).append(r)
    out_rows = []
    for members in groups.values():
        weights = [float(m.get(WEIGHT_FIELD, 1.0)) for m in members]
        out_rows.append({**_mean_row(members, weights), WEIGHT_FIELD: sum(weights)})
    return out_rows


def machine_speed(samples: Sequence[IterationSample], *, window_s: float = SPEED_WINDOW_S,
                  buckets_per_octave: int = 2, rounds: int = 4) -> list[float]:
    """The machine's relative speed when each sample ran (1: the run's average), from the samples alone.

    On a machine shared with other jobs, a backend iteration of one shape takes 5 ms one second and
    7 ms the next. Each iteration's time is modelled as (its shape's cost) x (the machine's speed
    then): the speed at a sample is the median, over the samples within ``window_s / 2`` of it,
    of their time over their shape's cost, and a shape's cost is the mean of its samples' times
    over the speed when they ran; a few rounds of each. Shapes that only occur in bursts (large
    batches) are then costed against the machine as it was during the burst, not as a lucky or
    unlucky moment of it. Speeds are scaled so that the run's total backend time is unchanged.
    """
    import numpy as np

    n = len(samples)
    if n == 0:
        return []
    keys: dict[tuple, int] = {}
    shape = np.array([keys.setdefault(_shape_key(s.row, buckets_per_octave), len(keys)) for s in samples])
    t = np.array([s.start_s for s in samples])
    b = np.array([s.backend_s for s in samples])
    order = np.argsort(t, kind="stable")
    ts = t[order]
    lo = np.searchsorted(ts, ts - window_s / 2, side="left")
    hi = np.searchsorted(ts, ts + window_s / 2, side="right")
    speed = np.ones(n)
    for _ in range(rounds):
        cost = np.bincount(shape, weights=b / speed) / np.bincount(shape)
        ratio = (b / np.maximum(cost[shape], 1e-12))[order]
        local = np.array([np.median(ratio[i:j]) for i, j in zip(lo, hi)])
        speed = np.empty(n)
        speed[order] = local
    cost = np.bincount(shape, weights=b / speed) / np.bincount(shape)
    level = b.sum() / max(float(cost[shape].sum()), 1e-12)  # the run's average speed, time-weighted
    return list((speed / level).tolist()) if level > 0 else [1.0] * n


def live_rows(samples: Sequence[IterationSample], *, window_s: float = WINDOW_S, buckets_per_octave: int = 2,
              normalise: bool = True) -> list[dict[str, Any]]:
    """Mean row per shape of live iterations at their effective times, weighted by the windows they span.

    A machine shared with other jobs changes speed from one second to the next, so iterations
    timed within one ``window_s`` are one observation of the machine, not many: a burst of 20
    iterations of a rare shape is weighed as the one moment it was, and a shape timed all through
    the run as the many moments it was. ``samples`` is the number of distinct windows. With
    ``normalise``, each backend time is first divided by the machine's speed when it ran
    (`machine_speed`): a shape's row is its cost at the run's average speed, plus its mean live
    overhead.
    """
    samples = list(samples)
    speed = machine_speed(samples, buckets_per_octave=buckets_per_octave) if normalise else [1.0] * len(samples)
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(_shape_key(s.row, buckets_per_octave), []).append(i)
    out_rows = []
    for members in groups.values():
        windows = {math.floor(samples[i].start_s / window_s) for i in members}
        rows = []
        for i in members:
            s = samples[i]
            rows.append({**s.row, "iteration_s": s.backend_s / speed[i] + (s.effective_s - s.backend_s)})
        out_rows.append({**_mean_row(rows, [1.0] * len(rows)), WEIGHT_FIELD: float(len(windows))})
    return out_rows


def join_runs(*runs: Sequence[IterationSample]) -> list[IterationSample]:
    """Several live runs' samples as one: hand-offs measured within each run (`with_handoffs`), the
    runs laid end to end on one timeline so that neither hand-offs nor time windows mix runs."""
    out: list[IterationSample] = []
    offset = 0.0
    for run in runs:
        if not run:
            continue
        timed = run if all(s.handoff_s is not None for s in run) else with_handoffs(run)
        shift = offset - min(s.start_s for s in timed)
        out += [dataclasses.replace(s, start_s=s.start_s + shift, end_s=s.end_s + shift) for s in timed]
        offset = max(s.end_s for s in out) + 10 * WINDOW_S
    return out


def at_pace(samples: Sequence[IterationSample], factor: float) -> list[IterationSample]:
    """The samples as if the machine had run the backend ``factor`` times as long: each backend time
    scaled and the reply that much later, the live path's own time (``effective - backend``) kept.

    To calibrate on several runs at the pace of one of them: shapes costed over all of them, the
    machine's speed of the run nearest in time (a shared host's pace drifts by tens of percent
    over minutes). Hand-offs must be measured first (`with_handoffs` / `join_runs`).
    """
    if factor <= 0 or not math.isfinite(factor):
        raise ValueError(f"pace factor must be positive and finite, got {factor}")
    out = []
    for s in samples:
        if s.handoff_s is None:
            raise ValueError("at_pace needs hand-offs measured first (with_handoffs / join_runs)")
        extra = s.backend_s * (factor - 1.0)
        out.append(dataclasses.replace(s, row={**s.row, "iteration_s": s.backend_s * factor}, end_s=s.end_s + extra))
    return out


def _grid_model(grid_rows: Sequence[dict[str, Any]], grid_meta: dict[str, Any]) -> Any:
    from sim.latency.measured import MeasuredProfileModel

    return MeasuredProfileModel.fit(aggregate_rows(grid_rows), grid_meta)


def _predict(model: Any, r: dict[str, Any]) -> float:
    """The model's time for a live row's shape, at its padded sizes (uniform members of the padded width)."""
    from sim.latency.base import IterationShape

    n, nd = int(r["num_prefill_seqs"]), int(r["num_decode_seqs"])
    width = r.get("padded_prefill_tokens", r["num_prefill_tokens"]) / n if n else 0
    ctx = r.get("padded_decode_context", r["sum_decode_context"]) / nd if nd else 0
    return model.iteration_s(IterationShape([width] * n, [0] * n, [ctx] * nd))


def live_slowdowns(grid_rows: Sequence[dict[str, Any]], grid_meta: dict[str, Any],
                   samples: Sequence[IterationSample]) -> dict[str, float]:
    """How much slower the live backend ran than the grid profile predicts for the same shapes.

    The grid times uniform batches on an idle engine; live batches mix lengths (padding masks),
    merge and compact their KV cache as requests come and go, and share the machine with the
    driver. Sum of live backend time over sum of predicted, for iterations that prefill
    (``prefill``), that only decode (``decode``), and all of them (``all``). A kind the run
    never ran takes the overall ratio.
    """
    model = _grid_model(grid_rows, grid_meta)
    predicted: dict[str, float] = {"prefill": 0.0, "decode": 0.0}
    actual: dict[str, float] = {"prefill": 0.0, "decode": 0.0}
    for s in samples:
        kind = iteration_kind(s.row)
        predicted[kind] += _predict(model, s.row)
        actual[kind] += s.backend_s
    total_p, total_a = sum(predicted.values()), sum(actual.values())
    overall = total_a / total_p if total_p > 0 else 1.0
    out = {k: actual[k] / predicted[k] if predicted[k] > 0 else overall for k in predicted}
    out["all"] = overall
    return out


def live_slowdown(grid_rows: Sequence[dict[str, Any]], grid_meta: dict[str, Any],
                  samples: Sequence[IterationSample]) -> float:
    """The overall live backend / grid profile ratio (see `live_slowdowns`)."""
    return live_slowdowns(grid_rows, grid_meta, samples)["all"]


@dataclass(frozen=True)
class Calibration:
    """Profile rows for the simulator from a live run, and what was folded into them."""

    rows: list[dict[str, Any]]
    overhead: Overhead
    slowdown: float | None  # live backend / grid profile over all iterations; None without a grid
    slowdowns: dict[str, float] = dataclasses.field(default_factory=dict)  # by kind: prefill, decode, all
    handoff_s: float = 0.0  # median reply -> next batch hand-off folded into the iterations
    stalls: int = 0  # iterations left out as stalls of the host or driver (`split_stalls`)

    def meta(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"live_slowdown": self.slowdown} if self.slowdown is not None else {}
        for kind in ("prefill", "decode"):
            if kind in self.slowdowns:
                extra[f"live_slowdown_{kind}"] = self.slowdowns[kind]
        return {**self.overhead.as_dict(), "handoff_s": self.handoff_s, "stalls": self.stalls, **extra}


def calibrate_rows(samples: Sequence[IterationSample], grid_rows: Sequence[dict[str, Any]] | None = None,
                   grid_meta: dict[str, Any] | None = None) -> Calibration:
    """A profile from a live run: its own iterations at their effective times (mean per shape,
    weighted by the time windows it was timed in, `live_rows`); with a grid profile of the same
    worker, also the grid's rows scaled by the live slowdown of their kind plus the live overhead
    (one window's weight each, or one per pass of an interleaved grid), for the shapes the run did
    not reach. Several runs: `join_runs`. Stalls of the host or driver are left out (`split_stalls`)."""
    if not samples:
        raise ValueError("no live iterations to calibrate from")
    timed = samples if all(s.handoff_s is not None for s in samples) else with_handoffs(samples)
    handoff = statistics.median(s.handoff_s or 0.0 for s in timed)
    timed, stalls = split_stalls(timed)
    overhead = fit_overhead(timed)
    rows = live_rows(timed)
    if grid_rows is None:
        return Calibration(rows, overhead, None, {}, handoff, len(stalls))
    slowdowns = live_slowdowns(grid_rows, grid_meta or {}, timed)
    # A grid timed in interleaved passes (``"interleaved": true`` in its metadata) observed each shape
    # once per pass, at moments spread over the profiling; otherwise its repeats ran back to back.
    interleaved = bool((grid_meta or {}).get("interleaved"))
    scaled = [{**r, "iteration_s": r["iteration_s"] * slowdowns[iteration_kind(r)],
               WEIGHT_FIELD: r[WEIGHT_FIELD] if interleaved else 1.0}
              for r in aggregate_rows(grid_rows)]
    return Calibration(add_overhead(scaled, overhead) + rows, overhead, slowdowns["all"], slowdowns, handoff,
                       len(stalls))


# --- recorded runs -------------------------------------------------------------------------------


def run_iterations(engine: Any, run_id: int, worker: str | None = None) -> list[IterationSample]:
    """The iterations a live run recorded (``iteration`` decisions), oldest first."""
    from controlplane.storage import iter_rows

    found = []
    for d in iter_rows(engine, run_id, "decisions"):
        if d["action"] != ITERATION_ACTION or not d.get("payload"):
            continue
        if worker is not None and d["subject"] != worker:
            continue
        p = d["payload"]
        row = {k: p[k] for k in (*ROW_KEYS, *PADDED_KEYS) if k in p}
        found.append(IterationSample(d["subject"], int(p["batch"]), float(p["start_s"]),
                                     float(p["start_s"]) + float(p["wall_s"]), row))
    return found


def worker_meta(engine: Any, run_id: int) -> dict[str, Any]:
    """Model, device and precision of a run's first ready worker (its reported facts)."""
    from controlplane.storage import iter_rows

    for e in iter_rows(engine, run_id, "worker_events"):
        if e["kind"] == "ready" and e.get("detail"):
            d = e["detail"]
            return {k: d[k] for k in ("model", "device", "precision", "device_name") if d.get(k) is not None}
    return {}


def samples_table(samples: Sequence[IterationSample], title: str) -> Any:
    """Live iterations by batch size: backend time, effective time and the overhead between them (ms)."""
    from rich.table import Table

    timed = samples if all(s.handoff_s is not None for s in samples) else with_handoffs(samples)
    by: dict[str, list[IterationSample]] = {}
    for s in timed:
        by.setdefault(f"{iteration_kind(s.row)} x{s.num_seqs}", []).append(s)
    t = Table(title=title, header_style="bold")
    for col in ("iterations", "n", "backend p50", "effective p50", "overhead p50", "hand-off p50"):
        t.add_column(col, justify="left" if col == "iterations" else "right")
    for key in sorted(by, key=lambda k: (k.split()[0], int(k.split("x")[1]))):
        xs = by[key]
        t.add_row(key, str(len(xs)), f"{statistics.median(s.backend_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.effective_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.effective_s - s.backend_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.handoff_s or 0.0 for s in xs) * 1e3:.2f} ms")
    return t
