"""Serving through a database outage: request latency before, during and after, and no row lost.

    python benchmarks/db_outage.py [--outage-s 30] [--before-s 20] [--after-s 20] [--rate 4]

Starts ``controlplane daemon --workers 2 --preset tiny-llama`` recording into a PostgreSQL
database made for the purpose (on the server of ``--admin-url``), sends a steady open-loop
stream of small completion requests over HTTP, and in the middle makes that database
unreachable for ``--outage-s`` seconds: it refuses new connections (``ALLOW_CONNECTIONS
false``) and its connections are killed every 0.2 s, while the rest of the server keeps
running. Then the database comes back, the stream goes on, the daemon drains on SIGTERM and
the run's ``request`` rows are counted: every answered request must be there exactly once.

``--max-pending-rows 50`` makes the daemon spill rows to a file during the outage (and write
them back first afterwards). Prints a table of latency percentiles by phase and ends with one JSON line: ``latency_p50_ms_normal``,
``latency_p99_ms_normal``, ``latency_p50_ms_outage``, ``latency_p99_ms_outage``, ``..._after``,
``rows_expected``, ``rows_found``, ``rows_duplicated``, and the daemon's storage log counts:
``outages_logged`` (an outage is one line when it starts, not one per failed write),
``outage_reminders_logged`` (one after a minute, two, four, ... while it lasts), ``spills_logged``
and ``write_errors_logged`` (writes refused for their data or a privilege: no outage).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # daemon_run
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from daemon_run import add_daemon_options, running_daemon  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from controlplane.storage import iter_rows, list_runs, make_engine  # noqa: E402
from controlplane.storage.errors import database_error  # noqa: E402
from controlplane.storage.outage import PostgresOutage  # noqa: E402

from bench_cli import one_line, positive_float, positive_int, run_main  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 120)
ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("CONTROLPLANE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PHASES = ("normal", "outage", "after")


@dataclass
class Sent:
    """One request of the stream: when it was sent, how long it took, what came back."""

    sent_s: float
    phase: str
    latency_s: float | None = None
    status: int | None = None
    request_ids: tuple[str, ...] = ()


def admin_engine(url: str) -> Engine:
    """An AUTOCOMMIT engine on ``url`` (--admin-url), for CREATE and DROP DATABASE: a bare
    ``postgresql://`` means psycopg 3, as for the daemon (`make_engine`)."""
    return make_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@contextlib.contextmanager
def dedicated_database(admin: Engine, keep: bool):
    """A fresh database on ``admin``'s server, yielded as its URL (``admin``'s, the database
    name changed: its host, port, user and password); dropped afterwards unless ``keep``."""
    name = f"cp_outage_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def daemon(args: argparse.Namespace, db_url: str, workdir: Path):
    """The daemon in its own process (cwd ``workdir``, where it would spill), until SIGTERM."""
    env = {}
    if args.max_pending_rows is not None:  # a small bound makes the daemon spill during the outage
        env["CONTROLPLANE_STORAGE__MAX_PENDING_ROWS"] = str(args.max_pending_rows)
    with running_daemon(["--workers", str(args.workers), "--preset", args.preset, "--db", db_url, "--pool", args.pool,
                         "--log-level", "warning"], cwd=workdir, log_path=workdir / "daemon.log", env=env) as run:
        yield run


async def stream(base: str, args: argparse.Namespace, outage: PostgresOutage) -> list[Sent]:
    """Open-loop requests at ``args.rate``/s through the three phases; the outage spans the middle one."""
    import httpx

    rng = random.Random(0)
    sent: list[Sent] = []
    tasks: list[asyncio.Task] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=args.request_timeout_s, limits=limits) as http:

        async def one(record: Sent) -> None:
            body = {"prompt": [rng.randrange(4, 200) for _ in range(args.prompt_tokens)],
                    "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True}
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{base}/v1/completions", json=body)
                record.status = r.status_code
                header = r.headers.get("x-request-id")
                record.request_ids = tuple(header.split(",")) if header else ()
            except httpx.HTTPError:
                record.status = -1
            record.latency_s = time.perf_counter() - t0

        warm = Sent(0.0, "warm-up")
        await one(warm)
        sent.append(warm)
        start = time.perf_counter()
        bounds = (args.before_s, args.before_s + args.outage_s, args.before_s + args.outage_s + args.after_s)
        next_s, phase = 0.0, 0
        while next_s < bounds[-1]:
            while next_s >= bounds[phase]:
                phase += 1
                if phase == 1:
                    await asyncio.to_thread(outage.begin)
                    console.print(f"[bold red]outage[/]: {outage.database} refuses connections for {args.outage_s:g} s")
                elif phase == 2:
                    await asyncio.to_thread(outage.end)
                    console.print(f"[bold green]restored[/] ({outage.killed} connections killed)")
            delay = start + next_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            record = Sent(next_s, PHASES[phase])
            sent.append(record)
            tasks.append(asyncio.create_task(one(record)))
            next_s += 1.0 / args.rate
        await asyncio.gather(*tasks)
    return sent


#: What the daemon's recorder logs of an outage at WARNING and above (controlplane/storage/outage_log.py:
#: the failed writes themselves only at DEBUG), key of this script's JSON -> the line's pattern.
STORAGE_LOG = {
    "outages_logged": r"storage: \S+ is unavailable \(",  # the outage's first failed write
    "outage_reminders_logged": r"storage: \S+ still unavailable after ",  # after 1 min, 2, 4, ... while it lasts
    "spills_logged": r"storage: \S+ is unavailable; \d+ rows spilled to ",  # an outage's first spill file
    "write_errors_logged": r"storage: flush to \S+ failed after ",  # refused for its data or a privilege: no outage
}


def storage_log_counts(log: str) -> dict[str, int]:
    """How many lines of the daemon's ``log`` say each `STORAGE_LOG` thing."""
    return {key: len(re.findall(pattern, log)) for key, pattern in STORAGE_LOG.items()}


def ms(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


def count_rows(db_url: str, sent: list[Sent]) -> dict[str, Any]:
    engine = make_engine(db_url)
    try:
        run = list_runs(engine, limit=1)[0]
        ids = Counter(r["request_id"] for r in iter_rows(engine, run["id"], "requests"))
    finally:
        engine.dispose()
    expected = {rid for s in sent for rid in s.request_ids}
    return {"run_id": run["id"], "run_status": run["status"], "rows_expected": len(expected),
            "rows_found": sum(1 for rid in expected if rid in ids), "rows_in_run": sum(ids.values()),
            "rows_duplicated": sum(n - 1 for n in ids.values() if n > 1)}


def check_admin(ap: argparse.ArgumentParser, url: str) -> Engine:
    """--admin-url as an engine on a server that answers (checked before the daemon starts): else
    one line naming the option."""
    from sqlalchemy.exc import DBAPIError

    try:
        admin = admin_engine(url)
    except ValueError as exc:  # a malformed URL, an unknown driver
        ap.error(f"--admin-url: {one_line(exc)}")
    if admin.url.get_backend_name() != "postgresql":
        ap.error(f"--admin-url {admin.url.render_as_string()}: not a PostgreSQL URL (the outage is PostgreSQL's)")
    try:
        with admin.connect():
            pass
    except DBAPIError as exc:  # a server that does not answer, a role or database not there
        admin.dispose()
        ap.error(f"--admin-url: {database_error(exc, url)}")
    return admin


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--outage-s", type=positive_float, default=30.0,
                    help="how long the database is unreachable, seconds (default: %(default)s)")
    ap.add_argument("--before-s", type=positive_float, default=20.0,
                    help="steady traffic before the outage, seconds (default: %(default)s)")
    ap.add_argument("--after-s", type=positive_float, default=20.0,
                    help="steady traffic after it, seconds (default: %(default)s)")
    ap.add_argument("--rate", type=positive_float, default=4.0,
                    help="requests per second, open loop (default: %(default)s)")
    ap.add_argument("--prompt-tokens", type=positive_int, default=16,
                    help="each request's prompt length in tokens (default: %(default)s)")
    ap.add_argument("--max-tokens", type=positive_int, default=8,
                    help="each request's max_tokens (default: %(default)s)")
    add_daemon_options(ap)  # --workers, --preset, --pool, --request-timeout-s
    ap.add_argument("--max-pending-rows", type=positive_int, default=None,
                    help="the daemon's storage.max_pending_rows (default: its own); small values make it spill")
    ap.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL database to create the test database from "
                                                           "(default: %(default)s)")
    ap.add_argument("--keep-db", action="store_true", help="keep the test database afterwards")
    args = ap.parse_args(argv)

    admin = check_admin(ap, args.admin_url)
    with tempfile.TemporaryDirectory() as tmp, dedicated_database(admin, args.keep_db) as db_url:
        workdir = Path(tmp)
        outage = PostgresOutage(admin, make_url(db_url).database)
        with daemon(args, db_url, workdir) as (base, proc):
            try:
                sent = asyncio.run(stream(base, args, outage))
            finally:
                if outage._thread.is_alive():
                    outage.end()
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(180)
        log = (workdir / "daemon.log").read_text()
        spills = sorted(p.name for p in workdir.glob("controlplane-spill-*"))
        rows = count_rows(db_url, sent)
    admin.dispose()

    t = Table(title=f"daemon latency through a {args.outage_s:g} s database outage "
                    f"({args.rate:g} req/s, {args.max_tokens} tokens, {args.workers} x {args.preset})")
    for col in ("phase", "requests", "ok", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    out: dict[str, Any] = {}
    for phase in PHASES:
        xs = [s.latency_s for s in sent if s.phase == phase and s.status == 200]
        n = sum(1 for s in sent if s.phase == phase)
        t.add_row(phase, str(n), str(len(xs)), *("-" if (v := ms(xs, q)) is None else str(v) for q in (50, 90, 99, 100)))
        out[f"requests_{phase}"] = n
        out[f"requests_ok_{phase}"] = len(xs)
        out[f"latency_p50_ms_{phase}"] = ms(xs, 50)
        out[f"latency_p99_ms_{phase}"] = ms(xs, 99)
    console.print(t)
    out.update(rows)
    out.update({
        "daemon_exit_code": exit_code,
        **storage_log_counts(log),
        "spill_files_left": len(spills),
        "outage_s": args.outage_s,
        "connections_killed": outage.killed,
    })
    lost = out["rows_expected"] - out["rows_found"]
    console.print(f"run {rows['run_id']} ({rows['run_status']}): {rows['rows_found']}/{rows['rows_expected']} answered "
                  f"requests stored, {rows['rows_duplicated']} duplicated, {lost} missing; "
                  f"the daemon logged {out['outages_logged']} outage(s) ({out['outage_reminders_logged']} reminders, "
                  f"{out['spills_logged']} spill(s)) and {out['write_errors_logged']} write error(s); "
                  f"{len(spills)} spill file(s) left", highlight=False)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    run_main(main)
