"""The `controlplane` command line: replays, stored runs, plugins, migrations, and user errors."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli import common
from controlplane.config import load_config
from controlplane.metrics import LATENCY_METRICS, PERCENTILES
from controlplane.storage import EXPORT_COLUMNS, head_revisions, iter_rows, make_engine
from tests.fixtures.common import FIXTURES, azure_trace

ROOT = Path(__file__).resolve().parents[2]
BUILTINS = ("queue-limit", "exact-cache", "least-loaded", "round-robin", "continuous-batching", "fixed-replicas",
            "static-memory", "sampled-guardian", "builtin-latency-models")


pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def replay_json(*args: str) -> dict:
    result = cli("sim", "replay", "--json", *args)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # one JSON object, nothing else on stdout
    return json.loads(lines[0])


# --- sim replay --------------------------------------------------------------------------------


def test_sim_replay_json_prints_one_summary_object(db):
    s = replay_json("--limit", "200", "--db", db, "--seed", "3")
    assert s["run_id"] == 1
    assert s["num_requests"] == 200
    assert s["num_completed"] + s["num_rejected"] + s["num_failed"] + s["num_in_flight"] == 200
    assert isinstance(s["num_rejected"], int)
    for m in LATENCY_METRICS:
        for p in PERCENTILES:
            assert isinstance(s[f"{m}_p{p}_s"], float)
    assert s["ttft_p50_s"] <= s["ttft_p90_s"] <= s["ttft_p99_s"]


def test_sim_replay_table_names_the_stored_run(db):
    out = cli("sim", "replay", "--limit", "20", "--db", db, "--name", "table-run").stdout
    assert "requests" in out and "TTFT p50 (s)" in out
    assert f"stored in {db} as run 1" in out


def _arrivals(db: str, run_id: int) -> list[float]:
    return [r["arrival_s"] for r in iter_rows(make_engine(db), run_id, "requests")]


def test_limit_speed_up_and_window(db):
    azure = azure_trace()
    assert replay_json("--limit", "150", "--db", db)["num_requests"] == 150
    fast = replay_json("--limit", "150", "--speed-up", "4", "--db", db)
    assert fast["num_requests"] == 150
    normal, sped = _arrivals(db, 1), _arrivals(db, 2)
    assert sped == pytest.approx([a / 4 for a in normal], abs=1e-9)
    assert max(normal) == pytest.approx(azure[149].arrival_s)

    windowed = replay_json("--window-start", "600", "--window-end", "700", "--db", db)
    expected = [t for t in azure if 600 <= t.arrival_s < 700]
    assert windowed["num_requests"] == len(expected) > 100
    arrivals = _arrivals(db, 3)
    assert min(arrivals) >= 0 and max(arrivals) < 100  # rebased to the window's start
    assert sorted(arrivals) == pytest.approx(sorted(t.arrival_s - 600 for t in expected), abs=1e-6)


def test_a_canonical_trace_with_prompts_hits_the_cache(db):
    s = replay_json(FIXTURES / "prompts.jsonl", "--db", db)
    assert (s["num_requests"], s["cache_hits"]) == (6, 2)


def test_the_example_config_replays(db):
    """On the Llama-2-70B replicas the README says (it ran the linear model on one GPU each)."""
    s = replay_json("--config", ROOT / "examples" / "cluster.yaml", "--limit", "300", "--db", db)
    assert s["num_requests"] == 300 and s["num_completed"] == 300
    config = load_config(ROOT / "examples" / "cluster.yaml").cluster.models[0]
    assert (config.latency_model, config.latency["model"], config.gpus_per_replica) == (
        "vidur", "meta-llama/Llama-2-70b-hf", 2)


def test_until_and_exact_flags(db):
    cut = replay_json("--limit", "400", "--until", "30", "--db", db)
    assert cut["sim_end_s"] <= 30
    assert 0 < cut["num_requests"] == sum(t.arrival_s <= 30 for t in azure_trace()[:400]) < 400
    a = replay_json("--limit", "100", "--db", db)
    b = replay_json("--limit", "100", "--exact", "--db", db)
    assert a["e2e_p99_s"] == pytest.approx(b["e2e_p99_s"], rel=1e-9)


def _bad_azure_trace(tmp_path: Path) -> Path:
    lines = (ROOT / "sim/data/azure_llm_2023/AzureLLMInferenceTrace_code.csv").read_text().splitlines()[:10]
    ts, _, gen = lines[4].split(",")
    lines[4] = f"{ts},12x,{gen}"  # line 5: a bad ContextTokens
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ctrl_c_during_a_replay_says_which_run_was_kept(db, monkeypatch):
    from sim.driver import SimDriver

    def interrupted(self, requests):
        raise KeyboardInterrupt

    monkeypatch.setattr(SimDriver, "run", interrupted)
    result = cli("sim", "replay", "--limit", "5", "--db", db, ok=False)
    assert result.exit_code in (1, 130)
    assert ("interrupted after 0 requests arrived: run 1 is stored with status 'interrupted' and the rows written "
            f"until then (`controlplane runs show 1 --db {db}`)") in result.stderr  # (the run is there, not in the default)


def test_sigterm_during_a_replay_prints_the_summary_and_exits_143(db, monkeypatch):
    # (`timeout`, `kill`, a container runtime: the replay exited silently, its run marked crashed without a summary)
    import os
    import signal

    from sim.driver import SimDriver

    run = SimDriver.run

    def terminated(self, requests):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before the first event: the run stops at its first tick
        return run(self, requests)

    monkeypatch.setattr(SimDriver, "run", terminated)
    result = cli("sim", "replay", "--limit", "50", "--db", db, "--json", ok=False)
    assert result.exit_code == 143, result.output
    summary = json.loads(result.stdout)
    assert summary["interrupted_by"] == "SIGTERM" and summary["interrupted_at_s"] == 1.0
    assert "interrupted by SIGTERM at simulated second 1, after" in result.stderr


@pytest.mark.parametrize("transform", [["--window-start", "100000"], ["--rate-profile", "0:0"]])
def test_a_replay_whose_transforms_leave_no_request_warns(db, transform):
    result = cli("sim", "replay", "--format", "azure", *transform, "--db", db, "--json")
    assert json.loads(result.stdout)["num_requests"] == 0
    assert ("warning: no request was replayed: the trace's requests all fell outside --window-start/--window-end, "
            "or --limit / --rate-scale / --rate-profile / --until left none") in result.stderr


@pytest.mark.parametrize("options, message", [
    (["--until", "0"], "--until: Input should be greater than 0"),
    (["--slo-ttft", "-1"], "--slo-ttft: Input should be greater than 0"),
    (["--qps", "0"], "--qps must be a finite number > 0, got 0"),
    (["--arrival", "weibull"], "--arrival: unknown arrival 'weibull'; valid choices: poisson, gamma"),
])
def test_a_bad_option_value_is_named_by_its_option(db, tmp_path, options, message):
    """They were named by the config key (`sim.until_s: ... (given as an option or override ...)`) or by the
    reader's keyword (`qps must be ...`)."""
    trace = []
    if options[0] in ("--qps", "--arrival"):  # (a Vidur length table: the options make its arrivals)
        (tmp_path / "v.csv").write_text("num_prefill_tokens,num_decode_tokens\n10,5\n12,4\n")
        trace = [str(tmp_path / "v.csv")]
    result = cli("sim", "replay", *trace, "--limit", "5", *options, "--db", db, ok=False)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_qps_on_a_trace_with_timestamps_says_what_to_use_instead(db):
    trace = ROOT / "sim/data/azure_llm_2023/AzureLLMInferenceTrace_code.csv"
    result = cli("sim", "replay", str(trace), "--qps", "2", "--db", db, ok=False)
    assert result.exit_code == 2
    assert "--qps and --arrival set the synthetic arrivals of Vidur traces" in result.stderr
    assert "is in the azure format" in result.stderr and "--speed-up or --rate-scale" in result.stderr


def test_a_malformed_trace_row_exits_2_naming_file_line_and_field(tmp_path, db):
    path = _bad_azure_trace(tmp_path)
    result = cli("sim", "replay", path, "--db", db, ok=False)
    assert result.exit_code == 2, result.output
    assert f"{path}:5" in result.stderr and "ContextTokens" in result.stderr


def test_a_malformed_trace_header_exits_2_naming_the_file_and_column(tmp_path, db):
    path = tmp_path / "noheader.csv"
    path.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9799600,4808\n")
    result = cli("sim", "replay", path, "--format", "azure", "--db", db, ok=False)
    assert result.exit_code == 2
    assert str(path) in result.stderr and "GeneratedTokens" in result.stderr


def test_a_bad_config_key_exits_2_naming_it(tmp_path, db):
    path = tmp_path / "run.yaml"
    path.write_text("sim:\n  tick_z: 1\n")
    result = cli("sim", "replay", "--config", path, "--limit", "5", "--db", db, ok=False)
    assert result.exit_code == 2
    assert "sim.tick_z" in result.stderr and str(path) in result.stderr
    assert result.stdout == ""


def test_an_unknown_plugin_in_the_config_exits_2(tmp_path, db):
    path = tmp_path / "run.toml"
    path.write_text('[plugins]\nenabled = ["least-loaded", "fastest-gpu"]\n')
    result = cli("sim", "replay", "--config", path, "--limit", "5", "--db", db, ok=False)
    assert result.exit_code == 2
    assert "'fastest-gpu'" in result.stderr and "installed:" in result.stderr


def test_an_unknown_trace_format_exits_2(db):
    result = cli("sim", "replay", "--format", "parquet", "--limit", "5", "--db", db, ok=False)
    assert result.exit_code == 2 and "parquet" in result.stderr


# --- runs ---------------------------------------------------------------------------------------


@pytest.fixture
def two_runs(db) -> str:
    cli("sim", "replay", "--limit", "40", "--db", db, "--name", "small", "--json")
    cli("sim", "replay", "--limit", "60", "--db", db, "--name", "bigger", "--json")
    return db


def test_runs_list(two_runs):
    out = cli("runs", "list", "--db", two_runs).stdout
    rows = [line for line in out.splitlines() if re.search(r"│ [12] +│", line)]
    assert len(rows) == 2
    assert "bigger" in rows[0] and "60" in rows[0]  # newest first
    assert "small" in rows[1] and "40" in rows[1]
    assert "finished" in rows[0] and "AzureLLMInferenceTrace_code.csv" in rows[0]


def test_runs_list_keeps_the_status_whole_on_an_80_column_terminal(two_runs, monkeypatch):
    monkeypatch.setattr(common.out, "_width", 80)
    out = cli("runs", "list", "--db", two_runs).stdout
    assert max(map(len, out.splitlines())) <= 80 and "…" not in out
    assert out.split().count("finished") == 2  # (rules or not: tests/cli/test_tables.py)


def test_runs_list_status_crashed_finds_the_runs_marked_crashed(two_runs):
    import subprocess as sp
    from datetime import datetime, timezone

    from controlplane.storage import RunRecorder
    from controlplane.storage.crashed import claim_run, process_marker

    dead = sp.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    engine = make_engine(two_runs)
    with RunRecorder(engine) as rec:  # a run whose process was killed: left running, owned by a dead pid
        run_id = rec.start_run(name="killed", mode="sim", trace=None, trace_format=None, seed=1, config={},
                               plugins=[], started_at=datetime.now(timezone.utc))
    claim_run(engine, run_id, {**process_marker(), "pid": dead.pid, "start_ticks": None})
    engine.dispose()

    crashed = cli("runs", "list", "--status", "crashed", "--db", two_runs)  # (this command marks it first)
    rows = [line for line in crashed.stdout.splitlines() if re.search(r"│ \d+ +│", line)]
    assert len(rows) == 1 and f"│ {run_id} " in rows[0] and "killed" in rows[0] and "crashed" in rows[0]
    assert re.search(r"│ crashed +│ +- +│ 0\* +│", rows[0]), rows[0]  # its request rows (none, counted: *), not "-"
    finished = cli("runs", "list", "--status", "finished", "--db", two_runs).stdout
    assert len(re.findall(r"│ [12] +│.*│ finished +│", finished)) == 2 and "killed" not in finished
    none = cli("runs", "list", "--status", "interrupted", "--db", two_runs)
    assert "no interrupted runs stored" in none.stderr and not re.search(r"│ \d+ +│", none.stdout)
    typo = cli("runs", "list", "--status", "crashd", "--db", two_runs, ok=False)
    said = " ".join(typo.output.replace("│", " ").split())  # (the usage error's box wraps it)
    assert typo.exit_code == 2 and "unknown status 'crashd' (did you mean 'crashed'?); statuses: crashed," in said


def test_runs_list_limit_below_zero_is_a_usage_error(two_runs):
    result = cli("runs", "list", "--limit", "-1", "--db", two_runs, ok=False)  # (0 lists every run)
    assert result.exit_code == 2 and "--limit" in result.output


def test_runs_show(two_runs):
    out = cli("runs", "show", "1", "--db", two_runs).stdout
    assert "run 1" in out and "small" in out and "status=finished" in out
    assert re.search(r"requests\s+│\s+40 │", out)
    assert "plugins: sql-recorder, queue-limit 0.1.0" in out  # (call order: the run's own recorder, passed in code, first)
    assert re.search(r"cp_route_request\s+│\s+least-loaded\s+│\s+route\s+│\s+40 ", out)


def test_runs_show_a_missing_run_exits_2(two_runs):
    result = cli("runs", "show", "99", "--db", two_runs, ok=False)
    assert result.exit_code == 2 and "run 99 not found" in result.stderr


@pytest.mark.parametrize("command", [["list"], ["show", "1"], ["export", "1"], ["compare", "1", "2"],
                                     ["plot", "1"], ["report", "1"]])
def test_runs_commands_on_a_missing_sqlite_file_exit_2_and_make_nothing(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo" / "runs.db"
    result = cli("runs", *command, "--db", f"sqlite:///{missing}", ok=False)
    assert result.exit_code == 2
    assert f"sqlite:///{missing}: no such file" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no empty database, no folder


def test_runs_list_on_a_file_that_is_not_a_database_is_one_line(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" * 200)
    result = cli("runs", "list", "--db", f"sqlite:///{path}", ok=False)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == f"error: database: sqlite:///{path}: DatabaseError: file is not a database"


def test_runs_list_on_an_unreachable_server_is_one_line():
    result = cli("runs", "list", "--db", "postgresql://nobody:secret@127.0.0.1:1/x", ok=False)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database: postgresql://nobody:***@127.0.0.1:1/x: ")


def test_a_replay_into_a_folder_that_is_a_file_exits_2_naming_it(tmp_path):
    (tmp_path / "trace.csv").write_text("x\n")
    result = cli("sim", "replay", "--limit", "5", "--db", f"sqlite:///{tmp_path / 'trace.csv' / 'runs.db'}", ok=False)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert f"{tmp_path / 'trace.csv'}: is a file, not a folder" in result.stderr


@pytest.fixture
def failed_run(tmp_path, two_runs) -> str:
    """Run 3 of ``two_runs``'s database: a replay that stopped at a malformed row."""
    trace = tmp_path / "bad.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n"
                     "2023-11-16 18:15:47.00,abc,1\n")
    assert cli("sim", "replay", str(trace), "--db", two_runs, ok=False).exit_code == 2
    return two_runs


def test_runs_show_of_a_failed_run_says_why_it_failed(failed_run):
    out = cli("runs", "show", "3", "--db", failed_run).stdout
    assert "status=failed" in out
    assert re.search(r"failed: TraceFormatError: \S*bad\.csv:3: field 'ContextTokens'", out)


def _run_failed_without_a_summary(url: str, error: str) -> int:
    """A run that failed before it measured anything (its summary only its error), as a run whose process raised
    outside its trace leaves it (a trace failing mid-replay stores what it replayed: `sim.replay_trace`)."""
    from datetime import datetime, timezone

    from controlplane.storage import RunRecorder

    engine = make_engine(url)
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(name="failed", mode="sim", trace="bad.csv", trace_format="azure", seed=0, config={},
                               plugins=[], started_at=datetime.now(timezone.utc))
        rec.finish_run(run_id, status="failed", summary={"error": error}, finished_at=datetime.now(timezone.utc),
                       wall_s=0.1, sim_end_s=0.0)
    engine.dispose()
    return run_id


def test_runs_compare_refuses_a_failed_run_naming_its_error(failed_run):
    run_id = _run_failed_without_a_summary(failed_run, "RuntimeError: the latency model broke")
    result = cli("runs", "compare", "1", str(run_id), "--db", failed_run, ok=False)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert re.search(rf"run {run_id} has no summary to compare \(status failed: RuntimeError: the latency model "
                     "broke", result.stderr)


@pytest.mark.parametrize("command", [["export", "1", "-o"], ["plot", "1", "-o"], ["report", "1", "--html"]])
def test_an_output_path_that_is_a_folder_is_one_line(two_runs, tmp_path, command):
    result = cli("runs", *command, str(tmp_path), "--db", two_runs, ok=False)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == f"error: {tmp_path}: Is a directory"


def test_runs_compare_names_a_sweep_that_does_not_exist(two_runs):
    result = cli("runs", "compare", "--a-sweep", "7", "--b", "1", "--db", two_runs, ok=False)
    assert result.exit_code == 2 and f"--a-sweep: sweep 7 not found in {two_runs}" in result.stderr


def test_runs_compare(two_runs):
    out = cli("runs", "compare", "1", "2", "--db", two_runs).stdout
    assert "run 1 vs run 2" in out
    assert re.search(r"requests\s+│\s+40 │\s+60 │\s+\+20 │\s+\+50\.0% │", out)


def test_runs_compare_counts_a_run_named_twice_on_a_side_once(two_runs):
    """`runs compare 1 2 --a 1` drew run 1 twice on side A (it weighed double in the bootstrap)."""
    result = json.loads(cli("runs", "compare", "1", "2", "--a", "1", "--json", "--db", two_runs).stdout)
    assert result["a"] == [1] and result["b"] == [2]


def test_runs_compare_of_a_run_that_replayed_nothing_says_so(two_runs):
    """It asked whether the run was recorded with `record: full`: it was; it had no request."""
    cli("sim", "replay", "--window-start", "100000", "--db", two_runs, "--json")  # run 3: no request in the window
    result = cli("runs", "compare", "3", "1", "--db", two_runs, ok=False)
    assert result.exit_code == 2 and "run 3 has no requests to compare: it replayed none" in result.stderr


def test_reading_runs_from_another_applications_database_changes_nothing(tmp_path):
    """`runs list --db foreign.db` added the schema's nine tables to it and said "no runs stored"."""
    import sqlite3

    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE customers (id INTEGER)")
    result = cli("runs", "list", "--db", str(path), ok=False)
    assert result.exit_code == 2 and "holds tables (customers) but no controlplane schema" in result.stderr
    with sqlite3.connect(path) as con:
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["customers"]


def test_runs_export_csv_and_json(two_runs, tmp_path):
    out = cli("runs", "export", "1", "--db", two_runs, "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == EXPORT_COLUMNS["requests"]
    assert len(rows) == 41
    assert len({r[0] for r in rows[1:]}) == 40

    data = json.loads(cli("runs", "export", "2", "--db", two_runs, "--format", "json").stdout)
    assert len(data) == 60 and set(data[0]) == set(EXPORT_COLUMNS["requests"])
    assert all(r["status"] == "completed" and r["first_token_s"] <= r["finish_s"] for r in data)

    target = tmp_path / "decisions.json"
    msg = cli("runs", "export", "2", "--db", two_runs, "--what", "decisions", "--format", "json",
              "--output", target).stdout
    decisions = json.loads(target.read_text())
    assert f"wrote {len(decisions)} rows to {target}" in msg
    assert sum(d["action"] == "route" for d in decisions) == 60


def test_runs_export_rejects_an_unknown_format(two_runs):
    result = cli("runs", "export", "1", "--db", two_runs, "--format", "xml", ok=False)
    assert result.exit_code == 2 and "xml" in result.stderr


def test_runs_export_takes_the_format_from_the_output_s_extension_and_refuses_a_clash(two_runs, tmp_path):
    for name, parse in (("x.json", json.loads), ("x.jsonl", lambda t: [json.loads(x) for x in t.splitlines()]),
                        ("x.csv", lambda t: list(csv.DictReader(io.StringIO(t))))):
        cli("runs", "export", "1", "--db", two_runs, "-o", tmp_path / name)
        assert len(parse((tmp_path / name).read_text())) == 40, name
    clash = cli("runs", "export", "1", "--db", two_runs, "--format", "csv", "-o", tmp_path / "y.json", ok=False)
    assert clash.exit_code == 2 and not (tmp_path / "y.json").exists()
    assert (f"error: --format csv writes CSV, but -o {tmp_path / 'y.json'} names JSON by its extension: give a "
            "matching extension, or leave --format out") in " ".join(clash.stderr.split())
    assert cli("runs", "export", "1", "--db", two_runs, "--format", "jsonl", "-o", tmp_path / "z.ndjson")


# --- plugins and db -----------------------------------------------------------------------------


def test_plugins_list_shows_every_builtin_with_its_distribution():
    out = cli("plugins", "list").stdout
    for name in BUILTINS:
        line = next((ln for ln in out.splitlines() if re.search(rf"│ {re.escape(name)} +│", ln)), None)
        assert line is not None, f"{name} missing from:\n{out}"
        assert re.search(r"│ controlplane +│ 0\.1\.0 +│", line), line
    default_line = next(ln for ln in out.splitlines() if "│ least-loaded " in ln)
    assert "cp_route_request" in default_line and "│ yes " in default_line


def test_plugins_list_never_cuts_a_plugin_name_in_a_narrow_terminal(monkeypatch):
    monkeypatch.setattr(common.out, "_width", 80)
    out = cli("plugins", "list").stdout
    assert "…" not in out
    for name in ("priority-continuous-batching", "builtin-latency-models", *BUILTINS):
        assert name in out.split(), name  # (at 80 columns a plugin's fields a line each: tests/cli/test_tables.py)


def test_plugins_list_shows_a_plugin_that_fails_to_load_and_lists_the_rest(monkeypatch):
    from importlib import metadata

    from controlplane import plugin_manager

    scan = plugin_manager._scan_entry_points

    def with_a_broken_one():
        found = scan()
        ep = metadata.EntryPoint("broken-one", "no_such_module_xyz:Thing", "controlplane")
        return {**found, "broken-one": plugin_manager.PluginInfo.from_entry_point(ep)}

    monkeypatch.setattr(plugin_manager, "_scan_entry_points", with_a_broken_one)
    monkeypatch.setattr(plugin_manager, "_discovered", None)  # restored after: later tests do not see broken-one
    result = cli("plugins", "list", ok=False)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for name in BUILTINS:
        assert re.search(rf"│ {re.escape(name)} +│", result.stdout), name
    row = next(ln for ln in result.stdout.splitlines() if "│ broken-one " in ln)
    assert "failed to load" in row
    assert "error: plugin entry point 'broken-one' (no_such_module_xyz:Thing) failed to load: " \
        "No module named 'no_such_module_xyz'" in result.stderr
    assert "Traceback" not in result.output


def test_db_upgrade_migrates_to_head(db):
    out = cli("db", "upgrade", "--db", db).stdout
    assert f"database at revision {', '.join(sorted(head_revisions()))}" in out
    # Running it again is a no-op.
    assert "database at revision" in cli("db", "upgrade", "--db", db).stdout


# --- the installed script ----------------------------------------------------------------------


def test_the_installed_controlplane_script_replays(tmp_path):
    script = Path(sys.executable).parent / "controlplane"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}
    proc = subprocess.run(
        [str(script), "sim", "replay", "--limit", "50", "--json", "--no-progress",
         "--db", f"sqlite:///{tmp_path / 'runs.db'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["run_id"], summary["num_requests"], summary["num_completed"]) == (1, 50, 50)
    assert not (tmp_path / "controlplane.db").exists()  # --db was honoured


def test_an_error_message_is_printed_as_text_on_one_line(capsys):
    import typer

    from controlplane.cli import common

    with pytest.raises(typer.Exit):
        with common.user_errors():
            raise ValueError("cluster.models.0: the [chat] template " + "x" * 200)
    err = capsys.readouterr().err
    assert "the [chat] template" in err  # not taken for markup
    assert len(err.strip().splitlines()) == 1  # one line, not wrapped at 80 columns


def test_runs_show_lists_the_plugin_errors_with_their_first_error(tmp_path):
    from controlplane import Plugin, hookimpl
    from controlplane.storage import plugin_errors
    from controlplane.testing import make_trace, replay_with

    class Flaky(Plugin):
        name = "flaky-router"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            raise KeyError("tenant table has no 'acme'")

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(Flaky(), trace=make_trace(7), db_url=url)
    run_id = res.summary["run_id"]
    assert res.summary["num_plugin_errors"] == 7 and res.summary["num_completed"] == 7  # isolated: all served
    errors = plugin_errors(make_engine(url), run_id)
    assert [(e["plugin"], e["hook"], e["count"]) for e in errors] == [("flaky-router", "cp_route_request", 7)]
    assert "KeyError" in errors[0]["reason"] and "acme" in errors[0]["reason"]
    shown = CliRunner().invoke(app, ["runs", "show", str(run_id), "--db", url])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "plugin errors" in text and "flaky-router" in text and "tenant table has no" in text


def test_runs_show_keeps_decision_action_names_whole_and_shows_the_guardians_cost(tmp_path, monkeypatch):
    from controlplane.testing import make_trace, replay_with

    monkeypatch.setattr(common.out, "_width", 80)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(trace=make_trace(40), db_url=url, sim={"guardian_block_rate": 0.5},
                      guardians={"models": [{"name": "judge", "latency": {"base_s": 0.05}}]},
                      plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "async", "guardian": "judge"}}})
    assert any(d.action == "guardian_block_after_reply" for d in res.decisions)
    shown = CliRunner().invoke(app, ["runs", "show", str(res.summary["run_id"]), "--db", url])
    assert shown.exit_code == 0, shown.output
    assert "guardian_block_after_reply" in shown.output  # not "guardian_block_af…" at 80 columns
    text = " ".join(shown.output.split())
    assert "guardian cost (USD)" in text and "total cost, models + guardians (USD)" in text


def test_db_takes_a_sqlite_files_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli("sim", "replay", "--limit", "20", "--db", "runs.db", "--json")
    assert (tmp_path / "runs.db").is_file()
    out = cli("runs", "list", "--db", "runs.db").stdout
    assert re.search(r"│ 1 +│", out) and "finished" in out
    shown = cli("runs", "show", "1", "--db", str(tmp_path / "runs.db")).stdout  # (an absolute path too)
    assert "finished" in shown


def test_runs_compare_without_intervals_shows_each_sides_values_the_mean_over_its_runs(two_runs):
    """`--no-ci` with several runs a side printed nothing, and its --json gave `metrics: []` even for one run each."""
    out = cli("runs", "compare", "--a", "1,2", "--b", "2", "--no-ci", "--db", two_runs).stdout
    assert "A (runs 1,2: mean)" in out and "B (run 2)" in out
    assert re.search(r"requests\s+│\s+50 │\s+60 │\s+\+10 │", out)  # A: the mean of 40 and 60 requests
    result = json.loads(cli("runs", "compare", "1", "2", "--no-ci", "--json", "--db", two_runs).stdout)
    attainment = result["metrics"][0]
    assert (attainment["metric"], attainment["low"], attainment["high"]) == ("slo_attainment", None, None)
    assert attainment["a"] is not None and attainment["b"] is not None
    assert {(m["metric"], m["stat"]) for m in result["metrics"]} >= {("ttft", "p99"), ("queue", "mean")}
