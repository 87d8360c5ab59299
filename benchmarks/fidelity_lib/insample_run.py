"""``--protocol in-sample``: the older diagnostics' main (see `fidelity_lib.insample`)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from controlplane.config import load_config
from controlplane.hardware.profile_format import write_profile
from controlplane.live.calibration_table import samples_table
from controlplane.live.iteration_samples import IterationSample, split_stalls, with_handoffs
from fidelity_lib.insample import PACE_SPANS, _in_run_order, compare, play_rounds, pooled_rounds, round_plan
from fidelity_lib.metrics import METRICS, PCTS, TARGET_PCT, comparison_table, errors, p50_standard_error, paired_abs_error, stats
from fidelity_lib.profiling import policy_mixes, profile_grid, profile_worker
from fidelity_lib.replay import LiveRun, _vocab, keyed, replay_live, replay_sim, run_config
from fidelity_lib.slices import auto_speed_up, load_slices
from sim.calibration import calibrate, grid_model, live_slowdowns
from sim.traces import TraceRequest, bundled_trace_path, parse_options

BUNDLED_START_S = 600.0


def run_insample(args: Any, console: Console) -> dict[str, Any]:
    wall0 = time.perf_counter()
    trace = args.trace or bundled_trace_path()
    fmt = args.format or ("azure" if args.trace is None else None)
    tmp = str(getattr(args, "workdir", None) or tempfile.mkdtemp(prefix="cp-fidelity-"))
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
                         max_output=args.max_output_tokens, seed=args.seed, after=after_n,
                         options=parse_options(getattr(args, "opt", None) or ()))
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
        "protocol": "in-sample",
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
    return result

