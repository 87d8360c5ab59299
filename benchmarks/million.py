"""A million-request replay in bounded memory, results streamed to SQLite.

    python benchmarks/million.py [--requests 1000000] [--replicas 16] [--qps 12.8]
                                 [--from-disk] [--no-sql] [--latency vidur|linear]

The trace is synthetic and streamed: Poisson arrivals at ``--qps`` and lognormal prompt /
output lengths (medians 1,024 / 64 tokens, prompt + output <= 4,096), generated lazily from a
seeded generator, or (``--from-disk``) written first to a canonical CSV in a temporary folder
and streamed back by the canonical reader. The cluster is the Vidur anchors' replica
(Llama-2-70B on 2x A100-80GB, TP2, vLLM batching, KV blocks from the memory plan) times
``--replicas``, least-loaded routing, control loop every 10 s.

Memory stays bounded: nothing per request outlives the request except the few floats the run
summary's percentiles need (4 latencies and an SLO flag); rows go to SQLite in bulk as the
run goes. Ends with one JSON line with ``wall_s`` and ``peak_rss_mb`` (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def synthetic_trace(n: int, qps: float, seed: int = 0, chunk: int = 65536) -> Iterator:
    """``n`` TraceRequests, generated ``chunk`` at a time (O(chunk) memory)."""
    import numpy as np

    from sim.traces.record import new_basic

    rng = np.random.default_rng(seed)
    t = 0.0
    made = 0
    while made < n:
        m = min(chunk, n - made)
        gaps = rng.exponential(1.0 / qps, size=m)
        gaps[0] = 0.0 if made == 0 else gaps[0]
        arrivals = (t + np.cumsum(gaps)).tolist()
        t = arrivals[-1]
        prompt = np.clip(rng.lognormal(np.log(1024), 0.8, size=m), 16, 3584).astype(np.int64)
        output = np.clip(rng.lognormal(np.log(64), 1.0, size=m), 1, 4096 - prompt).astype(np.int64)
        for i, (a, p, o) in enumerate(zip(arrivals, prompt.tolist(), output.tolist())):
            yield new_basic(str(made + i), a, p, o)
        made += m


def config(db_url: str, replicas: int, latency: str):
    from controlplane.config import load_config

    deployment = {"name": "llama", "replicas": replicas, "max_num_seqs": 128, "max_batch_tokens": 4096,
                  "kv_block_size": 16}
    if latency == "vidur":
        deployment.update(latency_model="vidur", model_spec="meta-llama/Llama-2-70b-hf", gpu="a100-80gb",
                          gpus_per_replica=2,
                          latency={"model": "meta-llama/Llama-2-70b-hf", "gpu": "a100", "tensor_parallel": 2,
                                   "network": "a100_pairwise_nvlink"})
    else:
        deployment.update(latency_model="linear", num_kv_blocks=3328)
    return load_config(None, {
        "storage": {"url": db_url, "record_batches": False},
        "control": {"tick_s": 10.0},
        "plugins": {"enabled": ["least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                                "builtin-latency-models"]},
        "cluster": {"models": [deployment]},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--qps", type=float, default=12.8, help="total arrival rate (0.8 per replica by default)")
    ap.add_argument("--latency", choices=("vidur", "linear"), default="vidur")
    ap.add_argument("--from-disk", action="store_true", help="write the trace to a canonical CSV, replay from it")
    ap.add_argument("--no-sql", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sim.replay import replay
    from sim.traces import write_canonical

    with tempfile.TemporaryDirectory(prefix="million_") as tmp:
        db = Path(tmp) / "million.db"
        url = f"sqlite:///{db}"
        cfg = config(url, args.replicas, args.latency)
        # Warm-up (untimed): imports and the latency model's tables.
        replay(synthetic_trace(300, args.qps, seed=99), config("sqlite://", 1, args.latency), record=False)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        trace_desc = "generator"
        write_s = 0.0
        trace_format = None
        if args.from_disk:
            path = Path(tmp) / "trace.csv"
            t0 = time.perf_counter()
            write_canonical(synthetic_trace(args.requests, args.qps, args.seed), path)
            write_s = time.perf_counter() - t0
            trace, trace_format = path, "canonical"
            trace_desc = f"canonical CSV on disk ({path.stat().st_size / 2**20:.0f} MiB, written in {write_s:.1f} s)"
        else:
            trace = synthetic_trace(args.requests, args.qps, args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        summary, session = replay(trace, cfg, trace_format=trace_format, record=not args.no_sql, trace_name=trace_desc)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows = {}
        if not args.no_sql:
            import sqlite3

            con = sqlite3.connect(db)
            rows = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("request", "decision", "metric_sample")}
            rows["db_mib"] = round(db.stat().st_size / 2**20, 1)
            con.close()

    n = summary["num_requests"]
    t = Table(title=f"{n:,}-request synthetic replay ({args.replicas} replicas, {args.latency} latency model)",
              caption=f"trace: {trace_desc}; {'no SQL' if args.no_sql else 'rows streamed to a temporary SQLite file'}; "
                      f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in (
        ("requests / completed / in flight", f"{n:,} / {summary['num_completed']:,} / {summary['num_in_flight']:,}"),
        ("simulated span", f"{summary['sim_span_s']:,.0f} s ({summary['sim_span_s'] / 3600:.1f} h)"),
        ("wall s / CPU s", f"{wall:.1f} / {cpu:.1f}"),
        ("simulated requests / wall s", f"{n / wall:,.0f}"),
        ("peak RSS MB (before the run / after)", f"{rss_before:,.0f} / {peak:,.0f}"),
        ("TTFT p50 / p99 s", f"{summary['ttft_p50_s']:.3f} / {summary['ttft_p99_s']:.3f}"),
        ("TPOT p50 / p99 s", f"{summary['tpot_p50_s']:.4f} / {summary['tpot_p99_s']:.4f}"),
        ("E2E p50 / p99 s", f"{summary['e2e_p50_s']:.2f} / {summary['e2e_p99_s']:.2f}"),
        ("preemptions", f"{summary['num_preemptions']:,}"),
        *((f"SQL rows: {k}", f"{v:,}") for k, v in rows.items()),
    ):
        t.add_row(k, v)
    Console().print(t)
    print(json.dumps({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak, 1),
                      "rss_before_run_mb": round(rss_before, 1), "num_requests": n,
                      "num_completed": summary["num_completed"], "sim_requests_per_wall_s": round(n / wall, 1),
                      "sql": not args.no_sql, "trace": "disk" if args.from_disk else "generator"}))


if __name__ == "__main__":
    main()
