"""The operator's protocol (the default of ``benchmarks/fidelity.py``): profile once, calibrate on
one window of traffic, freeze the profile, predict other windows, report every round.

1. Profile the worker on a generic grid chosen from the model's limits (`profiling.generic_grid`).
2. Calibrate: two live runs of the calibration window - the trace's first requests, at light load,
   then at heavy load placed by the light run's calibration - folded into the grid profile
   (`sim.calibration.calibrate`), and the same window again ``--calibration-repeats`` times in all,
   each into a profile of its own. The median one (by what each charges for every repeat's live
   iterations, `sim.calibration.repeat_spread`) is frozen, and the repeats' spread reported: the
   calibration's own repeatability. The profile is written once, its SHA-256 printed;
   every prediction below uses it (brought to the machine's pace by a factor measured before the
   run only with ``--pace-correction probe``).
3. Predict K evaluated slices (later, disjoint windows of the trace) at low load (the trace's
   arrival pattern) and high load (a Poisson process near the simulated capacity), each run live R
   times on a fresh worker and simulated on the same arrivals. Every round is reported and pooled:
   none is dropped or replaced.
4. Capacity: a short sweep of rates over another window (Poisson arrivals), live and simulated,
   extended upwards (or downwards) until the live side crosses the SLO or a cap (`capacity.next_sweep_rate`).
5. After the fact: per-iteration model error and a refit on the evaluated runs' own iterations
   split each slice's error into latency model and scheduling (`attribution`); the same, and each
   side's batching and pace, for every sweep point (`saturation`).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from controlplane.config import load_config
from controlplane.hardware.profile_format import write_profile
from controlplane.live.iteration_samples import join_runs, with_handoffs
from fidelity_lib import capacity as cap
from fidelity_lib.attribution import (SENSITIVITY_STEP, iteration_error_by_shape, iteration_error_pct, refit_profile,
                                      scaled_profile)
from fidelity_lib.host_cpu import host_text
from fidelity_lib.metrics import busiest_busy_fraction, stats
from fidelity_lib.outcome import EvalRound, Outcome, SweepPoint
from fidelity_lib.pace import PaceLog
from fidelity_lib.profiling import Probe, generic_grid, load_backend, policy_mixes, profile_with, with_max_padding
from fidelity_lib.replay import LiveRun, keyed, observed_arrivals, replay_live, replay_sim, run_config, _vocab
from fidelity_lib.slices import (Scaling, TraceTooShort, Window, at_rate, carve_windows, count_for, going_round,
                                 isolated_service_s, poisson_at_rate, read_requests)
from fidelity_lib.window_plan import capacity_window, check_windows, grown_capacity_window, preflight, slice_plan
from fidelity_lib.worker_probe import WorkerProbe, pace_factor, probe_pace
from sim.calibration import calibrate, repeat_spread
from sim.traces import TraceRequest, bundled_trace_path, parse_options

#: Where the windows start in the bundled Azure trace by default (its first minutes are a trickle and a flash crowd).
BUNDLED_START_S = 600.0
#: Requests the capacity window must have at least; with fewer than its sweep's cap needs, the runs go round them.
MIN_CAPACITY_WINDOW = 100
#: Requests the length scaling and the calibration run's load are fitted on: the calibration window's first ones
#: (``--scaling-requests``); the light calibration run replays at least these, so none is in an evaluated slice.
SCALING_SAMPLE = 100
#: Requests after the light run its capacity is simulated on (fewer fit the SLO at any rate: a burst, no queue).
CAPACITY_SAMPLE = 100


def light_run_size(light_rate: float, calibration_s: float, scaling_requests: int) -> tuple[int, str]:
    """Requests of the light calibration run: half of ``--calibration-s`` worth at its rate, but at least the
    ``--scaling-requests`` the length scaling was fitted on (they stay in the calibration window); and, when that
    floor makes it longer, a note saying so for the progress line (else "")."""
    half = count_for(light_rate, calibration_s / 2)
    if scaling_requests <= half:
        return half, ""
    return scaling_requests, (f"~{(scaling_requests - 1) / light_rate:.0f} s, not half of --calibration-s "
                              f"{calibration_s:g}: at least the {scaling_requests} requests the length scaling was "
                              "fitted on, --scaling-requests")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Protocol:
    """One run of the protocol; ``console`` gets the progress as it goes."""

    def __init__(self, args: Any, console: Console) -> None:
        self.args, self.console = args, console
        self.trace = args.trace or bundled_trace_path()
        self.fmt = args.format or ("azure" if args.trace is None else None)
        self.tmp = Path(getattr(args, "workdir", None) or tempfile.mkdtemp(prefix="cp-fidelity-"))
        self.db_url = args.db or f"sqlite:///{self.tmp}/fidelity.db"
        self.start_s = args.start_s if args.start_s is not None or args.trace is not None else BUNDLED_START_S
        self.base = with_max_padding(load_config(args.config), getattr(args, "max_padding", None))
        self.t0 = time.monotonic()
        self.pace_log = PaceLog()
        # what is finished so far, for a report of an interrupted run (`fidelity_lib.interrupted`)
        self.stage = "reading the trace"
        self.grid_path: Path | None = None
        self.frozen: Path | None = None
        self.digest: str | None = None
        self.cal_ids: list[int | None] = []
        self.cal_all_ids: list[list[int | None]] = []
        self.rounds: list[EvalRound] = []
        self.sweep: list[SweepPoint] = []
        self.rounds_planned: int | None = None
        self.in_progress: dict[str, Any] | None = None  # the round or sweep point being run

    # --- small steps ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/] {text}", highlight=False)

    def cfg(self, name: str, profile: Path | None = None):
        return run_config(self.base, self.worker, self.db_url, name=name, profile=profile)

    def sim(self, reqs: list[TraceRequest], profile: Path, name: str, *, record: bool = False,
            observers: tuple[Any, ...] = (), exact: bool = False):
        cfg = self.cfg(name, profile)
        if exact:  # one iteration per batch (a diagnostic: `saturation` counts the batches)
            cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"exact": True})})
        return replay_sim(cfg, reqs, record=record, observers=observers)

    def slo_metric(self, reqs: list[TraceRequest], profile: Path, slo: cap.Slo) -> float:
        return slo.value(self.sim(reqs, profile, "fidelity capacity (sim)")[0], len(reqs))

    def slo_for(self, reqs: list[TraceRequest], profile: Path) -> cap.Slo:
        """``--slo-s``, or ``--slo-x`` times the metric the simulator gives ``reqs`` on ``profile`` at 10% load."""
        a = self.args
        if a.slo_s is not None:
            return cap.Slo(a.slo_metric, a.slo_pct, a.slo_s)
        from sim.latency.measured import MeasuredProfileModel

        model = MeasuredProfileModel.from_file(profile)
        service = statistics.fmean(isolated_service_s(model, r) for r in reqs)
        alone = cap.Slo(a.slo_metric, a.slo_pct, math.inf)
        return cap.Slo(a.slo_metric, a.slo_pct, a.slo_x * self.slo_metric(at_rate(reqs, 0.1 / service), profile, alone))

    def light_capacity(self, nxt: list[TraceRequest], profile: Path, light_rate: float) -> float:
        """The capacity ``profile`` gives the requests after the light run (their SLO on it): places the heavy run."""
        slo = self.slo_for(nxt, profile)
        return cap.bisect_capacity(lambda r: self.slo_metric(at_rate(nxt, r), profile, slo), slo.bound_s, low=0.05,
                                   high=2 * light_rate)

    def load_capacities(self, cal: list[TraceRequest], profile: Path, slo: cap.Slo, high: float) -> tuple[float, float]:
        """The capacity ``profile`` gives the calibration window's first --high-s worth of requests at each rate (a load
        like a high slice's): as the trace has them, and as a Poisson process (high load arrives that way with
        --high-arrivals poisson: the trace's bursts at a mean rate near their capacity leave the worker idle
        between them, never 85% busy over a minute)."""
        hs, seed = self.args.high_s, self.args.seed
        as_trace = cap.bisect_capacity(lambda r: self.slo_metric(at_rate(cal[:count_for(r, hs)], r), profile, slo),
                                       slo.bound_s, low=0.05, high=high)
        poisson = cap.bisect_capacity(lambda r: self.slo_metric(poisson_at_rate(cal[:count_for(r, hs)], r, seed),
                                                                profile, slo), slo.bound_s, low=0.05, high=2 * high)
        return as_trace, poisson

    def capacity_on(self, window: Window, profile: Path, slo: cap.Slo, high: float) -> float:
        """The simulated capacity on the capacity window's sweep arrivals (bisection from ``high``)."""
        return cap.bisect_capacity(lambda r: self.slo_metric(self.sweep_arrivals(window, r), profile, slo), slo.bound_s,
                                   low=0.05, high=high)

    def sweep_arrivals(self, window: Window, rate: float) -> list[TraceRequest]:
        """The capacity window's first ``--capacity-s`` worth of requests at ``rate`` as a Poisson process:
        every sweep run lasts about as long, and measures the rate, not where the trace's bursts fall."""
        head = going_round(window.requests, count_for(rate, self.args.capacity_s))
        return poisson_at_rate(head, rate, self.args.seed)

    def live(self, reqs: list[TraceRequest], name: str, seed: int) -> LiveRun:
        return replay_live(self.cfg(name), reqs, threads=self.args.threads, vocab=self.vocab, seed=self.args.seed + seed,
                           record=True, pool=self.args.pool, probe=self.worker_probe)

    def worker_probe_factor(self, run: LiveRun) -> float:
        """The run's worker-probe pace over the frozen calibration's (`worker_probe`); measured before its first arrival."""
        if run.probe_taken_s is not None and run.started_s is not None and run.probe_taken_s >= run.started_s:
            raise AssertionError("a worker probe ended after the run's first arrival")
        return pace_factor(probe_pace(run.probe_samples, self.grid_fit), self.probe_reference)

    def at_pace(self, factor: float, label: str) -> Path:
        """The frozen calibration with its backend times scaled by ``factor`` (the frozen profile itself at 1.0)."""
        if factor == 1.0:
            return self.frozen
        path = self.tmp / f"paced-{label.replace(' ', '-').replace('/', '-')}.json"
        calibrate(self.cal_samples, path, grid=(self.grid_rows, self.meta), pace=factor, run_ids=self.cal_ids)
        return path

    def probe(self, label: str, *, reference: bool = False) -> Any:
        if self.args.pace_correction == "probe" or reference:
            return self.pace_log.record(label, self.prober(), reference=reference)
        return None

    def paced_profile(self, label: str) -> tuple[Path, float, Any, float]:
        """Probe, then the frozen calibration at the probe's pace (``--pace-correction``), all before the run."""
        if self.args.pace_correction == "worker-probe":  # measured by the run's own worker (`worker_probe_factor`)
            return self.frozen, 1.0, None, time.monotonic()
        self.probe(label)
        start = time.monotonic()
        factor, m = self.pace_log.factor(start, self.args.pace_correction)
        if factor == 1.0:
            return self.frozen, factor, m, start
        return self.at_pace(factor, label), factor, m, time.monotonic()

    # --- the protocol --------------------------------------------------------------------------

    def run(self) -> Outcome:
        a = self.args
        raw = read_requests(self.trace, self.fmt, start_s=self.start_s, count=a.max_trace_requests, seed=a.seed,
                            options=parse_options(getattr(a, "opt", None) or ()))
        n_scale = getattr(a, "scaling_requests", SCALING_SAMPLE)
        if len(raw) < n_scale:
            raise TraceTooShort(f"the trace is too short: {self.trace} has {len(raw)} requests after "
                                f"{self.start_s or 0}s, the length scaling needs {n_scale} (--scaling-requests)")
        scaling = Scaling.fit(raw[:n_scale], prompt_scale=a.prompt_scale, output_scale=a.output_scale,
                              prompt_p50=a.prompt_p50, output_p50=a.output_p50, max_prompt=a.max_prompt_tokens,
                              max_output=a.max_output_tokens)
        max_seq = max(512, a.max_prompt_tokens + a.max_output_tokens + 64)
        source = {"path": a.model_path} if a.model_path else {"preset": a.preset}
        self.worker = {**source, "precision": a.precision, "device": a.device, "max_seq_len": max_seq, "seed": a.seed}
        from controlplane.live.model_source import WorkerModelSettings

        settings = WorkerModelSettings(**self.worker)
        self.vocab = int(settings.config["vocab_size"]) if settings.config else _vocab(settings)

        # 1. the generic grid profile
        self.stage = "profiling the generic grid"
        backend = load_backend(settings, a.threads)
        max_batch = a.grid_max_batch or int(self.base.cluster.models[0].max_num_seqs)
        grid = generic_grid(a.max_prompt_tokens, a.max_output_tokens, max_batch, a.repeats,
                            mixed=policy_mixes(self.base))
        self.grid_rows, self.meta = profile_with(backend, grid)
        grid_path = self.grid_path = write_profile(self.tmp / "grid-profile.json", self.grid_rows,
                                                   {**self.meta, "source": "grid profile"})
        self.say(f"profiled {len(self.grid_rows)} iterations over {len(list(grid.points()))} generic batch shapes "
                 f"(prompts {tuple(grid.prefill_tokens)}, batches {tuple(grid.decode_batch_sizes)}, contexts "
                 f"{tuple(grid.context_lens)}) -> {grid_path}")
        self.say(f"continuous batching (both sides): {dict(self.base.plugins.settings.get('continuous-batching') or {})}")
        self.prober = Probe(backend, self.grid_rows, self.meta, max_prompt=a.max_prompt_tokens,
                            max_output=a.max_output_tokens)
        from sim.calibration import grid_model

        self.grid_fit = grid_model(self.grid_rows, self.meta)
        self.worker_probe = WorkerProbe.for_limits(a.max_prompt_tokens, a.max_output_tokens, max_batch)

        # 2. calibration: the trace's first window in two live runs - light load, then heavy load placed by
        # the simulator calibrated on the light run - folded together into one profile, then frozen
        service = statistics.fmean(isolated_service_s(self.grid_fit, r)
                                   for r in scaling.apply(raw[:n_scale]))
        light_rate = a.calibration_load[0] / service
        n_light, longer = light_run_size(light_rate, a.calibration_s, n_scale)
        preflight(a, len(raw), n_light)  # a trace too short for the light run and the least after it: no live run
        light_reqs = at_rate(scaling.apply(raw[:n_light]), light_rate)
        before = self.probe("before calibration 1", reference=True)
        self.say(f"calibration 1/{a.calibration_repeats}, light: the trace's first {n_light} requests at "
                 f"{light_rate:.2f}/s ({a.calibration_load[0]:.0%} of one request at a time on the grid profile"
                 f"{'; ' + longer if longer else ''}), "
                 "live ...")
        self.stage = f"calibration 1/{a.calibration_repeats}, its light run"
        light = self.live(light_reqs, "fidelity calibration 1 (light)", seed=1)
        light_profile = calibrate(light.samples, self.tmp / "calibration-light.json", grid=(self.grid_rows, self.meta),
                                  run_ids=[light.run_id]).path
        light_cap = self.light_capacity(scaling.apply(raw[n_light:n_light + CAPACITY_SAMPLE]), light_profile, light_rate)
        heavy_rate = a.calibration_load[1] * light_cap
        n_heavy = count_for(heavy_rate, a.calibration_s / 2)
        check_windows(len(raw), [("calibration", n_light + n_heavy)])  # before its heavy run
        heavy_part = scaling.apply(raw[n_light:n_light + n_heavy])
        heavy_reqs = (poisson_at_rate(heavy_part, heavy_rate, a.seed) if a.calibration_arrivals == "poisson"
                      else at_rate(heavy_part, heavy_rate))
        self.say(f"calibration 1/{a.calibration_repeats}, heavy: the next {n_heavy} requests at {heavy_rate:.2f}/s "
                 f"({'as a Poisson process' if a.calibration_arrivals == 'poisson' else 'the trace pattern'}) "
                 f"({a.calibration_load[1]:.0%} of the capacity simulated on the light run's calibration, "
                 f"{light_cap:.2f}/s), live ...")
        self.stage = f"calibration 1/{a.calibration_repeats}, its heavy run"
        heavy = self.live(heavy_reqs, "fidelity calibration 1 (heavy)", seed=4)
        runs = [(light, heavy, before, self.probe("after calibration 1", reference=True))]
        self.cal_all_ids.append([light.run_id, heavy.run_id])
        # the same calibration window again (same requests, same rates), each folded into a profile of its own
        for k in range(2, a.calibration_repeats + 1):
            before = self.probe(f"before calibration {k}", reference=True)
            self.say(f"calibration {k}/{a.calibration_repeats}: the same window again (light, then heavy), live ...")
            self.stage = f"calibration {k}/{a.calibration_repeats}"
            lk = self.live(light_reqs, f"fidelity calibration {k} (light)", seed=1)
            hk = self.live(heavy_reqs, f"fidelity calibration {k} (heavy)", seed=4)
            runs.append((lk, hk, before, self.probe(f"after calibration {k}", reference=True)))
            self.cal_all_ids.append([lk.run_id, hk.run_id])
        self.stage = "fitting and freezing the calibrated profile"
        (cal_window,) = carve_windows(raw, [("calibration", n_light + n_heavy)], scaling)
        cal_rate = (light_rate + heavy_rate) / 2
        grid_cap = 2 * light_cap
        fits = [calibrate(join_runs(lk.samples, hk.samples), self.tmp / f"calibrated-{k + 1}.json",
                          grid=(self.grid_rows, self.meta), run_ids=[lk.run_id, hk.run_id])
                for k, (lk, hk, _, _) in enumerate(runs)]
        # the median repeat, by what each profile charges for every repeat's live iterations, is frozen
        self.cal_spread = repeat_spread([f.path for f in fits], [s.row for f in fits for s in f.samples])
        m = self.cal_spread.median_index
        self.cal_fits = fits
        light, heavy, before, after = runs[m]
        done = fits[m]
        if a.calibration_repeats > 1:
            self.pace_log.use_references([before, after])
        self.cal_run, self.cal_ids = heavy, [light.run_id, heavy.run_id]
        # the frozen repeat's two workers' own probes: the pace the frozen profile was calibrated at
        self.probe_reference = [probe_pace(light.probe_samples, self.grid_fit), probe_pace(heavy.probe_samples, self.grid_fit)]
        self.probe_by_repeat = [[probe_pace(r.probe_samples, self.grid_fit) for r in (lk, hk)] for lk, hk, _, _ in runs]
        self.frozen = Path(shutil.copyfile(done.path, a.profile_out or self.tmp / "calibrated-profile.json"))
        self.cal_samples = done.samples
        self.idle_variant = calibrate(done.samples, self.tmp / "idle-step-profile.json", grid=(self.grid_rows, self.meta),
                                      run_ids=self.cal_ids, idle_step=True)
        self.unnormalised_variant = calibrate(done.samples, self.tmp / "unnormalised-profile.json",
                                              grid=(self.grid_rows, self.meta), run_ids=self.cal_ids, normalise=False)
        self.say(f"calibration repeats price the same {self.cal_spread.iterations} iterations at "
                 f"{', '.join(f'{x:.3f}' for x in self.cal_spread.mean_iteration_ms())} ms each: spread "
                 f"{'n/a (one calibration)' if self.cal_spread.spread_pct is None else f'{self.cal_spread.spread_pct:.1f}%'}; the "
                 f"{self.cal_spread.median_label}, repeat {m + 1}, is frozen")
        digest = self.digest = sha256(self.frozen)
        self.say(f"[bold]frozen profile[/] {self.frozen} sha256 {digest}")
        self.stage = "the simulated capacity on the frozen profile (bisection)"

        # 3. the simulator's capacity on the frozen profile (at the pace a probe measures now, with
        # --pace-correction probe) places the load levels and the sweep; the SLO's bound is fixed here
        slo = self.slo = self.slo_for(cal_window.requests, self.frozen)
        place, place_factor, _, _ = self.paced_profile("before the slices")
        sim_cap0, poisson_cap = self.load_capacities(cal_window.requests, place, slo, grid_cap)
        sizes, lv, rates = slice_plan(a, sim_cap0, poisson_cap)
        # enough requests for a sweep run at the adaptive sweep's cap (sim_cap, bisected below on this window
        # with poisson_cap as its first bracket, is at most poisson_cap unless the window is lighter)
        later = raw[n_light + n_heavy:]
        left = len(later) - sum(n for _, n in sizes)
        need, size, self.capacity_going_round = capacity_window(a, poisson_cap, left, MIN_CAPACITY_WINDOW)
        if self.capacity_going_round:
            self.say(f"the trace has {left} requests left for the capacity window, fewer than the {need} a sweep run "
                     f"at its cap needs ({a.capacity_max_fraction:g} x {poisson_cap:.2f}/s for {a.capacity_s:g} s): "
                     "the sweep's runs go round them again (their lengths repeat)")
        sizes.append(("capacity", size))
        check_windows(len(raw), sizes, at=n_light + n_heavy)  # before any evaluated run
        windows = [cal_window] + carve_windows(later, sizes, scaling)
        cap_window = windows[-1]
        sim_cap = self.capacity_on(cap_window, place, slo, poisson_cap)
        grown = grown_capacity_window(a, sim_cap, size, left, MIN_CAPACITY_WINDOW, self.capacity_going_round)
        if grown:  # a lighter window than the calibration's: its sweep's cap needs more requests than it was sized on
            self.say(f"the capacity window's simulated capacity, {sim_cap:.2f}/s, is above the {poisson_cap:.2f}/s it "
                     f"was sized on: it takes {grown[0]} requests, not {size}"
                     f"{' (all that are left: the runs go round them)' if grown[1] else ''}")
            sizes[-1], self.capacity_going_round = ("capacity", grown[0]), grown[1]
            windows[-1] = cap_window = carve_windows(later, sizes, scaling)[-1]
            sim_cap = self.capacity_on(cap_window, place, slo, poisson_cap)
        self.say(f"simulated capacity (frozen profile at pace x{place_factor:.3f}, {slo}): "
                 f"{sim_cap0:.2f}/s on the calibration window as the trace has it, {poisson_cap:.2f}/s as a Poisson "
                 f"process, {sim_cap:.2f}/s on the capacity window; load levels "
                 f"low {rates['low']:.2f}/s, high {rates['high']:.2f}/s")

        # 4. the evaluated slices, each R times, every round kept
        rounds = self.rounds
        self.rounds_planned = len(windows[1:-1]) * a.runs_per_slice
        for rep in range(a.runs_per_slice):
            for w in windows[1:-1]:
                self.eval_round(len(rounds), w, lv[w.name], rep, rates[lv[w.name]])  # appended to rounds

        # 5. the capacity sweep, live and simulated at the same arrivals: the planned fractions, then rates added
        # upwards (downwards) while the live side has not crossed the SLO, up to the cap (`cap.next_sweep_rate`)
        sweep = self.sweep
        window_cap = math.inf if self.capacity_going_round else cap.window_max_rate(len(cap_window.requests),
                                                                                    a.capacity_s)
        sweep_cap = min(a.capacity_max_fraction * sim_cap, window_cap)
        planned = cap.planned_rates(a.capacity_fractions, sim_cap, sweep_cap)
        if max(a.capacity_fractions) * sim_cap > sweep_cap:
            self.say(f"planned sweep rates above the sweep's cap, {sweep_cap:.2f}/s, run at the cap")
        while True:
            if planned:
                rate, added = planned.pop(0), False
            else:
                rate = cap.next_sweep_rate([p.rate for p in sweep], [p.slo_values(slo)[0] for p in sweep], slo.bound_s,
                                           sim_capacity=sim_cap, step=a.capacity_step_fraction,
                                           max_fraction=a.capacity_max_fraction, min_fraction=a.capacity_min_fraction,
                                           max_rate=window_cap)
                if rate is None:
                    break
                added = True
            self.stage = f"capacity sweep point {len(sweep) + 1}"
            self.in_progress = {"rate": round(rate, 3), "added": added, "partial": True}
            path, factor, _, _ = self.paced_profile(f"sweep {rate / sim_cap:.3g}")
            sent = self.sweep_arrivals(cap_window, rate)
            run = self.live(sent, f"fidelity capacity {rate:.2f}/s", seed=3)
            if a.pace_correction == "worker-probe":
                factor = self.worker_probe_factor(run)
                path = self.at_pace(factor, f"sweep {rate:.2f}")
            sim, _ = self.sim(observed_arrivals(sent, run), path,
                              f"fidelity capacity {rate:.2f}/s (sim)")
            sweep.append(SweepPoint(rate, run, sim, factor, len(sent), sent, path, added))
            self.in_progress = None
            lv_v, sv_v = sweep[-1].slo_values(slo)
            self.say(f"sweep {rate:.2f}/s ({rate / sim_cap:.2f} x sim capacity{', added' if added else ''}, "
                     f"{len(sent)} requests): {slo.metric.upper()} p{slo.pct} live {lv_v * 1e3:.0f} ms, sim "
                     f"{sv_v * 1e3:.0f} ms (bound {slo.bound_s * 1e3:.0f} ms)")

        self.stage = "the after-the-fact analyses (attribution, the sweep's points)"
        out = Outcome(a, Path(self.trace).name, windows, lv, {n: rates[l] for n, l in lv.items()}, scaling, grid_path,
                      self.grid_rows, self.meta, self.frozen, digest, done.calibration, self.cal_run, cal_rate, rounds,
                      sweep, sim_cap, self.pace_log, self.t0, slo)
        out.attribution = self.attribute(rounds)
        out.sweep_cap_rps, out.sweep_floor_rps = sweep_cap, a.capacity_min_fraction * sim_cap
        out.capacity_window_requests = len(cap_window.requests)
        out.idle_step_s = self.idle_variant.calibration.idle_prefill_extra_s
        out.capacity_window_going_round = self.capacity_going_round or any(p.sent > len(cap_window.requests)
                                                                            for p in sweep)
        from fidelity_lib.saturation import analyse_sweep

        out.capacity_attribution = analyse_sweep(self, sweep, slo)
        from sim.calibration import grid_model, pace_by_busy

        out.pace_by_busy = pace_by_busy(grid_model(self.grid_rows, self.meta),
                                        [r.live.samples for r in rounds] + [p.live.samples for p in sweep])
        for r in rounds:
            out.iteration_by_shape.setdefault(r.slice_name, []).append(iteration_error_by_shape(r.profile, r.live.samples))
        out.calibration_ids = self.cal_ids
        out.probe_reference, out.probe_by_repeat = self.probe_reference, self.probe_by_repeat
        out.calibration_spread, out.calibration_repeat_ids = self.cal_spread, self.cal_all_ids
        out.wall_s = time.monotonic() - self.t0
        out.batching = dict(self.base.plugins.settings.get("continuous-batching") or {})
        return out

    def eval_round(self, index: int, w: Window, level: str, rep: int, rate: float) -> EvalRound:
        """One evaluated round, live then simulated, appended to ``self.rounds`` (and returned)."""
        self.stage = f"round {index + 1} ({w.name}, run {rep + 1})"
        self.in_progress = {"round": index + 1, "slice": w.name, "level": level, "run": rep + 1, "rate": round(rate, 3),
                            "partial": True}
        poisson = level == "high" and self.args.high_arrivals == "poisson"
        reqs = poisson_at_rate(w.requests, rate, self.args.seed + 1) if poisson else at_rate(w.requests, rate)
        path, factor, m, start = self.paced_profile(f"round {index + 1}")
        live_started = time.monotonic()
        if m is not None and m.taken_s >= live_started:
            raise AssertionError("a pace measurement taken after the run started")
        run = self.live(reqs, f"fidelity {w.name} (run {rep + 1})", seed=2)
        arrivals = observed_arrivals(reqs, run)
        probe_factor = self.worker_probe_factor(run)
        probe_path = self.at_pace(probe_factor, f"round {index + 1} worker probe")
        if self.args.pace_correction == "worker-probe":
            path, factor = probe_path, probe_factor
        sim, sim_id = self.sim(arrivals, path, f"fidelity {w.name} run {rep + 1} (sim)", record=True)
        by_probe = sim if probe_path == path else self.sim(arrivals, probe_path, f"fidelity {w.name} (worker probe sim)")[0]
        unpaced = sim if path == self.frozen else self.sim(arrivals, self.frozen, f"fidelity {w.name} (unpaced sim)")[0]
        by_idle = self.sim(arrivals, self.idle_variant.path, f"fidelity {w.name} (idle step sim)")[0]
        by_unnormalised = self.sim(arrivals, self.unnormalised_variant.path, f"fidelity {w.name} (unnormalised sim)")[0]
        by_repeat = [unpaced if f.path == self.cal_fits[self.cal_spread.median_index].path
                     else self.sim(arrivals, f.path, f"fidelity {w.name} (calibration {k + 1} sim)")[0]
                     for k, f in enumerate(self.cal_fits)] if len(self.cal_fits) > 1 else []
        busy = busiest_busy_fraction([(s.start_s, s.start_s + s.effective_s) for s in with_handoffs(run.samples)])
        label, taken = (m.label, m.taken_s) if m else (None, None)
        if self.args.pace_correction == "worker-probe" and run.probe_taken_s is not None:
            label, taken, live_started = "worker probe", run.probe_taken_s, run.started_s
        rnd = EvalRound(index, w.name, level, rep, rate, run, sim, sim_id, arrivals, path, factor,
                        label, (taken - self.t0) if taken is not None else None, live_started - self.t0, busy,
                        unpaced, by_repeat, by_probe, probe_factor, by_idle, by_unnormalised)
        self.rounds.append(rnd)  # recorded before its line is printed: a Ctrl-C after the line finds it finished
        self.in_progress = None
        e = {k: 100 * (stats(sim)[k][50] / stats(run.requests)[k][50] - 1) for k in ("ttft", "e2e")}
        self.say(f"round {index + 1}: {w.name} run {rep + 1}, {len(reqs)} requests at {rate:.2f}/s, pace x{factor:.3f}, "
                 f"busiest minute {busy:.0%} busy; p50 sim vs live TTFT {e['ttft']:+.1f}%, E2E {e['e2e']:+.1f}%; "
                 f"{host_text(run.facts)}")
        return rnd

    def attribute(self, rounds: list[EvalRound]) -> dict[str, dict[str, float]]:
        """Per slice: per-iteration model error, and the error left with the runs' own iteration times."""
        out = {}
        for name in dict.fromkeys(r.slice_name for r in rounds):
            mine = [r for r in rounds if r.slice_name == name]
            own, slower, it_err = [], [], []
            for r in mine:
                it_err.append(iteration_error_pct(r.profile, r.live.samples))
                refit = refit_profile(r.live.samples, self.tmp / f"refit-{r.index}.json", (self.grid_rows, self.meta),
                                      r.live.run_id)
                own += keyed(self.sim(r.arrivals, refit, f"fidelity {name} refit (sim)")[0], r.index)
                scaled = scaled_profile(r.profile, 1 + SENSITIVITY_STEP, self.tmp / f"slower-{r.index}.json")
                slower += keyed(self.sim(r.arrivals, scaled, f"fidelity {name} sensitivity (sim)")[0], r.index)
            live = sum((r.live_keyed for r in mine), [])
            sim = sum((r.sim_keyed for r in mine), [])
            ls, ss, os_, xs = stats(live), stats(sim), stats(own), stats(slower)
            row = {"iteration_err_pct": sum(it_err) / len(it_err)}
            for m in ("ttft", "e2e"):
                total = 100 * (ss[m][50] / ls[m][50] - 1)
                sched = 100 * (os_[m][50] / ls[m][50] - 1)
                row.update({f"{m}_p50_err_pct": total, f"{m}_scheduling_pct": sched,
                            f"{m}_latency_model_pct": total - sched,
                            # how far the simulated p50s move when every iteration is SENSITIVITY_STEP slower
                            f"{m}_p50_pct_per_2pct_slower": 100 * (xs[m][50] / ss[m][50] - 1),
                            f"{m}_p90_pct_per_2pct_slower": 100 * (xs[m][90] / ss[m][90] - 1)})
            out[name] = row
        return out
