"""`python -m sim.traces TRACE [--format F] [--seed N] [--opt k=v ...]`: summarize a trace and time the read.

A quick look at an unfamiliar trace (rows, span, rate, length percentiles) before simulating it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from . import bundled_trace_path, parse_options, read_trace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.traces", description=__doc__)
    ap.add_argument("trace", help="trace file, or 'bundled:NAME' (e.g. bundled:azure_code)")
    ap.add_argument("--format", default=None,
                    help="azure | mooncake | vidur | canonical | burstgpt | bailian (default: detect)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed for random options (mooncake and bailian spread, vidur arrivals)")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="format option; VALUE parsed as JSON when possible (e.g. qps=2.5, failed=drop, "
                         "model_column=true, 'models=[\"GPT-4\"]'), else kept as text")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:  # a missing file, an unknown name, format or option, a bad row: one line, exit 2
        options = parse_options(args.opt)
        path = bundled_trace_path(args.trace.split(":", 1)[1]) if args.trace.startswith("bundled:") else args.trace
        if not Path(path).is_file():
            raise FileNotFoundError(f"trace {path} is a folder, not a file" if Path(path).is_dir()
                                    else f"trace file not found: {path}")
        reader = read_trace(path, args.format, rng=np.random.default_rng(args.seed), **options)
        arrivals, prompts, outputs = [], [], []
        for r in reader:
            arrivals.append(r.arrival_s)
            prompts.append(r.prompt_tokens)
            outputs.append(r.output_tokens)
    except (FileNotFoundError, ValueError) as exc:
        ap.exit(2, f"error: {exc}\n")
    elapsed = time.perf_counter() - t0
    n = len(arrivals)
    print(f"{path}: format {reader.format}, {n:,} requests, read in {elapsed:.3f} s ({n / elapsed:,.0f} rows/s)")
    if reader.dropped:
        print("left out by the options: " + ", ".join(f"{why} {count:,}" for why, count in reader.dropped.items()))
    if n > 1 and arrivals[-1] == arrivals[0]:  # (no rate, no gap spread to give)
        print(f"span 0 s: all {n:,} requests arrive at {arrivals[0]:,.3f} s")
    elif n > 1:
        span = arrivals[-1] - arrivals[0]
        iat = np.diff(arrivals)
        cv = iat.std() / iat.mean() if iat.mean() > 0 else float("nan")
        print(f"span {span:,.1f} s, mean rate {(n - 1) / span:.3f} req/s, IAT CV {cv:.2f}")
    for name, xs in (("prompt", prompts), ("output", outputs)):
        if xs:
            p50, p90, p99 = np.percentile(xs, [50, 90, 99])
            print(f"{name} tokens: p50 {p50:,.0f}, p90 {p90:,.0f}, p99 {p99:,.0f}, max {max(xs):,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
