"""`controlplane runs report RUN|--sweep ID --html out.html`: a self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from controlplane.cli.common import DB_READ_HELP, err, open_stored_runs, out, user_errors


def report(
    run_id: Annotated[Optional[int], typer.Argument(help="The run to report on (or --sweep).", metavar="RUN")] = None,
    sweep: Annotated[Optional[int], typer.Option("--sweep", help="Report on a sweep or search instead.")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help=DB_READ_HELP)] = None,
    html: Annotated[Path, typer.Option("--html", "--output", "-o",
                                       help="The HTML file to write (- or /dev/stdout: to stdout, after what a "
                                            "shell's >> or { ...; } > FILE put there); an existing one is replaced "
                                            "once the report is complete; an -o naming the database being read "
                                            "(--db) is refused.")]
    = Path("report.html"),
) -> None:
    """Write a self-contained HTML report (plots embedded, no network needed to view it).

    A run: summary, latency CDFs, per-minute throughput and latency, replicas and queue over
    time, the decision timeline. A sweep: the Pareto front of cost against SLO attainment and a
    sortable table of its runs.
    """
    from controlplane.output_file import writes_to_stdout
    from controlplane.report import write_report

    if (run_id is None) == (sweep is None):
        raise typer.BadParameter("give a run id or --sweep ID (not both)")
    with user_errors():
        engine = open_stored_runs(db)
        try:
            path = write_report(engine, html, run_id=run_id, sweep_id=sweep, option="--html")
        finally:
            engine.dispose()
    what = f"run {run_id}" if run_id is not None else f"sweep {sweep}"
    said = err if writes_to_stdout(path) else out  # (stdout holds the report alone)
    said.print(f"wrote the report of {what} to {'stdout' if str(path) == '-' else path}", highlight=False)
