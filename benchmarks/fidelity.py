"""Simulator fidelity against a live worker, as an operator would measure it (out of sample).

    python benchmarks/fidelity.py [--trace PATH --format F]          # the operator's protocol (default)
    python benchmarks/fidelity.py --protocol in-sample [...]          # the older in-sample diagnostics

The default protocol (`fidelity_lib.protocol`, docs/calibration.md "3. Check"):

1. Profile the worker once on a generic grid chosen from the model's limits (prompt lengths up to
   ``--max-prompt-tokens``, contexts up to prompt + ``--max-output-tokens``, decode batches up to
   ``--grid-max-batch``), never from the evaluated traffic.
2. Calibrate on two live runs of the trace's first window, light then heavy load (``--calibration-load``),
   ``--calibration-repeats`` times; freeze the median calibrated profile (written once, its SHA-256
   printed) and report the repeats' spread (``calibration_spread_pct``).
3. Predict K slices the calibration never saw - later, disjoint windows of the trace - at low load
   (``--low-load`` of the frozen simulator's capacity) and high load (``--high-load``: the busiest
   minute keeps the worker above ~85% busy, with queueing), each run live ``--runs-per-slice``
   times on a fresh worker and simulated on the same arrivals. Every round is reported and pooled;
   none is dropped or replaced. The optional pace correction (``--pace-correction probe``) only uses a probe
   of the machine taken right before the evaluated run starts.
4. Capacity: the highest rate within the SLO (by default E2E p90 within ``--slo-x 4`` times what
   the frozen simulator gives the same requests at 10% load), a short sweep of rates on another
   window, live and simulated, extended while the live side has not crossed the SLO (up to
   ``--capacity-max-fraction`` of the simulated capacity); every sweep point compared live vs
   simulated after the fact (batching, pace, per-iteration error, latency model vs scheduling).
5. Report p50/p90/p99 of TTFT, TPOT and E2E (every round pooled, and by load level), the live-vs-live
   spread of repeated runs of a slice (the noise floor), the per-request E2E correlation, and for each
   slice the error split into latency model and scheduling.

Errors are signed, ``(sim - live) / live`` in %; targets use absolute values. Ends with one JSON line
(``ttft_p50_err_pct``, ``e2e_p50_err_pct``, ``ttft_p99_err_pct``, ``e2e_p99_err_pct``,
``live_noise_e2e_p50_pct``, ``calibration_spread_pct``, ``high_load_e2e_p50_err_pct``, ``capacity_err_pct``, ``rounds``,
``rounds_dropped``, ...). Needs torch and transformers; builds a random-weight model (no download).
A trace too short for a window: exit status 2 and one line naming it, what it needs and has, before the live
runs that use it (`fidelity_lib.window_plan`). Ctrl-C: exit status 130, no traceback, the JSON line with what was finished (``interrupted``: true), the
temporary folder removed unless ``--keep-temp`` (`fidelity_lib.interrupted`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402

from fidelity_lib.capacity import EXTEND_STEP, MAX_FRACTION, MIN_FRACTION, SWEEP_FRACTIONS, crossing_rate  # noqa: E402,F401
from fidelity_lib.insample import PACE_SPANS, Round, play_rounds, pooled_rounds, round_plan, round_plans  # noqa: E402,F401
from fidelity_lib.metrics import errors, p50_standard_error, paired_abs_error, stats  # noqa: E402,F401
from fidelity_lib.pace import PACE_CORRECTIONS, PaceLog  # noqa: E402,F401
from fidelity_lib.profiling import DEFAULT_MAX_PADDING  # noqa: E402
from fidelity_lib.protocol import SCALING_SAMPLE  # noqa: E402
from fidelity_lib.replay import LiveRun, RequestTimes  # noqa: E402,F401
from fidelity_lib.warn_once import far_rows_once  # noqa: E402
from fidelity_lib.slices import TraceTooShort, auto_speed_up, isolated_service_s, load_slices, peak_load  # noqa: E402,F401

console = Console(width=None if sys.stdout.isatty() else 120)
#: Re-exported for the tests and for scripts that import this file.
__all__ = ["DEFAULT_MAX_PADDING", "LiveRun", "PACE_CORRECTIONS", "PaceLog", "RequestTimes", "Round", "auto_speed_up", "crossing_rate",
           "errors", "isolated_service_s", "load_slices", "main", "p50_standard_error", "paired_abs_error",
           "parse_args", "peak_load", "play_rounds", "pooled_rounds", "round_plan", "round_plans", "stats"]
PROTOCOLS = ("out-of-sample", "in-sample")
#: ``--quick``: a smoke run (the whole protocol on tiny settings, about a minute on 2 CPU cores), not a measurement:
#: one calibration, one low and one high slice run once, two sweep rates and none added. Options given still win.
QUICK = {"pool": "thread", "repeats": 1, "max_prompt_tokens": 32, "max_output_tokens": 8, "prompt_p50": 16,
         "output_p50": 4, "grid_max_batch": 8, "calibration_s": 16.0, "calibration_repeats": 1, "scaling_requests": 10,
         "low_slices": 1, "high_slices": 1, "low_s": 3.0, "high_s": 3.0, "runs_per_slice": 1, "capacity_s": 3.0,
         "capacity_fractions": (0.8, 1.2), "capacity_min_fraction": 0.8, "capacity_max_fraction": 1.2}
SMOKE_NOTE = "smoke run (--quick): checks the benchmark runs end to end; its figures are not a measurement"


def _fractions(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if len(out) < 2 or any(x <= 0 for x in out):
        raise argparse.ArgumentTypeError(f"expected at least two positive numbers, got {text!r}")
    return tuple(sorted(out))


def _padding(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio >= 1 or 'none', got {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"expected a ratio >= 1 or 'none', got {text!r}")
    return value


def _loads(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not out or any(x <= 0 for x in out):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return out


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default, unless its help already says it (or it has none: "(default: None)" beside "default:
    the bundled Azure code trace")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default:" in text or action.default is None:
            return text
        return super()._get_help_string(action)


def _quick_help() -> str:
    flags = " ".join(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
                     for k, v in QUICK.items())
    return (f"a smoke run, not a measurement (about a minute on 2 CPU cores; the JSON says smoke_run: true and "
            f"target_met: null): the whole protocol on tiny settings, {flags}; an option given as well wins")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), formatter_class=_Help,
                                 epilog="Ends with one JSON line: ttft_p50_err_pct, e2e_p50_err_pct, ttft_p99_err_pct, "
                                        "e2e_p99_err_pct, live_noise_e2e_p50_pct, calibration_spread_pct, "
                                        "high_load_e2e_p50_err_pct, capacity_err_pct, rounds, rounds_dropped (0 in "
                                        "the default protocol), ... Errors are signed, (sim - live) / live in %. The "
                                        "protocol, step by step: docs/calibration.md '3. Check out of sample'.")
    ap.add_argument("--protocol", choices=PROTOCOLS, default="out-of-sample",
                    help="out-of-sample: the operator's protocol; in-sample: the older diagnostics (calibrated on "
                         "the evaluated slice or its neighbours, rounds selected by pace) - not a prediction")
    ap.add_argument("--quick", action="store_true", help=_quick_help())
    ap.add_argument("--trace", type=Path, default=None, help="trace file (default: the bundled Azure code trace)")
    ap.add_argument("--format", default=None,
                    help="azure | mooncake | vidur | canonical | burstgpt | bailian (default: detect)")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="a trace format option, repeatable (e.g. --opt failed=drop; docs/traces.md)")
    ap.add_argument("--start-s", type=float, default=None,
                    help="the windows start at this trace second (default: 0; 600 in the bundled trace)")
    ap.add_argument("--prompt-scale", default="auto", help="multiply prompt lengths (auto: median -> --prompt-p50)")
    ap.add_argument("--output-scale", default="auto", help="multiply output lengths (auto: median -> --output-p50)")
    ap.add_argument("--prompt-p50", type=float, default=64, help="median prompt tokens the auto scale aims at")
    ap.add_argument("--output-p50", type=float, default=16, help="median output tokens the auto scale aims at")
    ap.add_argument("--max-prompt-tokens", type=int, default=256, help="cut longer prompts (after the scale)")
    ap.add_argument("--max-output-tokens", type=int, default=48, help="cut longer outputs (after the scale)")
    ap.add_argument("--preset", default="tiny-llama", help="worker model preset (random weights)")
    ap.add_argument("--model-path", default=None,
                    help="local Hugging Face model directory instead of a preset (default: the preset)")
    ap.add_argument("--precision", default="auto", help="fp32 | bf16 | fp16 | int8 | nf4 | auto (fp32 on CPU)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the worker (CPU)")
    ap.add_argument("--pool", default="process", help="where the live worker runs: process | thread")
    ap.add_argument("--repeats", type=int, default=2, help="timed iterations per profile grid point")
    ap.add_argument("--config", type=Path, default=None,
                    help="run config whose plugins both sides use (default: the library's default config)")
    ap.add_argument("--max-padding", type=_padding, default=DEFAULT_MAX_PADDING,
                    help="continuous batching's max_padding for both sides (vLLM-style policy, unless the config sets "
                         "it): a prompt joins a padded prefill batch only while sequences x longest stays within this "
                         "ratio of its real tokens; 'none': no cap")
    ap.add_argument("--db", default=None, help="database URL for the runs (default: a temporary SQLite file)")
    ap.add_argument("--profile-out", type=Path, default=None,
                    help="where to write the calibrated (frozen) profile (default: a temporary file, removed)")
    ap.add_argument("--keep-temp", action="store_true",
                    help="on Ctrl-C keep the temporary folder (its profiles; the runs' database without --db) and name "
                         "it; by default Ctrl-C removes it (a finished run keeps it: its JSON names the profiles in it)")
    ap.add_argument("--seed", type=int, default=0, help="the runs' seed (token ids, trace spreads)")
    oos = ap.add_argument_group("out-of-sample protocol")
    oos.add_argument("--grid-max-batch", type=int, default=None,
                     help="largest decode batch of the generic grid (default: the config's max_num_seqs, 128)")
    oos.add_argument("--calibration-s", type=float, default=60.0,
                     help="seconds of the live calibration run, half light, half heavy; the light half replays at "
                          "least the first --scaling-requests requests, so at a light rate under that many per "
                          "half of this it runs longer (the progress line says how long)")
    oos.add_argument("--scaling-requests", type=int, default=SCALING_SAMPLE,
                     help="the length scaling is fitted on the trace's first this many requests, all in the "
                          "calibration window: the light calibration run replays them all")
    oos.add_argument("--calibration-load", type=_loads, default=(0.3, 0.8),
                     help="LIGHT,HEAVY: the calibration window's first half runs at LIGHT x the rate of one request "
                          "at a time (grid profile), its second half at HEAVY x the capacity the simulator predicts "
                          "once calibrated on the first")
    oos.add_argument("--calibration-repeats", type=int, default=3,
                     help="live calibrations of the same window (each light then heavy); the median profile is frozen "
                          "(of an even count the upper median, the dearer of the middle two) and their spread "
                          "reported (calibration_spread_pct; null for one)")
    oos.add_argument("--calibration-arrivals", choices=("trace", "poisson"), default="trace",
                     help="the heavy calibration run's arrivals: the trace's own pattern compressed to its rate, or a "
                          "Poisson process at that rate (as the high-load slices arrive by default)")
    oos.add_argument("--low-slices", type=int, default=2, help="evaluated slices at low load")
    oos.add_argument("--high-slices", type=int, default=1, help="evaluated slices at high load")
    oos.add_argument("--low-load", type=float, default=0.4, help="low-load rate, fraction of the simulated capacity")
    oos.add_argument("--high-load", type=float, default=0.9, help="high-load rate, fraction of the simulated capacity")
    oos.add_argument("--high-arrivals", choices=("poisson", "trace"), default="poisson",
                     help="high-load slices: their requests as a Poisson process at --high-load of the simulated "
                          "Poisson capacity, or the trace's own arrival pattern at --high-load of its capacity")
    oos.add_argument("--low-s", type=float, default=40.0, help="seconds of a low-load slice")
    oos.add_argument("--high-s", type=float, default=70.0, help="seconds of a high-load slice (a busiest minute)")
    oos.add_argument("--runs-per-slice", type=int, default=2, help="live runs of each slice (R); all reported")
    oos.add_argument("--pace-correction", choices=PACE_CORRECTIONS, default="none",
                     help="probe: bring the frozen profile to the machine's pace by a probe taken right before each "
                          "run on the benchmark's own copy of the model (its pace over the mean of two probes around "
                          "the calibration run); worker-probe: by a fixed load the serving worker itself runs after its "
                          "start and before the run's first arrival (its pace over the frozen calibration runs'); "
                          "none: every round on the frozen profile as it is (none and worker-probe are always reported)")
    oos.add_argument("--slo-metric", choices=("e2e", "ttft", "tpot"), default="e2e", help="capacity SLO: the latency")
    oos.add_argument("--slo-pct", type=int, choices=(50, 90, 99), default=90, help="capacity SLO: its percentile")
    oos.add_argument("--slo-s", type=float, default=None, help="capacity SLO: the bound in seconds (default: --slo-x)")
    oos.add_argument("--slo-x", type=float, default=4.0,
                     help="capacity SLO without --slo-s: this many times what the frozen simulator gives the same "
                          "requests at 10%% load")
    oos.add_argument("--capacity-s", type=float, default=20.0, help="seconds of a sweep run at the simulated capacity")
    oos.add_argument("--capacity-fractions", type=_fractions, default=SWEEP_FRACTIONS,
                     help="sweep rates, fractions of the simulated capacity (comma-separated)")
    oos.add_argument("--capacity-max-fraction", type=float, default=MAX_FRACTION,
                     help="adaptive sweep: while the live side is within the SLO at every swept rate, add rates up to "
                          "this many times the simulated capacity (the capacity window is sized for it)")
    oos.add_argument("--capacity-min-fraction", type=float, default=MIN_FRACTION,
                     help="adaptive sweep: while the live side is over the SLO at every swept rate, add rates down to "
                          "this many times the simulated capacity")
    oos.add_argument("--capacity-step-fraction", type=float, default=EXTEND_STEP,
                     help="adaptive sweep: each added rate is this many times the simulated capacity above the highest "
                          "(below the lowest) swept so far")
    oos.add_argument("--max-trace-requests", type=int, default=20000, help="trace requests read from --start-s on")
    ins = ap.add_argument_group("in-sample diagnostics (--protocol in-sample)")
    ins.add_argument("--limit", type=int, default=120, help="requests in the evaluated slice")
    ins.add_argument("--calibrate-on", choices=("slice", "neighbours"), default="slice",
                     help="what the calibration runs replay: the evaluated slice itself (a rehearsal) or the "
                          "requests just before and after it")
    ins.add_argument("--calibration", type=int, default=None,
                     help="neighbours: requests in the calibration slice before it (default: a third of --limit, >= 20)")
    ins.add_argument("--calibration-after", type=int, default=None,
                     help="neighbours: requests in the calibration slice after it (default: as many as --calibration)")
    ins.add_argument("--speed-up", default="auto",
                     help="divide arrival times by this (auto: towards --duration, at most --utilization)")
    ins.add_argument("--duration", type=float, default=45.0, help="target seconds of the evaluated slice")
    ins.add_argument("--utilization", type=float, default=0.5, help="auto speed-up: most load in the busiest 10 s")
    ins.add_argument("--rounds", type=int, default=4, help="rounds of a calibration run and the evaluated run")
    ins.add_argument("--max-pace-gap", type=float, default=0.05,
                     help="replace a round whose machine pace moved more than this between its runs (0: keep all)")
    ins.add_argument("--pace", choices=tuple(PACE_SPANS), default="neighbours",
                     help="the pace each round is simulated at: its own calibration's, with its neighbours', or all")
    ins.add_argument("--max-rounds", type=int, default=None,
                     help="replace unsteady rounds up to this many runs (default: twice --rounds)")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--quick", action="store_true")
    if pre.parse_known_args(argv)[0].quick:  # its settings as the defaults: options given still win
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    if args.quick and args.protocol != "out-of-sample":
        ap.error("--quick is a smoke run of the out-of-sample protocol, not of --protocol in-sample")
    if args.scaling_requests < 2:
        ap.error(f"--scaling-requests must be at least 2, got {args.scaling_requests}")
    if len(args.calibration_load) != 2:
        ap.error(f"--calibration-load takes LIGHT,HEAVY, got {args.calibration_load}")
    if args.slo_s is not None and args.slo_s <= 0:
        ap.error(f"--slo-s must be positive, got {args.slo_s}")
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.max_pace_gap < 0:
        ap.error(f"--max-pace-gap must be 0 (pool every round) or more, got {args.max_pace_gap}")
    if args.calibration_repeats < 1:
        ap.error(f"--calibration-repeats must be at least 1, got {args.calibration_repeats}")
    if args.runs_per_slice < 1:
        ap.error(f"--runs-per-slice must be at least 1, got {args.runs_per_slice}")
    if args.low_slices < 0 or args.high_slices < 0 or args.low_slices + args.high_slices < 1:
        ap.error("--low-slices and --high-slices: at least one evaluated slice, none negative")
    if not 0 < args.capacity_min_fraction < args.capacity_max_fraction:
        ap.error(f"expected 0 < --capacity-min-fraction < --capacity-max-fraction, got {args.capacity_min_fraction}, "
                 f"{args.capacity_max_fraction}")
    for name in ("low_load", "high_load", "slo_x", "low_s", "high_s", "calibration_s",
                 "capacity_s", "capacity_step_fraction"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    from sim.replay import open_trace
    from sim.traces import bundled_trace_path, parse_options

    try:  # the trace and its --opt options: opened (reading no row), so an unknown option is one line, not a traceback
        open_trace(args.trace or bundled_trace_path(), args.format or ("azure" if args.trace is None else None),
                   seed=args.seed, options=parse_options(args.opt)).close()
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The benchmark; its JSON line is printed and returned. Ctrl-C: what was finished is printed as the JSON line,
    the temporary folder removed (`fidelity_lib.interrupted`), and SystemExit(130) raised."""
    args = parse_args(argv)
    args.workdir = Path(tempfile.mkdtemp(prefix="cp-fidelity-"))
    with far_rows_once():  # a profile's "rows far from the fit" warning once, not at every simulation's fit
        return _run(args)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    proto = None
    try:
        if args.protocol == "in-sample":
            from fidelity_lib.insample_run import run_insample

            result = run_insample(args, console)
        else:
            from fidelity_lib.protocol import Protocol
            from fidelity_lib.protocol_report import report

            if args.quick:
                console.print(f"[bold]{SMOKE_NOTE}[/]", highlight=False)
            proto = Protocol(args, console)
            result = report(proto.run(), console)
            result["smoke_run"] = args.quick
            if args.quick:
                result["target_met"] = None
                console.print(f"[bold]{SMOKE_NOTE}[/]", highlight=False)
    except TraceTooShort as exc:  # refused before the live runs that needed the window: one line, no traceback
        import shutil

        Console(stderr=True).print(f"fidelity.py: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        shutil.rmtree(args.workdir, ignore_errors=True)
        raise SystemExit(TraceTooShort.EXIT_STATUS) from None
    except KeyboardInterrupt:  # ReplayInterrupted included
        from fidelity_lib.interrupted import EXIT_STATUS, stopped

        print(json.dumps(stopped(args, proto, args.workdir, Console(stderr=True))), flush=True)
        raise SystemExit(EXIT_STATUS) from None
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
