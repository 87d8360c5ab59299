"""The protocol's records (`fidelity_lib.protocol`): each evaluated round and sweep point as measured, and
everything the protocol measured, for the report (`fidelity_lib.protocol_report`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fidelity_lib import capacity as cap
from fidelity_lib.pace import PaceLog
from fidelity_lib.replay import LiveRun, RequestTimes, keyed
from fidelity_lib.slices import Scaling, Window
from sim.calibration import RepeatSpread
from sim.traces import TraceRequest


@dataclass
class EvalRound:
    """One live run of an evaluated slice and its simulation, as measured: none is ever dropped."""

    index: int
    slice_name: str
    level: str  # low | high
    repeat: int
    rate: float
    live: LiveRun
    sim: list[RequestTimes]
    sim_run_id: int | None
    arrivals: list[TraceRequest]
    profile: Path
    pace: float
    pace_label: str | None
    pace_taken_s: float | None  # since the protocol started (monotonic)
    live_started_s: float
    busy: float  # busiest minute's busy fraction of the live worker
    sim_unpaced: list[RequestTimes] = field(default_factory=list)  # on the frozen profile as it is (a diagnostic)
    # on each repeated calibration's profile as it is (a diagnostic: the prediction had that repeat been frozen)
    sim_by_repeat: list[list[RequestTimes]] = field(default_factory=list)
    # on the frozen profile at the pace the serving worker's own probe measured before the run (a diagnostic
    # unless --pace-correction worker-probe, when it is ``sim``), and that factor
    sim_worker_probe: list[RequestTimes] = field(default_factory=list)
    worker_probe_factor: float = 1.0
    # on a profile fitted from the frozen repeat's samples with the idle worker's prefill step (`idle_start`; an
    # experiment, read A/B against `sim_unpaced`: the same calibration data)
    sim_idle_step: list[RequestTimes] = field(default_factory=list)
    # on a profile fitted from the same samples without the machine-speed normalisation (an experiment, A/B as above)
    sim_unnormalised: list[RequestTimes] = field(default_factory=list)

    @property
    def live_keyed(self) -> list[RequestTimes]:
        return keyed(self.live.requests, self.index)

    @property
    def sim_keyed(self) -> list[RequestTimes]:
        return keyed(self.sim, self.index)


@dataclass
class SweepPoint:
    rate: float
    live: LiveRun
    sim: list[RequestTimes]
    pace: float

    sent: int = 0  # requests the run sent
    arrivals: list[TraceRequest] = field(default_factory=list)  # as sent (the simulation used the observed ones)
    profile: Path | None = None  # the profile its simulation ran on
    added: bool = False  # added by the adaptive sweep (not one of the planned fractions)

    def slo_values(self, slo: cap.Slo) -> tuple[float, float]:
        return slo.value(self.live.requests, self.sent), slo.value(self.sim, self.sent)


@dataclass
class Outcome:
    """Everything the protocol measured, for the report."""

    args: Any
    trace: str
    windows: list[Window]
    levels: dict[str, str]  # slice name -> low | high
    rates: dict[str, float]
    scaling: Scaling
    grid_path: Path
    grid_rows: list[dict]
    meta: dict[str, Any]
    frozen: Path
    frozen_sha256: str
    calibration: Any
    calibration_run: LiveRun
    calibration_rate: float
    rounds: list[EvalRound]
    sweep: list[SweepPoint]
    sim_capacity_bisect: float
    pace_log: PaceLog
    t0: float
    slo: cap.Slo
    attribution: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration_ids: list[int | None] = field(default_factory=list)
    calibration_spread: RepeatSpread | None = None  # the repeated calibrations' prices for the same iterations
    calibration_repeat_ids: list[list[int | None]] = field(default_factory=list)
    wall_s: float = 0.0
    batching: dict[str, Any] = field(default_factory=dict)  # continuous batching's settings, both sides
    # per slice, per live run: the frozen profile's per-iteration error by kind and batch size (after the fact)
    iteration_by_shape: dict[str, list[dict[str, dict[str, float]]]] = field(default_factory=dict)
    # the live backend's pace (over the grid model) by the worker's busy fraction, over every evaluated and sweep run
    pace_by_busy: dict[str, Any] = field(default_factory=dict)
    # the adaptive sweep: its cap (requests/s) and why it stopped; every point compared live vs simulated
    sweep_cap_rps: float = math.nan
    capacity_window_requests: int = 0
    idle_step_s: float = 0.0  # the idle worker's prefill step the experiment's profile measured (`sim_idle_step`)
    capacity_window_going_round: bool = False  # the trace was too short for the cap: the runs repeat its lengths
    sweep_floor_rps: float = math.nan
    capacity_attribution: list[dict[str, Any]] = field(default_factory=list)
    # the worker probe's pace (`worker_probe`) in the frozen repeat's two calibration runs, and in every repeat's
    probe_reference: list[float | None] = field(default_factory=list)
    probe_by_repeat: list[list[float | None]] = field(default_factory=list)
