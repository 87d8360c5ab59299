"""The calibration workflow: live iterations (and a grid profile) in, a measured latency profile out.

`calibrate` is what ``controlplane calibrate`` and ``benchmarks/fidelity.py`` both run: it folds
a live run's timed iterations - as the control plane saw them, from the core starting a batch
to the moment it could start the next one - into a ``controlplane-profile/1`` file for the
simulator's ``measured`` latency model, optionally with a grid profile of the same worker
scaled to the run (`calibrate_rows`). It lives on the simulator's side because comparing the
live backend with the grid needs the measured model (`sim.calibration.grid`); the arithmetic
on the samples is plain numbers in `controlplane.live.iteration_samples` / `controlplane.live.calibration`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.hardware.profile_format import check_kinds, read_profile, write_profile
from controlplane.live.calibration import (
    Calibration,
    add_overhead,
    aggregate_rows,
    fit_overhead,
    live_rows,
    scaled_grid_rows,
)
from controlplane.live.idle_start import idle_prefill_extra
from controlplane.live.iteration_samples import (
    IterationSample,
    at_pace,
    iteration_kind,
    split_stalls,
    with_handoffs_once,
)
from sim.calibration.grid import live_slowdowns

__all__ = ["TIMINGS", "WORKER_LABELS", "CalibratedProfile", "calibrate", "calibrate_rows", "check_same_worker"]

#: How `calibrate` times an iteration: ``wall`` as the control plane saw it (backend + live path +
#: hand-off), ``backend`` the engine's own time (what ``controlplane profile`` measures).
TIMINGS = ("wall", "backend")


def calibrate_rows(samples: Sequence[IterationSample], grid_rows: Sequence[Mapping[str, Any]] | None = None,
                   grid_meta: Mapping[str, Any] | None = None, *, idle_step: bool = False,
                   normalise: bool = True) -> Calibration:
    """Profile rows from live iterations: their own at their effective times (mean per shape at the
    run's average machine speed, weighted by the time windows it was timed in, `live_rows`); with a
    grid profile of the same worker, also the grid's rows scaled by the live slowdown of their kind
    plus the live overhead (`scaled_grid_rows`), for the shapes the run did not reach.

    Hand-offs are measured if they are not yet (`with_handoffs`); several runs: `join_runs` first.
    Stalls of the host or driver are left out (`split_stalls`) and counted. ``idle_step`` (off; an experiment,
    docs/history/calibration.md): measure what a prefill on an idle worker costs more, take it out of those
    prefills and record it (`controlplane.live.idle_start`), for the simulator to add where a replica was idle.
    ``normalise`` (on): each live row at the runs' average machine speed (`live_rows`); off (an experiment): at
    the speed its iterations ran at, so joined runs' paces are not averaged into each other's shapes.
    """
    if not samples:
        raise ValueError("no live iterations to calibrate from")
    timed = with_handoffs_once(samples)
    handoff = statistics.median(s.handoff_s or 0.0 for s in timed)
    timed, stalls = split_stalls(timed)
    idle_extra = 0.0
    if idle_step:  # the rows become back-to-back costs; the simulator adds the step
        idle_extra, timed = idle_prefill_extra(timed)
    overhead = fit_overhead(timed)
    rows = live_rows(timed, normalise=normalise)
    if grid_rows is None:
        return Calibration(rows, overhead, None, {}, handoff, len(stalls), idle_extra, normalise)
    slowdowns = live_slowdowns(grid_rows, grid_meta or {}, timed)
    scaled = scaled_grid_rows(grid_rows, slowdowns, interleaved=bool((grid_meta or {}).get("interleaved")))
    return Calibration(add_overhead(scaled, overhead) + rows, overhead, slowdowns["all"], slowdowns, handoff,
                       len(stalls), idle_extra, normalise)


#: What names the worker a profile prices: a grid of another model, precision, device or compile mode (compiled or
#: not) than the run's is refused, and the calibrated profile carries the run's own labels.
WORKER_LABELS = ("model", "precision", "compiled", "device", "device_name")


def check_same_worker(grid_name: str | Path, grid_meta: Mapping[str, Any], meta: Mapping[str, Any], label: str) -> None:
    """A ValueError naming the grid profile if it is of another model, precision, device (type: ``cuda:0`` is
    ``cuda``) or compile mode (``compiled``: a grid without it is not, as the format's default) than the run's
    worker: its rows would be scaled to this run and written under the grid's labels. A run whose workers did not
    report a label (``compiled``: before they did) is not compared on it."""
    for key, verb in (("model", "served"), ("precision", "ran in"), ("device", "ran on"), ("compiled", "ran with compiled")):
        ran, profiled = meta.get(key), grid_meta.get(key, False if key == "compiled" else None)
        if key == "device" and isinstance(ran, str) and isinstance(profiled, str):
            ran, profiled = ran.split(":")[0], profiled.split(":")[0]
        if ran not in (None, "") and profiled not in (None, "") and ran != profiled:
            raise ValueError(f"the grid profile {grid_name} is of {key} {grid_meta.get(key, profiled)!r}, the {label} "
                             f"{verb} {meta.get(key)!r}: profile the same worker"
                             + (" (controlplane profile --compile for a compiled worker, without it for one that is "
                                "not)" if key == "compiled" else ""))


@dataclass(frozen=True)
class CalibratedProfile:
    """What `calibrate` wrote and what went into it."""

    path: Path  # the profile file
    calibration: Calibration  # its rows, the live overhead, slowdowns, hand-off and stalls folded in
    samples: list[IterationSample]  # the iterations it was fitted on: hand-offs measured, at the pace asked for
    meta: dict[str, Any]  # the profile's metadata (the file adds the format's defaults: precision, compiled)


def calibrate(samples: Sequence[IterationSample], output: str | Path, *,
              grid: str | Path | tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]] | None = None,
              timing: str = "wall", pace: float | None = None, meta: Mapping[str, Any] | None = None,
              run_ids: Sequence[int | None] = (), idle_step: bool = False, normalise: bool = True) -> CalibratedProfile:
    """Fit a measured latency profile on live iterations and write it to ``output``.

    * ``samples``: timed iterations of one live run (`IterationLog.samples` during the run,
      `read_live_run` after it, from its ``iteration`` table), or of several put on one timeline
      with `join_runs`.
    * ``grid``: a grid profile of the same worker (a path, or its ``(rows, meta)``): its rows,
      scaled to the run's live slowdown with the live overhead added, join the run's own, so shapes
      the run never reached are still priced (`calibrate_rows`).
    * ``timing``: ``"wall"`` (the default) or ``"backend"``: the backend's own times, one mean row
      per shape - the engine alone, as ``controlplane profile`` measures it; a ``grid`` with it is a ValueError.
    * ``pace``: first scale the backend's times by this factor (`at_pace`): the runs' shapes at the
      machine speed of another moment.
    * ``meta``: the profile's metadata (``model``, ``device``, ``precision``: the run's worker; a grid of another
      is refused, `check_same_worker`; the grid's other metadata is kept);
      ``run_ids`` name the runs in it (``run_id`` / ``run_ids`` and the ``source`` text).

    Returns the written path, the `Calibration`, the samples it was fitted on and the metadata;
    ``sim.latency.measured.MeasuredProfileModel.from_file(path)`` loads the profile.
    """
    if timing not in TIMINGS:
        raise ValueError(f"timing must be one of {', '.join(TIMINGS)}, got {timing!r}")
    if not samples:
        raise ValueError("no live iterations to calibrate from")
    if timing == "backend" and grid is not None:  # (the grid was ignored: the same file with or without it)
        raise ValueError("timing 'backend' fits the engine's own times alone and does not use a grid profile: "
                         "give the grid (--profile) with timing 'wall', or leave it out")
    timed = with_handoffs_once(samples)
    if pace is not None:
        timed = at_pace(timed, pace)
    ids = list(run_ids)
    label = f"live run {ids[0]}" if len(ids) == 1 else f"live runs {ids}" if ids else "live iterations"
    doc: dict[str, Any] = {"model": "model", "device": "unknown", "batching": "padded", **(meta or {})}
    if timing == "backend":
        cal = Calibration(aggregate_rows(s.row for s in timed), fit_overhead(timed), None,
                          handoff_s=statistics.median(s.handoff_s or 0.0 for s in timed))
        source = f"{label} (backend timings, mean per shape)"
    elif grid is not None:
        grid_rows, grid_meta = read_profile(grid) if isinstance(grid, (str, Path)) else grid
        grid_name = grid if isinstance(grid, (str, Path)) else "grid profile"
        check_kinds(grid_rows, str(grid_name), sorted({iteration_kind(s.row) for s in timed}))
        check_same_worker(grid_name, grid_meta, meta or {}, label)
        cal = calibrate_rows(timed, grid_rows, grid_meta, idle_step=idle_step, normalise=normalise)
        doc.update(grid_meta)
        doc.update({k: v for k, v in (meta or {}).items() if k in WORKER_LABELS})  # the run's worker's, not the grid's
        source = f"{label} + {grid_name} scaled to it"
    else:
        cal = calibrate_rows(timed, idle_step=idle_step, normalise=normalise)
        source = f"{label} (as the control plane saw it, mean per shape)"
    if pace is not None:
        source += f", at {pace:.3f}x the backend's pace"
    for stale in ("path", "run_id", "run_ids"):  # a grid's own, or a calibrated grid's
        doc.pop(stale, None)
    if len(ids) == 1:
        doc["run_id"] = ids[0]
    elif ids:
        doc["run_ids"] = ids
    doc.update({"source": source, "timing": timing, **cal.meta()})
    path = write_profile(output, cal.rows, doc)
    return CalibratedProfile(path, cal, timed, doc)
