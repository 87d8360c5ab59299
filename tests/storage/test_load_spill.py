"""`controlplane db load-spill`: a spill file's rows go to their own database and their own run, or
nowhere (the file then kept); the database is recognised however its URL is spelt."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from controlplane.storage import RunRecorder, get_run, make_engine, spill, upgrade
from controlplane.storage.identity import database_identity, same_database
from controlplane.storage.load_spill import main

from .support import request_row, start_run
from .test_crashed import _spilled_run


def _other_database_with_run_1(path) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        run_id = start_run(rec, name="colleague", started_at=datetime(2024, 1, 1, tzinfo=timezone.utc))
        rec.add_request(request_row(7))
    engine.dispose()
    assert run_id == 1
    return url


def test_a_spill_is_not_loaded_into_another_database(tmp_path, capsys) -> None:
    """It wrote the rows into the colleague's run 1 of the other database and deleted the file."""
    engine, run_id, spilled = _spilled_run(tmp_path)
    header = spill.read_header(spilled)
    assert header["database"] == f"sqlite:{(tmp_path / 'runs.db').resolve()}"
    assert header["runs"][str(run_id)]["name"] == "unit"
    other = _other_database_with_run_1(tmp_path / "other.db")

    assert main([str(spilled), "--db", other]) == 2
    err = capsys.readouterr().err
    assert "--db names another one" in err and "nothing was written, and the file is kept" in err
    assert spilled.exists()
    other_engine = make_engine(other)
    with other_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request WHERE run_id = 1")).scalar() == 1
    assert get_run(other_engine, 1)["name"] == "colleague"
    other_engine.dispose()

    assert main([str(spilled), "--db", str(engine.url)]) == 0  # (its own database: written, then deleted)
    assert get_run(engine, run_id)["status"] == "finished" and not spilled.exists()
    engine.dispose()


def test_a_spill_is_not_loaded_into_another_run_of_the_same_id(tmp_path, capsys) -> None:
    """The run the file's header names (its name and start) must be the run of that id there."""
    engine, run_id, spilled = _spilled_run(tmp_path)
    with engine.begin() as conn:  # (the database was made anew, and another run took the id)
        conn.execute(text("UPDATE run SET name = 'another', started_at = '2024-01-01 00:00:00.000000' "
                          "WHERE id = :id"), {"id": run_id})
    assert main([str(spilled)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"holds rows of run {run_id} 'unit' started" in err and f"but run {run_id} there is 'another'" in err
    assert "nothing was written" in err and spilled.exists()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request")).scalar() == 1  # (the one flushed before)
    assert get_run(engine, run_id)["status"] == "running"
    engine.dispose()


def test_a_spill_of_an_older_version_without_its_runs_is_still_loaded(tmp_path) -> None:
    engine, run_id, spilled = _spilled_run(tmp_path)
    lines = spilled.read_text().splitlines()
    header = json.loads(lines[0])
    del header["runs"], header["database"]
    spilled.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert main([str(spilled)]) == 0 and get_run(engine, run_id)["status"] == "finished"
    engine.dispose()


def test_database_identity_ignores_the_spelling(tmp_path, monkeypatch) -> None:
    a = "postgresql+psycopg://postgres@127.0.0.1:5432/t_a"
    for same in ("postgresql://someone:secret@localhost/t_a", "postgresql+psycopg2://u:***@LOCALHOST:5432/t_a",
                 "postgresql+psycopg://u@[::1]:5432/t_a", "postgresql+psycopg:///t_a?host=/var/run/postgresql"):
        assert same_database(a, same), same
    for other in ("postgresql+psycopg://postgres@127.0.0.1:5432/t_b", "postgresql+psycopg://postgres@db:5432/t_a",
                  "postgresql+psycopg://postgres@127.0.0.1:5433/t_a", "sqlite:///t_a"):
        assert not same_database(a, other), other
    # (another port of the same host: pgbouncer's, a port-forward's; another host or database still another one)
    assert same_database(a, "postgresql+psycopg://postgres@localhost:18120/t_a", any_port=True)
    for other in ("postgresql+psycopg://postgres@127.0.0.1:18120/t_b", "postgresql+psycopg://postgres@db:5432/t_a",
                  "sqlite:///t_a"):
        assert not same_database(a, other, any_port=True), other
    monkeypatch.chdir(tmp_path)
    assert database_identity("sqlite:///runs.db") == database_identity(f"sqlite:///{tmp_path}/runs.db")
    assert database_identity(make_url("sqlite://")) == "sqlite::memory:"


@pytest.mark.postgres
def test_a_postgres_spill_loads_with_a_url_spelt_otherwise_and_not_into_another(pg_url, pg_admin, tmp_path,
                                                                              capsys) -> None:
    """--db supplies a hidden password, so its spelling differs from the header's: the database counts."""
    engine = make_engine(pg_url)
    upgrade(engine)
    rec = RunRecorder(engine)
    run_id = start_run(rec)
    path = spill.write_spill([("request", request_row(0, run_id=run_id), None)], directories=[tmp_path], run_ids=[run_id],
                             source=pg_url.replace("postgres@", "postgres:***@"), runs=rec.run_identities)
    rec.close()
    other_name = make_url(pg_url).database + "_b"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{other_name}"'))
    try:
        other = make_url(pg_url).set(database=other_name).render_as_string(hide_password=False)
        upgrade(other)
        assert main([str(path), "--db", other]) == 2 and path.exists()
        assert "--db names another one" in capsys.readouterr().err
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{other_name}" WITH (FORCE)'))
    spelt = make_url(pg_url).set(host="localhost", drivername="postgresql").render_as_string(hide_password=False)
    assert main([str(path), "--db", spelt]) == 0 and not path.exists()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request")).scalar() == 1
    engine.dispose()


@pytest.mark.postgres
def test_a_postgres_spill_loads_through_another_port_and_host_name_with_same_database(pg_url, tmp_path,
                                                                                     capsys) -> None:
    """A run that spilled through pgbouncer (:18120) was refused loading at :5432, 'holds rows of the database
    ...:18120/..., and --db names another one'; a tunnel's other host name is taken with --same-database."""
    from typer.testing import CliRunner

    from controlplane.cli import app

    engine = make_engine(pg_url)
    upgrade(engine)
    rec = RunRecorder(engine)
    run_id = start_run(rec)
    paths = []
    for host, port in (("127.0.0.1", 18120), ("db.internal", 5432)):
        source = make_url(pg_url).set(host=host, port=port).render_as_string(hide_password=False)
        paths.append(spill.write_spill([("request", request_row(len(paths), run_id=run_id), None)],
                                       directories=[tmp_path], run_ids=[run_id], source=source,
                                       runs=rec.run_identities))
    rec.close()
    through_port, through_tunnel = paths
    assert main([str(through_port), "--db", pg_url]) == 0 and not through_port.exists()
    assert main([str(through_tunnel), "--db", pg_url]) == 2 and through_tunnel.exists()
    assert "add --same-database" in capsys.readouterr().err
    alone = CliRunner().invoke(app, ["db", "load-spill", str(through_tunnel), "--same-database"])
    assert alone.exit_code == 2 and "--same-database goes with --db" in alone.output
    done = CliRunner().invoke(app, ["db", "load-spill", str(through_tunnel), "--db", pg_url, "--same-database"])
    assert done.exit_code == 0, done.output
    assert not through_tunnel.exists()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request WHERE run_id = :id"), {"id": run_id}).scalar() == 2
    engine.dispose()


def _daemon_spills(tmp_path):
    """A daemon's recorder (its own thread writes) through an outage: rows past max_pending_rows
    spilled during it, then the rest and the run's end at its close. The overflow file's header
    (read before the close folds it into the close's file) and the close's file."""
    from pathlib import Path

    from controlplane.storage import StorageError

    from .support import FINISHED
    from .test_failures import WriteLock

    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    upgrade(engine)
    rec = RunRecorder(engine, max_retries=0, close_wait_s=0, background=True, max_pending_rows=2)
    run_id = start_run(rec, name=None, mode="live", started_at=datetime.now(timezone.utc))  # (a daemon's: no name)
    lock = WriteLock(path)
    try:
        for i in range(5):
            rec.add_request(request_row(i))
        assert not rec.flush(patient=False) and len(rec.spilled) == 1  # (the outage's spill)
        overflow = spill.read_header(rec.spilled[0])
        rec.finish_run(run_id, status="finished", summary={"num_requests": 5}, finished_at=FINISHED, wall_s=1.0,
                       sim_end_s=2.0)
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    engine.dispose()
    return path, run_id, overflow, Path(info.value.spill_path)


def test_a_daemons_spills_go_into_no_run_of_its_database_made_anew(tmp_path, capsys) -> None:
    """The operator's case: the database dropped and made again under its name while a daemon ran, the
    daemon spilled at its close, a new daemon's run took id 1 there; loading the spill wrote its rows
    into the new run 1 (the header named no run). Both spills of a daemon (an outage's, its close's)
    name its run, and the database made anew is the same database but not the same run: refused."""
    path, run_id, overflow, spilled = _daemon_spills(tmp_path)
    close = spill.read_header(spilled)
    for header in (overflow, close):
        assert header["runs"][str(run_id)]["name"] is None and header["runs"][str(run_id)]["started_at"]
    path.unlink()
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")  # (made anew: the same name, the same database identity)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        assert start_run(rec, name=None, mode="live", started_at=datetime.now(timezone.utc)) == run_id

    for argv in ([str(spilled)], [str(spilled), "--db", f"sqlite:///{path}"]):
        assert main(argv) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"holds rows of run {run_id} (no name) started" in err and "made anew" in err
        assert "nothing was written" in err and spilled.exists()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request")).scalar() == 0
    assert get_run(engine, run_id)["status"] == "running"
    engine.dispose()


def test_rows_a_load_could_not_write_are_spilled_again_naming_their_run(tmp_path) -> None:
    """A load whose write failed keeps the rows; the recorder's close spilled them again to a file
    that named no run, loadable into any run of that id."""
    from controlplane.storage import StorageError

    from .test_failures import WriteLock

    path, run_id, _, spilled = _daemon_spills(tmp_path)
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    rec = RunRecorder(engine, max_retries=0, close_wait_s=0)
    lock = WriteLock(path)
    try:
        with pytest.raises(StorageError, match="could not write"):
            rec.replay_spill(spilled)
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    again = spill.read_header(info.value.spill_path)
    assert again["runs"][str(run_id)] == spill.read_header(spilled)["runs"][str(run_id)]
    engine.dispose()


def _tables(url: str) -> list[str]:
    from sqlalchemy import inspect

    engine = make_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_spill_into_its_sqlite_file_made_anew_makes_no_schema_there(tmp_path, capsys) -> None:
    """The file deleted (or made again, empty): loading the spill created the whole schema, then refused."""
    engine, run_id, spilled = _spilled_run(tmp_path)
    path = tmp_path / "runs.db"
    engine.dispose()
    for extra in ("", "-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    assert main([str(spilled)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"holds rows of run(s) [{run_id}], and sqlite:///{path} does not exist" in err, err
    assert "nothing was written, and the file is kept" in err and spilled.exists() and not path.exists()
    path.touch()  # (an empty database: made anew)
    assert main([str(spilled)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds no controlplane runs (no schema: a database made anew, or another one?)" in err, err
    assert _tables(f"sqlite:///{path}") == [] and spilled.exists()


@pytest.mark.postgres
def test_a_spill_into_its_postgres_database_made_anew_makes_no_schema_there(pg_url, pg_admin, tmp_path,
                                                                            capsys) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    rec = RunRecorder(engine)
    run_id = start_run(rec)
    path = spill.write_spill([("request", request_row(0, run_id=run_id), None)], directories=[tmp_path],
                             run_ids=[run_id], source=pg_url, runs=rec.run_identities)
    rec.close()
    engine.dispose()
    name = make_url(pg_url).database
    with pg_admin.connect() as conn:  # (dropped and made again under its name)
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    assert main([str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"holds rows of run(s) [{run_id}], and {pg_url} holds no controlplane runs" in err, err
    assert _tables(pg_url) == [] and path.exists()
    upgrade(pg_url)  # (a schema, without the run: refused before anything is written too)
    assert main([str(path)]) == 2 and path.exists()
    assert f"holds rows of run(s) [{run_id}], not present in {pg_url}" in " ".join(capsys.readouterr().err.split())
