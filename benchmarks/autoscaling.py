"""Autoscaling policies on a trace that needs several replicas, against static provisioning at the peak.

    python benchmarks/autoscaling.py                        # the bundled Azure code trace at its own pace
    python benchmarks/autoscaling.py --window-start 1718    # its second half only
    python benchmarks/autoscaling.py --rate-profile 0:1,3436:2   # the load doubling over its hour
    python benchmarks/autoscaling.py --trace conversation_trace.jsonl --format mooncake --rate-scale 0.25 --ttft 30
    python benchmarks/autoscaling.py --suite --out runs.jsonl   # both real traces at the scales of SUITE

Every run uses the bundled run config (sim/data/default_replay.yaml: Llama-3-8B on A100s from Vidur
profiles, Sarathi, cold starts from the weights, SLO TTFT 2 s / TPOT 0.1 s, prices) or `--config`,
with its autoscaler replaced. Each autoscaler (every installed plugin with a `cp_scale` policy but
`fixed-replicas` and the wrappers, or `--policies`; settings with `--set POLICY.KEY=VALUE`) replays
the trace from `--start-replicas` (1) within 1..`--max-replicas` (its own bound settings, or for a policy without
them the `scaling-rules` wrapper's, with a note on stderr). `static_peak` is the fewest fixed
replicas (all ready at the start) that keep `--target` of the requests within the SLO (TTFT, TPOT
and the end-to-end target when the config sets one): what provisioning for the peak costs. Prints a table of every run, then one JSON line mapping
each name to `slo_attainment`, `gpu_hours`, `scale_events`, `oscillations` (scale-ups followed by a
scale-down within the policy's own stabilisation window), `reversals` (scale-downs followed by a scale-up
within that window: a replica released and started again), `cost_per_1k_requests` (USD per 1,000
completed requests at the config's `cluster.gpu_prices`; null when none completed), `slo_after_warmup` (attainment of
requests after `--warmup` s) and `plugin_errors` (exceptions the core caught in the run's plugins: a policy that
raised was replaced by the fallback, `fixed-replicas`, and a warning on stderr names every run with errors).

`--match` also sweeps `hpa` and `seed-autoscaler` toward more replicas (MATCH_SWEEPS; toward fewer, MATCH_DOWN,
when the defaults already spend more than the planner) and adds `hpa matched` and `seed-autoscaler matched`: each
one's run with the fewest GPU-hours at or above the SLO planner's (`reached`), its `settings`, and `planner_beats`
(the planner attains more at no more GPU-hours).

`--clairvoyant` adds `clairvoyant`: a timetable that knew the trace in advance (each minute's fewest
static replicas that met the SLO, started a cold start ahead; benchmarks/autoscaling_clairvoyant.py),
replayed with `scheduled-replicas`. No online policy can do this; it bounds what foresight saves.

`--find-scale N` replays no policy: it searches the `--rate-scale` at which N static replicas just reach
`--target` (static replays only; benchmarks/autoscaling_find_scale.py) and prints the command to run next,
for a trace of your own "scaled to need N replicas". `--progress S` prints every S wall seconds on stderr
which run is replaying and how far its simulated clock is (default 15; 0: off).

`--suite` replays each setup of `SUITE` (the bundled Azure code trace and Mooncake's conversation
trace, each thinned or replicated with `--rate-scale` so that static provisioning at the peak needs
from about 4 to 16 replicas) with the same options, prints every run (each policy, every static
count tried) as a table row and to `--out` (JSON lines), and ends with one JSON line mapping each
setup to the mapping above. Mooncake's trace is not in the repository: download
`FAST25-release/traces/conversation_trace.jsonl` from https://github.com/kvcache-ai/Mooncake (Apache-2.0)
and give `--mooncake PATH` (without it: `../shared/data/traces/mooncake_fast25/` beside the repository,
where the project's developers keep it); its setups are skipped, saying so, when it is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from controlplane.cli.common import named_by_options
from controlplane.config import load_config
from controlplane.metrics import within_slo
from controlplane.request_latency import request_latencies
from controlplane.testing import EventLog, finished_in
from controlplane.types import RequestStatus
from sim.replay import TraceTransforms, open_trace, prepared_trace, replay
from sim.traces import format_rate_profile, parse_options
from sim.traces.bundled import bundled_trace_path
from sim.traces.transforms import COPIES, TransformValueError  # noqa: F401 (COPIES: autoscaling_anatomy.py)

from bench_cli import run_main, warnings_once  # noqa: E402
from autoscaling_checks import check_policies, check_sets, format_mismatch  # noqa: E402
from autoscaling_clairvoyant import timetable, window_needs  # noqa: E402
from autoscaling_early_stop import MissCounter, StopWhenMissed, TargetMissed, allowed_misses, stopped_row  # noqa: E402
from autoscaling_find_scale import find_scale, report  # noqa: E402
from autoscaling_progress import progress_for  # noqa: E402
from autoscaling_report import one_replica_note, plugin_errors_warning, print_table, table_row  # noqa: E402,F401
from autoscaling_args import MOONCAKE, MOONCAKE_SOURCE, parser  # noqa: E402,F401
from autoscaling_policies import (  # noqa: E402,F401
    AUTOSCALERS, WINDOW_SETTINGS, WINDOWS_S, autoscalers, oscillations, parse_sets, reversals, scale_wrappers,
    split_bounds, takes, window_s)

#: The bundled default run config (`controlplane sim replay` without arguments uses it too).
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "sim" / "data" / "default_replay.yaml"

#: The --suite setups: name -> (trace: "azure" for the bundled one or "mooncake", rate scale, TTFT
#: target or None for the config's, first static count tried). Scales put static provisioning at
#: the peak at about 4, 7 and 14 replicas (Azure) and 4, 6 and 14 (Mooncake). Mooncake's TTFT
#: target is 30 s: its longest prompts (up to 126k tokens) take over 10 s to prefill on one A100
#: at any replica count. The first static count only saves runs; every count tried is reported.
SUITE = {
    "azure-code x0.5": ("azure", 0.5, None, 2),
    "azure-code x1": ("azure", None, None, 5),
    "azure-code x2": ("azure", 2.0, None, 11),
    "mooncake-conv x0.25": ("mooncake", 0.25, 30.0, 3),
    "mooncake-conv x0.5": ("mooncake", 0.5, 30.0, 4),
    "mooncake-conv x1": ("mooncake", 1.0, 30.0, 11),
}

#: --match: each baseline's settings from its defaults toward more replicas, one knob set at a time. The
#: matched run is the one with the fewest GPU-hours at or above the SLO planner's: "equal or more
#: GPU-hours" - what the baseline attains when it may spend what the planner spends.
MATCH_SWEEPS = {
    "hpa": [{"target": t} for t in (16.0, 12.0, 8.0, 6.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5)],
    "seed-autoscaler": [{"scale_up_threshold": u, "scale_down_threshold": d, "hold_s": h, "step": k}
                        for u, d, h, k in ((0.8, 0.5, 300.0, 1), (0.5, 0.3, 120.0, 1), (0.35, 0.2, 60.0, 1),
                                           (0.25, 0.1, 30.0, 1), (0.15, 0.05, 15.0, 1), (0.1, 0.03, 10.0, 2),
                                           (0.05, 0.01, 10.0, 4))],
}
#: --match, when a baseline's first setting already spends at least the planner's GPU-hours: its settings toward
#: fewer replicas, tried in turn until one spends less, so that the match is the nearest above the planner's.
MATCH_DOWN = {
    "hpa": [{"target": t} for t in (20.0, 24.0, 32.0, 48.0, 64.0)],
}

BASE_PLUGINS = ["queue-limit", "exact-cache", "least-loaded", "continuous-batching", "static-memory",
                "sampled-guardian", "builtin-latency-models"]



def dropped_wrappers_note(args) -> str | None:
    """A note when --config enables a `cp_scale` wrapper, which the benchmark leaves out."""
    enabled = (base_config(args).get("plugins") or {}).get("enabled") or []
    dropped = [p for p in enabled if p in scale_wrappers()]
    if not dropped:
        return None
    return (f"note: --config enables {', '.join(dropped)}; the benchmark replays without it (it takes a config's "
            "cluster, batching, SLO and prices): every policy within 1..--max-replicas, static counts unclamped")



def base_config(args) -> dict:
    """The run config every policy shares (the bundled default: Vidur Llama-3-8B, Sarathi, cold starts
    from the weights), as a dict of overrides; the autoscaler in it is replaced per run."""
    from controlplane.config import read_config_file

    data = read_config_file(args.config or DEFAULT_CONFIG)
    data.pop("storage", None)
    return data


def after_warmup(requests, slo, warmup_s: float) -> float | None:
    """SLO attainment of the requests that arrived ``warmup_s`` or more after the first one: what a
    policy does once running, without the start (autoscalers start from one cold replica, static
    provisioning with every replica ready)."""
    rows = sorted(requests, key=lambda r: r.arrival_s)
    if not rows:
        return None
    start = rows[0].arrival_s + warmup_s
    ok = n = 0
    for r in rows:
        if r.arrival_s < start:
            continue
        n += 1
        ok += meets_slo(r, slo)
    return round(ok / n, 4) if n else None


def meets_slo(r, slo) -> bool:
    """The request completed within the TTFT, TPOT and (when set) end-to-end targets: the run summary's
    `slo_attainment` check (controlplane/metrics.py), which early stops, --find-scale and the clairvoyant
    timetable use too."""
    if r.status is not RequestStatus.COMPLETED:
        return False
    ttft, tpot, e2e, _ = request_latencies(r)
    return within_slo(ttft, tpot, e2e, slo)


def transforms_of(args) -> TraceTransforms:
    return TraceTransforms(speed_up=args.speed_up, rate_scale=args.rate_scale, limit=args.limit,
                           rate_profile=getattr(args, "rate_profile", None), copies=getattr(args, "copies", None),
                           window_start_s=args.window_start, window_end_s=args.window_end)


def run(args, policy: str, replicas: int, settings: dict | None = None,
        outcomes: list | None = None, stop_below: float | None = None, rules: dict | None = None) -> dict:
    """One replay; ``outcomes``, when given, gets each request's (arrival s, met the SLO). With
    ``stop_below`` (and no ``outcomes``) it stops once its misses keep it below that attainment
    (benchmarks/autoscaling_early_stop.py): the row then says so instead of the whole run's numbers.
    ``rules``: settings of the `scaling-rules` wrapper put around the policy (the bounds it does not take)."""
    data = base_config(args)
    plugins = data.get("plugins") or {}
    scalers = AUTOSCALERS | set(autoscalers()) | set(scale_wrappers())
    enabled = [p for p in plugins.get("enabled", BASE_PLUGINS) if p not in scalers]
    model = dict((data.get("cluster") or {}).get("models", [{"name": "default"}])[0])
    model["replicas"] = replicas
    if args.cold_start is not None:
        model["cold_start_s"] = args.cold_start
    cluster = {**(data.get("cluster") or {}), "models": [model]}
    if args.price is not None:
        cluster["gpu_prices"] = {**cluster.get("gpu_prices", {}), model.get("gpu", "a100-80gb"): args.price}
    config = load_config(None, {
        **{k: v for k, v in data.items() if k not in ("plugins", "cluster", "slo", "seed")},
        "seed": args.seed,
        "cluster": cluster,
        "plugins": {"enabled": [policy, *(["scaling-rules"] if rules else []), *enabled],
                    "settings": {**{k: v for k, v in (plugins.get("settings") or {}).items() if k not in scalers},
                                 **({policy: settings} if settings else {}),
                                 **({"scaling-rules": rules} if rules else {})}},
        "slo": {**(data.get("slo") or {}), **({"ttft_s": args.ttft} if args.ttft else {}),
                **({"tpot_s": args.tpot} if args.tpot else {})},
    })
    log = EventLog()
    t0 = time.perf_counter()
    trace = args.trace or bundled_trace_path()
    label = " ".join(x for x in (getattr(args, "setup", None),
                                 f"static x{replicas}" if policy == "fixed-replicas" else policy) if x)
    options, transforms = parse_options(getattr(args, "opt", None) or ()), transforms_of(args)
    observers, progress = [log], progress_for(label, getattr(args, "progress", None))
    if stop_below is not None and outcomes is None:
        n = sum(1 for _ in prepared_trace(trace, seed=args.seed, transforms=transforms, trace_format=args.format,
                                          trace_options=options)[1])
        counter = MissCounter(lambda r: meets_slo(r, config.slo))
        observers.append(counter)
        progress = StopWhenMissed(counter, allowed_misses(n, stop_below), n, progress)
    try:
        result = replay(trace, config, trace_format=args.format, record=False, extra_plugins=observers,
                        trace_options=options, transforms=transforms, on_progress=progress)
    except TargetMissed as stop:
        return stopped_row(stop, time.perf_counter() - t0)
    s = result.summary
    if not s["num_requests"]:  # (its attainment is None: a TypeError below)
        window = " ".join(f"{o} {v:g}" for o, v in (("--window-start", args.window_start),
                                                    ("--window-end", args.window_end)) if v is not None)
        raise SystemExit(f"no request of {trace} was replayed{' with ' + window if window else ''}: the window is in "
                         "seconds from the trace's first arrival; pick one inside the trace")
    if outcomes is not None:
        outcomes.extend((r.arrival_s, meets_slo(r, config.slo)) for r in finished_in(log.events))
    events = [(d.time_s, d.payload["from"], d.payload["to"]) for d in log.decisions if d.action == "scale"]
    return {
        "slo_after_warmup": after_warmup(finished_in(log.events), config.slo, args.warmup),
        "slo_attainment": round(float(s["slo_attainment"]), 4),
        "gpu_hours": round(float(s["gpu_seconds"]) / 3600, 4),
        "scale_events": int(s["num_scale_events"]),
        "oscillations": oscillations(events, window_s(policy, settings or {})) if policy != "fixed-replicas" else 0,
        "reversals": reversals(events, window_s(policy, settings or {})) if policy != "fixed-replicas" else 0,
        # (per 1,000 completed requests; None, "-", when none completed: not 0, which read as free)
        "cost_per_1k_requests": None if s.get("cost_per_1k_requests_usd") is None
        else round(float(s["cost_per_1k_requests_usd"]), 4),
        "cost_usd": round(float(s["cost_usd"] or 0), 3),
        "ttft_p99_s": round(float(s["ttft_p99_s"] or 0), 3),
        "tpot_p99_s": round(float(s["tpot_p99_s"] or 0), 3),
        "peak_replicas": int(s["peak_replicas"]),  # most alive at once (starting, ready or draining)
        "num_requests": int(s["num_requests"]),
        "num_completed": int(s["num_completed"]),
        # errors the core caught in this run's plugins (the fallback decided in a failing policy's place)
        "plugin_errors": int(s.get("num_plugin_errors") or 0),
        **({"plugin_error_counts": s["plugin_error_counts"]} if s.get("plugin_error_counts") else {}),
        "wall_s": round(time.perf_counter() - t0, 1),
    }



def main(argv: list[str] | None = None) -> int:
    with warnings_once():  # a trace reader's warning, once (it is logged at every read: once or twice a replay)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    try:  # checked now (reading nothing), not at the first replay, and named by the option typed
        transforms_of(args).apply([], args.seed)
    except TransformValueError as exc:
        ap.error(named_by_options(exc))
    if args.policies is not None:
        check_policies(ap, args.policies, autoscalers())
    runs = None if args.policies is None else [n.strip() for n in args.policies.split(",")] + \
        (list(MATCH_SWEEPS) if args.match else [])
    check_sets(ap, parse_sets(args.set), autoscalers(), runs)
    wrappers = dropped_wrappers_note(args)
    if wrappers:
        print(wrappers, file=sys.stderr, flush=True)
    if not 0 < args.target <= 1:
        ap.error(f"--target is a share of requests, in (0, 1], got {args.target:g}")
    if args.setups and not args.suite:
        ap.error("--setups picks setups of --suite: give --suite too")
    if args.suite:
        if args.find_scale is not None:
            ap.error("--find-scale works on one trace, not with --suite (whose setups set their own scales)")
        return suite(args)
    if args.find_scale is not None and not 1 <= args.find_scale <= args.max_replicas:
        ap.error(f"--find-scale must be a replica count from 1 to --max-replicas ({args.max_replicas}), "
                 f"got {args.find_scale}")
    if args.trace is None and args.format is None:
        args.format = "azure"
    try:  # the trace and its --opt options too: opened (reading no row), so an unknown option is one line, not a traceback
        open_trace(args.trace or bundled_trace_path(), args.format, seed=args.seed,
                   options=parse_options(args.opt)).close()
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    mismatch = format_mismatch(args.trace, args.format)
    if mismatch:
        print(mismatch, file=sys.stderr, flush=True)
    if args.find_scale is not None:
        report(args, find_scale(args, run, record), sys.argv[1:] if argv is None else list(argv))
        return 0
    results, static = evaluate(args)
    print(json.dumps(summary(results)))
    return 0


def summary(results: dict[str, dict]) -> dict[str, dict]:
    """The JSON line's mapping: each policy (and static_peak) to its headline numbers."""
    return {k: {c: v[c] for c in ("slo_attainment", "gpu_hours", "scale_events", "oscillations", "reversals",
                                  "cost_per_1k_requests", "slo_after_warmup", "plugin_errors",
                                  *(("replicas", "met_target", "one_replica_suffices") if k == "static_peak" else ()),
                                  *(("settings", "reached", "planner_beats") if k.endswith(" matched") else ()))}
            for k, v in results.items()}


def suite(args) -> int:
    """Every setup of SUITE (or --setups) with the same options; one JSON line of every setup at the end."""
    names = args.setups.split(",") if args.setups else list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise SystemExit(f"unknown setup(s) {unknown}; valid: {', '.join(SUITE)}")
    out: dict[str, dict] = {}
    for name in names:
        kind, scale, ttft, static_from = SUITE[name]
        if kind == "mooncake" and not Path(args.mooncake).is_file():
            print(f"# {name}: skipped, no Mooncake trace at {args.mooncake}; {MOONCAKE_SOURCE}", flush=True)
            continue
        sub = argparse.Namespace(**vars(args))
        sub.trace, sub.format = (None, "azure") if kind == "azure" else (args.mooncake, "mooncake")
        sub.opt = []
        sub.rate_scale, sub.ttft, sub.static_from, sub.setup = scale, ttft, static_from, name
        print(f"# {name}: --rate-scale {scale or 1} --ttft {ttft or 'config'}", flush=True)
        results, _ = evaluate(sub)
        out[name] = summary(results)
    print(json.dumps(out))
    return 0


def evaluate(args) -> tuple[dict[str, dict], dict[int, dict]]:
    """Each policy, then static counts up to the fewest that reach --target; prints the table."""
    bounds = {"min_replicas": 1, "max_replicas": args.max_replicas}
    sets = parse_sets(args.set)
    policies = [p.strip() for p in args.policies.split(",")] if args.policies else autoscalers()
    results: dict[str, dict] = {}
    for name in policies:
        own, rules = split_bounds(name, bounds)
        if rules:  # (a third-party policy without bound settings: bounded as the built-in ones bound themselves)
            print(f"note: {name} has no {' or '.join(rules)} setting: the scaling-rules wrapper bounds it to "
                  f"1..{args.max_replicas} (--max-replicas), as every other policy is bounded", file=sys.stderr,
                  flush=True)
        results[name] = run(args, name, args.start_replicas, {**own, **sets.get(name, {})},
                            **({"rules": rules} if rules else {}))  # (only when some: a test's fake run takes none)
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
        record(args, name, results[name])
    if getattr(args, "match", False):
        results.update(matched(args, results, sets))
    outcomes: dict[int, list] | None = {} if getattr(args, "clairvoyant", False) else None
    static: dict[int, dict] = {} if args.no_static else static_search(args, outcomes)
    if static:
        best = fewest_reaching(static, args.target)
        met = reached(static[best], args.target)
        results["static_peak"] = {**static[best], "replicas": best, "met_target": met,
                                  "one_replica_suffices": met and best == 1}
        if met and best == 1:  # nothing to save: every autoscaler keeps at least one replica
            print(one_replica_note(args), flush=True)
        if not met:  # the baseline misses the SLO itself: every "vs static" below is against a count that misses it
            print(f"note: no static count tried ({min(static)}-{max(static)} replicas, --max-replicas "
                  f"{args.max_replicas}) reached SLO attainment {args.target}; static_peak is x{best} at "
                  f"{static[best]['slo_attainment']}, which misses it. Raise --max-replicas, or loosen --ttft / "
                  f"--tpot if some requests cannot meet them at any count (a long prompt's prefill alone).",
                  flush=True)
        if outcomes is not None:
            results["clairvoyant"] = clairvoyant(args, outcomes, best)
        for name, r in results.items():  # GPU-hours against provisioning for the peak
            r["gpu_hours_vs_static_peak"] = round(r["gpu_hours"] / static[best]["gpu_hours"], 3)
    print_table(results, static)
    warning = plugin_errors_warning({**{n: r for n, r in results.items() if n != "static_peak"},
                                     **{f"static x{k}": v for k, v in static.items()}})
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return results, static


def reached(row: dict, target: float) -> bool:
    """The replay reached ``target`` (a stopped one did not: `autoscaling_early_stop`)."""
    return row["slo_attainment"] is not None and row["slo_attainment"] >= target


def fewest_reaching(static: dict[int, dict], target: float) -> int:
    """The fewest count of ``static`` (count -> row) that reaches ``target``; the most tried when none does."""
    met = [k for k, r in static.items() if reached(r, target)]
    return min(met) if met else max(static)


def static_search(args, outcomes: dict[int, list] | None = None) -> dict[int, dict]:
    """Fixed replica counts from --static-from up to the fewest that meet --target (or --max-replicas);
    when the first count tried already meets it, down from there until one does not (or 1), so the
    count reported is the fewest whichever side --static-from was on. Every count tried, by count."""
    static: dict[int, dict] = {}

    def one(n: int) -> bool:
        # a count below the fewest is only a "misses": stopped once it cannot reach --target (never the last count,
        # which is static_peak when none reaches it)
        stop = None if getattr(args, "no_early_stop", False) or n >= args.max_replicas else args.target
        static[n] = run(args, "fixed-replicas", n, outcomes=outcomes.setdefault(n, []) if outcomes is not None else None,
                        stop_below=stop)
        print(f"static {n}: {static[n]}", file=sys.stderr, flush=True)
        record(args, f"static x{n}", static[n])
        return reached(static[n], args.target)

    n = max(1, min(args.static_from, args.max_replicas))
    if one(n):
        while n > 1 and one(n - 1):
            n -= 1
    else:
        while n < args.max_replicas and not one(n + 1):
            n += 1
    return dict(sorted(static.items()))


def clairvoyant(args, outcomes: dict[int, list], peak: int) -> dict:
    """The clairvoyant bound (benchmarks/autoscaling_clairvoyant.py): static counts below the ones
    searched are replayed too, then the timetable from every count 1..peak."""
    for n in range(1, peak + 1):
        if n not in outcomes or not outcomes[n]:
            row = run(args, "fixed-replicas", n, outcomes=outcomes.setdefault(n, []))
            print(f"static {n} (for the clairvoyant bound): {row}", file=sys.stderr, flush=True)
            record(args, f"static x{n}", row)
    needs = window_needs({n: outcomes[n] for n in range(1, peak + 1)}, args.clairvoyant_window, args.target)
    cold = args.cold_start
    if cold is None:
        from controlplane.hardware.memory_plan import deployment_cold_start_s

        cluster = load_config(None, {"cluster": base_config(args).get("cluster") or {}}).cluster
        cold = deployment_cold_start_s(cluster.models[0])
    table = timetable(needs, args.clairvoyant_window, float(cold) + 2.0)
    row = run(args, "scheduled-replicas", args.start_replicas, {"schedule": table})
    row["settings"] = {"window_s": args.clairvoyant_window, "lead_s": round(float(cold) + 2.0, 1),
                       "entries": len(table)}
    print(f"clairvoyant: {row}", file=sys.stderr, flush=True)
    record(args, "clairvoyant", row)
    return row


def matched(args, results: dict[str, dict], sets: dict[str, dict]) -> dict[str, dict]:
    """Each baseline of MATCH_SWEEPS at every setting of its sweep (every run printed and recorded), and of
    MATCH_DOWN when its first setting already spends the planner's GPU-hours; for each, the run with the fewest
    GPU-hours at or above the SLO planner's (``reached``), or if none reaches them, the one with the most. Its row
    names its settings."""
    planner = next((r for n, r in results.items() if "slo" in n), None)
    if planner is None:
        return {}
    out = {}
    for name, sweep in MATCH_SWEEPS.items():
        runs = []

        def one(setting: dict) -> dict:
            row = run(args, name, args.start_replicas, {"min_replicas": 1, "max_replicas": args.max_replicas,
                                                         **sets.get(name, {}), **setting})
            runs.append({**row, "settings": setting})
            print(f"{name} {setting}: {row}", file=sys.stderr, flush=True)
            record(args, f"{name} {setting}", row)
            return row

        for setting in sweep:
            if one(setting)["gpu_hours"] >= planner["gpu_hours"]:
                break  # the sweep only adds replicas from here
        if len(runs) == 1 and runs[0]["gpu_hours"] >= planner["gpu_hours"]:  # its first already spends more:
            for setting in MATCH_DOWN.get(name, ()):  # toward fewer replicas, to the nearest above the planner's
                if one(setting)["gpu_hours"] < planner["gpu_hours"]:
                    break
        enough = [r for r in runs if r["gpu_hours"] >= planner["gpu_hours"]]
        best = min(enough, key=lambda r: r["gpu_hours"]) if enough else max(runs, key=lambda r: r["gpu_hours"])
        out[f"{name} matched"] = {**best, "reached": bool(enough),
                                  "planner_beats": planner["slo_attainment"] > best["slo_attainment"]
                                  and planner["gpu_hours"] <= best["gpu_hours"]}
    return out


def record(args, name: str, row: dict) -> None:
    """Append one run to --out (a JSON line with its setup and options)."""
    if not args.out:
        return
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps({"setup": getattr(args, "setup", None), "trace": str(args.trace or "bundled azure code"),
                            "rate_scale": args.rate_scale, **_profile_of(args),
                            **({"copies": args.copies} if getattr(args, "copies", None) else {}),
                            "ttft": args.ttft, "policy": name,
                            **row}) + "\n")


def _profile_of(args) -> dict:
    """The --out line's rate_profile (as the option takes it), only when one was given."""
    points = getattr(args, "rate_profile", None)
    return {"rate_profile": format_rate_profile(points)} if points else {}


if __name__ == "__main__":
    run_main(main)  # a bad trace row met mid-replay (--format mooncake on a CSV): one line, exit 2
