"""Write a BurstGPT-like stand-in trace: sparse, bursty arrivals on a compressed daily cycle.

No real BurstGPT file is on the machines this project is developed on, so the autoscaling rounds on sparse,
bursty traffic (docs/history/autoscaling.md) replay stand-ins made by this script:

- arrivals: a gamma renewal process of shape ``SHAPE`` (BurstGPT's published fit has shape < 1: the
  inter-arrival CV is 1/sqrt(SHAPE), 2.2 at 0.2) in operational time, mapped to real time through the
  cumulative rate of ``rate(t) = PEAK * (0.25 + 0.75 sin(pi t / T))`` over ``T = HOURS`` hours (a
  quarter of the peak at both ends, the peak in the middle): on average ``0.727 * PEAK * T`` requests;
- prompts lognormal (median 600 tokens, sigma 1, cut to 4-8,000), outputs lognormal (median 200, sigma 0.9,
  cut to 1-2,000), drawn after the arrivals from the same generator;
- written as canonical CSV (``--format canonical``), ids the 0-based row index.

The same arguments give the same file: ``python benchmarks/burstgpt_standin.py 5 2.5 0.4 33 bgE.csv`` is
the rounds' ``bgE`` (32,678 requests), ``8 1.2 0.25 21`` ``bgD`` (24,402), ``7 0.8 0.2 45`` ``bgF`` (14,681),
``8 2.0 0.2 101`` ``bgA`` (41,755). Ends with one JSON line: ``{"standin": {"requests", "hours", "peak",
"shape", "seed", "path"}}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cli import nonnegative_int, positive_float, run_main  # noqa: E402

PROMPT_MEDIAN, PROMPT_SIGMA, PROMPT_RANGE = 600.0, 1.0, (4, 8000)
OUTPUT_MEDIAN, OUTPUT_SIGMA, OUTPUT_RANGE = 200.0, 0.9, (1, 2000)
TROUGH = 0.25  # the rate at both ends, as a share of the peak


def cumulative_rate(t: np.ndarray, peak: float, span_s: float) -> np.ndarray:
    """Expected arrivals in [0, t): the integral of ``peak * (TROUGH + (1 - TROUGH) sin(pi t / span))``."""
    return peak * (TROUGH * t + (1 - TROUGH) * span_s / math.pi * (1.0 - np.cos(math.pi * t / span_s)))


def arrivals(hours: float, peak: float, shape: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) of the time-rescaled gamma renewal process, in order."""
    span = hours * 3600.0
    total = float(cumulative_rate(np.array(span), peak, span))
    ticks = np.cumsum(rng.gamma(shape, 1.0 / shape, size=int(total * 1.5) + 1000))  # unit-rate operational time
    ticks = ticks[ticks < total]
    grid = np.linspace(0.0, span, int(span) * 4 + 1)  # quarter-second grid: the cumulative rate is smooth
    return np.interp(ticks, cumulative_rate(grid, peak, span), grid)


def lengths(n: int, median: float, sigma: float, bounds: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(math.log(median), sigma, size=n)), *bounds).astype(int)


def write(path: Path, times: np.ndarray, prompts: np.ndarray, outputs: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["request_id", "arrival_s", "prompt_tokens", "output_tokens"])
        for i, (a, p, o) in enumerate(zip(times.tolist(), prompts.tolist(), outputs.tolist())):
            out.writerow([i, f"{a:.6f}", p, o])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hours", type=positive_float, help="the trace's length in hours (the daily cycle compressed into it)")
    ap.add_argument("peak", type=positive_float, help="the arrival rate at the cycle's peak, requests per second")
    ap.add_argument("shape", type=positive_float, help="the gamma shape of the inter-arrival times (< 1: bursty)")
    ap.add_argument("seed", type=nonnegative_int, help="the generator's seed (an integer >= 0)")
    ap.add_argument("out", type=Path, help="the canonical CSV to write")
    args = ap.parse_args(argv)
    if args.out.is_dir():
        ap.error(f"out {args.out}: a folder; give the file to write")
    if not args.out.parent.is_dir():
        ap.error(f"out {args.out}: no folder {args.out.parent} to write it in")
    rng = np.random.default_rng(args.seed)
    times = arrivals(args.hours, args.peak, args.shape, rng)
    prompts = lengths(len(times), PROMPT_MEDIAN, PROMPT_SIGMA, PROMPT_RANGE, rng)
    outputs = lengths(len(times), OUTPUT_MEDIAN, OUTPUT_SIGMA, OUTPUT_RANGE, rng)
    write(args.out, times, prompts, outputs)
    print(f"{args.out}: {len(times):,} requests over {args.hours:g} h (peak {args.peak:g}/s, gamma shape "
          f"{args.shape:g}: inter-arrival CV {1 / math.sqrt(args.shape):.2f}), prompts median "
          f"{int(np.median(prompts))}, outputs median {int(np.median(outputs))}", file=sys.stderr)
    print(json.dumps({"standin": {"requests": len(times), "hours": args.hours, "peak": args.peak, "shape": args.shape,
                                  "seed": args.seed, "path": str(args.out)}}))
    return 0


if __name__ == "__main__":
    run_main(main)
