"""`controlplane sim replay` of the formats whose real files the project has none of (BurstGPT,
Qwen-Bailian): end to end on small files each test writes in the published layout."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def _replay(*args) -> dict:
    result = CliRunner().invoke(app, ["sim", "replay", *map(str, args), "--json", "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def _small_burstgpt(tmp_path):
    """40 rows, every 4th GPT-4 (10), every 10th failed (4: rows 9, 19, 29, 39, none of them GPT-4)."""
    path = tmp_path / "small_burstgpt.csv"
    rows = [f"{i * 2},{'GPT-4' if i % 4 == 0 else 'ChatGPT'},{200 + 10 * i},{0 if i % 10 == 9 else 20 + i},"
            f"{220 + 11 * i},{'API log' if i % 2 else 'Conversation log'}" for i in range(40)]
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n" + "\n".join(rows) + "\n")
    return path


def test_a_burstgpt_file_replays(tmp_path):
    path = _small_burstgpt(tmp_path)
    s = _replay(path, "--format", "burstgpt", "--db", f"sqlite:///{tmp_path / 'runs.db'}")
    # every row, the failed ones (0 response tokens, kept by default) too; the Model column names no
    # deployment unless asked, so nothing is rejected as an unknown model
    assert s["num_requests"] == 40 and s["num_completed"] == 40 and s["num_rejected"] == 0
    detected = CliRunner().invoke(app, ["sim", "replay", str(path), "--db", f"sqlite:///{tmp_path / 'runs.db'}",
                                        "--no-progress"])
    assert detected.exit_code == 0 and "small_burstgpt.csv (burstgpt)" in detected.stdout


def test_a_bailian_file_replays(tmp_path):
    path = tmp_path / "qwen_small_blksz_16.jsonl"
    with path.open("w") as f:
        for i in range(30):
            f.write(json.dumps({"chat_id": 1000 + i, "parent_chat_id": -1 if i % 3 == 0 else 1000 + i - 1,
                                "timestamp": 0.5 * i, "input_length": 64 + 16 * i, "output_length": 8 + i,
                                "type": "text", "turn": 1 + i % 3, "hash_ids": list(range(4 + i))}) + "\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    s = _replay(path, "--format", "bailian", "--db", db)
    assert s["num_requests"] == 30 and s["num_completed"] == 30
    exported = CliRunner().invoke(app, ["runs", "export", str(s["run_id"]), "--db", db, "--what", "requests",
                                        "--format", "json"])
    rows = json.loads(exported.stdout)
    assert sorted(r["request_id"] for r in rows) == [str(1000 + i) for i in range(30)]  # ids from chat_id
    assert max(r["arrival_s"] for r in rows) == 14.5  # seconds, not milliseconds


def test_format_options_from_the_command_line(tmp_path):
    path, db = _small_burstgpt(tmp_path), f"sqlite:///{tmp_path / 'runs.db'}"
    s = _replay(path, "--opt", "failed=drop", "--opt", "models=ChatGPT", "--db", db)
    assert s["num_requests"] == 40 - 10 - 4
    # the Model column as the request's model: a deployment must serve it, or it is rejected
    s = _replay(path, "--opt", "model_column=true", "--db", db)
    assert s["num_rejected"] == 40 and s["reject_reasons"] == {"unknown model": 40}
    config = tmp_path / "two.yaml"
    config.write_text("cluster:\n  models:\n    - {name: ChatGPT, replicas: 1}\n    - {name: GPT-4, replicas: 1}\n")
    s = _replay(path, "--opt", "model_column=true", "--config", config, "--db", db)
    assert s["num_completed"] == 40 and s["num_rejected"] == 0


@pytest.mark.parametrize("args, message", [
    (["--opt", "spread=none"], "unknown option(s) 'spread' for trace format 'burstgpt'; valid options: models, "
                               "log_types, failed, model_column, on_error"),
    (["--opt", "failed"], "--opt 'failed': expected KEY=VALUE, e.g. --opt failed=drop"),
    (["--opt", "failed=skip"], "unknown failed 'skip' for format 'burstgpt'; valid choices: keep, drop"),
])
def test_a_bad_option_exits_2_naming_it(tmp_path, args, message):
    result = CliRunner().invoke(app, ["sim", "replay", str(_small_burstgpt(tmp_path)), *args, "--no-progress",
                                      "--db", f"sqlite:///{tmp_path / 'runs.db'}"])
    assert result.exit_code == 2 and message in " ".join(result.stderr.split()), result.output


def test_a_stored_run_says_how_its_trace_was_read(tmp_path):
    """The transforms and format options are stored with the run (config["trace_read"]) and the rows
    the options left out are in its summary, so `runs show` says which requests the run replayed."""
    path, db = _small_burstgpt(tmp_path), f"sqlite:///{tmp_path / 'runs.db'}"
    s = _replay(path, "--opt", "failed=drop", "--opt", "models=ChatGPT", "--speed-up", 2, "--db", db)
    assert s["trace_rows_left_out"] == {"failed": 4, "models": 10}
    shown = CliRunner().invoke(app, ["runs", "show", str(s["run_id"]), "--db", db])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[1] == (
        "trace read: speed_up=2; failed=drop; models=ChatGPT; rows left out: models 10, failed 4")
    plain = _replay(path, "--db", db)  # nothing set, nothing left out: no line, no key
    assert "trace_rows_left_out" not in plain
    shown = CliRunner().invoke(app, ["runs", "show", str(plain["run_id"]), "--db", db])
    assert "trace read:" not in shown.stdout


def test_runs_show_gives_the_format_and_options_as_they_are_given_back(tmp_path):
    """`runs show` names the format the trace was read as (so a run that read a file as the wrong
    format says which) and writes each format option the way --opt takes it: true, not True; a
    JSON list as JSON."""
    path, db = _small_burstgpt(tmp_path), f"sqlite:///{tmp_path / 'runs.db'}"
    s = _replay(path, "--opt", "model_column=true", "--opt", 'models=["ChatGPT"]', "--opt", "failed=drop",
                "--db", db)
    lines = CliRunner().invoke(app, ["runs", "show", str(s["run_id"]), "--db", db]).stdout.splitlines()
    assert lines[0].endswith(f"trace={path} format=burstgpt")
    read = 'trace read: model_column=true; models=["ChatGPT"]; failed=drop; rows left out: models 10, failed 4'
    assert lines[1] == read
    options = [part.split("=", 1) for part in read.removeprefix("trace read: ").split("; ")[:3]]
    again = _replay(path, *[a for k, v in options for a in ("--opt", f"{k}={v}")], "--db", db)
    assert again["trace_rows_left_out"] == {"models": 10, "failed": 4}  # what it printed reads back the same


def test_bad_rows_on_error_skip_skipped_are_counted_warned_and_shown(tmp_path):
    """`--opt on_error=skip` is never silent: the summary counts the rows and keeps the first errors,
    the replay warns, `runs show` says them."""
    path, db = tmp_path / "az.csv", f"sqlite:///{tmp_path / 'runs.db'}"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,4808,10\n"
                    "2023-11-16 18:17:04.03,3180,8\n2023-11-16 18:17:05.1,12,abc\n")
    error = f"{path}:4: field 'GeneratedTokens': expected a non-negative integer, got 'abc'"
    result = CliRunner().invoke(app, ["sim", "replay", str(path), "--opt", "on_error=skip", "--db", db, "--json",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["num_requests"] == 2 and s["trace_rows_left_out"] == {"bad rows skipped": 1}
    assert s["trace_bad_rows"] == [error]
    assert (f"warning: 1 bad trace row skipped (--opt on_error=skip), not replayed; the first: {error}"
            in " ".join(result.stderr.split()))
    shown = CliRunner().invoke(app, ["runs", "show", str(s["run_id"]), "--db", db])
    assert shown.stdout.splitlines()[1:3] == ["trace read: on_error=skip; rows left out: bad rows skipped 1",
                                              f"  bad row skipped: {error}"]


def test_a_bundled_trace_is_named_as_python_m_sim_traces_names_it(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    named = _replay("bundled:azure_code", "--limit", 20, "--db", db)
    assert named["num_requests"] == 20
    assert {k: v for k, v in named.items() if k not in ("run_id", "wall_s")} == {
        k: v for k, v in _replay("--limit", 20, "--db", db).items() if k not in ("run_id", "wall_s")}
    unknown = CliRunner().invoke(app, ["sim", "replay", "bundled:nope", "--db", db, "--no-progress"])
    assert unknown.exit_code == 2 and "unknown bundled trace 'nope'; valid names: azure_code" in unknown.stderr
