"""`controlplane runs config RUN`'s header: the YAML holds neither the trace nor how it was read (its transforms,
its format options), so `--config run1.yaml` alone replayed the whole bundled trace; the header says them, and
the command line it prints replays the run's requests with that config."""

from __future__ import annotations

import json
import shlex

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.runs_replay_command import replay_command, replay_header
from sim.traces import bundled_trace_path

KEYS = ("num_requests", "num_completed", "slo_attainment", "gpu_hours", "ttft_p99_s", "e2e_p50_s")


def _summary(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _replay_line(config_text: str) -> list[str]:
    """The command line the header prints, as its words (what a shell makes of it)."""
    header = [line for line in config_text.splitlines() if line.startswith("#")]
    command = header[header.index(next(line for line in header if line.startswith("# to replay it again"))) + 1]
    return shlex.split(command.removeprefix("#   "))


DB = "sqlite:///r.db"


def test_the_printed_command_replays_a_run_of_a_relative_trace_with_transforms_and_options(tmp_path, monkeypatch):
    folder = tmp_path / "proj dir"
    folder.mkdir()
    rows = ["request_id,arrival_s,prompt_tokens,output_tokens"]
    rows += [f"r{i},{100 + 0.25 * i},{200 + 37 * i % 500},{20 + i % 30}" for i in range(60)]
    (folder / "my trace.csv").write_text("\n".join(rows) + "\n")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    monkeypatch.chdir(folder)
    first = _summary(runner.invoke(app, ["sim", "replay", "my trace.csv", "--limit", "25", "--speed-up", "2",
                                         "--opt", "rebase=true", "--seed", "4", "--db", db, "--json"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shown = runner.invoke(app, ["runs", "config", "1", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert f"# trace: {folder / 'my trace.csv'} (format canonical)\n" in shown.stdout
    assert "# trace read: speed_up=2; limit=25; rebase=true\n" in shown.stdout
    words = _replay_line(shown.stdout)
    assert words == ["controlplane", "sim", "replay", str(folder / "my trace.csv"), "--format", "canonical",
                     "--speed-up", "2", "--limit", "25", "--opt", "rebase=true", "--config", "run1.yaml", "--db", db]
    (elsewhere / "run1.yaml").write_text(shown.stdout)
    again = _summary(runner.invoke(app, [*words[1:], "--json"]))
    assert {k: again[k] for k in KEYS} == {k: first[k] for k in KEYS}


def test_the_printed_command_replays_a_run_of_the_bundled_trace(tmp_path, monkeypatch):
    # (the README's `runs config 1 > run1.yaml`, then `--config run1.yaml`: the whole bundled trace, not --limit 40)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    first = _summary(runner.invoke(app, ["sim", "replay", "--limit", "40", "--seed", "3", "--db", db, "--json"]))
    shown = runner.invoke(app, ["runs", "config", "1", "--db", db])
    words = _replay_line(shown.stdout)
    assert words[:7] == ["controlplane", "sim", "replay", "bundled:azure_code", "--format", "azure", "--limit"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run1.yaml").write_text(shown.stdout)
    assert words[-2:] == ["--db", db]
    again = _summary(runner.invoke(app, [*words[1:], "--json"]))
    assert {k: again[k] for k in KEYS} == {k: first[k] for k in KEYS}


def test_the_header_of_rows_that_cannot_say_everything():
    bundled = str(bundled_trace_path())
    old = {"id": 1, "mode": "sim", "trace": "az trace.csv", "trace_format": "azure", "config": {"seed": 0}}
    assert replay_header(old, "run1.yaml", DB)[:2] == [
        "# trace: az trace.csv (format azure; as typed: relative to the folder the run was started from)",
        "# trace read: not stored (this run's release did not store its transforms and format options: the command "
        "below reads the whole trace)"]
    assert replay_header({"id": 2, "trace": None, "config": {}}, "run2.yaml", DB)[0].startswith("# trace: none stored")
    assert replay_header({"id": 2, "mode": "live", "trace": None, "config": {}}, "run2.yaml", DB) == [  # (a daemon's)
        "# trace: none stored (a daemon's run: its clients' requests, not a file); to replay its requests in the "
        "simulator, with", "# this config saved as run2.yaml, write them as a trace first:",
        "#   controlplane runs export 2 --db sqlite:///r.db --what trace -o run2.csv",
        "#   controlplane sim replay run2.csv --format canonical --config run2.yaml --db sqlite:///r.db"]
    live = {"id": 3, "mode": "live", "trace": bundled, "trace_format": "azure",
            "config": {"seed": 0, "process": {}, "trace_read": {"transforms": {"window_end_s": 60.0, "rate_scale": 0.5,
                                                                              "rate_profile": "0:1,30:2"}}}}
    assert replay_command(live, "run 3.yaml", "sqlite:///my runs.db") == (
        "controlplane live-replay bundled:azure_code --format azure --window-end 60 --rate-scale 0.5 --rate-profile "
        "0:1,30:2 --config 'run 3.yaml' --db 'sqlite:///my runs.db'")
    plain = {"id": 4, "mode": "sim", "trace": "-x.csv", "trace_format": "canonical", "config": {"process": {}}}
    assert replay_header(plain, "run4.yaml", DB)[1:] == ["# trace read: the whole trace, as it is",
                                                         "# to replay it again, with this config saved as run4.yaml:",
                                                         "#   controlplane sim replay ./-x.csv --format canonical "
                                                         "--config run4.yaml --db sqlite:///r.db"]
    seeded = {**plain, "trace": bundled, "config": {"seed": 1, "process": {},
                                                    "trace_read": {"transforms": {"limit": 5, "seed": 9}}}}
    assert any("seeded with 9" in line for line in replay_header(seeded, "run4.yaml", DB))


def test_every_command_of_a_daemon_runs_header_names_its_database(tmp_path, monkeypatch):
    """`runs config 1 --db live.db` of a daemon's run printed `runs export 1 --what trace -o run1.csv` and
    `(controlplane runs config 1)`: copied as printed, they read the default database's run 1, another run."""
    from datetime import datetime, timezone

    from controlplane.storage import RunRecorder, ensure_schema, make_engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONTROLPLANE_STORAGE__URL", raising=False)
    engine = make_engine("sqlite:///live db.db")
    ensure_schema(engine)
    with RunRecorder(engine) as rec:
        rec.start_run(name="daemon", mode="live", trace=None, trace_format=None, seed=0, config={"name": "daemon"},
                      plugins=[], started_at=datetime.now(timezone.utc))
    engine.dispose()
    shown = CliRunner().invoke(app, ["runs", "config", "1", "--db", "live db.db"])
    assert shown.exit_code == 0, shown.output
    header = shown.stdout.splitlines()
    assert header[0] == "# the config run 1 ran with (`controlplane runs config 1 --db 'sqlite:///live db.db'`)"
    commands = [shlex.split(line.removeprefix("#   ")) for line in header if line.startswith("#   controlplane")]
    assert [words[:3] for words in commands] == [["controlplane", "runs", "export"], ["controlplane", "sim", "replay"]]
    for words in commands:
        assert words[words.index("--db") + 1] == "sqlite:///live db.db"


def test_a_database_password_is_shown_as_stars_and_said_so():
    url = "postgresql+psycopg://me:s3cret@db.example/runs"
    header = replay_header({"id": 5, "mode": "live", "trace": None, "config": {}}, "run5.yaml", url)
    assert "s3cret" not in "\n".join(header)
    assert "--db 'postgresql+psycopg://me:***@db.example/runs'" in header[2]
    assert header[-1] == "# (--db's password is shown as ***: put yours back)"
