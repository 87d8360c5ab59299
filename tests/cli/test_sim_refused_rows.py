"""`controlplane sim replay` of a trace that repeats request ids: a run names its requests by id
(its stored rows, `runs compare`'s pairs), so the repeat is the row's error, naming the file, the
line and the field, and never a run whose counts and stored rows disagree; `--opt on_error=skip`
leaves it out and counts it, as any bad row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import iter_rows, make_engine
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def _trace_repeating_ids(path: Path) -> Path:
    """39 requests, then ids 0 and 1 again, long after the first ones finished (the canonical format)."""
    lines = ["request_id,arrival_s,prompt_tokens,output_tokens"]
    lines += [f"{i},{i * 0.5:.3f},{100 + 7 * i},{8 + i % 5}" for i in range(39)]
    lines += ["0,100,176,13", "1,100.032,2672,8"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("rows", [["0,100,176,13", "1,100.032,2672,8"],  # after the first ones finished
                                  ["38,19.01,500,100"]])  # while the first one is in flight
def test_a_repeated_request_id_is_the_rows_error_naming_file_line_and_field(tmp_path: Path, rows) -> None:
    trace = _trace_repeating_ids(tmp_path / "dup.csv")
    trace.write_text("\n".join(trace.read_text().splitlines()[:40] + rows) + "\n")
    result = CliRunner().invoke(app, ["sim", "replay", str(trace), "--db", f"sqlite:///{tmp_path / 'runs.db'}",
                                      "--no-progress"])
    assert result.exit_code == 2, result.output
    rid = rows[0].split(",")[0]
    assert (f"error: {trace}:41: field 'request_id': duplicate request id {rid!r}: an earlier row has it (request "
            "ids must be unique in a trace)") in " ".join(result.stderr.split())
    assert not list(tmp_path.glob("controlplane-refused-*")) and not list(Path.cwd().glob("controlplane-refused-*"))


def test_repeated_request_ids_skipped_are_counted_and_the_run_agrees_with_its_rows(tmp_path: Path) -> None:
    trace = _trace_repeating_ids(tmp_path / "dup.csv")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "replay", str(trace), "--opt", "on_error=skip", "--db", db, "--json",
                                      "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary["num_requests"] == summary["num_completed"] == 39
    assert summary["trace_rows_left_out"] == {"bad rows skipped": 2}
    assert summary["trace_bad_rows"][1] == (f"{trace}:42: field 'request_id': duplicate request id '1': an earlier "
                                            "row has it (request ids must be unique in a trace)")
    assert "refused" not in result.stderr
    engine = make_engine(db)
    try:
        stored = [r["request_id"] for r in iter_rows(engine, 1, "requests")]
    finally:
        engine.dispose()
    assert sorted(stored, key=int) == [str(i) for i in range(39)]


@pytest.mark.postgres
def test_a_run_whose_rows_an_id_sequence_behind_refused_does_not_look_complete(pg_url, tmp_path: Path,  # noqa: F811
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`ALTER SEQUENCE request_id_seq RESTART WITH 1`, then a replay of 200 requests: 101 rows stored, and the run
    said "finished", exit 0, `runs list` 200 completed, the warning blaming the trace for repeating ids."""
    from sqlalchemy import text

    monkeypatch.chdir(tmp_path)  # (the refused file goes to the working directory)

    first = CliRunner().invoke(app, ["sim", "replay", "--limit", "100", "--db", pg_url, "--json", "--no-progress"])
    assert first.exit_code == 0, first.output
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER SEQUENCE request_id_seq RESTART WITH 1"))
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "200", "--db", pg_url, "--json", "--no-progress"])
    assert result.exit_code == 1, (result.output, result.exception)  # (not 0: rows are missing)
    summary = json.loads(result.stdout)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM request WHERE run_id = 2")).scalar()
        noted = conn.execute(text("SELECT summary FROM run WHERE id = 2")).scalar()["rows_refused"]
    engine.dispose()
    assert summary["num_completed"] == 200 and summary["rows_refused"] == noted == {"request": 200 - stored} != {}
    said = " ".join(result.stderr.split())
    assert f"warning: run 2: the database refused {200 - stored} request row(s): the run's stored rows lack them" in said
    assert "the request table's id sequence is behind its stored ids" in said and "setval(" in said
    assert "repeats id" not in said, said
    listed = CliRunner().invoke(app, ["runs", "list", "--db", pg_url])
    assert f"finished ({200 - stored} rows refused)" in listed.stdout, listed.stdout
    shown = " ".join(CliRunner().invoke(app, ["runs", "show", "2", "--db", pg_url]).stdout.split())
    assert f"the database refused {200 - stored} request row(s) of this run: its stored rows lack them" in shown
    exported = CliRunner().invoke(app, ["runs", "export", "2", "--db", pg_url, "--what", "requests"])
    assert f"note: run 2 is missing rows, {200 - stored} rows refused by the database" in exported.stderr
    assert len(list(tmp_path.glob("controlplane-refused-run2-*"))) == 1
