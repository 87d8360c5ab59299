"""`controlplane runs ...`: list, show, compare and export stored runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from controlplane.cli.common import DB_OPTION_HELP, fmt_value, out, resolve_db, user_errors
from controlplane.cli.summary_table import compare_table, summary_table

app = typer.Typer(help="Inspect, compare and export stored runs.", no_args_is_help=True)

DbOpt = Annotated[Optional[str], typer.Option("--db", help=DB_OPTION_HELP)]


def _engine(db: str | None):
    from controlplane.storage import ensure_schema, make_engine

    engine = make_engine(resolve_db(db))
    ensure_schema(engine)
    return engine


@app.command("list")
def list_(db: DbOpt = None, limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20) -> None:
    """List recent runs."""
    from controlplane.storage import list_runs

    with user_errors():
        rows = list_runs(_engine(db), limit=limit)
    t = Table(header_style="bold")
    for col in ("id", "name", "mode", "status", "trace", "requests", "completed", "e2e p50 (s)", "started"):
        t.add_column(col)
    for r in rows:
        s = r.get("summary") or {}
        t.add_row(
            str(r["id"]), fmt_value(r.get("name")), r["mode"], r["status"], Path(r.get("trace") or "-").name,
            fmt_value(s.get("num_requests")), fmt_value(s.get("num_completed")), fmt_value(s.get("e2e_p50_s")),
            r["started_at"].strftime("%Y-%m-%d %H:%M:%S") if r.get("started_at") else "-",
        )
    out.print(t)


@app.command()
def show(run_id: int, db: DbOpt = None) -> None:
    """Show one run: its summary, plugins and decision counts."""
    from controlplane.storage import decision_counts, get_run

    with user_errors():
        engine = _engine(db)
        run = get_run(engine, run_id)
        counts = decision_counts(engine, run_id)
    out.print(f"[bold]run {run_id}[/] {run.get('name') or ''} mode={run['mode']} status={run['status']} "
              f"seed={run.get('seed')} trace={run.get('trace')}")
    if run.get("summary"):
        out.print(summary_table(run["summary"], f"run {run_id}"))
    plugins = run.get("plugins") or []
    if plugins:
        out.print("plugins: " + ", ".join(f"{p['name']} {p.get('version') or ''}".strip() for p in plugins))
    if counts:
        t = Table(title="decisions", header_style="bold")
        keys = list(counts[0].keys())
        for k in keys:
            t.add_column(k)
        for c in counts:
            t.add_row(*(fmt_value(c[k]) for k in keys))
        out.print(t)


@app.command()
def compare(run_a: int, run_b: int, db: DbOpt = None) -> None:
    """Compare two runs side by side, with deltas (B - A)."""
    from controlplane.storage import get_run

    with user_errors():
        engine = _engine(db)
        a, b = get_run(engine, run_a), get_run(engine, run_b)
    for r in (a, b):
        if not r.get("summary"):
            raise typer.BadParameter(f"run {r['id']} has no summary (status {r['status']})")
    out.print(compare_table(a["summary"], b["summary"], f"run {run_a}", f"run {run_b}"))


@app.command()
def export(
    run_id: int,
    db: DbOpt = None,
    what: Annotated[str, typer.Option(help="requests | decisions | metrics | worker_events | iterations")] = "requests",
    format: Annotated[str, typer.Option("--format", help="csv | json | jsonl")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Export one run's rows as CSV or JSON."""
    from controlplane.storage import export_rows, get_run

    with user_errors():
        engine = _engine(db)
        get_run(engine, run_id)
        if output is None:
            export_rows(engine, run_id, what, format, sys.stdout)
        else:
            with output.open("w", newline="") as f:
                n = export_rows(engine, run_id, what, format, f)
            out.print(f"wrote {n} rows to {output}", highlight=False)
