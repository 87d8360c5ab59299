"""Configuration search on a real trace, timed as a user meets it, and its answer checked.

    python benchmarks/search.py [--spec examples/search.yaml] [--trace PATH --format azure]
                                [--slo-ttft 2 --slo-tpot 0.2 --slo-attainment 0.99]
                                [--backend auto|ray|pool|serial] [--check 5] [--quick]

Runs ``controlplane sim search SPEC --trace ... --json`` as a subprocess (spawn to exit: Ray's
start, the trace read, every run) and reads its JSON line. Then, in this process and outside
the search's code path, it replays the chosen configuration on the full trace over seeds 0, 1
and 2 with ``sim.replay.replay`` and the ``--check`` next-cheaper candidates the search
rejected, over the same seeds, and reports their attainment: the winner must meet the target
on every seed, the rejected cheaper ones must not. The table's ``search att`` is a candidate's
attainment at the furthest stage the search replayed it to; ``<=`` marks one the search stopped
early, whose figure is only an upper bound. Prints the table and ends with one JSON line:
``candidates``, ``runs``, ``wall_s`` (the command's), ``best_cost``, ``cost_unit``,
``best_attainment_min`` (this script's replays), ``rejected_checked``,
``rejected_meeting_target`` (how many of those met it on every seed: should be 0).

The machine is shared with other work: ``wall_s`` is an upper bound of what the search needs.

``--quick`` is a smoke run, not a measurement: the spec's trace cut to its first
``QUICK_REQUESTS`` (1,000) requests and each listed axis of its space to its first
``QUICK_VALUES`` (3) values (examples/search.yaml: 108 of 864 candidates), written to a temporary
spec; the output says so first and the JSON line has ``"quick": true``. It shows that the
search, its stages, its check and this script run, in under a minute; its figures are not those
docs/sweeps.md reports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import yaml  # noqa: E402
from bench_cli import (  # noqa: E402
    check_trace, nonnegative_int, one_line, positive_float, run_main, share)
from sim.traces.bundled import bundled_trace_path  # noqa: E402

#: The Azure code trace this benchmark is about ships with the package, so a clone runs it as it is.
DEFAULT_TRACE = bundled_trace_path()

#: --quick: the first this many requests of the trace, and the first this many values of each listed axis.
QUICK_REQUESTS = 1000
QUICK_VALUES = 3


def seed_list(text: str) -> list[int]:
    """--seeds: comma-separated integers >= 0, at least one (duplicates once)."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"give at least one seed (integers >= 0, comma-separated), got {text!r}")
    return list(dict.fromkeys(nonnegative_int(s) for s in items))


def search_att(candidate: dict) -> str:
    """A candidate's attainment in the search, ``<=`` before it when the search stopped it early
    (then it is the upper bound it could still have reached, at the stage it got to)."""
    att = candidate.get("attainment")
    if att is None:  # (a run that raised: rejected with its error)
        return "-"
    return f"<={att:.4f}" if candidate.get("stopped") else f"{att:.4f}"


def quick_spec(spec: str | Path, out_dir: Path) -> Path:
    """--quick's spec, written to ``out_dir``: ``spec`` with its trace cut to its first
    `QUICK_REQUESTS` requests (or fewer, when it says so) and each listed axis of its space to its
    first `QUICK_VALUES` values (ranges as they are); its relative file paths made absolute as
    `sim.sweep.load_spec` resolves them (beside the spec first), since the copy lies elsewhere."""
    src = Path(spec)
    data = yaml.safe_load(src.read_text())

    def anchored(path: str) -> str:
        return str(src.parent / path) if not Path(path).is_absolute() and (src.parent / path).exists() else path

    if data.get("config"):
        data["config"] = anchored(data["config"])
    trace = dict(data.get("trace") or {})
    if trace.get("path"):
        trace["path"] = anchored(trace["path"])
    trace["limit"] = min(trace.get("limit") or QUICK_REQUESTS, QUICK_REQUESTS)
    data["trace"] = trace
    data["space"] = {k: v[:QUICK_VALUES] if isinstance(v, list) else v for k, v in (data.get("space") or {}).items()}
    out = out_dir / f"quick-{src.name}"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def main(argv: list[str] | None = None) -> int:
    from sim.sweep.backends import BACKENDS
    from sim.traces import FORMATS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(ROOT / "examples" / "search.yaml"),
                    help="the search spec (default: examples/search.yaml)")
    ap.add_argument("--trace", default=str(DEFAULT_TRACE), help="the trace searched on (default: the bundled Azure "
                    "code trace)")
    ap.add_argument("--format", default="azure", choices=FORMATS, help="its format (default: azure)")
    ap.add_argument("--slo-ttft", type=positive_float, default=2.0, help="TTFT target in seconds (default 2)")
    ap.add_argument("--slo-tpot", type=positive_float, default=0.2, help="TPOT target in seconds (default 0.2)")
    ap.add_argument("--slo-attainment", type=share, default=0.99,
                    help="share of requests that must meet both, in (0, 1] (default 0.99)")
    ap.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="where the search's runs go (default: auto)")
    ap.add_argument("--check", type=nonnegative_int, default=5,
                    help="next-cheaper rejected candidates to replay (default 5)")
    ap.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated (default 0,1,2)")
    ap.add_argument("--quick", action="store_true",
                    help=f"a smoke run, not a measurement: the trace's first {QUICK_REQUESTS:,} requests and the first "
                         f"{QUICK_VALUES} values of each axis of the space (examples/search.yaml: 108 of 864 "
                         "candidates), flagged as such in the output (default: off, the spec as it is)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="search-quick-") as tmp:
        return search_and_check(ap, args, tmp)


def search_and_check(ap: argparse.ArgumentParser, args: argparse.Namespace, tmp: str) -> int:
    """The search (the spec as it is, or --quick's cut) and its check; ``tmp`` holds --quick's spec."""
    from controlplane.errors import ConfigError
    from sim.sweep import load_spec

    try:  # (checked before the search, not by its subprocess or after it)
        loaded = load_spec(args.spec)
        if args.quick:  # (the spec checked as given first: its errors name it, not the copy)
            args.spec = str(quick_spec(args.spec, Path(tmp)))
            loaded = load_spec(args.spec)
    except ConfigError as exc:
        ap.error(f"--spec: {one_line(exc)}")
    check_trace(ap, args.trace, args.format)

    cmd = [sys.executable, "-m", "controlplane.cli", "sim", "search", args.spec, "--trace", args.trace,
           "--format", args.format, "--slo-ttft", str(args.slo_ttft), "--slo-tpot", str(args.slo_tpot),
           "--slo-attainment", str(args.slo_attainment), "--backend", args.backend, "--json", "--no-progress"]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"search failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    from controlplane.config import RunConfig
    from sim.replay import replay
    from sim.sweep.run import load_traces, transforms_of

    seeds = args.seeds
    loaded = loaded.with_base({"slo.ttft_s": args.slo_ttft, "slo.tpot_s": args.slo_tpot})
    traces = load_traces(loaded, seeds, transforms_of(loaded), trace_path=args.trace, trace_format=args.format)

    def attainment(overrides: dict) -> list[float]:
        return [replay(traces[f"seed={s}"], RunConfig(**loaded.run_config(overrides, s)),
                       record=False).summary["slo_attainment"] for s in seeds]

    rows = []
    best = result["best"]
    best_att = attainment(best["overrides"]) if best else []
    if best:
        rows.append(("best", best["cost"], search_att(best), min(best_att), best["overrides"]))
    rejected = result["rejected_cheaper"][: args.check]  # nearest in cost first
    meeting = 0
    for c in rejected:
        att = attainment(c["overrides"])
        meeting += min(att) >= args.slo_attainment
        rows.append(("rejected", c["cost"], search_att(c), min(att), c["overrides"]))

    if args.quick:
        print(f"SMOKE RUN (--quick), not a measurement: at most the trace's first {QUICK_REQUESTS:,} requests, the first "
              f"{QUICK_VALUES} values of each axis; none of its figures is one docs/sweeps.md reports")
    print(f"search over {result['candidates']} candidates: {result['runs']} runs, command wall {wall:.1f} s "
          f"(search's own wall_s {result['wall_s']}); cost in {result['cost_unit']}; target {args.slo_attainment}")
    for s in result["stages"]:
        print(f"  stage {s['stage']:<8} runs {s['runs']:>4}  stopped early {s['stopped_early']:>4}  {s['wall_s']:>7.1f} s")
    print(f"{'':9} {'cost':>9} {'search att':>10} {'replay min':>10}  overrides")
    for kind, cost, att, check, overrides in rows:
        print(f"{kind:9} {cost:>9.4g} {att:>10} {check:>10.4f}  {json.dumps(overrides, sort_keys=True)}")
    if any(c.get("stopped") for c in rejected):
        print("  search att <=: stopped early at the stage it reached, an upper bound of what it could have "
              "reached; replay min: this script's replays, the lowest over --seeds")
    print(json.dumps({
        "candidates": result["candidates"], "runs": result["runs"], "wall_s": round(wall, 1),
        "search_wall_s": result["wall_s"], "best_cost": best["cost"] if best else None,
        "cost_unit": result["cost_unit"], "best_attainment_min": min(best_att) if best_att else None,
        "rejected_checked": len(rejected), "rejected_meeting_target": meeting,
        "best": best["overrides"] if best else None, "quick": args.quick,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    run_main(main)
