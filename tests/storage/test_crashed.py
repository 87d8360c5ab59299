"""Runs left ``running`` by a process that is gone are marked ``crashed``; nothing else is touched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import Engine

from controlplane.storage import RunRecorder, get_run
from controlplane.storage.crashed import (
    claim_run,
    mark_crashed_runs,
    process_alive,
    process_marker,
)

from .support import request_row, start_run


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_dead_processes_of_this_host_have_their_runs_marked(engine: Engine) -> None:
    dead = _dead_pid()
    me = process_marker()
    with RunRecorder(engine) as rec:
        crashed = start_run(rec)
        for i in range(3):
            rec.add_request(request_row(i))
        rec.flush()
        live = start_run(rec)
        other_host = start_run(rec)
        unclaimed = start_run(rec)  # a simulator run, or a daemon from before claims existed
        reused = start_run(rec)  # our pid, but a different process start time: the pid was reused
    claim_run(engine, crashed, {**me, "pid": dead, "start_ticks": None})
    claim_run(engine, live, me)
    claim_run(engine, other_host, {**me, "host": me["host"] + "-elsewhere", "pid": dead})
    if me["start_ticks"] is not None:
        claim_run(engine, reused, {**me, "start_ticks": me["start_ticks"] + 1})

    marked = mark_crashed_runs(engine)

    expected = {crashed} | ({reused} if me["start_ticks"] is not None else set())
    assert {m["run_id"] for m in marked} == expected
    run = get_run(engine, crashed)
    assert run["status"] == "crashed"
    assert run["finished_at"] is not None
    assert run["summary"]["crashed"] is True and run["summary"]["requests_recorded"] == 3
    assert run["config"]["process"]["pid"] == dead
    for run_id in (live, other_host, unclaimed):
        assert get_run(engine, run_id)["status"] == "running"
    assert mark_crashed_runs(engine) == []  # already marked: nothing more


def test_excluded_runs_and_the_liveness_check(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    assert mark_crashed_runs(engine, exclude={run_id}) == []
    assert mark_crashed_runs(engine, alive=lambda pid, ticks: True) == []
    assert get_run(engine, run_id)["status"] == "running"
    assert [m["run_id"] for m in mark_crashed_runs(engine)] == [run_id]
    assert process_alive(os.getpid(), process_marker()["start_ticks"])
    assert not process_alive(0)


def test_a_crashed_runs_journal_lists_the_accepted_requests_without_a_row(engine: Engine, tmp_path) -> None:
    from controlplane.storage.journal import RequestJournal

    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
        for i in range(3):
            rec.add_request(request_row(i))
        rec.flush()
    recorded = {r["request_id"] for r in (request_row(i) for i in range(3))}
    journal = RequestJournal.for_run(run_id, tmp_path)
    for rid in [*sorted(recorded), "lost-a", "lost-b"]:
        journal.accepted(rid)
    journal.close(remove=False)  # the process died: nobody removed it
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None,
                               "journal": str(journal.path)})

    [marked] = mark_crashed_runs(engine)

    summary = get_run(engine, run_id)["summary"]
    assert marked["requests_lost"] == summary["requests_lost"] == 2
    assert summary["requests_accepted"] == 5 and summary["requests_recorded"] == 3
    assert summary["lost_request_ids"] == ["lost-a", "lost-b"]
    assert not journal.path.exists()  # consumed into the summary


def test_a_crashed_run_tells_answered_requests_from_never_answered_ones(engine: Engine, tmp_path) -> None:
    """Requests answered just before the kill (their rows still in the recorder's buffer) were
    listed as lost, and lost requests are documented as safe to retry: retrying them served them twice."""
    from controlplane.storage.journal import RequestJournal

    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
        rec.add_request(request_row(0))
        rec.flush()
    journal = RequestJournal.for_run(run_id, tmp_path)
    recorded = request_row(0)["request_id"]
    for rid in (recorded, "done-a", "done-b", "timed-out", "unanswered"):
        journal.accepted(rid)
    journal.answered(recorded, "completed")
    journal.answered("done-a", "completed")
    journal.answered("done-b", "completed")
    journal.answered("timed-out", "timeout")
    journal.close(remove=False)
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None,
                               "journal": str(journal.path)})

    [marked] = mark_crashed_runs(engine)

    summary = get_run(engine, run_id)["summary"]
    assert summary["requests_accepted"] == 5 and summary["requests_recorded"] == 1
    assert summary["requests_lost"] == marked["requests_lost"] == 1 and summary["lost_request_ids"] == ["unanswered"]
    assert summary["requests_answered_unrecorded"] == marked["requests_answered_unrecorded"] == 3
    assert summary["answered_unrecorded_ids"] == ["done-a", "done-b", "timed-out"]
    assert summary["answered_unrecorded_by_status"] == {"completed": 2, "timeout": 1}


def test_a_crashed_run_without_a_journal_says_its_losses_are_unknown(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    mark_crashed_runs(engine)
    summary = get_run(engine, run_id)["summary"]
    assert summary["requests_lost"] is None and "no journal" in summary["lost_note"]


def test_read_journal_keeps_order_drops_repeats_and_a_torn_last_line(tmp_path) -> None:
    from controlplane.storage.journal import RequestJournal, read_answered, read_journal

    path = tmp_path / "j.log"
    path.write_bytes(b"a\nb\na\nc\na\tcompleted\nid\twith a tab\nc\ttimeout\npartial")
    assert read_journal(path) == ["a", "b", "c", "id\twith a tab"]  # answer lines are not accepted ids
    assert read_answered(path) == {"a": "completed", "c": "timeout"}
    assert read_journal(tmp_path / "missing.log") == []
    journal = RequestJournal(tmp_path / "sub" / "k.log")
    journal.accepted("x")
    journal.answered("x", "completed")
    assert read_answered(journal.path) == {"x": "completed"} and read_journal(journal.path) == ["x"]
    journal.close(remove=True)
    journal.accepted("y")  # after close: ignored, no error
    assert not (tmp_path / "sub" / "k.log").exists()


def _replay_cmd(db: str, config: str) -> list[str]:
    from sim.traces import bundled_trace_path

    return [sys.executable, "-m", "controlplane.cli", "sim", "replay", str(bundled_trace_path()), "--format", "azure",
            "--config", config, "--db", db, "--repeat", "20", "--json", "--no-progress"]


def test_a_sim_replay_killed_with_sigkill_is_listed_crashed_by_the_next_command(tmp_path) -> None:
    import signal
    import sqlite3
    import time

    import yaml

    from tests.fixtures.common import VIDUR_ANCHOR_CONFIG

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(VIDUR_ANCHOR_CONFIG))
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(_replay_cmd(url, "run.yaml"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline, recorded = time.monotonic() + 120, 0
    while time.monotonic() < deadline and proc.poll() is None and not recorded:  # rows are coming in
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                recorded = conn.execute("SELECT count(*) FROM request").fetchone()[0]
        except sqlite3.Error:
            pass  # not made yet
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the replay ended before it could be killed"
    time.sleep(0.5)  # (its writer process writes what it was sent, then leaves the run running)

    listed = subprocess.run([sys.executable, "-m", "controlplane.cli", "runs", "list", "--db", url], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "crashed" in listed.stdout and "running" not in listed.stdout
    assert "run 1 was left running by pid" in listed.stderr
    assert "a simulated run keeps no journal: replay its trace with the same seed" in " ".join(listed.stderr.split())
    assert "accepted requests lost" not in listed.stderr  # (the daemon's words: a simulated run accepts none)
    from controlplane.storage import make_engine

    engine = make_engine(url)
    run = get_run(engine, 1)
    engine.dispose()
    assert run["status"] == "crashed" and run["config"]["process"]["pid"] == proc.pid
    summary = run["summary"]
    assert summary["crashed"] is True and summary["requests_recorded"] >= recorded > 0
    assert summary["requests_lost"] is None and "simulated run keeps no journal" in summary["lost_note"]
    shown = subprocess.run([sys.executable, "-m", "controlplane.cli", "runs", "show", "1", "--db", url], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert shown.returncode == 0, shown.stderr
    assert "crashed: its process was gone when found at" in shown.stdout
    assert f"{summary['requests_recorded']:,} request rows recorded" in shown.stdout


def test_the_start_of_a_run_marks_the_runs_of_dead_processes(engine: Engine) -> None:
    from controlplane.session import RunSession
    from tests.fixtures.common import VIDUR_ANCHOR_CONFIG
    from controlplane.config import RunConfig

    with RunRecorder(engine) as rec:
        dead_run = start_run(rec)
    claim_run(engine, dead_run, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    url = engine.url.render_as_string(hide_password=False)
    config = RunConfig(**{**VIDUR_ANCHOR_CONFIG, "storage": {"url": url}})
    session = RunSession(config, mode="live")  # a recorder of this process: the daemon, a live replay
    try:
        run = get_run(engine, session.run_id)
        assert run["status"] == "running" and run["config"]["process"] == {**process_marker(), "pid": os.getpid()}
        assert get_run(engine, dead_run)["status"] == "crashed"
    finally:
        session.close({})


def test_only_sweeps_of_dead_processes_of_this_host_are_marked(engine: Engine) -> None:
    from datetime import datetime, timezone

    from sqlalchemy import insert, select

    from controlplane.storage.crashed import mark_crashed_quietly, mark_crashed_sweeps
    from controlplane.storage.models import Sweep

    me = process_marker()
    owners = {"dead": {**me, "pid": _dead_pid(), "start_ticks": None}, "live": me,
              "other_host": {**me, "host": me["host"] + "-elsewhere", "pid": _dead_pid()}, "unclaimed": None}
    ids = {}
    with engine.begin() as conn:
        for name, owner in owners.items():
            spec = {"space": {}} if owner is None else {"space": {}, "process": owner}
            ids[name] = conn.execute(insert(Sweep.__table__).values(
                name=name, kind="grid", status="running", spec=spec, spec_hash=name, num_runs=2,
                created_at=datetime.now(timezone.utc))).inserted_primary_key[0]
    assert mark_crashed_sweeps(engine, alive=lambda pid, ticks: True) == []

    mark_crashed_quietly(engine)  # (what the commands call: runs, then sweeps)

    with engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(select(Sweep.__table__))}
    assert rows["dead"].status == "crashed" and rows["dead"].finished_at is not None
    assert {n for n, r in rows.items() if r.status == "running"} == {"live", "other_host", "unclaimed"}
    assert mark_crashed_sweeps(engine) == []  # already marked: nothing more


def test_a_crashed_search_is_not_said_to_resume(engine: Engine, caplog) -> None:
    """`sim search` always starts afresh (it stores only its finished full-trace runs), so the
    line for its crashed row says so instead of the sweeps' "run the same spec again to resume it"."""
    from datetime import datetime, timezone

    from sqlalchemy import insert

    from controlplane.storage.crashed import mark_crashed_sweeps
    from controlplane.storage.models import Sweep

    owner = {**process_marker(), "pid": _dead_pid(), "start_ticks": None}
    with engine.begin() as conn:
        ids = [conn.execute(insert(Sweep.__table__).values(
            name=kind, kind=kind, status="running", spec={"space": {}, "process": owner}, spec_hash=kind,
            created_at=datetime.now(timezone.utc))).inserted_primary_key[0] for kind in ("search", "grid")]
    with caplog.at_level("WARNING", logger="controlplane.storage"):
        assert [m["sweep_id"] for m in mark_crashed_sweeps(engine)] == ids
    search, grid = [r.getMessage() for r in caplog.records]
    assert search.startswith(f"search {ids[0]} was left running by pid {owner['pid']}")
    assert search.endswith("a search does not resume: run it again to start afresh")
    assert grid.startswith(f"sweep {ids[1]} was left running") and grid.endswith("run the same spec again to resume it")


def test_a_crashed_run_of_a_sweep_or_search_says_how_to_get_it_whole(engine: Engine, caplog) -> None:
    """A sweep's run said "replay its trace with the same seed", as a lone replay's: resuming the sweep runs it
    again (a search's: run the search again); a run of no sweep keeps the replay's advice."""
    from datetime import datetime, timezone

    from sqlalchemy import insert, update

    from controlplane.storage.models import Run, Sweep

    owner = {**process_marker(), "pid": _dead_pid(), "start_ticks": None}
    with engine.begin() as conn:
        sweeps = {kind: conn.execute(insert(Sweep.__table__).values(
            name=kind, kind=kind, status="finished", spec={"space": {}}, spec_hash=kind,
            created_at=datetime.now(timezone.utc))).inserted_primary_key[0] for kind in ("grid", "search")}
    with RunRecorder(engine) as rec:
        runs = {kind: start_run(rec) for kind in ("grid", "search", "replay")}
    for kind, run_id in runs.items():
        claim_run(engine, run_id, owner)
        if kind in sweeps:
            with engine.begin() as conn:
                conn.execute(update(Run.__table__).where(Run.id == run_id).values(sweep_id=sweeps[kind]))
    with caplog.at_level("WARNING", logger="controlplane.storage"):
        assert {m["run_id"] for m in mark_crashed_runs(engine)} == set(runs.values())
    said = {r.getMessage().split()[1]: r.getMessage() for r in caplog.records}
    grid = f"a run of sweep {sweeps['grid']}: run the same spec again to resume the sweep, which runs it again"
    search = f"a run of search {sweeps['search']}, which does not resume: run the search again to start afresh"
    assert said[str(runs["grid"])].endswith(f"a simulated run keeps no journal: {grid})")
    assert said[str(runs["search"])].endswith(f"a simulated run keeps no journal: {search})")
    assert said[str(runs["replay"])].endswith("a simulated run keeps no journal: replay its trace with the same seed)")
    assert get_run(engine, runs["grid"])["summary"]["lost_note"].endswith(grid)  # (what `runs show` prints)


def test_a_live_run_of_another_pid_namespace_on_this_host_is_not_marked(tmp_path) -> None:
    """A container sharing the host name (host networking) has pids of its own: its live run's pid
    does not exist here, yet it is not crashed. Run in a real PID namespace (``unshare``)."""
    import shutil

    from controlplane.storage import make_engine
    from controlplane.storage.db import ensure_schema

    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-Urpf", "--mount-proc", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged PID namespaces here")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ensure_schema(make_engine(url))
    owner = ("import sys, time\n"
             "from datetime import datetime, timezone\n"
             "from controlplane.storage import RunRecorder, make_engine\n"
             "from controlplane.storage.owner import process_marker\n"
             "with RunRecorder(make_engine(sys.argv[1])) as rec:\n"
             "    rid = rec.start_run(name='x', mode='sim', trace=None, trace_format=None, seed=0,\n"
             "                        config={'process': process_marker()}, plugins=[],\n"
             "                        started_at=datetime.now(timezone.utc))\n"
             "print(rid, flush=True)\n"
             "sys.stdin.read()\n")  # alive until the test closes its stdin
    proc = subprocess.Popen(["unshare", "-Urpf", "--mount-proc", sys.executable, "-c", owner, url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        run_id = int(proc.stdout.readline())
        engine = make_engine(url)
        assert mark_crashed_runs(engine) == []  # its pid (1, most likely) names no process of it here
        marker = get_run(engine, run_id)["config"]["process"]
        assert marker.get("pid_ns") != process_marker().get("pid_ns") and marker["host"] == process_marker()["host"]
        assert get_run(engine, run_id)["status"] == "running"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _spilled_run(tmp_path) -> tuple[Engine, int, "Path"]:
    """A run whose process ended while its SQLite file was locked: its rows and its end spilled."""
    from pathlib import Path

    from controlplane.storage import StorageError, make_engine, upgrade

    from .support import FINISHED
    from .test_failures import WriteLock

    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    upgrade(engine)
    rec = RunRecorder(engine, max_retries=0, close_wait_s=0)
    run_id = start_run(rec)
    rec.add_request(request_row(0))
    rec.flush()
    rec.add_request(request_row(1))
    lock = WriteLock(path)
    try:
        rec.finish_run(run_id, status="finished", summary={"num_requests": 2}, finished_at=FINISHED, wall_s=1.0,
                       sim_end_s=2.0)
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    return engine, run_id, Path(info.value.spill_path)


def test_a_run_whose_end_was_spilled_is_not_said_to_be_killed(tmp_path, caplog) -> None:
    """Its process ended while the database was away: the run's rows and its end are in a spill
    file, which the crashed run names with the command that loads it; loading it ends the run."""
    from controlplane.storage.load_spill import main
    from controlplane.storage.spill_notes import spills_of

    engine, run_id, spill = _spilled_run(tmp_path)
    with caplog.at_level("WARNING", logger="controlplane.storage"):
        [marked] = mark_crashed_runs(engine)
    summary = get_run(engine, run_id)["summary"]
    assert marked["run_id"] == run_id and summary["spilled"] == [str(spill)]
    assert summary["requests_recorded"] == 1 and summary["requests_lost"] is None
    note = summary["lost_note"]
    assert "killed" not in note.replace("not killed", "") and "where it was killed" not in note
    assert str(spill) in note and f"controlplane db load-spill {spill}" in note
    assert str(spill) in caplog.text and "load-spill" in caplog.text

    assert main([str(spill)]) == 0  # (--db: the file's own, a SQLite URL without a password)
    run = get_run(engine, run_id)
    assert (run["status"], run["summary"]) == ("finished", {"num_requests": 2})
    assert not spill.exists() and spills_of(run_id, str((tmp_path / "runs.db").resolve())) == []
    engine.dispose()


def test_a_daemon_runs_spill_is_found_from_its_journal_folder_by_a_reader_without_its_variable(
        tmp_path, monkeypatch) -> None:
    """A daemon with --journal-dir (or its own $CONTROLPLANE_JOURNAL_DIR) left the note of its close's
    spill in the user's state folder, or its variable's, and `runs show` from another shell said the
    run was killed ('replay the trace'): the note goes to the run's journal folder, where the reader
    looks, from the run's stored journal."""
    from pathlib import Path

    from controlplane.storage import StorageError, make_engine, spill_notes, upgrade

    from .support import FINISHED
    from .test_failures import WriteLock

    monkeypatch.setattr(spill_notes, "_JOURNALS", {}, raising=False)
    jdir = tmp_path / "jdir"
    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    upgrade(engine)
    rec = RunRecorder(engine, max_retries=0, close_wait_s=0, background=True)
    run_id = start_run(rec, mode="live")
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None,
                               "journal": str(jdir / f"run-{run_id}-1.log")})  # (the daemon's claim)
    rec.add_request(request_row(0))
    lock = WriteLock(path)
    try:
        rec.finish_run(run_id, status="finished", summary={"num_requests": 1}, finished_at=FINISHED, wall_s=1.0,
                       sim_end_s=2.0)
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    spilled = Path(info.value.spill_path)
    assert [p.name.startswith("spilled-") for p in jdir.iterdir()] == [True]

    monkeypatch.setattr(spill_notes, "_JOURNALS", {}, raising=False)  # (another process: a shell without the variable)
    monkeypatch.setenv("CONTROLPLANE_JOURNAL_DIR", str(tmp_path / "reader"))
    [marked] = mark_crashed_runs(engine)
    summary = get_run(engine, run_id)["summary"]
    assert marked["run_id"] == run_id and summary["spilled"] == [str(spilled)]
    assert summary["lost_note"].startswith("not killed: it ended while the database was away")

    from controlplane.storage.load_spill import main

    assert main([str(spilled)]) == 0
    assert get_run(engine, run_id)["status"] == "finished" and list(jdir.iterdir()) == []  # (its note forgotten)
    engine.dispose()


@pytest.mark.postgres
def test_a_read_only_role_skips_the_crash_marking_quietly(pg_url, pg_reader, caplog) -> None:
    """A reader (CONNECT and SELECT only) cannot mark a dead run: no SQL dump, no warning."""
    from controlplane.storage import make_engine, upgrade
    from controlplane.storage.crashed import mark_crashed_quietly

    engine = make_engine(pg_url)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    reader = make_engine(pg_reader(pg_url))
    try:
        with caplog.at_level("WARNING"):
            assert mark_crashed_quietly(reader) == []
        assert caplog.records == []
        assert get_run(engine, run_id)["status"] == "running"
    finally:
        reader.dispose()
        engine.dispose()
