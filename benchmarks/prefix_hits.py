"""Prefix-cache hit ratios on the Mooncake conversation trace, by router and cache size.

    python benchmarks/prefix_hits.py [--trace PATH] [--limit N] [--replicas 8]

Replays the trace (hash_ids = 512-token prompt blocks) on ``--replicas`` replicas of
Llama-3-70B on 4x H100 (roofline latency model, KV blocks from the memory plan, vLLM batching)
with the ``prefix-cache`` plugin, routed by ``least-loaded`` or by the cache-aware
``prefix-affinity``, with each replica's cache bounded by its free KV blocks (the default) or
unbounded. The first row is the offline bound: one infinite cache shared by all, filled at
arrival (37.4% on the whole trace). Ends with one JSON line of the hit ratios.

The trace is not in the repository: download ``FAST25-release/traces/conversation_trace.jsonl`` from
https://github.com/kvcache-ai/Mooncake (Apache-2.0; 12,031 requests over one hour) and give ``--trace PATH``.
Without ``--trace`` the script reads it from ``../shared/data/traces/mooncake_fast25/`` beside the
repository, where the project's developers keep it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench_cli import check_trace, nonnegative_int, positive_int, run_main, trace_errors  # noqa: E402

#: Where the project's developers keep Mooncake's trace (a folder beside the repository); it is not bundled.
DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "mooncake_fast25" / "conversation_trace.jsonl"
#: Where a user gets it, and what to pass: said by --help and when the default is missing.
TRACE_SOURCE = ("Mooncake's conversation_trace.jsonl, not in the repository: download FAST25-release/traces/"
                "conversation_trace.jsonl from https://github.com/kvcache-ai/Mooncake (Apache-2.0) and give --trace PATH")


def offline_ratio(trace) -> float:
    seen, hit, total = set(), 0, 0
    for t in trace:
        n = 0
        for h in t.hash_ids:
            if h not in seen:
                break
            n += 1
        hit += min(n * (t.hash_block_tokens or 512), t.prompt_tokens)
        total += t.prompt_tokens
        seen.update(t.hash_ids)
    return hit / total if total else 0.0


def run(trace, router: str, replicas: int, unbounded: bool, max_imbalance: int | None = None):
    from controlplane.config import load_config
    from sim.replay import replay

    enabled = list(dict.fromkeys([router, "least-loaded", "prefix-cache", "continuous-batching", "fixed-replicas",
                                  "static-memory", "builtin-latency-models"]))
    settings = {"static-memory": {"request_slot_tokens": None}}
    if unbounded:
        settings["prefix-cache"] = {"capacity_blocks": 10**12}
    if max_imbalance is not None and router == "prefix-affinity":
        settings["prefix-affinity"] = {"max_imbalance": max_imbalance}
    cfg = load_config(None, {
        "control": {"tick_s": 10.0},
        "plugins": {"enabled": enabled, "settings": settings},
        "cluster": {"models": [{
            "name": "kimi", "replicas": replicas, "latency_model": "roofline",
            "latency": {"model": "meta-llama/Meta-Llama-3-70B", "gpu": "h100-80gb", "tensor_parallel": 4},
            "model_spec": "meta-llama/Meta-Llama-3-70B", "gpu": "h100-80gb", "gpus_per_replica": 4,
            "max_num_seqs": 128, "max_batch_tokens": 131072,
        }]},
    })
    t0 = time.perf_counter()
    summary, _ = replay(iter(trace), cfg, record=False)
    return summary, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                    help=f"{TRACE_SOURCE} (default: ../shared/data/traces/mooncake_fast25/ beside the repository)")
    ap.add_argument("--limit", type=positive_int, default=None,
                    help="replay only the first N requests of the trace (default: all)")
    ap.add_argument("--replicas", type=positive_int, default=8, help="replicas the routers spread over (default 8)")
    ap.add_argument("--max-imbalance", type=nonnegative_int, default=None,
                    help="prefix-affinity's max_imbalance (default: the plugin's, 2)")
    args = ap.parse_args(argv)
    check_trace(ap, args.trace, "mooncake",
                note=f" (the default: {TRACE_SOURCE})" if args.trace == DEFAULT_TRACE else "")

    from sim.replay import TraceTransforms, prepare_trace

    # What `controlplane sim replay TRACE --format mooncake --seed 0 --limit N` replays (seed 0 is
    # the runs' seed too), read once and replayed by every configuration.
    with trace_errors(ap):
        trace = list(prepare_trace(args.trace, seed=0, trace_format="mooncake",
                                   transforms=TraceTransforms(limit=args.limit)))
    bound = offline_ratio(trace)
    t = Table(title=f"prefix-token hit ratio, Mooncake conversation trace ({len(trace):,} requests, "
                    f"{args.replicas} replicas of Llama-3-70B on 4x H100)")
    for col in ("router", "cache per replica", "hit ratio", "requests with a hit", "TTFT p50 / p99 s", "wall s"):
        t.add_column(col, justify="right" if col not in ("router", "cache per replica") else "left")
    t.add_row("(offline bound)", "one infinite cache for all, filled at arrival", f"{bound:.1%}", "", "", "")
    out = {"offline_bound": round(bound, 4)}
    for unbounded in (False, True):
        for router in ("least-loaded", "prefix-affinity"):
            s, wall = run(trace, router, args.replicas, unbounded, args.max_imbalance)
            cache = "unbounded" if unbounded else "free KV blocks (LRU)"
            t.add_row(router, cache, _ratio(s['prefix_token_hit_ratio']), f"{s['prefix_hits']:,}",
                      f"{_seconds(s['ttft_p50_s'])} / {_seconds(s['ttft_p99_s'])}", f"{wall:.1f}")
            out[f"{router}/{'unbounded' if unbounded else 'free_kv'}"] = s["prefix_token_hit_ratio"]
    Console(width=None if sys.stdout.isatty() else 240).print(t)  # a file or a pipe: one line a row
    print(json.dumps(out))
    return 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"  # (no request answered)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    run_main(main)
