"""How much of static peak could any autoscaler save on a trace? Each window's own static need.

    python benchmarks/autoscaling_window_needs.py --trace bg.csv --format canonical --rate-scale 6.7 [--window 600]

Cuts the trace (as `benchmarks/autoscaling.py` replays it: every option of that benchmark but the policies') into
windows of ``--window`` seconds and replays each window alone at fixed counts (the static search of
`benchmarks/autoscaling.py`, from the last window's count, counts that miss stopped early): each window's **need**
is the fewest replicas, all ready at its start, at which the requests arriving in it meet ``--target`` (1 where
none arrive). The sum of needs x window is what a timetable holding every window to the target would run, next to
static peak's GPU-hours over the whole trace (its own search, or ``--static-peak N``).

It answers what `--clairvoyant` answers (how much of static peak perfect foresight saves at this granularity) where
that bound cannot be afforded: the bound replays every count from 1 to static peak over the whole trace, and on a
long trace at full load one replica's queue grows without end (x1 of a 5-hour, 220,000-request trace had simulated
3 h after 400 s). Here a count that misses a window stops early and no window is longer than ``--window``. Two
differences, so read it as an estimate, not a bound: each window starts empty with its replicas ready (no queue
carried in, no cold start: optimistic), and every window must meet the target on its own (static peak lets 1% of the
whole trace miss wherever they fall, at the peak: stricter). If the sum is near static peak's GPU-hours, the
trace's load is not what sets its replicas (bursts, long prompts' copies and the TTFT target are), and no
autoscaler can reach a large saving on it. It takes `benchmarks/autoscaling.py`'s trace, run and static-search options
(not the policies': --help lists them). Prints one row per window and ends with one JSON line:
``window_s``, ``needs`` (per window), ``replica_hours``, ``static_peak`` (``replicas``, ``gpu_hours``) and
``share_of_static_peak``; and the same with each window's need at most static peak's count
(``replica_hours_capped``, ``share_capped_at_static_peak``), the `--clairvoyant` bound's convention: a window that
needs more than static peak to meet the target alone gets static peak, whose own run let it miss (and a window no
count meets, a few long prompts missing at any count, is not charged the most replicas tried).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoscaling as bench  # noqa: E402
from autoscaling_args import add_run_options, add_static_options, add_trace_options  # noqa: E402
from bench_cli import OneLineParser, positive_float, positive_int, warnings_once  # noqa: E402

from sim.replay import prepared_trace  # noqa: E402
from sim.traces import bundled_trace_path, parse_options  # noqa: E402


def parser() -> argparse.ArgumentParser:
    """Its own command line: the trace, run and static-search options of benchmarks/autoscaling.py, not the policies'
    (--policies, --set, --match, --clairvoyant, --suite, --find-scale ...: no policy is replayed here)."""
    ap = OneLineParser(prog="autoscaling_window_needs.py", description=__doc__.split("\n\n")[0])
    add_trace_options(ap, refused="each window is replayed alone, and it would apply to each window from its start; "
                                  "use --window-start / --window-end to cut the trace")
    add_run_options(ap)
    ap.add_argument("--max-replicas", type=positive_int, default=16,
                    help="the most static replicas tried, for static peak and for each window (default 16)")
    ap.add_argument("--static-from", type=positive_int, default=1,
                    help="first count tried for static peak and the first window; each next window starts from the "
                    "last one's need (default 1)")
    add_static_options(ap)
    ap.add_argument("--window", type=positive_float, default=600.0, help="window length in seconds (default 600)")
    ap.add_argument("--static-peak", type=positive_int, default=None, metavar="N",
                    help="static peak's count, if known (skips its search; its GPU-hours are then replayed once; "
                    "default: searched)")
    # what benchmarks/autoscaling.py's runs read and nothing here sets
    ap.set_defaults(start_replicas=1, warmup=300.0, progress=0, no_static=False)
    return ap


def span_s(args) -> float:
    """The last arrival of the trace in its own seconds (before --speed-up), from --window-start."""
    own = argparse.Namespace(**{**vars(args), "speed_up": None, "rate_scale": None, "limit": None})
    trace = args.trace or bundled_trace_path()
    _, reqs = prepared_trace(trace, seed=args.seed, transforms=bench.transforms_of(own), trace_format=args.format,
                             trace_options=parse_options(args.opt or ()))
    return max((r.arrival_s for r in reqs), default=0.0)


def quietly(fn, *a):
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*a)


def main(argv: list[str] | None = None) -> int:
    with warnings_once():  # a trace reader's warning, once (it is logged at every read: each window reads the trace)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    for flag, value in (("--limit", args.limit), ("--rate-profile", args.rate_profile)):
        if value is not None:  # a window is cut in the trace's own time, before these apply
            ap.error(f"{flag} is not taken here: each window is replayed alone, and {flag} would apply to "
                     "each window from its start; use --window-start / --window-end to cut the trace")
    pace = args.speed_up or 1.0  # windows are cut in the trace's own seconds: --window replay seconds x --speed-up
    start = args.window_start or 0.0
    end = start + span_s(args)
    step = args.window * pace
    if args.static_peak is None:
        static = quietly(bench.static_search, args)
        peak = bench.fewest_reaching(static, args.target)
        peak_row = static[peak]
    else:
        peak = args.static_peak
        peak_row = quietly(bench.run, args, "fixed-replicas", peak)
    print(f"static peak x{peak}: SLO {peak_row['slo_attainment']}, {peak_row['gpu_hours']} GPU-h", flush=True)
    print(f"{'window (s)':>17} {'need':>5}  counts tried: SLO (<=: stopped early)", flush=True)
    needs, count, t, hours, capped = [], max(1, args.static_from or 1), start, 0.0, 0.0
    while t <= end:
        stop = min(t + step, end + 1e-6)
        sub = argparse.Namespace(**{**vars(args), "window_start": t, "window_end": stop, "static_from": count})
        try:
            static = quietly(bench.static_search, sub)
        except SystemExit:  # a window without arrivals: one replica, the floor of every policy and of the bound
            need, tried = 1, "no arrivals"
        else:
            need = count = bench.fewest_reaching(static, args.target)
            tried = ", ".join(f"x{n} " + (f"<={r['slo_attainment_at_most']}" if r.get("stopped_early") else
                                          str(r["slo_attainment"])) for n, r in static.items())
        needs.append(need)
        hours += need * (stop - t) / pace / 3600
        capped += min(need, peak) * (stop - t) / pace / 3600
        print(f"{f'{(t - start) / pace:.0f}-{(stop - start) / pace:.0f}':>17} {need:>5}  {tried}", flush=True)
        t += step
    g = peak_row["gpu_hours"]
    share = round(hours / g, 3) if g else None
    share_capped = round(capped / g, 3) if g else None
    print(f"sum of needs: {hours:.2f} replica-hours against static peak's {g} GPU-h ({share} of it); each window "
          f"at most static peak's x{peak}, as the --clairvoyant bound: {capped:.2f} ({share_capped})")
    print(json.dumps({"window_s": args.window, "needs": needs, "replica_hours": round(hours, 4),
                      "static_peak": {"replicas": peak, "gpu_hours": g, "slo_attainment": peak_row.get("slo_attainment")},
                      "share_of_static_peak": share, "replica_hours_capped": round(capped, 4),
                      "share_capped_at_static_peak": share_capped}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
