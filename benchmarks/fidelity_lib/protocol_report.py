"""The out-of-sample protocol's report: tables on the console and the JSON line's fields."""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

from rich.console import Console
from rich.table import Table

from fidelity_lib import capacity as cap
from fidelity_lib.metrics import (
    METRICS,
    PCTS,
    TARGET_P99_PCT,
    TARGET_PCT,
    comparison_table,
    signed_pct,
    e2e_correlation,
    errors,
    live_spread,
    paired_abs_error,
    stats,
)
from fidelity_lib.outcome import EvalRound, Outcome, SweepPoint
from fidelity_lib.replay import keyed
from sim.calibration import SINGLE_REPEAT_NOTE


def _r(x: float, nd: int = 2) -> float | None:
    return round(x, nd) if isinstance(x, (int, float)) and math.isfinite(x) else None


def round_row(r: EvalRound) -> dict[str, Any]:
    """One evaluated round in the JSON (``round_detail``)."""
    return {
        "round": r.index + 1, "slice": r.slice_name, "level": r.level, "run": r.repeat + 1,
        "rate": round(r.rate, 3), "requests": len(r.arrivals), "completed": sum(t.status == "completed" for t in r.live.requests),
        "pace": round(r.pace, 4), "pace_from": r.pace_label,
        "pace_measured_at_s": _r(r.pace_taken_s, 3), "live_started_at_s": round(r.live_started_s, 3),
        "busy_pct": round(100 * r.busy, 1), "live_run": r.live.run_id, "sim_run": r.sim_run_id,
        "worker_probe_factor": round(r.worker_probe_factor, 4),
        **{k: r.live.facts.get(k) for k in ("others_cores_mean", "others_cores_max", "worker_cpu_per_backend")},
        **{f"{m}_p50_err_pct": _r(errors(stats(r.live.requests), stats(r.sim))[m][50]) for m in ("ttft", "e2e")},
    }


def sweep_row(p: SweepPoint, slo: cap.Slo) -> dict[str, Any]:
    """One capacity sweep point in the JSON (``capacity_sweep``): its SLO metric live and simulated."""
    live_s, sim_s = p.slo_values(slo)
    return {"rate": round(p.rate, 3), "pace": round(p.pace, 3), "live_ms": _r(live_s * 1e3, 1),
            "sim_ms": _r(sim_s * 1e3, 1), "requests": p.sent, "added": p.added}


def pooled(rounds: list[EvalRound]) -> tuple[list, list]:
    return sum((r.live_keyed for r in rounds), []), sum((r.sim_keyed for r in rounds), [])


def worker_probe_errors(rounds: list[EvalRound], variant: str = "sim_worker_probe") -> dict[str, float]:
    """The rounds' pooled errors had each been simulated as ``variant`` says (default: at its worker's own probe
    pace; ``sim_idle_step``: on the idle-step profile): TTFT and E2E p50 and p99, and TTFT and E2E p50 by load
    level (nan where a level has no round)."""
    def err(rs: list[EvalRound]) -> dict:
        if not rs:
            return {m: {p: math.nan for p in PCTS} for m in METRICS}
        return errors(stats(sum((r.live_keyed for r in rs), [])),
                      stats(sum((keyed(getattr(r, variant), r.index) for r in rs), [])))

    e = err(rounds)
    out = {f"{m}_p{p}": e[m][p] for m in ("ttft", "e2e") for p in (50, 99)}
    for level in ("low", "high"):
        by_level = err([r for r in rounds if r.level == level])
        out[f"{level}_e2e_p50"] = by_level["e2e"][50]
        out[f"{level}_ttft_p50"] = by_level["ttft"][50]
    return out


def _variant_line(console: Console, e: dict[str, float], what: str) -> None:
    """One line: the rounds' pooled errors on a variant profile (`worker_probe_errors` of it)."""
    p = {k: signed_pct(v) for k, v in e.items()}
    console.print(f"the same rounds on {what}: TTFT p50 {p['ttft_p50']}, E2E p50 {p['e2e_p50']} (low "
                  f"{p['low_ttft_p50']} / {p['low_e2e_p50']}, high {p['high_ttft_p50']} / {p['high_e2e_p50']}), "
                  f"TTFT p99 {p['ttft_p99']}, E2E p99 {p['e2e_p99']}", highlight=False)


def _style(e: float, target: float) -> str:
    return "green" if abs(e) <= target else ("yellow" if abs(e) <= 2 * target else "red")


def rounds_table(rounds: list[EvalRound]) -> Table:
    t = Table(title="every round (none dropped): sim vs live p50", header_style="bold")
    for col in ("round", "slice", "run", "rate/s", "pace", "busy (busiest min)", "TTFT live", "TTFT sim", "err",
                "E2E live", "E2E sim", "err"):
        t.add_column(col, justify="left" if col in ("slice",) else "right")
    for r in rounds:
        ls, ss = stats(r.live.requests), stats(r.sim)
        cells = []
        for m in ("ttft", "e2e"):
            e = 100 * (ss[m][50] / ls[m][50] - 1)
            cells += [f"{ls[m][50] * 1e3:.0f} ms", f"{ss[m][50] * 1e3:.0f} ms", f"[{_style(e, TARGET_PCT)}]{signed_pct(e)}[/]"]
        t.add_row(str(r.index + 1), r.slice_name, str(r.repeat + 1), f"{r.rate:.2f}", f"x{r.pace:.3f}",
                  f"{r.busy:.0%}", *cells)
    return t


def attribution_table(attr: dict[str, dict[str, float]], noise: dict[str, float]) -> Table:
    t = Table(title="where the error comes from (per slice, p50; after the fact)", header_style="bold")
    for col in ("slice", "E2E err", "live noise", "latency model", "scheduling", "TTFT err", "latency model",
                "scheduling", "per-iteration err", "E2E p50 / p90 if 2% slower"):
        t.add_column(col, justify="left" if col == "slice" else "right")
    for name, a in attr.items():
        miss = abs(a["e2e_p50_err_pct"]) > TARGET_PCT or abs(a["ttft_p50_err_pct"]) > TARGET_PCT
        cols = ("e2e_p50_err_pct", "e2e_latency_model_pct", "e2e_scheduling_pct", "ttft_p50_err_pct",
                "ttft_latency_model_pct", "ttft_scheduling_pct", "iteration_err_pct")
        cells = [signed_pct(a[c]) for c in cols]
        slower = [signed_pct(a.get(f"e2e_p{p}_pct_per_2pct_slower", math.nan)) for p in (50, 90)]
        t.add_row(f"{name}{' [red](miss)[/]' if miss else ''}", cells[0],
                  signed_pct(noise.get(name, math.nan), sign=False), *cells[1:], " / ".join(slower))
    t.caption = ("latency model: the frozen profile's time for the live iterations' own shapes vs measured (and the "
                 "E2E/TTFT error it explains); scheduling: the error left when the simulator runs on a profile refitted "
                 "on the evaluated run's own iterations; 2% slower: how far the simulated E2E moves when every "
                 "iteration is 2% dearer (near saturation a few percent of per-iteration error is a large E2E one)")
    return t


def capacity_note(live: cap.Crossing, sim: cap.Crossing, cap_rps: float, floor_rps: float, bisect_rps: float) -> str:
    """Why the capacity figure is what it is, in words (``capacity_status.note``)."""
    if live.status == sim.status == "within":
        return "both sides crossed the SLO inside the sweep"
    parts = []
    if live.status == "above":
        parts.append(f"the live side stayed within the SLO up to the highest rate swept, {live.rate:.2f}/s (the "
                     f"sweep's cap {cap_rps:.2f}/s, {cap_rps / bisect_rps:.2f} x the simulated capacity): live "
                     f"capacity above it, capacity_live_rps a lower bound, no error figure")
    elif live.status == "below":
        parts.append(f"the live side was over the SLO down to the sweep's floor ({floor_rps:.2f}/s): no figure")
    if sim.status != "within":
        parts.append(f"the simulated side did not cross inside the sweep ({sim.status})")
    return "; ".join(parts)


def pace_by_busy_line(by_busy: dict[str, Any]) -> str:
    """`sim.calibration.pace_by_busy` in words; "n/a" and why where the runs had too few windows."""
    cells = ", ".join(f"{k.replace('_', ' ')}: {v['median']:.3f} ({v['windows']} windows)"
                      for k, v in by_busy.items() if isinstance(v, dict) and v["median"] is not None)
    corr = by_busy.get("correlation")
    return (f"live backend / grid model by the worker's busy fraction (5 s windows): "
            f"{cells or 'n/a (no run had a full 5 s window of 20 or more iterations; its last, partial one is dropped)'}; "
            f"correlation {f'{corr:.3f}' if corr is not None else 'n/a (fewer than 3 such windows)'}")


def report(o: Outcome, console: Console) -> dict[str, Any]:
    a = o.args
    live, sim = pooled(o.rounds)
    err = errors(stats(live), stats(sim))
    console.print(rounds_table(o.rounds))
    console.print(comparison_table(f"{o.trace}: every round of {len(o.windows) - 2} unseen slice(s) x "
                                   f"{a.runs_per_slice} live run(s), pooled", stats(live), stats(sim), err))
    by_level = {}
    for level in ("low", "high"):
        rs = [r for r in o.rounds if r.level == level]
        if rs:
            lv, sv = pooled(rs)
            by_level[level] = errors(stats(lv), stats(sv))
    names = list(dict.fromkeys(r.slice_name for r in o.rounds))
    noise = {n: live_spread([r.live.requests for r in o.rounds if r.slice_name == n], "e2e") for n in names}
    noise_ttft = {n: live_spread([r.live.requests for r in o.rounds if r.slice_name == n], "ttft") for n in names}
    console.print(attribution_table(o.attribution, noise))
    if o.pace_by_busy:
        console.print(pace_by_busy_line(o.pace_by_busy), highlight=False)
    for name, runs in o.iteration_by_shape.items():  # where the per-iteration error sits, run by run
        for k, shapes in enumerate(runs):
            cells = ", ".join(f"{b} {signed_pct(v['err_pct'])} ({v['time_share_pct']:.0f}% of time)" for b, v in shapes.items())
            console.print(f"per-iteration error by shape, {name} run {k + 1}: {cells}", highlight=False)
    corr = e2e_correlation(live, sim)
    unpaced = errors(stats(live), stats(sum((keyed(r.sim_unpaced, r.index) for r in o.rounds), [])))
    console.print(f"the same rounds on the frozen profile without pace correction: TTFT p50 {signed_pct(unpaced['ttft'][50])}, "
                  f"E2E p50 {signed_pct(unpaced['e2e'][50])}, TTFT p99 {signed_pct(unpaced['ttft'][99])}, E2E p99 "
                  f"{signed_pct(unpaced['e2e'][99])}", highlight=False)

    probed = worker_probe_errors(o.rounds)
    console.print(f"the same rounds at each serving worker's own probe pace (measured before its first arrival; "
                  f"factors {', '.join(f'x{r.worker_probe_factor:.3f}' for r in o.rounds)}): TTFT p50 "
                  f"{signed_pct(probed['ttft_p50'])}, E2E p50 {signed_pct(probed['e2e_p50'])} (low {signed_pct(probed['low_e2e_p50'])}, "
                  f"high {signed_pct(probed['high_e2e_p50'])}), TTFT p99 {signed_pct(probed['ttft_p99'])}, E2E p99 "
                  f"{signed_pct(probed['e2e_p99'])}", highlight=False)

    idle = worker_probe_errors(o.rounds, "sim_idle_step")
    _variant_line(console, idle, f"the profile with the idle worker's prefill step (fitted from the frozen repeat's "
                                 f"samples, step {1e3 * o.idle_step_s:.3f} ms; an experiment)")
    unnorm = worker_probe_errors(o.rounds, "sim_unnormalised")
    _variant_line(console, unnorm, "the profile fitted from the same samples without the machine-speed normalisation "
                                   "(each live row at the pace it ran; an experiment)")

    by_repeat = []  # the pooled p50 errors had each repeated calibration been frozen (a diagnostic)
    for k in range(min((len(r.sim_by_repeat) for r in o.rounds), default=0)):
        e = errors(stats(live), stats(sum((keyed(r.sim_by_repeat[k], r.index) for r in o.rounds), [])))
        by_repeat.append({"repeat": k + 1, "ttft_p50_err_pct": _r(e["ttft"][50]), "e2e_p50_err_pct": _r(e["e2e"][50]),
                          "e2e_p99_err_pct": _r(e["e2e"][99])})
    if by_repeat:
        console.print("the same rounds had each calibration repeat been frozen (pooled E2E p50): " + ", ".join(
            f"{d['repeat']}: {d['e2e_p50_err_pct']}%" for d in by_repeat), highlight=False)

    # capacity
    slo_values = [p.slo_values(o.slo) for p in o.sweep]
    live_x = cap.crossing_rate([p.rate for p in o.sweep], [v[0] for v in slo_values], o.slo.bound_s)
    sim_x = cap.crossing_rate([p.rate for p in o.sweep], [v[1] for v in slo_values], o.slo.bound_s)
    cap_err = (100 * (sim_x.rate / live_x.rate - 1) if live_x.status == sim_x.status == "within" else math.nan)
    added = sum(p.added for p in o.sweep)
    sweep_note = capacity_note(live_x, sim_x, o.sweep_cap_rps, o.sweep_floor_rps, o.sim_capacity_bisect)
    from fidelity_lib.saturation import saturation_lines

    for line in saturation_lines(o.capacity_attribution):
        console.print(line, highlight=False)
    console.print(f"capacity ({o.slo}), sweep of "
                  f"{', '.join(f'{p.rate:.2f}' for p in sorted(o.sweep, key=lambda p: p.rate))}/s ({added} added by the "
                  f"adaptive sweep, cap {o.sweep_cap_rps:.2f}/s): live {live_x.rate:.2f}/s ({live_x.status}), "
                  f"simulated {sim_x.rate:.2f}/s ({sim_x.status}; bisection {o.sim_capacity_bisect:.2f}/s): "
                  f"{signed_pct(cap_err)}; {sweep_note}", highlight=False)
    high = [r for r in o.rounds if r.level == "high"]
    noise_vals = [v for v in noise.values() if math.isfinite(v)]
    mean_noise = statistics.fmean(noise_vals) if noise_vals else math.nan
    spread = o.calibration_spread
    cal_spread = spread.spread_pct if spread is not None and spread.spread_pct is not None else math.nan
    console.print(f"live-vs-live noise floor (E2E p50 spread between the {a.runs_per_slice} runs of a slice, mean over "
                  f"slices): {signed_pct(mean_noise, sign=False)}; calibration spread (the {a.calibration_repeats} calibrations of the same "
                  f"window: their price for the same iterations, (max - min) / mean): {signed_pct(cal_spread, sign=False)}"
                  f"{f' ({SINGLE_REPEAT_NOTE})' if not math.isfinite(cal_spread) else ''}; per-request E2E correlation sim vs live: {corr:.3f}; frozen profile "
                  f"sha256 {o.frozen_sha256}; {o.wall_s:.0f}s; load average {os.getloadavg()[0]:.1f}", highlight=False)
    cal_ids = o.windows[0].ids
    overlap = sum(len(cal_ids & w.ids) for w in o.windows[1:])
    p50_ok = all(abs(err[m][50]) <= TARGET_PCT for m in ("ttft", "e2e"))
    p99_ok = all(abs(err[m][99]) <= TARGET_P99_PCT for m in ("ttft", "e2e"))
    level_ok = all(abs(e[m][50]) <= TARGET_PCT and abs(e[m][99]) <= TARGET_P99_PCT
                   for e in by_level.values() for m in ("ttft", "e2e"))
    return {
        "protocol": "out-of-sample",
        "ttft_p50_err_pct": _r(err["ttft"][50]),
        "e2e_p50_err_pct": _r(err["e2e"][50]),
        "ttft_p99_err_pct": _r(err["ttft"][99]),
        "e2e_p99_err_pct": _r(err["e2e"][99]),
        "tpot_p50_err_pct": _r(err["tpot"][50]),
        "tpot_p99_err_pct": _r(err["tpot"][99]),
        "live_noise_e2e_p50_pct": _r(mean_noise),
        "calibration_spread_pct": _r(cal_spread),
        "calibration_spread_note": None if math.isfinite(cal_spread) else SINGLE_REPEAT_NOTE,
        "calibration_frozen_as": spread.median_label if spread else None,
        "calibration_repeats": a.calibration_repeats,
        "calibration_repeat_mean_iteration_ms": [_r(x, 4) for x in spread.mean_iteration_ms()] if spread else [],
        "calibration_repeat_vs_frozen_pct": [_r(x) for x in spread.relative_to_median()] if spread else [],
        "calibration_frozen_repeat": spread.median_index + 1 if spread else None,
        "calibration_repeat_runs": o.calibration_repeat_ids,
        "err_by_calibration_repeat": by_repeat,
        "live_noise_ttft_p50_pct": _r(statistics.fmean([v for v in noise_ttft.values() if math.isfinite(v)] or [math.nan])),
        "low_load_ttft_p50_err_pct": _r(by_level.get("low", {}).get("ttft", {}).get(50, math.nan)),
        "low_load_e2e_p50_err_pct": _r(by_level.get("low", {}).get("e2e", {}).get(50, math.nan)),
        "high_load_ttft_p50_err_pct": _r(by_level.get("high", {}).get("ttft", {}).get(50, math.nan)),
        "high_load_e2e_p50_err_pct": _r(by_level.get("high", {}).get("e2e", {}).get(50, math.nan)),
        "by_level": {lv: {f"{m}_p{p}_err_pct": _r(e[m][p]) for m in METRICS for p in PCTS} for lv, e in by_level.items()},
        "high_load_busy_pct": [round(100 * r.busy, 1) for r in high],
        "capacity_err_pct": _r(cap_err),
        "capacity_live_rps": _r(live_x.rate, 3),
        "capacity_sim_rps": _r(sim_x.rate, 3),
        "capacity_status": {"live": live_x.status, "sim": sim_x.status, "note": sweep_note},
        "capacity_points_added": added,
        "capacity_sweep_cap_rps": _r(o.sweep_cap_rps, 3),
        "capacity_window_requests": o.capacity_window_requests,
        "capacity_window_going_round": o.capacity_window_going_round,
        "capacity_attribution": o.capacity_attribution,
        "capacity_sim_bisect_rps": _r(o.sim_capacity_bisect, 3),
        "capacity_slo": {"metric": o.slo.metric, "pct": o.slo.pct, "bound_ms": round(o.slo.bound_s * 1e3, 1)},
        "capacity_sweep": [sweep_row(p, o.slo) for p in o.sweep],
        "unpaced_err_pct": {f"{m}_p{p}": _r(unpaced[m][p]) for m in ("ttft", "e2e") for p in (50, 99)},
        "worker_probe_err_pct": {k: _r(v) for k, v in probed.items()},
        "idle_step_err_pct": {k: _r(v) for k, v in idle.items()},
        "idle_step_ms": _r(1e3 * o.idle_step_s, 4),
        "unnormalised_err_pct": {k: _r(v) for k, v in unnorm.items()},
        "worker_probe_reference": [_r(x, 4) for x in o.probe_reference],
        "worker_probe_by_repeat": [[_r(x, 4) for x in r] for r in o.probe_by_repeat],
        "e2e_correlation": _r(corr, 4),
        "e2e_paired_median_abs_err_pct": _r(paired_abs_error(live, sim, "e2e")),
        "rounds": len(o.rounds),
        "max_padding": o.batching.get("max_padding"),
        "rounds_planned": len(o.windows[1:-1]) * a.runs_per_slice,
        "rounds_dropped": len(o.windows[1:-1]) * a.runs_per_slice - len(o.rounds),
        "target_met": bool(p50_ok and p99_ok and level_ok and math.isfinite(cap_err) and abs(cap_err) <= TARGET_PCT),
        "round_detail": [round_row(r) for r in o.rounds],
        "attribution": {n: {k: _r(v) for k, v in d.items()} for n, d in o.attribution.items()},
        "iteration_err_by_shape": o.iteration_by_shape,
        "pace_by_busy": o.pace_by_busy,
        "live_noise_by_slice": {n: {"e2e_p50": _r(noise[n]), "ttft_p50": _r(noise_ttft[n])} for n in names},
        "windows": [{"name": w.name, "requests": len(w.requests), "trace_start_s": round(w.trace_start_s, 3),
                     "trace_end_s": round(w.trace_end_s, 3), "rate": _r(o.rates.get(w.name, math.nan), 3)}
                    for w in o.windows],
        "calibration_overlap_requests": overlap,
        "calibration_rate": round(o.calibration_rate, 3),
        "pace_references": [{"label": m.label, "pace": round(m.pace, 4)} for m in o.pace_log.references],
        "calibration_runs": o.calibration_ids,
        "profile": str(o.frozen),
        "profile_sha256": o.frozen_sha256,
        "grid_profile": str(o.grid_path),
        "live_slowdown": _r(o.calibration.slowdown or 1.0, 3),
        "pace_correction": a.pace_correction,
        "calibration_arrivals": a.calibration_arrivals,
        "pace_reference": _r(o.pace_log.reference.pace, 4) if o.pace_log.reference else None,
        "prompt_scale": round(o.scaling.prompt, 5),
        "output_scale": round(o.scaling.output, 5),
        "trace": o.trace,
        "model": a.model_path or a.preset,
        "device": str(o.calibration_run.facts.get("device", a.device)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(o.wall_s, 1),
    }
