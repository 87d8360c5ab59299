"""Autoscaling policies on a trace that needs several replicas, against static provisioning at the peak.

    python benchmarks/autoscaling.py                       # the bundled Azure code trace at its own pace
    python benchmarks/autoscaling.py --trace t.jsonl --format mooncake --speed-up 1

Each autoscaler (every installed plugin with a `cp_scale` policy but `fixed-replicas`, or
`--policies`; settings with `--set POLICY.KEY=VALUE`) replays the trace from `--start-replicas`
with cold starts of `--cold-start` seconds and bounds 1..`--max-replicas`. `static_peak` is the fewest fixed replicas (searched up to
`--max-replicas`) that keep `--target` of the requests within the TTFT and TPOT SLOs: what
provisioning for the peak costs. Prints a table of every run, then one JSON line mapping each
name to `slo_attainment`, `gpu_hours`, `scale_events`, `oscillations` (scale-ups followed by
a scale-down within the policy's own stabilisation window) and `cost_per_1k_requests` (GPU-hours
at `--price` per GPU-hour; the config has no prices yet).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.config import load_config
from controlplane.testing import EventLog
from sim.replay import TraceTransforms, replay
from sim.traces.bundled import bundled_trace_path

#: Each policy's own stabilisation window: an up then down within it is an oscillation. Other
#: autoscalers: the first of these settings they have, else 300 s.
WINDOWS_S = {"seed-autoscaler": 300.0, "hpa": 300.0, "kpa": 60.0}
WINDOW_SETTINGS = ("scale_down_stabilization_s", "stabilization_window_s", "hold_s", "stable_window_s")
BASE_PLUGINS = ["queue-limit", "exact-cache", "least-loaded", "continuous-batching", "static-memory",
                "sampled-guardian", "builtin-latency-models"]


def oscillations(events: list[tuple[float, int, int]], window_s: float) -> int:
    """Scale-ups followed by a scale-down within ``window_s``."""
    return sum(1 for (t0, a0, b0), (t1, a1, b1) in pairwise(events)
               if b0 > a0 and b1 < a1 and t1 - t0 < window_s)


def autoscalers() -> list[str]:
    """Installed plugins that decide `cp_scale` (not wrappers), the static `fixed-replicas` left out."""
    from controlplane.hookspecs import PROJECT_NAME
    from controlplane.plugin_manager import discover_plugins

    names = []
    for name, info in discover_plugins().items():
        impl = getattr(info.target, "cp_scale", None)
        opts = getattr(impl, f"{PROJECT_NAME}_impl", None)
        if impl is not None and name != "fixed-replicas" and not (opts or {}).get("wrapper"):
            names.append(name)
    known = [n for n in WINDOWS_S if n in names]
    return known + sorted(set(names) - set(known))


def window_s(policy: str, settings: dict) -> float:
    if policy in WINDOWS_S and not any(k in settings for k in WINDOW_SETTINGS):
        return WINDOWS_S[policy]
    from controlplane.plugin_manager import discover_plugins

    target = discover_plugins()[policy].target
    effective = {**{k: f.default for k, f in target.Settings.model_fields.items()}, **settings}
    return next((float(effective[k]) for k in WINDOW_SETTINGS if effective.get(k) is not None), 300.0)


def parse_sets(items: list[str]) -> dict[str, dict]:
    """``policy.key=value`` (value as JSON, else a string) -> {policy: {key: value}}."""
    out: dict[str, dict] = {}
    for item in items:
        lhs, _, value = item.partition("=")
        policy, _, key = lhs.partition(".")
        if not key or not _:
            raise SystemExit(f"--set wants POLICY.KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(policy, {})[key] = parsed
    return out


def run(args, policy: str, replicas: int, settings: dict | None = None) -> dict:
    config = load_config(None, {
        "seed": args.seed,
        "cluster": {"models": [{"name": "default", "replicas": replicas, "cold_start_s": args.cold_start}]},
        "plugins": {"enabled": [policy, *BASE_PLUGINS], "settings": {policy: settings} if settings else {}},
        "slo": {"ttft_s": args.ttft, "tpot_s": args.tpot},
    })
    log = EventLog()
    t0 = time.perf_counter()
    result = replay(args.trace or bundled_trace_path(), config, trace_format=args.format, record=False,
                    transforms=TraceTransforms(speed_up=args.speed_up, limit=args.limit), extra_plugins=[log])
    s = result.summary
    events = [(d.time_s, d.payload["from"], d.payload["to"]) for d in log.decisions if d.action == "scale"]
    peak = replicas
    level = replicas
    for _, _, to in events:
        level = to
        peak = max(peak, level)
    return {
        "slo_attainment": round(float(s["slo_attainment"]), 4),
        "gpu_hours": round(float(s["gpu_seconds"]) / 3600, 4),
        "scale_events": int(s["num_scale_events"]),
        "oscillations": oscillations(events, window_s(policy, settings or {})) if policy != "fixed-replicas" else 0,
        "cost_per_1k_requests": round(float(s["gpu_seconds"]) / 3600 * args.price * 1000 / max(1, s["num_requests"]), 4),
        "ttft_p99_s": round(float(s["ttft_p99_s"] or 0), 3),
        "max_replicas": peak,
        "num_requests": int(s["num_requests"]),
        "num_completed": int(s["num_completed"]),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", help="trace file (default: the bundled Azure code trace)")
    ap.add_argument("--format", default=None, help="trace format (default: azure for the bundled trace)")
    ap.add_argument("--speed-up", type=float, default=1.0, help="divide arrival times by this (default 1)")
    ap.add_argument("--limit", type=int, default=None, help="replay at most this many requests")
    ap.add_argument("--cold-start", type=float, default=30.0, help="seconds from scale-up to ready")
    ap.add_argument("--start-replicas", type=int, default=1)
    ap.add_argument("--max-replicas", type=int, default=16)
    ap.add_argument("--target", type=float, default=0.99, help="SLO attainment static_peak must reach")
    ap.add_argument("--ttft", type=float, default=2.0)
    ap.add_argument("--tpot", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--price", type=float, default=2.0, help="price of one GPU-hour, for cost per 1,000 requests")
    ap.add_argument("--policies", help="comma-separated autoscalers (default: every installed one)")
    ap.add_argument("--set", action="append", default=[], metavar="POLICY.KEY=VALUE",
                    help="a policy setting, e.g. --set hpa.target=8 (repeatable)")
    args = ap.parse_args(argv)
    if args.trace is None and args.format is None:
        args.format = "azure"
    bounds = {"min_replicas": 1, "max_replicas": args.max_replicas}
    sets = parse_sets(args.set)
    policies = args.policies.split(",") if args.policies else autoscalers()
    results: dict[str, dict] = {}
    for name in policies:
        results[name] = run(args, name, args.start_replicas, {**bounds, **sets.get(name, {})})
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    static: dict[int, dict] = {}
    n = 1
    while n <= args.max_replicas:  # the fewest fixed replicas that meet the target
        static[n] = run(args, "fixed-replicas", n)
        print(f"static {n}: {static[n]}", file=sys.stderr, flush=True)
        if static[n]["slo_attainment"] >= args.target:
            break
        n += 1
    best = min(n, args.max_replicas)
    results["static_peak"] = {**static[best], "replicas": best}
    cols = ("slo_attainment", "gpu_hours", "cost_per_1k_requests", "scale_events", "oscillations", "ttft_p99_s",
            "max_replicas", "wall_s")
    print(f"{'policy':<18}" + "".join(f"{c:>21}" for c in cols))
    for name, r in [*results.items(), *((f"static x{k}", v) for k, v in static.items())]:
        print(f"{name:<18}" + "".join(f"{r[c]!s:>21}" for c in cols))
    print(json.dumps({k: {c: v[c] for c in ("slo_attainment", "gpu_hours", "scale_events", "oscillations",
                                             "cost_per_1k_requests",
                                             *(("replicas",) if k == "static_peak" else ()))}
                      for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
