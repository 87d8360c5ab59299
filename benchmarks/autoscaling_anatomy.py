"""Where `slo-planner`'s replica-seconds go, tick by tick: the count its point forecast needs, what the
rate now, the forecast band, the recent peak, the burst rate and the backlog add on top of it (the
count wanted), what the hold (or, on a steady load, the wants' quantile) keeps above the count wanted,
attributed to the layer that last raised each kept count ("start-up" when that was in the first
``--startup`` seconds), and the replicas up or starting less the target.

    python benchmarks/autoscaling_anatomy.py --setup "mooncake-conv x1" --window-end 1800
    python benchmarks/autoscaling_anatomy.py --setup "mooncake-conv x0.5" --set slo-planner.steady_cv=null
    python benchmarks/autoscaling_anatomy.py --trace day.csv --format canonical --rate-scale 10.37 --above 8

It replays one `benchmarks/autoscaling.py` setup (`SUITE`), or a trace of your own (``--trace``, ``--format``,
``--rate-scale``, ``--ttft``: as that benchmark takes them), with the planner alone, exactly as the
benchmark's `run` does, and records the planner's decision at every tick (the decision rows a run
stores are written only when the target changes). Prints a table of replica-hours (and shares of the run's
replica-hours): by layer of the count wanted, then what was kept above it by cause (``kept: ...``), then with
``--above N`` what ran above N replicas by layer or cause (``above N: ...``); then one JSON line: the run's row
(`benchmarks/autoscaling.py`'s numbers) with ``replica_hours`` added (every row of the table, by name).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoscaling as bench  # noqa: E402
from bench_cli import OneLineParser  # noqa: E402

LAYERS = ("point", "now", "band", "peak", "burst", "backlog")


def layers(signals: dict, wanted: int, target_utilization: float) -> list[tuple[str, int]]:
    """The count wanted at one tick, split: the point forecast's count, then what the rate now, the
    band, the recent peak, the burst rate and the backlog each add on top of the layers before."""
    serve = signals["capacity_per_replica_per_s"] * signals.get("utilization", target_utilization)
    count = (lambda r: max(1, math.ceil(r / serve - 1e-9))) if serve > 0 else (lambda r: wanted)
    if "steady_rate_per_s" in signals:  # steady_rate "window": the window's mean, then its error as the band
        point = count(signals["steady_mean_per_s"])
        band = max(point, count(signals["steady_rate_per_s"]))
        n = [point, point, band, band, max(band, int(signals["needed"]))]
    else:
        n = [count(signals["forecast_per_s"])]
        for key in ("arrivals_per_s", "forecast_upper_per_s", "recent_peak_per_s"):
            n.append(max(n[-1], count(signals[key])))
        n.append(max(n[-1], int(signals["needed"])))
    n.append(max(n[-1], wanted))
    return [(LAYERS[0], n[0])] + [(LAYERS[i], n[i] - n[i - 1]) for i in range(1, len(n))]


class Anatomy:
    """Replica-seconds by layer and by the cause of each count kept above the want."""

    def __init__(self, startup_s: float = 300.0, above: int | None = None) -> None:
        self.startup_s = startup_s
        self.above = above  # also split the replica-seconds above this count (e.g. static peak) by layer
        self.rows: list[dict] = []  # one per tick, with --ticks
        self.keep_rows = False
        self.seconds: Counter[str] = Counter()
        self.last_raised: dict[int, tuple[str, float]] = {}  # count -> (layer, when) that last wanted it
        self.last_now: float | None = None

    def tick(self, now: float, signals: dict, wanted: int, current: int, target: int, utilization: float,
             rearmed: bool = False) -> None:
        dt = 0.0 if self.last_now is None else now - self.last_now
        self.last_now = now
        parts = layers(signals, wanted, utilization)
        top = 0
        stack: list[str] = []  # the cause of each replica of the target, bottom up
        for name, inc in parts:
            for k in range(top + 1, top + inc + 1):
                self.last_raised[k] = (name, now)
            top += inc
            self.seconds[name] += inc * dt
            stack += [name] * inc
        for k in range(top + 1, target + 1):
            name, when = self.last_raised.get(k, ("never wanted", 0.0))
            start = "start-up " if when < self.startup_s else ""
            cause = f"kept: {start}{name}{' (re-armed)' if rearmed else ''}"
            self.seconds[cause] += dt
            stack.append(cause)
        if self.above is not None:  # what runs above the count: by the layer (or the kept cause) of each replica
            for name in stack[self.above:current]:
                self.seconds[f"above {self.above}: {name}"] += dt
            if current > max(self.above, len(stack)):
                self.seconds[f"above {self.above}: current over target"] += (current - max(self.above, len(stack))) * dt
        if self.keep_rows:
            self.rows.append({"t": round(now, 1), "current": current, "target": target, "wanted": wanted,
                              **{name: inc for name, inc in parts}, **signals})
        self.seconds["kept above the want"] += (target - top) * dt
        self.seconds["current less target"] += (current - target) * dt
        self.seconds["replica-seconds"] += current * dt


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--setup", default="mooncake-conv x0.5", choices=list(bench.SUITE),
                    help="a setup of the suite (ignored with --trace; default: mooncake-conv x0.5)")
    ap.add_argument("--trace", type=Path, help="a trace of your own instead of a setup (default: the setup's)")
    ap.add_argument("--format", help="its format (default: detect)")
    ap.add_argument("--rate-scale", type=float, help="thin (<1) or replicate (>1) its requests (default: the setup's, "
                                                     "1 with --trace)")
    ap.add_argument("--copies", choices=bench.COPIES, default=None,
                    help="where --rate-scale > 1 puts a request's copies (as benchmarks/autoscaling.py --copies; "
                         "default: clumped)")
    ap.add_argument("--ttft", type=float, help="TTFT target (default: the setup's, else the config's)")
    ap.add_argument("--window-start", type=float,
                    help="keep requests arriving from this second (from the trace's first arrival; default: 0)")
    ap.add_argument("--window-end", type=float, help="keep requests arriving before this second (default: the end)")
    ap.add_argument("--mooncake", default=str(bench.MOONCAKE),
                    help=f"the trace of the Mooncake setups. {bench.MOONCAKE_SOURCE} (default: "
                         "../shared/data/traces/mooncake_fast25/ beside the repository)")
    ap.add_argument("--startup", type=float, default=300.0,
                    help="counts raised before this are start-up (s; default 300)")
    ap.add_argument("--set", action="append", default=[], metavar="slo-planner.KEY=VALUE",
                    help="a setting of the planner, repeatable (default: its defaults)")
    ap.add_argument("--above", type=int,
                    help="also split the replica-seconds above this count (say static peak; default: off)")
    ap.add_argument("--ticks", help="write every tick's counts and signals to this file (JSON lines; default: none)")
    args = ap.parse_args(argv)
    from plugins.autoscaling_slo import SLOPlanner

    anatomy = Anatomy(args.startup, args.above)
    anatomy.keep_rows = bool(args.ticks)
    original = SLOPlanner.cp_scale

    @functools.wraps(original)  # keeps the hook marker
    def recorded(self, ctx, model, scaling):
        d = original(self, ctx, model, scaling)
        wanted = int(re.search(r"want (\d+), \d+ -> \d+", d.reason).group(1))
        anatomy.tick(scaling.now_s, d.signals, wanted, scaling.num_current, d.target_replicas,
                     self.settings.target_utilization, "(ahead " in d.reason)
        return d

    SLOPlanner.cp_scale = recorded
    try:
        if args.trace is not None:
            trace, fmt, scale, ttft = args.trace, args.format, 1.0, None
        else:
            kind, scale, ttft, _ = bench.SUITE[args.setup]
            trace, fmt = (None, "azure") if kind == "azure" else (args.mooncake, "mooncake")
        scale = args.rate_scale if args.rate_scale is not None else scale
        ttft = args.ttft if args.ttft is not None else ttft
        ns = argparse.Namespace(
            trace=trace, format=fmt, opt=[], rate_profile=None, copies=args.copies, progress=0,
            speed_up=1.0, limit=None, rate_scale=scale, window_start=args.window_start, window_end=args.window_end,
            config=None, cold_start=None, start_replicas=1, max_replicas=16, target=0.99, ttft=ttft, tpot=None,
            seed=0, price=None, warmup=300.0)
        sets = bench.parse_sets(args.set).get("slo-planner", {})
        row = bench.run(ns, "slo-planner", 1, {"min_replicas": 1, "max_replicas": 16, **sets})
    finally:
        SLOPlanner.cp_scale = original
    if args.ticks:
        with open(args.ticks, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in anatomy.rows)
    print(table(anatomy.seconds))
    print(json.dumps({**row, "replica_hours": {name: round(s / 3600, 4) for name, s in ordered(anatomy.seconds)}}))
    return 0


#: The rows of the table's first part, in this order: the layers of the count wanted, what was kept above it, the
#: replicas up or starting less the target, their sum.
TOTALS = ("kept above the want", "current less target", "replica-seconds")


def ordered(seconds: Counter) -> list[tuple[str, float]]:
    """The table's rows in order: the layers and totals, then ``kept: ...`` and ``above N: ...`` by name."""
    head = [(k, seconds[k]) for k in (*LAYERS, *TOTALS)]
    rest = sorted((k, v) for k, v in seconds.items() if k not in LAYERS and k not in TOTALS)
    return head + sorted(rest, key=lambda kv: kv[0].startswith("above "))  # kept: first, then above N:


def table(seconds: Counter) -> str:
    """Replica-hours and share of the run's by row, a title line before each part."""
    total = seconds["replica-seconds"] or 1.0
    lines = [f"{'replica-seconds of slo-planner':<44}{'replica-h':>10}{'share':>8}"]
    part = None
    for name, s in ordered(seconds):
        now = "by layer of the count wanted" if name in LAYERS or name in TOTALS else \
            "above the count wanted, by the cause kept" if name.startswith("kept:") else \
            f"above {name.split(':')[0][6:]} replicas, by layer or cause kept"
        if now != part:
            lines.append(f"-- {now}")
            part = now
        lines.append(f"  {name:<42}{s / 3600:>10.3f}{s / total:>8.1%}")
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())
