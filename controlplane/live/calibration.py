"""Profile rows from live iterations: the live path's overhead and one mean row per batch shape.

A grid profile (`controlplane.live.profiling`) times the batching engine alone. The simulator
needs what one iteration costs *in the live system*: from the moment the core starts a batch to
the moment it can start the next one on that worker. The pieces here turn a live run's
`IterationSample` s (`controlplane.live.iteration_samples`) into ``controlplane-profile/1`` rows:

* `fit_overhead` fits the live path's time on top of the backend's (effective - backend) as
  ``base + per decode sequence + per prefilled prompt``: a prompt costs more than a decode row
  (it is registered with the backend, its prompt shipped to the worker, its arrival routed).
* `live_rows`: one mean row per shape at the run's average machine speed plus its live overhead,
  weighted by the one-second windows it was timed in.
* `scaled_grid_rows` and `add_overhead` bring a grid profile's rows to a live run: scaled by the
  live slowdown of their kind, with the overhead added.
* `Calibration` holds the rows and what was folded into them.

Plain numbers, no torch and no simulator: comparing the live backend with a grid profile needs
the simulator's measured latency model and lives in `sim.calibration`, with the workflow
(`sim.calibration.calibrate`) that puts these together and writes the profile.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.hardware.profile_format import WEIGHT_FIELD
from controlplane.live.iteration_samples import (
    WINDOW_S,
    IterationSample,
    iteration_kind,
    machine_speed,
    shape_key,
)

__all__ = [
    "Calibration",
    "Overhead",
    "add_overhead",
    "aggregate_rows",
    "fit_overhead",
    "live_rows",
    "scaled_grid_rows",
]


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


def add_overhead(rows: Iterable[dict[str, Any]], overhead: Overhead) -> list[dict[str, Any]]:
    """Profile rows with the live overhead added to each iteration's time."""
    out_rows = []
    for r in rows:
        seqs = int(r["num_prefill_seqs"]) + int(r["num_decode_seqs"])
        out_rows.append({**r, "iteration_s": float(r["iteration_s"]) + overhead.at(seqs, int(r["num_prefill_seqs"]))})
    return out_rows


# --- profile rows --------------------------------------------------------------------------------


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
        groups.setdefault(shape_key(r, buckets_per_octave), []).append(r)
    out_rows = []
    for members in groups.values():
        weights = [float(m.get(WEIGHT_FIELD, 1.0)) for m in members]
        out_rows.append({**_mean_row(members, weights), WEIGHT_FIELD: sum(weights)})
    return out_rows


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
        groups.setdefault(shape_key(s.row, buckets_per_octave), []).append(i)
    out_rows = []
    for members in groups.values():
        windows = {math.floor(samples[i].start_s / window_s) for i in members}
        rows = []
        for i in members:
            s = samples[i]
            rows.append({**s.row, "iteration_s": s.backend_s / speed[i] + (s.effective_s - s.backend_s)})
        out_rows.append({**_mean_row(rows, [1.0] * len(rows)), WEIGHT_FIELD: float(len(windows))})
    return out_rows


def scaled_grid_rows(grid_rows: Iterable[dict[str, Any]], slowdowns: Mapping[str, float], *,
                     interleaved: bool = False) -> list[dict[str, Any]]:
    """A grid profile's mean rows scaled by the live slowdown of their kind (``prefill`` / ``decode``).

    Each weighs one window (one observation of the machine), or with ``interleaved`` (a grid timed
    in passes, ``"interleaved": true`` in its metadata) one per pass: such a grid observed each shape
    at moments spread over the profiling, while otherwise a shape's repeats ran back to back.
    """
    return [{**r, "iteration_s": r["iteration_s"] * slowdowns[iteration_kind(r)],
             WEIGHT_FIELD: r[WEIGHT_FIELD] if interleaved else 1.0}
            for r in aggregate_rows(grid_rows)]


@dataclass(frozen=True)
class Calibration:
    """Profile rows for the simulator from live runs, and what was folded into them."""

    rows: list[dict[str, Any]]
    overhead: Overhead
    slowdown: float | None  # live backend / grid profile over all iterations; None without a grid
    slowdowns: dict[str, float] = dataclasses.field(default_factory=dict)  # by kind: prefill, decode, all
    handoff_s: float = 0.0  # median reply -> next batch hand-off folded into the iterations
    stalls: int = 0  # iterations left out as stalls of the host or driver (`split_stalls`)
    idle_prefill_extra_s: float = 0.0  # a prefill on an idle worker costs this much more (`idle_start`)
    normalised: bool = True  # live rows at the runs' average machine speed (`live_rows`); False: at their own

    def meta(self) -> dict[str, Any]:
        """What the profile's metadata records about the calibration."""
        extra: dict[str, Any] = {"live_slowdown": self.slowdown} if self.slowdown is not None else {}
        for kind in ("prefill", "decode"):
            if kind in self.slowdowns:
                extra[f"live_slowdown_{kind}"] = self.slowdowns[kind]
        if self.idle_prefill_extra_s > 0:
            from controlplane.live.idle_start import IDLE_GAP_S

            extra.update(idle_prefill_extra_s=self.idle_prefill_extra_s, idle_gap_s=IDLE_GAP_S)
        if not self.normalised:
            extra["machine_speed_normalised"] = False
        return {**self.overhead.as_dict(), "handoff_s": self.handoff_s, "stalls": self.stalls, **extra}
