"""A CSV export never hands a spreadsheet a formula: client-chosen text starting with = + - @ is quoted."""

from __future__ import annotations

import csv
import io

from sqlalchemy import Engine

from controlplane.storage import RunRecorder, export_rows

from .support import FINISHED, metric_row, request_row, start_run


def test_text_cells_that_start_a_formula_are_prefixed_and_numbers_are_not(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
        rec.add_request(request_row(0, model='=HYPERLINK("http://evil.example","x")', tenant="@SUM(1+1)",
                                    request_id="-2+3", reason="+cmd|' /C calc'!A0", priority=-3))
        rec.add_request(request_row(1, model="llama-8b", tenant="team-a"))
        rec.add_metric(metric_row(0, name="=1+1", value=-2.5))
        rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=3.0)
    out = io.StringIO(newline="")
    export_rows(engine, run_id, "requests", "csv", out)
    hostile, plain = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert hostile["model"] == '\'=HYPERLINK("http://evil.example","x")' and hostile["tenant"] == "'@SUM(1+1)"
    assert hostile["request_id"] == "'-2+3" and hostile["reason"].startswith("'+cmd")
    assert hostile["priority"] == "-3"  # a number stays a number
    assert (plain["model"], plain["tenant"]) == ("llama-8b", "team-a")
    out = io.StringIO(newline="")
    export_rows(engine, run_id, "metrics", "csv", out)
    (metric,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert metric["name"] == "'=1+1" and metric["value"] == "-2.5"
    out = io.StringIO()
    export_rows(engine, run_id, "requests", "jsonl", out)  # JSON carries the text as it is
    assert '"tenant": "@SUM(1+1)"' in out.getvalue() or '"tenant":"@SUM(1+1)"' in out.getvalue()
