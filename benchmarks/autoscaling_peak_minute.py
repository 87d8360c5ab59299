"""Static provisioning for the peak minute: the fewest fixed replicas at which every minute's requests
meet the SLO at the target share (not just the hour's, as `static_peak` in benchmarks/autoscaling.py).

    python benchmarks/autoscaling_peak_minute.py "azure-code x1" "azure-code x2"

For each --suite setup named, replays fixed counts upward from the setup's first static count until no
minute is below the target, and prints a table (a row per count: its hour attainment, GPU-hours, the minutes
below the target and the worst minute), then one JSON line mapping each setup to ``replicas`` (the fewest
counts with no minute below the target; null when none up to --max-replicas) and ``counts`` (each count tried:
``slo_attainment``, ``gpu_hours``, ``minutes_below``, ``worst_minute``, ``worst_minute_slo``). A second
yardstick for "static peak provisioning", reported beside the benchmark's, not instead of it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoscaling as bench  # noqa: E402
from bench_cli import OneLineParser, positive_int, share  # noqa: E402


def minutes_below(outcomes: list[tuple[float, bool]], target: float, window_s: float = 60.0) -> tuple[int, float, int]:
    """(windows whose requests met the SLO below ``target``, the worst window's share, its index)."""
    windows: dict[int, list[bool]] = defaultdict(list)
    for arrival, ok in outcomes:
        windows[math.floor(arrival / window_s)].append(ok)
    shares = {w: sum(v) / len(v) for w, v in windows.items()}
    worst = min(shares, key=shares.get) if shares else 0
    return sum(1 for v in shares.values() if v < target), shares.get(worst, 1.0), worst


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("setups", nargs="+", help=f"--suite setups: {', '.join(bench.SUITE)}")
    ap.add_argument("--target", type=share, default=0.99,
                    help="the share of each minute's requests that must meet the SLO, in (0, 1] (default 0.99)")
    ap.add_argument("--max-replicas", type=positive_int, default=16,
                    help="the most static replicas tried (default 16)")
    ap.add_argument("--mooncake", default=str(bench.MOONCAKE),
                    help=f"the trace of the Mooncake setups. {bench.MOONCAKE_SOURCE} (default: "
                         "../shared/data/traces/mooncake_fast25/ beside the repository)")
    args = ap.parse_args(argv)
    unknown = [s for s in args.setups if s not in bench.SUITE]
    if unknown:
        ap.error(f"unknown setup(s) {', '.join(map(repr, unknown))}; valid: {', '.join(bench.SUITE)}")
    print(f"{'setup':<22}{'static':>8}{'SLO':>9}{'GPU-h':>9}{'minutes below':>15}{'worst minute':>14}"
          f"{'its SLO':>9}", flush=True)
    out: dict[str, dict] = {}
    for setup in args.setups:
        kind, scale, ttft, start = bench.SUITE[setup]
        ns = argparse.Namespace(
            trace=None if kind == "azure" else args.mooncake, format="azure" if kind == "azure" else "mooncake",
            speed_up=1.0, limit=None, rate_scale=scale, window_start=None, window_end=None, config=None,
            cold_start=None, start_replicas=1, max_replicas=args.max_replicas, target=args.target, ttft=ttft,
            tpot=None, seed=0, price=None, warmup=300.0, set=[])
        counts: dict[int, dict] = {}
        found = None
        for n in range(start, args.max_replicas + 1):
            outcomes: list[tuple[float, bool]] = []
            row = bench.run(ns, "fixed-replicas", n, outcomes=outcomes)
            bad, worst, minute = minutes_below(outcomes, args.target)
            counts[n] = {"slo_attainment": row["slo_attainment"], "gpu_hours": row["gpu_hours"],
                         "minutes_below": bad, "worst_minute": minute, "worst_minute_slo": round(worst, 4)}
            print(f"{setup:<22}{'x' + str(n):>8}{row['slo_attainment']:>9.4f}{row['gpu_hours']:>9.2f}{bad:>15}"
                  f"{minute:>14}{worst:>9.4f}", flush=True)
            if bad == 0:
                found = n
                break
        if found is None:
            print(f"note: {setup}: no count up to --max-replicas {args.max_replicas} kept every minute at "
                  f"{args.target}", flush=True)
        out[setup] = {"replicas": found, "counts": counts}
    print(json.dumps(out))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
