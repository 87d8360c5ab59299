"""Options spelt alike across commands: `runs report -o`, `runs export -f`, `profile -c`, `bench quant --json-out`
(its --json PATH kept, hidden), and `sim replay --limit` at least 1 as every other --limit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app, replay_args

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('options') / 'runs.db'}"
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--db", db, "--json", "--no-progress"])
    assert done.exit_code == 0, done.output
    return db


def test_sim_replay_refuses_a_limit_of_0(tmp_path):
    """`sim replay --limit 0` stored an empty run, while `live-replay` and `sim sweep` refuse 0 (`runs list --limit
    0` lists every run: a listing's limit, not a trace's)."""
    db = tmp_path / "runs.db"
    assert replay_args.parse(["--limit", "0"]) is None  # (the plain command line hands it to typer)
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "0", "--db", str(db), "--json"])
    assert done.exit_code == 2 and "Invalid value for '--limit': Input should be greater than or equal to 1" in " ".join(
        done.stderr.replace("│", " ").split()), done.output
    assert not db.exists()


def test_runs_report_takes_o_as_every_command_that_writes_a_file(one_run, tmp_path):
    page = tmp_path / "run.html"
    done = CliRunner().invoke(app, ["runs", "report", "1", "--db", one_run, "-o", str(page)])
    assert done.exit_code == 0, done.output
    assert page.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_runs_export_takes_f_as_the_sim_commands_do(one_run):
    done = CliRunner().invoke(app, ["runs", "export", "1", "--db", one_run, "-f", "json"])
    assert done.exit_code == 0, done.output
    assert len(json.loads(done.stdout)) == 20


def test_profile_takes_c_for_its_config(tmp_path):
    from controlplane.cli import bench

    missing = tmp_path / "daemon.yaml"
    done = CliRunner().invoke(bench.app, ["profile", "-c", str(missing), "--no-progress"])
    assert done.exit_code == 2 and str(missing) in " ".join(done.output.split()), done.output


def test_bench_quant_writes_its_rows_with_json_out_and_still_reads_json_path(tmp_path):
    """--json PATH took a path where --json is a flag elsewhere: --json-out / -o now. Its folder is checked before
    the benchmark (a typo found after minutes of it); the old spelling and the new one together are refused."""
    from controlplane.cli import bench

    for option in ("--json-out", "-o", "--json"):
        target = tmp_path / "no" / "rows.json"
        done = CliRunner().invoke(bench.app, ["bench", "quant", option, str(target), "--no-progress"])
        assert done.exit_code == 2, done.output
        assert f"error: {target}: its folder {target.parent} does not exist" in done.stderr, done.output
    both = CliRunner().invoke(bench.app, ["bench", "quant", "--json", "a.json", "-o", "b.json", "--no-progress"])
    assert both.exit_code == 2 and "--json is --json-out's former name: give one" in " ".join(
        both.output.replace("│", " ").split()), both.output
    helped = CliRunner().invoke(bench.app, ["bench", "quant", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--json-out" in helped and "--json " not in helped
