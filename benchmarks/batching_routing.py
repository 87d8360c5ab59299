"""Batching and routing policies replayed on one trace: latency, throughput, prefix hits, lost requests.

    python benchmarks/batching_routing.py                                   # multi-tenant shared-prefix workload
    python benchmarks/batching_routing.py --trace bundled:azure_code        # the bundled Azure code trace
    python benchmarks/batching_routing.py --trace conversation_trace.jsonl \\
        --format mooncake --limit 3000

Without ``--trace`` it generates the multi-tenant shared-prefix workload of
``sim.traces.shared_prefix`` (tenants with long system prompts, as in llm-d-benchmark). Every
policy replays the same requests on the same simulated cluster with the ``prefix-cache``
plugin (per-replica LRU of KV blocks, bounded by free KV memory), so prefix hits are measured
for all. Batching policies are compared under ``weighted-router`` routing (the best router here,
so the batcher is what differs), routing policies under ``continuous-batching``;
``continuous-batching`` and ``weighted`` are one and the same run.
The weights of ``weighted`` are the plugin's defaults (prefix-cache-hit 2, queue-depth 1,
kv-utilization 1), fixed before any measurement: nothing is tuned on the traces reported.

``req/s`` (``throughput_rps``) is the completed requests over the span from the first arrival
to the last finish, computed from the run's requests (``span_s``): not the run summary's
``throughput_rps``, whose span ends at the first control tick (every 10 s here) after the last
request finished, which made it a step function of the tick.

Prints a table and ends with one JSON line: policy name -> throughput_rps, ttft_p50_s,
ttft_p90_s, e2e_p99_s, prefix_hit_rate, num_lost (and a few more). ``prefix_hit_rate`` (the
table's "prefix hit") is null ("-") on a trace without prefix information (no request has
``hash_ids``, as the Azure traces): there is nothing to hit, not 0% hits. ``num_lost`` counts requests
of the trace without exactly one final record (completed, rejected with a reason, failed) or
still in flight at the end; rejections with a code are answers, listed as ``num_rejected``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from controlplane import hookimpl  # noqa: E402
from controlplane.events import RequestFinished  # noqa: E402
from sim.traces import FORMATS, detect_format  # noqa: E402

from bench_cli import (  # noqa: E402
    check_trace, nonnegative_float, positive_float, positive_int, run_main, trace_errors)

#: policy name -> (batching plugin, routing plugin)
POLICIES: dict[str, tuple[str, str]] = {
    "continuous-batching": ("continuous-batching", "weighted-router"),
    "dynamic-batching": ("dynamic-batching", "weighted-router"),
    "static-batching": ("static-batching", "weighted-router"),
    "least-loaded": ("continuous-batching", "least-loaded"),
    "round-robin": ("continuous-batching", "round-robin"),
    "power-of-two": ("continuous-batching", "power-of-two"),
    "prefix-only": ("continuous-batching", "prefix-only"),
    "weighted": ("continuous-batching", "weighted-router"),
}

#: the control loop's period (fixed replicas: nothing to decide; the req/s column does not depend on it)
TICK_S = 10.0

#: continuous-batching's style: Sarathi (decodes never wait behind a long prefill)
CONTINUOUS_POLICY = "sarathi"

PRESETS = {
    # Llama-2-7B (multi-head attention: 0.5 MB of KV per token) on one A100: room for ~120k tokens of KV
    "7b-a100": {"latency_model": "roofline", "gpu": "a100-80gb", "gpus_per_replica": 1,
                "model_spec": "meta-llama/Llama-2-7b-hf",
                "latency": {"model": "meta-llama/Llama-2-7b-hf", "gpu": "a100-80gb", "tensor_parallel": 1},
                "max_num_seqs": 128, "max_batch_tokens": 16384},
    # Llama-3-8B (grouped-query attention: 0.125 MB of KV per token) on one A100: ~500k tokens of KV
    "8b-a100": {"latency_model": "roofline", "gpu": "a100-80gb", "gpus_per_replica": 1,
                "model_spec": "meta-llama/Meta-Llama-3-8B",
                "latency": {"model": "meta-llama/Meta-Llama-3-8B", "gpu": "a100-80gb", "tensor_parallel": 1},
                "max_num_seqs": 128, "max_batch_tokens": 16384},
    # Llama-3-70B on 4x H100 (what benchmarks/prefix_hits.py replays the Mooncake trace on)
    "70b-h100x4": {"latency_model": "roofline", "gpu": "h100-80gb", "gpus_per_replica": 4,
                   "model_spec": "meta-llama/Meta-Llama-3-70B",
                   "latency": {"model": "meta-llama/Meta-Llama-3-70B", "gpu": "h100-80gb", "tensor_parallel": 4},
                   "max_num_seqs": 128, "max_batch_tokens": 131072},
}


class Outcomes:
    """Counts each request's final records (to find lost and duplicated requests), and when the
    run's requests arrived and its completed ones finished (its throughput)."""

    name = "outcomes"

    def __init__(self) -> None:
        self.finals: Counter[str] = Counter()
        self.in_flight: set[str] = set()
        self.first_arrival_s: float | None = None
        self.last_finish_s: float | None = None
        self.completed = 0

    @hookimpl
    def cp_on_event(self, event):
        if type(event) is RequestFinished:
            r = event.request
            if r.status.value == "in_flight":
                self.in_flight.add(r.request_id)
                return
            self.finals[r.request_id] += 1
            if self.first_arrival_s is None or r.arrival_s < self.first_arrival_s:
                self.first_arrival_s = r.arrival_s
            if r.status.value == "completed" and r.finish_s is not None:
                self.completed += 1
                self.last_finish_s = max(self.last_finish_s or r.finish_s, r.finish_s)

    def throughput_rps(self) -> float | None:
        """Completed requests over (last finish - first arrival): the run's own span, not the run
        summary's ``throughput_rps``, whose span ends at the first control tick after the last
        request (a multiple of ``control.tick_s``: with ticks of 10 s, 3,000 requests read 13.636,
        12.5 or 12.0 req/s and nothing in between)."""
        if not self.completed or self.last_finish_s is None or self.last_finish_s <= self.first_arrival_s:
            return None
        return self.completed / (self.last_finish_s - self.first_arrival_s)


def run_policy(trace, policy: str, preset: str, replicas: int, ttft_slo: float, tpot_slo: float,
               continuous_policy: str = CONTINUOUS_POLICY, tick_s: float = TICK_S):
    from controlplane.config import load_config
    from sim.replay import replay

    batcher, router = POLICIES[policy]
    enabled = list(dict.fromkeys([router, batcher, "prefix-cache", "least-loaded", "continuous-batching",
                                  "fixed-replicas", "static-memory", "builtin-latency-models"]))
    cfg = load_config(None, {
        "seed": 0,
        "control": {"tick_s": tick_s},
        "slo": {"ttft_s": ttft_slo, "tpot_s": tpot_slo},
        "plugins": {"enabled": enabled, "settings": {"static-memory": {"request_slot_tokens": None},
                                                     "continuous-batching": {"policy": continuous_policy}}},
        "cluster": {"models": [{"name": "m", "replicas": replicas, **PRESETS[preset]}]},
    })
    out = Outcomes()
    t0 = time.perf_counter()
    summary, _ = replay(iter(trace), cfg, record=False, extra_plugins=[out])
    wall = time.perf_counter() - t0
    ids = [t.request_id for t in trace]
    lost = sum(1 for i in ids if out.finals[i] != 1 or i in out.in_flight)
    dup = sum(n - 1 for n in out.finals.values() if n > 1)
    return {
        "throughput_rps": out.throughput_rps(),  # (the tick-independent one: `Outcomes.throughput_rps`)
        "span_s": None if out.last_finish_s is None else round(out.last_finish_s - out.first_arrival_s, 3),
        "ttft_p50_s": summary["ttft_p50_s"],
        "ttft_p90_s": summary["ttft_p90_s"],
        "ttft_p99_s": summary["ttft_p99_s"],
        "tpot_p50_s": summary["tpot_p50_s"],
        "tpot_p99_s": summary["tpot_p99_s"],
        "e2e_p50_s": summary["e2e_p50_s"],
        "e2e_p99_s": summary["e2e_p99_s"],
        "slo_attainment": summary["slo_attainment"],
        # (None: no request had hash_ids to look up, a trace without prefix information; not 0%)
        "prefix_hit_rate": summary.get("prefix_token_hit_ratio"),
        "num_lost": lost,
        "num_duplicated": dup,
        "num_rejected": summary["num_rejected"],
        "num_completed": summary["num_completed"],
        "wall_s": round(wall, 2),
    }


def load_workload(args):
    if args.trace is None:
        from sim.traces.shared_prefix import SharedPrefixWorkload, shared_prefix_trace

        wl = SharedPrefixWorkload(num_requests=args.requests, qps=args.qps, num_tenants=args.tenants,
                                  system_prompt_tokens=args.system_prompt_tokens, tenant_skew=args.skew,
                                  seed=args.seed)
        name = (f"shared-prefix: {wl.num_tenants} tenants x {wl.system_prompt_tokens}-token system prompts, "
                f"skew {wl.tenant_skew}, {wl.qps:g} req/s, seed {wl.seed}")
        return shared_prefix_trace(wl), name
    from sim.replay import TraceTransforms, prepare_trace

    path = args.trace_path
    trace = list(prepare_trace(path, seed=0, trace_format=args.trace_format,
                               transforms=TraceTransforms(limit=args.limit, speed_up=args.speedup)))
    return trace, f"{Path(path).name} ({args.trace_format}{'' if args.format else ', detected'})"


#: The shared-prefix workload the benchmark replays by default, written as a trace file (docs/batching-routing.md):
#: the generator's own defaults are another, smaller workload.
WORKLOAD_COMMAND = ("python -m sim.traces.shared_prefix OUT.jsonl --requests 3000 --qps 14 --tenants 256 "
                    "--system-prompt-tokens 6000 --skew 1.2 --seed 1")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="req/s: completed requests over (last finish - first arrival), from the run's "
                                        "requests; not the run summary's throughput_rps, whose span ends at a "
                                        "control tick")
    ap.add_argument("--trace", default=None, help="trace file or bundled:NAME (default: the shared-prefix generator)")
    ap.add_argument("--format", default=None, choices=FORMATS,
                    help="trace format (azure, mooncake, vidur, canonical, burstgpt, bailian; default: detect)")
    ap.add_argument("--limit", type=positive_int, default=None,
                    help="replay only the first N requests of --trace (default: all)")
    ap.add_argument("--speed-up", "--speedup", dest="speedup", type=positive_float, default=None,
                    help="compress --trace's arrivals by this factor (spelt as autoscaling.py and guardians.py do; "
                         "--speedup: the old spelling; default: 1, as recorded)")
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help=f"comma-separated policies to compare (default: all, {', '.join(POLICIES)})")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="replica hardware (default: 70b-h100x4 for mooncake traces, given by --format or "
                         "detected, else 8b-a100)")
    ap.add_argument("--replicas", type=positive_int, default=4, help="replicas of the model, fixed (default 4)")
    ap.add_argument("--ttft-slo", type=positive_float, default=2.0, help="TTFT target in seconds (default 2.0)")
    ap.add_argument("--tpot-slo", type=positive_float, default=0.2, help="TPOT target in seconds (default 0.2)")
    ap.add_argument("--continuous-policy", choices=["sarathi", "vllm"], default=CONTINUOUS_POLICY,
                    help="continuous-batching's style in every run (default: sarathi, chunked prefill with decodes)")
    g = ap.add_argument_group("shared-prefix workload (without --trace)",
                              f"the defaults, as a trace file: {WORKLOAD_COMMAND}")
    g.add_argument("--requests", type=positive_int, default=3000, help="requests generated (default 3000)")
    g.add_argument("--qps", type=positive_float, default=14.0, help="mean arrival rate, requests/s (default 14.0)")
    g.add_argument("--tenants", type=positive_int, default=256,
                   help="tenants, each with its own system prompt (default 256)")
    g.add_argument("--system-prompt-tokens", type=positive_int, default=6000,
                   help="tokens of each tenant's system prompt, the shared prefix (default 6000)")
    g.add_argument("--skew", type=nonnegative_float, default=1.2,
                   help="Zipf exponent of tenant popularity (0: uniform; default 1.2)")
    g.add_argument("--seed", type=int, default=1, help="seed of the generated workload (default 1)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        ap.error(f"--policies: unknown {', '.join(bad)}; valid: {', '.join(POLICIES)}")
    if not policies:
        ap.error(f"--policies: give at least one of {', '.join(POLICIES)}")
    args.trace_path = None
    if args.trace is None:
        for option, value in (("--limit", args.limit), ("--speed-up", args.speedup)):
            if value is not None:
                ap.error(f"{option} applies to --trace's requests: give --trace too (without it the shared-prefix "
                         "generator's --requests and --qps set the workload)")
    elif args.trace.startswith("bundled:"):
        from sim.traces import BUNDLED_TRACES, bundled_trace_path

        name = args.trace.split(":", 1)[1]
        if name not in BUNDLED_TRACES:
            ap.error(f"--trace {args.trace}: no bundled trace {name!r}; bundled: "
                     + ", ".join(f"bundled:{n}" for n in sorted(BUNDLED_TRACES)))
        args.trace_path = bundled_trace_path(name)
    else:
        args.trace_path = check_trace(ap, args.trace, args.format)
    with trace_errors(ap):
        # (the format read, given or detected: a Mooncake trace gets the Mooncake preset either way)
        args.trace_format = args.format or (detect_format(args.trace_path) if args.trace_path else None)
        trace, name = load_workload(args)
    preset = args.preset or ("70b-h100x4" if args.trace_format == "mooncake" else "8b-a100")
    results: dict[str, dict] = {}
    with Progress(transient=True) as bar:
        task = bar.add_task("replaying", total=len(policies))
        for p in policies:
            bar.update(task, description=f"replaying {p}")
            same = next((q for q in results if POLICIES[q] == POLICIES[p]), None)
            results[p] = dict(results[same]) if same else run_policy(trace, p, preset, args.replicas,
                                                                     args.ttft_slo, args.tpot_slo,
                                                                     args.continuous_policy)
            bar.advance(task)

    t = Table(title=f"{name}: {len(trace):,} requests on {args.replicas} replicas ({preset})")
    cols = [("policy", "policy"), ("batching / routing", None), ("req/s", "throughput_rps"),
            ("TTFT p50", "ttft_p50_s"), ("TTFT p90", "ttft_p90_s"), ("TTFT p99", "ttft_p99_s"),
            ("TPOT p50", "tpot_p50_s"), ("TPOT p99", "tpot_p99_s"), ("E2E p50", "e2e_p50_s"), ("E2E p99", "e2e_p99_s"),
            ("SLO ok", "slo_attainment"), ("prefix hit", "prefix_hit_rate"), ("rejected", "num_rejected"),
            ("lost", "num_lost"), ("dup", "num_duplicated"), ("wall s", "wall_s")]
    for c, _ in cols:
        t.add_column(c, justify="left" if c in ("policy", "batching / routing") else "right")
    for p, m in results.items():
        row = [p, " / ".join(POLICIES[p])]
        for _, k in cols[2:]:
            v = m[k]
            row.append("-" if v is None else f"{v:.1%}" if k in ("slo_attainment", "prefix_hit_rate")
                       else f"{v:,}" if isinstance(v, int) else f"{v:.3f}")
        t.add_row(*row)
    Console(width=240).print(t)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    run_main(main)
