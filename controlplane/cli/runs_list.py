"""`controlplane runs list` and `controlplane runs sweeps`: the stored runs and sweeps, newest first, as a
table that fits the terminal (`controlplane.cli.tables`) or, with ``--json``, as JSON (one array)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from controlplane.cli.common import DB_READ_HELP, err, fmt_value, open_stored_runs, out, user_errors
from controlplane.cli.runs_notes import rows_refused, stopped_early, transforms_unknown
from controlplane.cli.tables import TEXT, WHOLE, WORDS, fitted

DbOpt = Annotated[Optional[str], typer.Option("--db", help=DB_READ_HELP)]
RunArg = Annotated[int, typer.Argument(help="The run's id (`runs list`).", metavar="RUN", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON array (an object a row) instead of the table.")]


def _status(value: str | None) -> str | None:
    from controlplane.errors import did_you_mean
    from controlplane.storage.columns import RUN_STATUSES

    if value is None or value in RUN_STATUSES:
        return value
    raise typer.BadParameter(f"unknown status {value!r}{did_you_mean(value, RUN_STATUSES)}; "
                             f"statuses: {', '.join(sorted(RUN_STATUSES))}")


StatusOpt = Annotated[Optional[str], typer.Option(
    "--status", callback=_status, help="Only those of this status: running, finished, failed, interrupted, crashed.")]

#: The run row's columns `runs list --json` gives as they are (the config, summary and notes are `runs show
#: --json`'s).
_RUN_FIELDS = ("id", "name", "mode", "status", "trace", "trace_format", "seed", "sweep_id", "started_at",
               "finished_at", "wall_s", "sim_end_s")


def jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default``: a date as ISO 8601, anything else as its text."""
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


LimitOpt = Annotated[int, typer.Option(min=0, help="How many, newest first (0: all).")]


def list_(db: DbOpt = None, limit: LimitOpt = 20, status: StatusOpt = None,
          sweep: Annotated[Optional[int], typer.Option("--sweep", help="Only the runs of this sweep or search "
                                                                      "(`runs sweeps`).")] = None,
          name: Annotated[Optional[str], typer.Option("--name", help="Only the runs whose name holds this text "
                                                                     "(any case).")] = None,
          json_out: JsonOpt = False) -> None:
    """List recent runs (--status crashed: those whose process was killed; --sweep, --name: of a sweep, by name;
    --limit 0: all). A crashed run's requests, completed and e2e p50 (marked *) are counted from the request rows
    it recorded (its summary was never written)."""
    from controlplane.storage import list_runs
    from controlplane.storage.queries import recorded_figures

    with user_errors():
        engine = open_stored_runs(db)
        rows = list_runs(engine, limit=None if limit == 0 or name is not None else limit, status=status,
                         sweep_id=sweep)
        if name is not None:  # (the newest `limit` of those named so: the name is matched here, then cut)
            rows = [r for r in rows if name.casefold() in (r.get("name") or "").casefold()][:limit or None]
        counted = {r["id"]: recorded_figures(engine, r["id"]) for r in rows if _unsummarised_crash(r)}
    if json_out:
        typer.echo(json.dumps([_run_json(r, counted.get(r["id"])) for r in rows], default=jsonable))
        return
    t = Table(header_style="bold")
    for col in ("id", "name", "mode", "status", "trace", "requests", "completed", "e2e p50 (s)", "started"):
        t.add_column(col)
    for r in rows:
        s = r.get("summary") or {}
        figures = [fmt_value(s.get("num_requests", s.get("requests_recorded"))),  # (a crashed run: the rows it wrote)
                   fmt_value(s.get("num_completed")), fmt_value(s.get("e2e_p50_s"))]
        if r["id"] in counted:  # (each of the three counted from its rows: marked *, as --help says)
            c = counted[r["id"]]
            figures = [f"{fmt_value(c[k])}*" if c[k] is not None else "-"
                       for k in ("num_requests", "num_completed", "e2e_p50_s")]
        t.add_row(
            str(r["id"]), Text(fmt_value(r.get("name"))), r["mode"], _status_cell(r),
            Text(_trace_cell(r)), *figures,
            r["started_at"].strftime("%Y-%m-%d %H:%M:%S") if r.get("started_at") else "-",
        )
    if not rows:  # (not an empty table's frame)
        which = [f"of sweep {sweep}"] if sweep is not None else []
        which += [f"named *{name}*"] if name is not None else []
        err.print(" ".join(["no", *([status] if status else []), "runs", *which, "stored"]), highlight=False)
        return
    # (on a narrow terminal the name and trace fold: numbers, ids and dates are never cut)
    out.print(fitted(t, out.width, (WHOLE, TEXT, WHOLE, WORDS, TEXT, WHOLE, WHOLE, WHOLE, WORDS)))
    if counted:
        out.print("* a crashed run: requests, completed and e2e p50 counted from the request rows it recorded (its "
                  "summary was never written; requests it had not recorded when its process died are not among "
                  "them)", highlight=False)


def _run_json(run: dict, counted: dict | None) -> dict[str, Any]:
    """A run as `runs list --json` gives it: its row's columns, then the table's figures (``counted_from_rows``:
    a crashed run's, counted from the request rows it recorded) and the status's notes."""
    s = run.get("summary") or {}
    found = {k: run.get(k) for k in _RUN_FIELDS}
    found.update(num_requests=s.get("num_requests", s.get("requests_recorded")), num_completed=s.get("num_completed"),
                 e2e_p50_s=s.get("e2e_p50_s"), counted_from_rows=counted is not None,
                 status_notes=_status_notes(run), trace_read=(run.get("config") or {}).get("trace_read"))
    if counted is not None:
        found.update(num_requests=counted["num_requests"], num_completed=counted["num_completed"],
                     e2e_p50_s=counted["e2e_p50_s"])
    return found


def _trace_cell(run: dict) -> str:
    """The trace's file name, and how the run read it (``config["trace_read"]``: its transforms, then its format
    options, as `runs show`'s "trace read" line), compactly: ``code.csv (window_end_s=600, rate_scale=3)``; runs
    that replayed other traffic from the same file are told apart. ``(transforms unknown)`` where they were not
    stored (`transforms_unknown`)."""
    read = (run.get("config") or {}).get("trace_read") or {}
    how = [f"{k}={_short(v)}" for k, v in {**(read.get("transforms") or {}), **(read.get("options") or {})}.items()]
    if transforms_unknown(run):  # (a run of an old release, which did not store them: not "read as it is")
        how.append("transforms unknown")
    return Path(run.get("trace") or "-").name + (f" ({', '.join(how)})" if how else "")


def _short(value: Any) -> str:
    """A transform's or option's value: ``3`` for 3.0, a float's every digit, text as is, anything else as JSON."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value if isinstance(value, str) else json.dumps(value)


def _unsummarised_crash(run: dict) -> bool:
    """A run whose process died before its summary was written (`controlplane.storage.crashed`)."""
    s = run.get("summary") or {}
    return run["status"] == "crashed" and bool(s.get("crashed")) and "num_completed" not in s


def _status_notes(run: dict) -> list[str]:
    """Where a finished run stopped at its ``--until`` (not the whole trace), and the rows the database refused
    (`rows_refused`: stored without them)."""
    return [n for n in (stopped_early(run) if run["status"] == "finished" else None, rows_refused(run)) if n]


def _status_cell(run: dict) -> str:
    notes = _status_notes(run)
    return f"{run['status']} ({'; '.join(notes)})" if notes else run["status"]


def sweeps(db: DbOpt = None, limit: LimitOpt = 20, status: StatusOpt = None, json_out: JsonOpt = False) -> None:
    """List recent sweeps and searches: status ("failed": stopped on an error, or some of its runs
    failed, each listed by `runs report --sweep`; "crashed": its process was killed; run the same
    spec again to resume a sweep, or to start a search afresh) and runs finished."""
    from controlplane.storage import list_sweeps

    with user_errors():
        rows = list_sweeps(open_stored_runs(db), limit=limit or None, status=status)
    if json_out:  # (each sweep's row: id, name, kind, status, num_runs, runs_finished, created_at, finished_at)
        typer.echo(json.dumps(rows, default=jsonable))
        return
    t = Table(header_style="bold")
    for col in ("id", "name", "kind", "status", "runs finished", "created", "ended"):
        t.add_column(col)
    for r in rows:  # (a search's number of runs is known when it ends: "-" until then)
        t.add_row(str(r["id"]), Text(fmt_value(r.get("name"))), r["kind"], r["status"],
                  f"{r['runs_finished']}/{r['num_runs'] if r.get('num_runs') is not None else '-'}",
                  *(r[k].strftime("%Y-%m-%d %H:%M:%S") if r.get(k) else "-" for k in ("created_at", "finished_at")))
    if not rows:  # (not an empty table's frame)
        err.print(f"no {status} sweeps or searches stored" if status else "no sweeps or searches stored", highlight=False)
        return
    out.print(fitted(t, out.width, (WHOLE, TEXT, WHOLE, WORDS, WHOLE, WORDS, WORDS)))
