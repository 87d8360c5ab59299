"""Live iterations as the control plane timed them, and the arithmetic on their timeline.

An `IterationSample` is one worker step of a live run, from the driver's `IterationTimed`
event: the batch's shape and the backend's own time (``row``), when the core started the
batch and when the reply was back on the driver's loop. The functions here are plain numbers
(no torch, no simulator): the hand-off to the next batch (`with_handoffs`), several runs on one
timeline (`join_runs`), the machine's speed through a run (`machine_speed`), a run replayed at
another pace (`at_pace`) and the host's stalls (`split_stalls`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.events import IterationTimed

__all__ = [
    "HANDOFF_MAX_S",
    "SPEED_WINDOW_S",
    "STALL_FACTOR",
    "STALL_MIN_PEERS",
    "WINDOW_S",
    "IterationSample",
    "at_pace",
    "iteration_kind",
    "join_runs",
    "machine_speed",
    "shape_key",
    "split_stalls",
    "with_handoffs",
    "with_handoffs_once",
]

#: Iterations timed within one window of this length are one observation of a shared machine's
#: speed (see `controlplane.live.calibration.live_rows`).
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
#: Iterations of one batch size (an octave of sequences) it takes for their own median live path to
#: set the stall threshold of that size (`split_stalls`); fewer, and the run's median does.
STALL_MIN_PEERS = 8


def iteration_kind(row: dict[str, Any]) -> str:
    """``"prefill"`` for an iteration that prefills (mixed ones included), else ``"decode"``."""
    return "prefill" if row["num_prefill_seqs"] else "decode"


def shape_key(row: dict[str, Any], buckets_per_octave: int = 2) -> tuple:
    """A row's shape: the same sequence counts, token and context counts within a fraction of an octave."""
    nd = row["num_decode_seqs"]
    ctx = row["sum_decode_context"] / nd if nd else 0.0
    return (row["num_prefill_seqs"], round(math.log2(row["num_prefill_tokens"] + 1) * buckets_per_octave), nd,
            round(math.log2(ctx + 1) * buckets_per_octave))


@dataclass(frozen=True, slots=True)
class IterationSample:
    """One live iteration: its shape and backend time (``row``) and when the core started and saw it end."""

    worker_id: str
    batch_id: int
    start_s: float  # run time the core started the batch
    end_s: float  # run time the reply was back on the driver's loop
    row: dict[str, float]  # the backend's profile row (shape + its own iteration_s) and the padded counts
    handoff_s: float | None = None  # reply -> the core's next batch on the worker (`with_handoffs`); None: not yet

    @classmethod
    def from_event(cls, event: IterationTimed) -> IterationSample:
        return cls(event.worker_id, event.batch_id, event.start_s, event.time_s, dict(event.row))

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

    In the live driver a reply is followed by the delivery of its tokens and the
    ``BatchFinished`` the core plans the next batch on; the simulator starts the next batch the
    instant an iteration ends, so this time belongs to the iteration. Where the worker went idle
    after an iteration (no batch within ``max_gap_s``), the run's median hand-off stands in for it.
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


def with_handoffs_once(samples: Sequence[IterationSample]) -> list[IterationSample]:
    """``samples`` as they are when every hand-off is measured already, else `with_handoffs` of them."""
    return list(samples) if all(s.handoff_s is not None for s in samples) else with_handoffs(samples)


def join_runs(*runs: Sequence[IterationSample]) -> list[IterationSample]:
    """Several live runs' samples as one: hand-offs measured within each run (`with_handoffs`), the
    runs laid end to end on one timeline so that neither hand-offs nor time windows mix runs."""
    out: list[IterationSample] = []
    offset = 0.0
    for run in runs:
        if not run:
            continue
        timed = with_handoffs_once(run)
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


def split_stalls(samples: Sequence[IterationSample], factor: float = STALL_FACTOR,
                 ) -> tuple[list[IterationSample], list[IterationSample]]:
    """(steady iterations, stalls): a stall's live-path time (effective - backend) is more than
    ``factor`` x the median over ``samples`` - or, for a batch size whose live path is dearer, the
    median over the iterations of its size (within an octave of sequences, `STALL_MIN_PEERS` or more).

    A 290 ms pause on one of 1,600 iterations (seen on a shared host, on the driver's side) delays
    the few requests in flight then; folded into a mean per-prompt overhead it added 2.8 ms to
    every prompt of its run and moved the predicted TTFT p50 by several percent. Stalls are left
    out of the calibration and counted.

    The live path itself grows with the batch (each sequence's token crosses the pipe and is
    delivered): 0.5 ms at one or two sequences, 3-4 ms at 64-128 on the CPU worker here. Against
    the run's median alone, a run that is mostly small batches called a quarter of its 32-63-sequence
    iterations stalls (12 of 45, 2026-12-03), and the calibration priced large batches from their
    cheaper moments only - too cheap exactly where the queue builds up.
    """
    extra = [max(0.0, s.effective_s - s.backend_s) for s in samples]
    if not extra:
        return [], []
    overall = statistics.median(extra)
    by_size: dict[int, list[float]] = {}
    for s, x in zip(samples, extra):
        by_size.setdefault(_size_octave(s.num_seqs), []).append(x)
    typical = {k: max(overall, statistics.median(v)) if len(v) >= STALL_MIN_PEERS else overall
               for k, v in by_size.items()}
    caps = [factor * typical[_size_octave(s.num_seqs)] for s in samples]
    if overall <= 0:
        return list(samples), []
    steady = [s for s, x, cap in zip(samples, extra, caps) if x <= cap]
    return steady, [s for s, x, cap in zip(samples, extra, caps) if x > cap]


def _size_octave(num_seqs: int) -> int:
    return max(0, int(num_seqs)).bit_length()


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
    shape = np.array([keys.setdefault(shape_key(s.row, buckets_per_octave), len(keys)) for s in samples])
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
