"""Autoscaling on load shapes the policies were not tuned on: real request lengths and burstiness, synthetic rate
shapes over several hours.

    nice -n 10 python benchmarks/autoscaling_shapes.py                           # the setups of DEFAULT
    nice -n 10 python benchmarks/autoscaling_shapes.py --setups "azure x2 diurnal" --policies slo-planner
    nice -n 10 python benchmarks/autoscaling_shapes.py --sources azure --shapes ramp,spike --out runs.jsonl

The bundled traces are one hour each with no slow component (Azure code: on/off bursts; Mooncake conversation:
steady). Each setup here plays one of them several times back to back (`sim.traces.repeat`; `--hours`, else 4
for Azure and 3 for Mooncake) and thins or replicates the result by a rate factor that changes over those hours
(`sim.traces.rate_profile`), peaking at the setup's scale: so the request lengths and the burstiness within
the hour are the trace's own, and the slow shape is made up. The shapes (SHAPES, each a factor of the peak over the span T of the tiled trace):

- `diurnal`: one slow cosine cycle, trough at both ends and peak at T/2, peak/trough 4 (a day compressed into T);
- `ramp`: linear from 0.25 up to 1 at T/2 and back down to 0.25;
- `step-up`: 0.5, then 1 from T/2 (the load doubles within a second);
- `step-down`: 1, then 0.5 from T/2;
- `spike`: 0.3, with a one-off 10-minute spike to 1 at T/2 (a minute's ramp each side).

Each setup (SETUPS: a source and the peak's rate scale, at which the bundled suite's static peak needs about 4
and 14 replicas on Azure, 3 and 6 on Mooncake) is evaluated exactly as `benchmarks/autoscaling.py` evaluates a
trace (its `evaluate`: every installed autoscaler from one cold replica, then the static-peak search; every
option of that benchmark but --trace, --format, --rate-scale, --rate-profile and the suite's is accepted and
passed on). Prints each setup's table as it goes, then one table of every setup (SLO attainment, GPU-hours,
share of static peak, cost, scale events, oscillations) and one JSON line mapping each setup to the
benchmark's mapping plus `gpu_hours_vs_static_peak` and `cost_usd`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim.replay import READER_STREAM, TRANSFORM_STREAM, trace_rng  # noqa: E402
from sim.traces import rate_profile, read_trace, repeat, write_canonical  # noqa: E402
from sim.traces.bundled import bundled_trace_path  # noqa: E402

import autoscaling as bench  # noqa: E402

#: Rate factors (of the peak) at times in the span ``t`` of the tiled trace.
SHAPES = {
    "diurnal": lambda t: [(t * i / 48, 0.25 + 0.75 * (1 - math.cos(2 * math.pi * i / 48)) / 2) for i in range(49)],
    "ramp": lambda t: [(0.0, 0.25), (t / 2, 1.0), (t, 0.25)],
    "step-up": lambda t: [(0.0, 0.5), (t / 2 - 1, 0.5), (t / 2, 1.0)],
    "step-down": lambda t: [(0.0, 1.0), (t / 2 - 1, 1.0), (t / 2, 0.5)],
    "spike": lambda t: [(0.0, 0.3), (t / 2 - 60, 0.3), (t / 2, 1.0), (t / 2 + 600, 1.0), (t / 2 + 660, 0.3)],
}

#: name -> (source, the peak's rate scale, TTFT target or None for the config's, first static count tried, hours).
#: The suite's scales (benchmarks/autoscaling.py SUITE), first static counts near their static peaks; Mooncake's
#: TTFT is 30 s as there. Mooncake is played 3 times, Azure 4: a Mooncake hour at x0.5 takes ~15 s to replay.
SOURCES = {
    "azure x0.5": ("azure", 0.5, None, 4, 4),
    "azure x2": ("azure", 2.0, None, 13, 4),
    "mooncake x0.25": ("mooncake", 0.25, 30.0, 3, 3),
    "mooncake x0.5": ("mooncake", 0.5, 30.0, 5, 3),
}
SETUPS = {f"{src} {shape}": (src, shape) for src in SOURCES for shape in SHAPES}
#: What runs without --setups/--sources/--shapes: every shape of three sources, the two slow shapes of Mooncake
#: x0.5 (its replays are the dearest); about 35 minutes of one core.
DEFAULT = [n for n, (src, shape) in SETUPS.items() if src != "mooncake x0.5" or shape in ("diurnal", "ramp")]


def source_trace(kind: str, mooncake: str) -> tuple[str, str]:
    """(path, format) of a source trace."""
    return (str(bundled_trace_path()), "azure") if kind == "azure" else (mooncake, "mooncake")


def shaped_trace(kind: str, shape: str, scale: float, hours: int, seed: int, mooncake: str, workdir: Path) -> Path:
    """The source trace played ``hours`` times and thinned or replicated by ``shape`` at peak ``scale``, written
    to ``workdir`` as canonical JSONL (reused when already there)."""
    path, fmt = source_trace(kind, mooncake)
    out = workdir / f"{kind}-x{scale:g}-{shape}-{hours}h-seed{seed}.jsonl"
    if out.is_file():
        return out
    def copy():  # each copy read as a replay reads the file (the reader's seeded stream: the same requests)
        return read_trace(path, fmt, rng=trace_rng(seed, READER_STREAM))

    first = last = None
    for r in copy():
        first = r.arrival_s if first is None else first
        last = r.arrival_s
    if first is None:
        raise SystemExit(f"{path}: no requests")
    span = (last - first) * hours  # the tiled trace's span (copies start one mean gap apart: near enough)
    points = [(first + t, f * scale) for t, f in SHAPES[shape](span)]
    reqs = rate_profile(repeat(copy, hours), points, trace_rng(seed, TRANSFORM_STREAM))
    tmp = out.with_name(out.stem + ".part.jsonl")  # the suffix picks the format
    write_canonical(reqs, tmp)
    tmp.replace(out)
    return out


def parser() -> argparse.ArgumentParser:
    # allow_abbrev off: the options passed on must reach benchmarks/autoscaling.py whole (`--set` is not `--setups`)
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), allow_abbrev=False,
                                 epilog="Every other option is benchmarks/autoscaling.py's (--policies, --set, --no-static, "
                                 "--out, --max-replicas, --cold-start, ...), passed on to each setup.")
    ap.add_argument("--sources", help=f"comma-separated sources (default: all): {', '.join(SOURCES)}")
    ap.add_argument("--shapes", help=f"comma-separated shapes (default: all): {', '.join(SHAPES)}")
    ap.add_argument("--setups",
                    help="comma-separated setups '<source> <shape>' (instead of --sources/--shapes; default, "
                    "when none of the three is given: every setup, mooncake x0.5 only with diurnal and ramp)")
    ap.add_argument("--hours", type=int, default=None,
                    help="copies of the one-hour source trace (default: the source's, 4 for Azure, 3 for Mooncake)")
    ap.add_argument("--workdir", help="where the shaped traces are written and reused (default: a temporary folder)")
    return ap


def setups(args) -> list[str]:
    if args.setups:
        names = [n.strip() for n in args.setups.split(",")]
        unknown = [n for n in names if n not in SETUPS]
        if unknown:
            raise SystemExit(f"unknown setup(s) {unknown}; valid: {', '.join(SETUPS)}")
        return names
    if not args.sources and not args.shapes:
        return list(DEFAULT)
    sources = args.sources.split(",") if args.sources else list(SOURCES)
    shapes = args.shapes.split(",") if args.shapes else list(SHAPES)
    for given, valid, what in ((sources, SOURCES, "source"), (shapes, SHAPES, "shape")):
        unknown = [n for n in given if n not in valid]
        if unknown:
            raise SystemExit(f"unknown {what}(s) {unknown}; valid: {', '.join(valid)}")
    return [f"{src} {shape}" for src in sources for shape in shapes]


def main(argv: list[str] | None = None) -> int:
    own, rest = parser().parse_known_args(argv)
    if own.hours is not None and own.hours < 1:
        raise SystemExit(f"--hours must be an integer >= 1, got {own.hours}")
    passed = bench.parser().parse_args(rest)
    for opt in ("trace", "format", "rate_scale", "rate_profile", "suite", "setups"):
        if getattr(passed, opt) not in (None, False):
            raise SystemExit(f"--{opt.replace('_', '-')} is set by each setup here; leave it out")
    names = setups(own)
    with tempfile.TemporaryDirectory(prefix="autoscaling-shapes-") as tmp:
        workdir = Path(own.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        out: dict[str, dict] = {}
        for name in names:
            src, shape = SETUPS[name]
            kind, scale, ttft, static_from, hours = SOURCES[src]
            hours = own.hours or hours
            if kind == "mooncake" and not Path(passed.mooncake).is_file():
                print(f"# {name}: skipped, no Mooncake trace at {passed.mooncake} (--mooncake PATH)", flush=True)
                continue
            sub = argparse.Namespace(**vars(passed))
            sub.trace = str(shaped_trace(kind, shape, scale, hours, passed.seed, passed.mooncake, workdir))
            sub.format, sub.setup = "canonical", name
            sub.ttft = passed.ttft if passed.ttft is not None else ttft
            sub.static_from = static_from if passed.static_from == 1 else passed.static_from
            print(f"# {name}: {hours} h of {kind} at a peak of x{scale:g}, {shape}; TTFT "
                  f"{sub.ttft or 'config'}", flush=True)
            results, _ = bench.evaluate(sub)
            out[name] = {k: {**row, **{c: results[k][c] for c in ("gpu_hours_vs_static_peak", "cost_usd")
                                       if c in results[k]}}
                         for k, row in bench.summary(results).items()}
    print_table(out)
    print(json.dumps(out))
    return 0


def print_table(out: dict[str, dict]) -> None:
    """One row per setup and policy; the planner's verdict against the issue's target last."""
    cols = (("slo_attainment", "SLO"), ("gpu_hours", "GPU-h"), ("gpu_hours_vs_static_peak", "vs static"),
            ("cost_usd", "cost $"), ("scale_events", "scale ev"), ("oscillations", "oscill"))
    print(f"\n{'setup':<26}{'policy':<18}" + "".join(f"{h:>11}" for _, h in cols))
    for name, rows in out.items():
        for policy, row in rows.items():
            print(f"{name:<26}{policy:<18}" + "".join(f"{row.get(c, '-')!s:>11}" for c, _ in cols))
    met = [(n, r) for n, rows in out.items() for p, r in rows.items() if "slo" in p]
    ok = [n for n, r in met if r["slo_attainment"] >= 0.99 and r.get("gpu_hours_vs_static_peak", 9) <= 0.75]
    print(f"slo planner at >= 0.99 within 0.75 of static peak: {len(ok)} of {len(met)} setups"
          + (f" ({', '.join(ok)})" if ok else ""))


if __name__ == "__main__":
    raise SystemExit(main())
