"""Simulated requests per wall-second of a full replay, SQL writes included.

    python benchmarks/replay_speed.py [--trace PATH --format F] [--repeats 3] [--db URL]

Replays the trace into a fresh SQLite file (or --db) and reports the wall time of the replay
call (reading the trace, simulating, recording every request, decision and metric sample, and
the final flush). Interpreter start-up, imports and creating the schema of the fresh database
are not counted.

Without ``--config`` the run config is the library's defaults (``load_config(None)``: two fixed
replicas, the linear latency model, the default plugins), not the bundled run config that
``controlplane sim replay`` uses without ``--config`` (``sim/data/default_replay.yaml``: the Vidur
latency model, the SLO planner, cold starts); ``--config sim/data/default_replay.yaml`` times that one. Ends with one JSON line: {"sim_requests_per_wall_s": <median>, ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from controlplane.config import load_config  # noqa: E402
from controlplane.errors import ConfigError  # noqa: E402
from controlplane.storage import StorageError, make_engine, upgrade  # noqa: E402
from controlplane.storage.errors import database_error  # noqa: E402
from sim.replay import replay  # noqa: E402  (imported before timing)
from sim.traces import FORMATS, bundled_trace_path  # noqa: E402

from bench_cli import check_trace, one_line, positive_int, run_main  # noqa: E402


def check_db(ap: argparse.ArgumentParser, url: str) -> None:
    """--db as a database this run can connect to (checked before the first replay): else one line naming it."""
    from sqlalchemy.exc import DBAPIError

    try:
        engine = make_engine(url)
    except (ValueError, StorageError) as exc:  # a malformed URL, an unknown driver, a folder not made
        ap.error(f"--db: {one_line(exc)}")
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:  # a server that does not answer, a file that is not a database
        ap.error(f"--db: {database_error(exc, url)}")
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", type=Path, default=None, help="trace file (default: bundled Azure code trace)")
    ap.add_argument("--format", default=None, choices=FORMATS,
                    help="trace format (default: azure for the bundled trace, else detect)")
    ap.add_argument("--repeats", type=positive_int, default=3, help="timed replays, each reported (default 3)")
    ap.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file per repeat)")
    ap.add_argument("--config", type=Path, default=None,
                    help="run config file (default: the library's defaults, two replicas and the linear latency "
                         "model; `controlplane sim replay`'s own default is sim/data/default_replay.yaml)")
    ap.add_argument("--no-record", action="store_true", help="skip SQL (simulation alone)")
    args = ap.parse_args(argv)
    if args.trace is not None:
        check_trace(ap, args.trace, args.format)
    trace = args.trace or bundled_trace_path()
    fmt = args.format or ("azure" if args.trace is None else None)
    try:  # the config (and --db in it) checked before the first replay, not at it
        load_config(args.config, {"storage": {"url": args.db or "sqlite://"}})
    except ConfigError as exc:
        ap.error(f"--config {args.config}: {one_line(exc)}" if str(args.config) not in str(exc)
                 else f"--config: {one_line(exc)}")
    if args.db is not None and not args.no_record:
        check_db(ap, args.db)
    import sim.latency.registry  # noqa: F401  (import cost is not replay cost)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            url = args.db or f"sqlite:///{tmp}/bench{i}.db"
            cfg = load_config(args.config, {"storage": {"url": url}, "seed": i})
            if not args.no_record:
                upgrade(make_engine(url))  # schema creation is set-up, not the replay's writes
            t0 = time.perf_counter()
            summary, _ = replay(trace, cfg, trace_format=fmt, record=not args.no_record)
            wall = time.perf_counter() - t0
            rows.append((i, summary["num_requests"], summary["num_completed"], wall, summary["num_requests"] / wall))
    t = Table(title=f"replay speed: {Path(trace).name} ({'no SQL' if args.no_record else 'with SQL writes'})")
    for col in ("repeat", "requests", "completed", "wall s", "sim requests / wall s"):
        t.add_column(col, justify="right")
    for i, n, c, w, r in rows:
        t.add_row(str(i), str(n), str(c), f"{w:.2f}", f"{r:,.0f}")
    Console().print(t)
    rates = [r for *_, r in rows]
    print(json.dumps({
        "sim_requests_per_wall_s": round(statistics.median(rates), 1),
        "best_sim_requests_per_wall_s": round(max(rates), 1),
        "num_requests": rows[0][1],
        "record_sql": not args.no_record,
        "trace": str(trace),
    }))
    return 0


if __name__ == "__main__":
    run_main(main)
