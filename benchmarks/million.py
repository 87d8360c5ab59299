"""A million-request replay as a user runs it: the CLI, default settings, whole process.

    python benchmarks/million.py [--requests 1000000] [--per-copy 1000000] [--qps-per-replica 1.5]
                                 [--trace PATH --format F]

The trace is a real one replicated: the bundled Azure LLM code trace (8,819 requests over
57 minutes, 2.6 requests/s) by default, scaled with ``--rate-scale`` to ``--per-copy`` requests
(2% more than needed; ``--limit`` cuts the rest), so the arrival process keeps the trace's
burstiness at about ``--per-copy`` / 8,819 times its rate. The cluster is sized for that rate:
Llama-3-8B on one A100-80GB per replica (the bundled run config's model, Vidur-profiled
iteration times), ``replicas`` = the scaled rate / ``--qps-per-replica``. More requests than
``--per-copy`` play the scaled trace again, back to back (``--repeat``), on the same cluster:
``--requests 10000000`` is ten hours of the million-request hour, so what grows with a run's
length (and nothing else) shows; ``--per-copy 10000000`` instead packs them into one hour on a
cluster ten times the size. Everything else is the default:
the default plugins, control loop every second, every batch decision stored, rows to the
default SQLite database (``controlplane.db`` in a temporary working folder). Timed: the
command a user types, spawn to exit::

    controlplane sim replay TRACE [--repeat C] --rate-scale K --limit N --config run.yaml --json --no-progress

with its peak RSS from ``wait4`` and its phases (``CONTROLPLANE_TIMINGS=1``). The title's ``xK`` is
that ``--rate-scale`` K, ``--per-copy`` / the trace's requests + 2% (x23.13 for 200,000 of the
bundled 8,819, not 22.68; x115.66 for the default 1,000,000), and its JSON's ``rate_scale``. ``rows_written``
counts every row the run left in the database (requests, decisions, metric samples, worker
events). Ends with one JSON line: ``wall_s``, ``peak_rss_mb``, ``num_requests``,
``rows_written``, the phases, the rows by table and the host yardstick (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cli import (  # noqa: E402
    check_trace, nonnegative_int, positive_float, positive_int, run_main, trace_errors)
from vs_vidur import _load_avg, _profile_table, controlplane_exe, profile_cli, time_cli, yardstick_us  # noqa: E402

TABLES = ("request", "decision", "metric_sample", "worker_event", "iteration")


def settings(replicas: int) -> dict:
    return {
        "cluster": {"models": [{
            "name": "default", "replicas": replicas, "latency_model": "vidur",
            "latency": {"model": "meta-llama/Meta-Llama-3-8B", "gpu": "a100", "tensor_parallel": 1,
                        "attention": "scaled"},
            "model_spec": "meta-llama/Meta-Llama-3-8B", "gpu": "a100-80gb", "gpus_per_replica": 1,
        }]},
    }


def trace_rate(path: Path, trace_format: str | None) -> tuple[int, float]:
    """Requests in the trace and their mean rate (requests per second of the trace's span)."""
    from sim.traces import read_trace

    n, first, last = 0, None, 0.0
    for r in read_trace(path, trace_format):
        n += 1
        first = r.arrival_s if first is None else first
        last = r.arrival_s
    return n, n / max(last - (first or 0.0), 1e-9)


def scale_label(scale: float, per_copy: int, trace_requests: int) -> str:
    """The title's scale: the ``--rate-scale`` passed, which is 2% over ``per_copy / trace_requests``
    (``--limit`` cuts the extra requests), said so (a bare x23.13 for 200,000 of 8,819 read as a mistake)."""
    return f"x{scale:.2f} (--rate-scale: {per_copy:,} / {trace_requests:,} requests + 2%, cut by --limit)"


def rows_in(db: Path, run_id: int) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {t: con.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0]
                for t in TABLES if t in have}
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    from sim.traces import FORMATS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=positive_int, default=1_000_000,
                    help="requests replayed in all (default 1000000)")
    ap.add_argument("--per-copy", type=positive_int, default=1_000_000,
                    help="requests per copy of the scaled trace (the rate the cluster is sized for); "
                         "more requests play further copies back to back (default 1000000)")
    ap.add_argument("--qps-per-replica", type=positive_float, default=1.5,
                    help="arrival rate one replica is sized for (requests/s; default 1.5)")
    ap.add_argument("--trace", type=Path, default=None, help="trace to replicate (default: the bundled Azure code trace)")
    ap.add_argument("--format", default=None, choices=FORMATS,
                    help="its format (default: azure for the bundled trace, else detect)")
    ap.add_argument("--profile-requests", type=nonnegative_int, default=100_000,
                    help="after the timed run, profile the same command cut to its first N requests under "
                         "cProfile (where the time goes, by area and by function; default 100000; 0: skip)")
    args = ap.parse_args(argv)
    if args.trace is not None:
        check_trace(ap, args.trace, args.format)

    import yaml
    from rich.console import Console
    from rich.table import Table

    from sim.traces import bundled_trace_path

    # absolute: the timed command runs in a temporary working folder, where a relative path names nothing
    trace = Path(args.trace or bundled_trace_path()).resolve()
    fmt = args.format or ("azure" if args.trace is None else None)
    with trace_errors(ap):
        base_n, base_rate = trace_rate(trace, fmt)
    if base_n == 0:
        ap.error(f"--trace {trace}: no request to replicate")
    # Replication is seeded and random (``--rate-scale``): 2% more than needed, cut by ``--limit``.
    per_copy = min(args.per_copy, args.requests)
    copies = math.ceil(args.requests / per_copy)
    scale = per_copy / base_n * 1.02
    replicas = max(1, math.ceil(base_rate * scale / args.qps_per_replica))
    yard_before = yardstick_us()
    with tempfile.TemporaryDirectory(prefix="million_") as tmp:
        tmp = Path(tmp)
        config = tmp / "run.yaml"
        config.write_text(yaml.safe_dump(settings(replicas)))
        cmd = [*controlplane_exe(), "sim", "replay", str(trace), "--config", str(config), "--json", "--no-progress",
               "--rate-scale", repr(scale), "--limit", str(args.requests)]
        if copies > 1:
            cmd += ["--repeat", str(copies)]
        if fmt:
            cmd += ["--format", fmt]
        r = time_cli(cmd, tmp)
        summary = r["summary"]
        db = tmp / "controlplane.db"
        rows = rows_in(db, summary["run_id"])
        db_mib = db.stat().st_size / 2**20
        yard_after = yardstick_us()
        profile = None
        if args.profile_requests > 0:
            db.unlink()
            cut = [*cmd[:cmd.index("--limit") + 1], str(min(args.profile_requests, args.requests)),
                   *cmd[cmd.index("--limit") + 2:]]
            profile = profile_cli(cut, tmp)

    n = summary["num_requests"]
    played = f" played {copies} times" if copies > 1 else ""
    t = Table(title=f"{n:,}-request replay: {Path(trace).name} {scale_label(scale, per_copy, base_n)}{played} on "
                    f"{replicas} replicas "
                    f"(Llama-3-8B, A100)",
              caption=f"`controlplane sim replay` whole process at default settings; host yardstick "
                      f"{yard_before:.1f} / {yard_after:.1f} µs at start / end (29.5 µs idle reference); "
                      f"load average {_load_avg()} on {os.cpu_count()} CPUs")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in (
        ("requests / completed / in flight", f"{n:,} / {summary['num_completed']:,} / {summary['num_in_flight']:,}"),
        ("simulated span", f"{summary['sim_span_s']:,.0f} s"),
        ("whole process wall s / CPU s", f"{r['wall_s']:.1f} / {r['cpu_s']:.1f}"),
        *((f"  phase: {k}", f"{v:.2f} s") for k, v in r["phases"].items()),
        ("simulated requests / wall s", f"{n / r['wall_s']:,.0f}"),
        ("peak RSS MB", f"{r['peak_rss_mb']:,.0f}"),
        ("TTFT p50 / p99 s", f"{summary['ttft_p50_s']:.3f} / {summary['ttft_p99_s']:.3f}"),
        ("E2E p50 / p99 s", f"{summary['e2e_p50_s']:.2f} / {summary['e2e_p99_s']:.2f}"),
        *((f"rows: {k}", f"{v:,}") for k, v in rows.items()),
        ("database MiB", f"{db_mib:,.0f}"),
    ):
        t.add_row(k, v)
    console = Console(width=120)
    console.print(t)
    if profile is not None:
        console.print(_profile_table(f"the first {min(args.profile_requests, args.requests):,} requests", profile))
    print(json.dumps({
        "wall_s": round(r["wall_s"], 2), "cpu_s": round(r["cpu_s"], 2), "peak_rss_mb": round(r["peak_rss_mb"], 1),
        "num_requests": n,
        "rows_written": sum(rows.values()), "rows": rows, "num_completed": summary["num_completed"],
        "startup_s": round(r["startup_s"], 3), "phases_s": r["phases"], "replicas": replicas,
        "rate_scale": round(scale, 4), "copies": copies, "sim_requests_per_wall_s": round(n / r["wall_s"], 1),
        "db_mib": round(db_mib, 1), "host_yardstick_us": [round(yard_before, 1), round(yard_after, 1)],
        "load_avg": _load_avg(),
        **({"profile": {"requests": min(args.profile_requests, args.requests), **profile}} if profile else {}),
    }))
    return 0


if __name__ == "__main__":
    run_main(main)
