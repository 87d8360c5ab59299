"""Soak: the daemon under a steady mix of requests for a set time; memory, errors and rows.

    python benchmarks/soak.py [--minutes 10] [--rps 4] [--seconds S]

Starts ``controlplane daemon --workers 2 --preset tiny-llama`` on loopback, recording into a
SQLite database in a temporary directory, and drives it open-loop at ``--rps`` requests per second
(at most ``--max-requests``) with a mix of normal completions, streamed completions, streams the
client drops after the first events (the daemon must cancel them) and invalid requests (each must
get a 4xx). Every ``--rss-every`` seconds it samples the daemon process's resident memory (and
with its worker processes). At the end it SIGTERMs the daemon, counts the run's ``request`` rows,
prints a table and ends with one JSON line: ``requests_sent``, ``requests_accepted`` (2xx
answers), ``rows_recorded``, ``rows_missing`` (accepted request ids without a row),
``status_counts``, ``count_5xx``, ``count_transport_errors``, ``invalid_not_4xx``, ``rss_start_mb``,
``rss_2min_mb``, ``rss_end_mb``, ``rss_growth_pct`` (minute 2, or 20% of the run when shorter, to
the end), ``p50_ms``/``p99_ms`` (answered normal and streamed requests), ``throughput_rps``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_cli import nonnegative_float, positive_float, positive_int, run_main
from daemon_run import add_daemon_options
from db_outage import daemon, ms
from rich.console import Console
from rich.table import Table

from controlplane.storage import iter_rows, list_runs, make_engine

console = Console(width=None if sys.stdout.isatty() else 120)
KINDS = ("normal", "stream", "cancel", "invalid")


@dataclass
class Sent:
    kind: str
    sent_s: float
    status: int | None = None  # -1: transport error
    latency_s: float | None = None
    request_ids: tuple[str, ...] = ()


# --- memory ---------------------------------------------------------------------------------------

try:
    import psutil
except ImportError:  # not a dependency: /proc does on Linux
    psutil = None


def _children(pid: int) -> list[int]:
    if psutil is not None:
        try:
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(p) for p in f.read().split())
    except OSError:
        return out
    return out + [g for c in out for g in _children(c)]


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process in MiB (psutil when installed, else /proc)."""
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss / 2**20
        except psutil.Error:
            return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def sample_rss(pid: int, every_s: float, samples: list[tuple[float, float, float]], t0: float) -> None:
    while True:
        main = rss_mb(pid)
        if main is not None:
            total = main + sum(x for c in _children(pid) if (x := rss_mb(c)) is not None)
            samples.append((time.perf_counter() - t0, main, total))
        await asyncio.sleep(every_s)


# --- requests ------------------------------------------------------------------------------------

INVALID_BODIES: list[dict[str, Any] | str] = [
    {"prompt": "hello", "max_tokens": -1},
    {"prompt": "hello", "temperature": "hot"},
    {"max_tokens": 4},  # no prompt
    {"prompt": "hello", "model": "no-such-model"},
    {"prompt": "hello", "n": 10_000},
    {"prompt": [[1, 2], "x"]},
    "{not json",
]


async def drive(base: str, model: str, args: argparse.Namespace, duration_s: float) -> tuple[list[Sent], float]:
    import httpx

    rng = random.Random(args.seed)
    weights = [args.mix_normal, args.mix_stream, args.mix_cancel, args.mix_invalid]
    sent: list[Sent] = []
    tasks: list[asyncio.Task] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    url = f"{base}/v1/completions"

    def body(stream: bool, max_tokens: int) -> dict[str, Any]:
        return {"model": model, "prompt": [rng.randrange(4, 200) for _ in range(args.prompt_tokens)],
                "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": stream}

    async with httpx.AsyncClient(timeout=args.request_timeout_s, limits=limits) as http:

        async def one(rec: Sent) -> None:
            t0 = time.perf_counter()
            try:
                if rec.kind == "invalid":
                    bad = rng.choice(INVALID_BODIES)
                    if isinstance(bad, str):
                        r = await http.post(url, content=bad, headers={"content-type": "application/json"})
                    else:
                        r = await http.post(url, json=bad)
                    rec.status = r.status_code
                elif rec.kind == "normal":
                    r = await http.post(url, json=body(False, args.max_tokens))
                    rec.status = r.status_code
                    rec.request_ids = _ids(r.headers)
                else:
                    cancel = rec.kind == "cancel"
                    req = body(True, args.max_tokens * 4 if cancel else args.max_tokens)
                    async with http.stream("POST", url, json=req) as r:
                        rec.status = r.status_code
                        rec.request_ids = _ids(r.headers)
                        events = 0
                        async for line in r.aiter_lines():
                            if line.startswith("data:"):
                                events += 1
                                if cancel and events >= 2:
                                    break  # leaving the block closes the connection mid-stream
            except httpx.HTTPError:
                rec.status = -1
            rec.latency_s = time.perf_counter() - t0

        start = time.perf_counter()
        next_s = 0.0
        while next_s < duration_s and len(sent) < args.max_requests:
            delay = start + next_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = Sent(rng.choices(KINDS, weights)[0], next_s)
            sent.append(rec)
            tasks.append(asyncio.create_task(one(rec)))
            next_s += 1.0 / args.rps
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return sent, elapsed


def _ids(headers: Any) -> tuple[str, ...]:
    header = headers.get("x-request-id")
    return tuple(h.strip() for h in header.split(",") if h.strip()) if header else ()


def count_rows(db_url: str, sent: list[Sent]) -> dict[str, Any]:
    """The run's request rows, and the accepted requests' ids that have none."""
    engine = make_engine(db_url)
    try:
        run = list_runs(engine, limit=1)[0]
        rows = [r for r in iter_rows(engine, run["id"], "requests")]
    finally:
        engine.dispose()
    ids = Counter(r["request_id"] for r in rows)
    accepted = {rid for s in sent if s.status is not None and 200 <= s.status < 300 for rid in s.request_ids}
    return {"run_id": run["id"], "run_status": run["status"], "rows_recorded": len(rows),
            "rows_missing": sum(1 for rid in accepted if rid not in ids),
            "rows_duplicated": sum(n - 1 for n in ids.values() if n > 1),
            "row_status_counts": dict(Counter(r["status"] for r in rows))}


def rss_at(samples: list[tuple[float, float, float]], t: float, col: int = 1) -> float | None:
    if not samples:
        return None
    return round(min(samples, key=lambda s: abs(s[0] - t))[col], 1)


def kinds_table(sent: list[Sent], title: str) -> Table:
    """Each kind's requests by status, and the latency of its 2xx answers ("-": none, as for the
    invalid requests, which must all get a 4xx)."""
    t = Table(title=title)
    for col in ("kind", "sent", "2xx", "4xx", "5xx", "errors", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for kind in KINDS:
        mine = [s for s in sent if s.kind == kind]
        lat = [s.latency_s for s in mine if s.status is not None and 200 <= s.status < 300 and s.latency_s is not None]
        t.add_row(kind, str(len(mine)), *(str(sum(1 for s in mine if s.status is not None and lo <= s.status < lo + 100))
                                          for lo in (200, 400, 500)),
                  str(sum(1 for s in mine if s.status == -1)),
                  *("-" if (v := ms(lat, q)) is None else str(v) for q in (50, 99)))
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--minutes", type=positive_float, default=10.0,
                    help="how long to drive the daemon (default: %(default)s)")
    ap.add_argument("--seconds", type=positive_float, default=None,
                    help="overrides --minutes, for quick runs (default: --minutes)")
    ap.add_argument("--rps", type=positive_float, default=4.0,
                    help="requests per second, open loop (default: %(default)s)")
    ap.add_argument("--max-requests", type=positive_int, default=None,
                    help="stop sending after this many (default: rps x time)")
    ap.add_argument("--prompt-tokens", type=positive_int, default=16,
                    help="each request's prompt length in tokens (default: %(default)s)")
    ap.add_argument("--max-tokens", type=positive_int, default=8,
                    help="for normal and streamed requests; dropped streams: 4x (default: %(default)s)")
    ap.add_argument("--mix-normal", type=nonnegative_float, default=0.5,
                    help="weight of plain requests among the --mix-* (default: %(default)s)")
    ap.add_argument("--mix-stream", type=nonnegative_float, default=0.25,
                    help="weight of streamed requests (default: %(default)s)")
    ap.add_argument("--mix-cancel", type=nonnegative_float, default=0.1,
                    help="weight of streams the client drops midway (default: %(default)s)")
    ap.add_argument("--mix-invalid", type=nonnegative_float, default=0.15,
                    help="weight of invalid requests, each to be answered 4xx (default: %(default)s)")
    add_daemon_options(ap)  # --workers, --preset, --pool, --request-timeout-s
    ap.add_argument("--rss-every", type=positive_float, default=5.0,
                    help="seconds between memory samples (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the request mix (default: %(default)s)")
    args = ap.parse_args(argv)
    if not any(getattr(args, f"mix_{kind}") for kind in KINDS):
        ap.error("--mix-normal, --mix-stream, --mix-cancel, --mix-invalid: give at least one a weight > 0")
    args.max_pending_rows = None  # db_outage.daemon reads it: the daemon's own default
    duration_s = args.seconds if args.seconds is not None else args.minutes * 60
    if args.max_requests is None:
        args.max_requests = max(1, math.ceil(duration_s * args.rps))

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db_url = f"sqlite:///{workdir / 'soak.db'}"
        with daemon(args, db_url, workdir) as (base, proc):
            samples: list[tuple[float, float, float]] = []

            async def run() -> tuple[list[Sent], float]:
                t0 = time.perf_counter()
                sampler = asyncio.create_task(sample_rss(proc.pid, args.rss_every, samples, t0))
                try:
                    return await drive(base, args.preset, args, duration_s)
                finally:
                    sampler.cancel()
                    samples.append((time.perf_counter() - t0, rss_mb(proc.pid) or math.nan,
                                    (rss_mb(proc.pid) or math.nan)
                                    + sum(x for c in _children(proc.pid) if (x := rss_mb(c)) is not None)))

            sent, elapsed = asyncio.run(run())
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(180)
        log = (workdir / "daemon.log").read_text(errors="replace")
        rows = count_rows(db_url, sent)

    statuses = Counter(s.status for s in sent)
    ok = [s.latency_s for s in sent if s.kind in ("normal", "stream") and s.status == 200 and s.latency_s is not None]
    console.print(kinds_table(sent, f"soak: {duration_s:g} s at {args.rps:g} req/s, {args.workers} x {args.preset} "
                                    f"({args.pool} pool)"))
    m = Table(title="daemon resident memory (MiB)")
    for col in ("t s", "daemon", "with workers"):
        m.add_column(col, justify="right")
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else []):
        m.add_row(f"{s[0]:.0f}", f"{s[1]:.1f}", f"{s[2]:.1f}")
    console.print(m)

    ref_t = 120.0 if duration_s >= 240 else duration_s * 0.2
    rss_ref, rss_end = rss_at(samples, ref_t), (round(samples[-1][1], 1) if samples else None)
    out: dict[str, Any] = {
        "duration_s": round(elapsed, 1),
        "rps_target": args.rps,
        "requests_sent": len(sent),
        "requests_accepted": sum(1 for s in sent if s.status is not None and 200 <= s.status < 300),
        "rows_recorded": rows["rows_recorded"],
        "rows_missing": rows["rows_missing"],
        "rows_duplicated": rows["rows_duplicated"],
        "row_status_counts": rows["row_status_counts"],
        "status_counts": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: kv[0] or 0)},
        "count_5xx": sum(v for k, v in statuses.items() if k is not None and k >= 500),
        "count_transport_errors": statuses.get(-1, 0),
        "invalid_not_4xx": sum(1 for s in sent if s.kind == "invalid" and not (s.status and 400 <= s.status < 500)),
        "throughput_rps": round(len(sent) / elapsed, 2) if elapsed else None,
        "p50_ms": ms(ok, 50),
        "p99_ms": ms(ok, 99),
        "rss_start_mb": round(samples[0][1], 1) if samples else None,
        "rss_2min_mb": rss_at(samples, 120.0) if duration_s >= 120 else None,
        "rss_ref_s": ref_t,
        "rss_end_mb": rss_end,
        "rss_growth_pct": round(100 * (rss_end - rss_ref) / rss_ref, 2) if rss_ref and rss_end else None,
        "rss_total_start_mb": round(samples[0][2], 1) if samples else None,
        "rss_total_end_mb": round(samples[-1][2], 1) if samples else None,
        "run_id": rows["run_id"],
        "run_status": rows["run_status"],
        "daemon_exit_code": exit_code,
        "daemon_log_errors": sum(1 for line in log.splitlines() if " ERROR " in line or "Traceback" in line),
    }
    console.print(f"run {out['run_id']} ({out['run_status']}): {out['requests_accepted']} accepted, "
                  f"{out['rows_recorded']} rows recorded, {out['rows_missing']} missing; "
                  f"{out['count_5xx']} 5xx; RSS {out['rss_start_mb']} -> {out['rss_end_mb']} MiB", highlight=False)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    run_main(main)
