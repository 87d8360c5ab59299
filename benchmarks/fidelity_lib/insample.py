"""The in-sample diagnostics (``--protocol in-sample``): rounds of a calibration run and the evaluated run.

Not what an operator can do, and not the default: the calibration run replays the evaluated slice
itself (a rehearsal, ``--calibrate-on slice``) or the requests right around it (``neighbours``), a
round whose machine changed pace between the two runs may be replaced (``--max-pace-gap``), and
``--pace neighbours`` uses calibration runs made after a round. Kept to take errors apart.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from controlplane.config import RunConfig
from controlplane.live.iteration_samples import IterationSample, join_runs
from fidelity_lib.metrics import errors, stats
from fidelity_lib.replay import LiveRun, RequestTimes, keyed, observed_arrivals, replay_sim, run_config
from sim.calibration import calibrate, live_slowdowns
from sim.traces import TraceRequest

console = Console(width=120)
#: --pace: how many pooled rounds either side of a round its simulated machine pace averages (None: all).
PACE_SPANS: dict[str, int | None] = {"round": 0, "neighbours": 1, "pooled": None}


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


def _in_run_order(cal_runs: list[LiveRun], live_runs: list[LiveRun]) -> list[tuple[LiveRun, str]]:
    tagged = [(r, "calibration") for r in cal_runs] + [(r, "evaluated") for r in live_runs]
    return sorted(tagged, key=lambda t: t[0].run_id or 0)



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

