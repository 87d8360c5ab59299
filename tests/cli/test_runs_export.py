"""`controlplane runs export` of runs whose rows were not stored (controlplane/cli/runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app


@pytest.fixture(scope="module")
def sweep_db(tmp_path_factory):
    """A sweep of two runs: run 1 recorded with `record: summary`, run 2 (a second sweep) with `record: full`."""
    from sim.sweep import load_spec, run_sweep

    url = f"sqlite:///{tmp_path_factory.mktemp('export') / 'runs.db'}"
    for record in ("summary", "full"):
        run_sweep(load_spec(data={"name": record, "trace": {"limit": 40}, "seeds": [0], "record": record,
                                  "space": {"cluster.models.0.replicas": [1]}}), url, backend="serial")
    return url


@pytest.mark.parametrize("what", ["requests", "decisions"])
def test_export_of_a_summary_only_run_says_why_it_has_no_rows(sweep_db, tmp_path, what):
    """It wrote a bare CSV header (`wrote 0 rows`), read as a run of no requests."""
    out = tmp_path / f"{what}.csv"
    res = CliRunner().invoke(app, ["runs", "export", "1", "--what", what, "--db", sweep_db, "-o", str(out)])
    assert res.exit_code != 0 and not out.exists()
    said = " ".join(res.stderr.split())
    assert ("run 1 has no stored rows (its summary counts 40 requests): it was recorded with "
            "`record: summary` (sweep 1)") in said and "set `record: full` in the spec" in said, said


def test_export_of_a_full_run_writes_its_rows(sweep_db):
    res = CliRunner().invoke(app, ["runs", "export", "2", "--what", "requests", "--db", sweep_db])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 41  # header + 40 requests


def _unfinished_runs(tmp_path) -> str:
    """Run 1 still running (its rows so far), run 2 crashed: their rows are incomplete."""
    from controlplane.storage import RunRecorder, ensure_schema, make_engine
    from controlplane.storage.crashed import claim_run, process_marker
    from tests.storage.support import request_row, start_run
    from tests.storage.test_crashed import _dead_pid

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    ensure_schema(engine)
    with RunRecorder(engine) as rec:
        for _ in range(2):
            run_id = start_run(rec)
            for i in range(3):
                rec.add_request(request_row(i))
    claim_run(engine, 2, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    engine.dispose()
    return url


def test_export_and_plot_of_a_running_or_crashed_run_say_its_rows_are_incomplete(tmp_path):
    """They gave the rows written so far with rc 0 and no word (runs compare refuses such runs)."""
    url = _unfinished_runs(tmp_path)
    for run_id, status, why in ((1, "running", "it is still running: these are the rows written so far"),
                                (2, "crashed", "its process ended before the run did")):
        res = CliRunner().invoke(app, ["runs", "export", str(run_id), "--db", url])
        assert res.exit_code == 0, res.output
        assert len(res.stdout.splitlines()) == 4 and "note" not in res.stdout  # (stdout: the rows alone, for pipes)
        said = " ".join(res.stderr.split())
        assert f"note: run {run_id} is {status}, so its rows are incomplete ({why}" in said, said
        plotted = CliRunner().invoke(app, ["runs", "plot", str(run_id), "--db", url, "-o", str(tmp_path / "p.png")])
        assert plotted.exit_code == 0, plotted.output
        assert f"note: run {run_id} is {status}, so its rows are incomplete" in " ".join(plotted.stderr.split())
    res = CliRunner().invoke(app, ["runs", "export", "2", "--db", url, "-o", str(tmp_path / "rows.csv")])
    assert res.exit_code == 0 and "wrote 3 rows" in res.stdout and "is crashed" in res.stderr


# --- the output file's name decides the format and the compression (controlplane/cli/runs_export.py) ----------


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('export-names') / 'runs.db'}"
    res = CliRunner().invoke(app, ["sim", "replay", "--limit", "40", "--db", url, "--json"])
    assert res.exit_code == 0, res.output
    return url


def _parse(fmt: str, text: str) -> list[dict]:
    import csv
    import io
    import json

    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    return json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("name, fmt", [("r.csv.gz", "csv"), ("r.json.gz", "json"), ("r.jsonl.gz", "jsonl"),
                                       ("r.ndjson.GZ", "jsonl"), ("r.v2.jsonl", "jsonl")])
def test_export_to_a_gz_name_writes_gzip_of_the_format_its_name_gives(one_run, tmp_path, name, fmt):
    """`-o r.jsonl.gz` wrote plain CSV under that name."""
    import gzip

    out = tmp_path / name
    res = CliRunner().invoke(app, ["runs", "export", "1", "--db", one_run, "-o", str(out)])
    assert res.exit_code == 0, res.output
    raw = out.read_bytes()
    text = gzip.decompress(raw).decode() if name.lower().endswith(".gz") else raw.decode()
    assert raw.startswith(b"\x1f\x8b") == name.lower().endswith(".gz")
    rows = _parse(fmt, text)
    assert len(rows) == 40 and rows[0]["request_id"] is not None


@pytest.mark.parametrize("name, fmt, said", [
    ("r.parquet", None, "runs export does not write .parquet files; it writes .csv, .json, .jsonl or .ndjson, each "
                        "with .gz added for gzip (rows.jsonl.gz)"),
    ("r.parquet", "csv", "runs export does not write .parquet files"),  # (CSV under a Parquet name: refused)
    ("r.csv.bz2", None, "runs export does not write .bz2 files"),
    ("r.txt", None, "its extension .txt names no export format; name the file .csv, .json, .jsonl or .ndjson, "
                    "each with .gz added for gzip (rows.jsonl.gz), or give --format (csv, json, jsonl)"),
    ("rows", None, "it has no extension; name the file .csv"),
    ("r.gz", None, "it has no extension; name the file .csv"),
    ("r.jsonl.gz", "csv", "--format csv writes CSV, but -o {out} names JSONL by its extension"),
])
def test_export_to_a_name_of_another_format_is_refused_before_any_file_is_made(one_run, tmp_path, name, fmt, said):
    out = tmp_path / name
    res = CliRunner().invoke(app, ["runs", "export", "1", "--db", one_run, "-o", str(out),
                                   *(["--format", fmt] if fmt else [])])
    assert res.exit_code == 2 and not out.exists(), res.output
    assert said.format(out=out) in " ".join(res.stderr.split())


@pytest.mark.parametrize("name, gz", [("rows", False), ("r.txt", False), ("r.gz", True)])
def test_export_to_a_name_without_a_format_s_extension_takes_format(one_run, tmp_path, name, gz):
    import gzip

    out = tmp_path / name
    res = CliRunner().invoke(app, ["runs", "export", "1", "--db", one_run, "-o", str(out), "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    text = gzip.decompress(out.read_bytes()).decode() if gz else out.read_text()
    assert len(_parse("jsonl", text)) == 40


# --- the output file: never the database read, written whole or not at all (controlplane/output_file.py) ------


@pytest.fixture
def own_db(one_run, tmp_path, monkeypatch) -> str:
    """A copy of ``one_run``'s database as ``runs`` in the working folder (the tester's ``--db runs``)."""
    import sqlite3

    monkeypatch.chdir(tmp_path)
    src = sqlite3.connect(one_run.removeprefix("sqlite:///"))
    dst = sqlite3.connect(tmp_path / "runs")
    src.backup(dst)
    src.close()
    dst.close()
    return "runs"


def _runs_stored(db: str) -> int:
    res = CliRunner().invoke(app, ["runs", "export", "1", "--db", db])
    assert res.exit_code == 0, res.output
    return len(res.stdout.splitlines()) - 1


@pytest.mark.parametrize("cmd, output", [
    (["runs", "export", "1", "--format", "csv"], "runs"),  # the tester's: `runs` emptied, every run gone
    (["runs", "export", "1", "--format", "csv"], "./runs-wal"),
    (["runs", "export", "1", "--format", "csv"], "runs-journal"),
    (["runs", "export", "1", "--format", "csv"], "link"),
    (["runs", "plot", "1"], "runs"),  # (-o with no picture extension: refused as that, see below)
    (["runs", "report", "1"], "runs"),
])
def test_an_output_that_is_the_database_read_is_refused_and_every_run_kept(own_db, tmp_path, cmd, output):
    """`runs export 1 --db runs -o runs` truncated the database before reading it: "database disk image is
    malformed", `runs` 0 bytes. `runs plot` and `runs report --html` wrote theirs over it once drawn."""
    (tmp_path / "link").symlink_to("runs")
    size = (tmp_path / "runs").stat().st_size
    if cmd[1] == "plot":  # (an extension it draws: the database named runs.png)
        (tmp_path / "runs").rename(tmp_path / "runs.png")
        own_db, output, size = "runs.png", "runs.png", (tmp_path / "runs.png").stat().st_size
    option = "--html" if cmd[1] == "report" else "-o"
    res = CliRunner().invoke(app, [*cmd, "--db", own_db, option, output])
    assert res.exit_code == 2, res.output
    said = " ".join(res.stderr.split())
    assert f"{option} {Path(output)}: that is " in said and "which this command uses; writing there would destroy it" \
        in said, said
    assert (tmp_path / own_db).stat().st_size == size and _runs_stored(own_db) == 40
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial-")]


def test_a_failed_export_leaves_the_previous_file_as_it_was(own_db, tmp_path):
    """It was truncated when the export began: a refused --what left an empty file where the last export was."""
    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(app, ["runs", "export", "1", "--db", own_db, "-o", str(out)])
    assert res.exit_code == 0, res.output
    before = out.read_bytes()
    res = CliRunner().invoke(app, ["runs", "export", "1", "--db", own_db, "-o", str(out), "--what", "requestz"])
    assert res.exit_code == 2 and "--what: unknown export 'requestz'" in res.stderr, res.output
    assert out.read_bytes() == before and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    res = CliRunner().invoke(app, ["runs", "export", "1", "--db", own_db, "-o", str(out), "--what", "decisions"])
    assert res.exit_code == 0 and out.read_bytes() != before  # (an existing file is replaced, as --help says)
    helped = CliRunner().invoke(app, ["runs", "export", "--help"]).stdout
    assert "An existing file is replaced once the export is complete" in " ".join(
        w for w in helped.split() if w != "│")
