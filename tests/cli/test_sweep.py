"""`controlplane sim sweep`: what a user sees when a sweep is interrupted."""

from __future__ import annotations

import json
import os
import re

import pytest
from typer.testing import CliRunner

import sim.sweep
from controlplane.cli import app
from sim.sweep.run import SweepInterrupted


pytestmark = pytest.mark.usefixtures("wide_consoles")


def test_ctrl_c_during_a_sweep_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")

    def interrupted(*args, **kwargs):
        raise SweepInterrupted(4, 1, 2)

    monkeypatch.setattr(sim.sweep, "run_sweep", interrupted)
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", f"sqlite:///{tmp_path / 'runs.db'}"])
    assert result.exit_code in (1, 130)
    assert ("interrupted: sweep 4 is stored with status 'interrupted', 1 of its 2 runs finished; run the same "
            "command again to resume it (--fresh starts over)") in result.stderr


@pytest.mark.usefixtures("no_controlplane_env")
def test_the_last_line_names_the_database_the_sweep_is_in(tmp_path, monkeypatch):
    """`runs report --sweep N` without it looked in the default database, where sweep N is another or none."""
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1]\n")
    db = f"sqlite:///{tmp_path / 'sweeps.db'}"
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial"])
    assert result.exit_code == 0, result.output
    assert f"see `controlplane runs report --sweep 1 --db {db} --html sweep.html`" in result.stdout
    default = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--backend", "serial"])
    assert default.exit_code == 0, default.output
    assert "see `controlplane runs report --sweep 1 --html sweep.html`" in default.stdout


@pytest.mark.parametrize(("trace", "told"), [("{limit: 40}", True), ("{limit: 40, rate_scale: 0.5}", False)])
def test_seeds_that_change_nothing_are_said_to(tmp_path, trace, told):
    """The bundled trace's arrivals are replayed as they are and the plugins here draw nothing: its two seeds give
    the same runs, which the sweep says (the seeds add runs, not evidence); thinned to half its requests, a draw
    per seed, they differ and nothing is said."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"trace: {trace}\nseeds: [0, 1]\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial"])
    assert result.exit_code == 0, result.output
    assert ("every point's seeds gave the same run" in result.stderr) is told
    as_json = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial", "--json"])
    assert json.loads(as_json.stdout)["seeds_change_nothing"] is told
    # (with --json the note was not printed at all: it goes to stderr as without)
    assert ("every point's seeds gave the same run" in as_json.stderr) is told


def test_the_sweep_table_shows_what_differs_between_plugin_lists():
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    base = ["queue-limit", "continuous-batching", "fixed-replicas"]
    runs = [{"id": i + 1, "seed": 0, "summary": {}, "overrides": {"plugins.enabled": [base[0], router, *base[1:]],
                                                                  "cluster.models.0.replicas": 2}}
            for i, router in enumerate(["least-loaded", "round-robin"])]
    console = Console(width=200, record=True)
    console.print(sweep_table(runs, "sweep 1"))
    rows = [line for line in console.export_text().splitlines() if re.match(r" \d", line)]
    assert "least-loaded" in rows[0] and "round-robin" in rows[1]
    assert not any("queue-limit" in row for row in rows)


@pytest.mark.usefixtures("no_controlplane_env")
def test_without_db_the_runs_go_where_the_specs_config_stores_runs(tmp_path, monkeypatch):
    """They went to ./controlplane.db, the config's storage.url silently ignored (`sim replay --config` uses it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text(f"storage: {{url: 'sqlite:///{tmp_path / 'mine.db'}'}}\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("config: cfg.yaml\ntrace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1]\n")
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--backend", "serial"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mine.db").is_file() and not (tmp_path / "controlplane.db").exists()
    assert f"--sweep 1 --db sqlite:///{tmp_path / 'mine.db'} --html" in result.stdout


def test_a_search_with_db_says_where_its_runs_are(tmp_path):
    """It printed the stages, the front and the best, but neither the sweep id nor the database."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 60}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0], neighbours: 0}\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "30", "--slo-tpot", "5",
                                      "--slo-attainment", "0.5", "--backend", "serial", "--db", db])
    assert result.exit_code == 0, result.output
    assert re.search(rf"stored in {re.escape(db)} as sweep 1 \(its [12] full-trace runs?\); see `controlplane runs "
                     rf"report --sweep 1 --db {re.escape(db)} --html search.html`", " ".join(result.stdout.split()))


def test_a_search_that_stored_no_run_says_so_and_why(tmp_path):
    """Every full-trace run stopped early: it said `stored in DB as sweep 1 (its full-trace runs); see runs report`,
    a report of 0 runs, and `runs sweeps` said 0/? for it."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 60}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0], neighbours: 0}\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "0.001", "--slo-tpot", "0.001",
                                      "--slo-attainment", "0.9", "--backend", "serial", "--db", db])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert (f"stored no runs in {db} (search 1 holds none): only runs that replayed the whole trace are stored, and "
            "every run was stopped early") in said and "runs report" not in said
    listed = CliRunner().invoke(app, ["runs", "sweeps", "--db", db])
    assert listed.exit_code == 0 and " 0/0 " in listed.stdout and "/?" not in listed.stdout


@pytest.mark.parametrize("stored", [True, False])
def test_ctrl_c_during_a_search_says_what_was_stored_and_that_it_starts_afresh(tmp_path, monkeypatch, stored):
    """It printed nothing (exit 130, the search's sweep row `interrupted`)."""
    import sim.sweep.search
    from sim.sweep.backends import Backend

    class CtrlCWhenConfirming(Backend):  # Ctrl-C once both candidates were replayed on the full trace
        def run(self, tasks, traces):
            for t in tasks:
                if t.stage == "confirm":
                    raise KeyboardInterrupt
                yield from super().run([t], traces)

    monkeypatch.setattr(sim.sweep.search, "make_backend", lambda *args, **kwargs: CtrlCWhenConfirming())
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 60}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0, 1], neighbours: 0}\n")
    db = ["--db", f"sqlite:///{tmp_path / 'runs.db'}"] if stored else []
    result = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "30", "--slo-tpot", "5",
                                      "--slo-attainment", "0.5", *db])
    assert result.exit_code in (1, 130)
    said = " ".join(result.stderr.split())
    if stored:
        assert ("interrupted: search 1 is stored with status 'interrupted', 2 full-trace runs finished (a candidate's "
                "screen and rungs are not stored); a search does not resume: run the same command again to start "
                "afresh") in said
    else:
        assert "interrupted: nothing was stored; a search does not resume" in said


@pytest.mark.parametrize(("trace", "told"), [("{limit: 60}", True), ("{limit: 60, rate_scale: 0.5}", False)])
def test_a_search_says_when_its_confirmation_seeds_changed_nothing(tmp_path, trace, told):
    """Its confirmation over two seeds was the same run twice on the bundled trace replayed as it is, and nothing
    said so; thinned by seeded draws, the seeds differ and nothing is said."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"trace: {trace}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0, 1], neighbours: 0}\n")
    args = ["sim", "search", str(spec), "--slo-ttft", "30", "--slo-tpot", "5", "--slo-attainment", "0.5",
            "--backend", "serial"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ("each confirmed candidate's seeds gave the same run" in result.stderr) is told
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(as_json.stdout)["seeds_change_nothing"] is told  # (stdout: the JSON line alone)
    assert ("each confirmed candidate's seeds gave the same run" in as_json.stderr) is told


def test_in_80_columns_the_sweep_table_cuts_no_value_and_its_caption_names_the_keys():
    """Its columns were headed by full dotted keys: at 80 columns they and the values were cut to
    'cluste…', 'least-…', 'sarat…'."""
    from controlplane.cli.sweep import short_names, sweep_table
    from rich.console import Console

    base = ["queue-limit", "continuous-batching", "fixed-replicas"]
    runs = [{"id": i + 1, "seed": 0, "overrides": {"plugins.enabled": [base[0], router, *base[1:]],
                                                   "cluster.models.0.replicas": 6,
                                                   "plugins.settings.continuous-batching.policy": policy},
             "summary": {"slo_attainment": 0.9653, "ttft_p99_s": 23.59, "tpot_p99_s": 0.06282, "gpu_seconds": 3636}}
            for i, (router, policy) in enumerate([("least-loaded", "sarathi"), ("round-robin", "vllm")])]
    console = Console(width=80, record=True)
    console.print(sweep_table(runs, "sweep 1", width=80))
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    rows = [line.split() for line in text.splitlines() if line.startswith(" 1 ") or line.startswith(" 2 ")]
    assert rows == [["1", "0", "least-loaded", "sarathi", "0.9653", "23.59", "0.06282", "1.01"],
                    ["2", "0", "round-robin", "vllm", "0.9653", "23.59", "0.06282", "1.01"]]
    assert "policy = plugins.settings.continuous-batching.policy" in " ".join(text.split())
    assert "in every run: cluster.models.0.replicas = 6" in " ".join(text.split())  # (one value: said once)
    assert short_names(["cluster.models.0.replicas", "cluster.models.1.replicas", "plugins.enabled"]) == {
        "cluster.models.0.replicas": "0.replicas", "cluster.models.1.replicas": "1.replicas",
        "plugins.enabled": "enabled"}


def test_the_sweep_table_shows_the_guardians_gpu_hours_and_the_total_cost_when_runs_have_guardians():
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    guarded = {"gpu_seconds": 7200.0, "guardian_gpu_hours": 1.5, "cost_usd": 5.0, "total_cost_usd": 8.75}
    runs = [{"id": i + 1, "seed": 0, "summary": s, "overrides": {"cluster.models.0.replicas": i + 1}}
            for i, s in enumerate([guarded, {"gpu_seconds": 3600.0, "cost_usd": 2.5}])]
    console = Console(width=200, record=True)
    console.print(sweep_table(runs, "sweep 1"))
    text = console.export_text()
    assert "guardian gpu-h" in text and "total cost (USD)" in text
    rows = [line for line in text.splitlines() if re.match(r" \d", line)]
    assert re.search(r" 2 +1\.5 +8\.75 *$", rows[0]) and re.search(r" 1 +0 +- *$", rows[1])
    console = Console(width=200, record=True)
    console.print(sweep_table(runs[1:], "sweep 2"))
    assert "guardian" not in console.export_text()  # runs without guardians: the columns as before


PLUGINS = ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
           "builtin-latency-models"]


def _metric_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if re.match(r" \d+ +\d ", line)]


@pytest.mark.parametrize("width", [80, 120])
def test_a_list_in_every_run_is_said_once_and_the_metrics_and_cost_always_show(width):
    """A `plugins.enabled` of one value printed whole in every row, pushing attainment, the p99s and
    GPU-hours off a 120-column terminal; and the table had no cost, so 2xH100 and 2xA100 (both
    0.16-0.17 GPU-hours, 0.66 and 0.41 USD) could not be ranked."""
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    runs = [{"id": i + 1, "seed": 0, "overrides": {"cluster.models.0.replicas": 2, "cluster.models.0.gpu": gpu,
                                                   "plugins.enabled": PLUGINS},
             "summary": {"slo_attainment": 0.9833, "ttft_p99_s": 1.234, "tpot_p99_s": 0.05678, "gpu_seconds": 612.0,
                         "cost_usd": cost}}
            for i, (gpu, cost) in enumerate([("h100-80gb", 0.66), ("a100-80gb", 0.4125)])]
    console = Console(width=width, record=True)
    console.print(sweep_table(runs, "sweep 1", width=width))
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
    assert _metric_rows(text) == [["1", "0", "h100-80gb", "0.9833", "1.234", "0.05678", "0.17", "0.66"],
                                  ["2", "0", "a100-80gb", "0.9833", "1.234", "0.05678", "0.17", "0.4125"]]
    assert "cost (USD)" in text if width == 120 else "(USD)" in text  # (at 80 the headers wrap between words)
    said = " ".join(text.split())
    assert ("in every run: cluster.models.0.replicas = 2; plugins.enabled = [queue-limit, least-loaded, "
            "continuous-batching, fixed-replicas, static-memory, builtin-latency-models]") in said


def test_at_80_columns_long_override_values_fold_and_no_metric_is_cut():
    """Four override columns of a GPU sweep (two of them bundle keys) at 80 columns: the values were
    printed whole and the last metrics cut; now the values fold and every metric shows whole."""
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    runs = [{"id": i + 1, "seed": i % 2, "overrides": {"cluster.models.0.gpu": gpu, "cluster.models.0.latency.gpu": gpu,
                                                       "cluster.models.0.replicas": n,
                                                       "plugins.settings.continuous-batching.policy": policy},
             "summary": {"slo_attainment": 0.001667, "ttft_p99_s": 429.7, "tpot_p99_s": 0.05471, "gpu_seconds": 756.0,
                         "cost_usd": 0.1644}}
            for i, (gpu, n, policy) in enumerate([("a100-80gb", 1, "vllm"), ("h100-80gb", 12, "sarathi"),
                                                  ("l4", 3, "vllm")])]
    console = Console(width=80, record=True)
    console.print(sweep_table(runs, "sweep 1", width=80))
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    rows = _metric_rows(text)
    assert len(rows) == 3 and all(row[-5:] == ["0.001667", "429.7", "0.05471", "0.21", "0.1644"] for row in rows)


@pytest.mark.parametrize("command", ["sweep", "search"])
def test_workers_below_one_is_a_usage_error_before_anything_is_stored(tmp_path, command):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(app, ["sim", command, str(spec), "--workers", "0", "--db", f"sqlite:///{db}"])
    assert result.exit_code == 2 and "--workers" in result.output
    assert not db.exists()


def test_an_unknown_backend_is_refused_before_anything_is_stored(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--backend", "foo", "--db", f"sqlite:///{db}"])
    assert result.exit_code == 2 and "unknown backend 'foo'; expected one of auto, ray, pool, serial" in result.stderr
    assert not db.exists()


@pytest.mark.parametrize("json_out", [False, True])
def test_a_sweep_with_a_failed_run_exits_1_having_stored_and_shown_every_run(tmp_path, json_out, monkeypatch):
    import json

    monkeypatch.setattr("sim.sweep.spec.check_points", lambda *a: None)  # (the spec's own check refuses it first)

    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.latency_model: [linear, nonsense]\n")
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--backend", "serial", "--no-progress",
                                      "--db", f"sqlite:///{tmp_path / 'runs.db'}"] + (["--json"] if json_out else []))
    assert result.exit_code == 1, result.output
    if json_out:
        shown = json.loads(result.stdout)
        assert len(shown["runs"]) == 2 and len(shown["failed"]) == 1
    else:
        assert "1 runs failed" in result.stderr and "ran sweep" in result.stdout
        # (the error's key whole: rich markup took its `[default]` for a style and printed `cluster.models.latency_model`)
        assert ("run 2 failed: ConfigError: cluster.models[default].latency_model: unknown latency model 'nonsense'"
                in " ".join(result.stderr.split())), result.stderr


@pytest.mark.parametrize("command", ["sweep", "search"])
@pytest.mark.parametrize(("space", "key", "problem"), [
    ("  plugins.enabled: [[queue-limit, round-robbin, continuous-batching, fixed-replicas, static-memory, "
     "builtin-latency-models]]\n", "space.plugins.enabled", "unknown plugin 'round-robbin' (did you mean 'round-robin'?)"),
    ("  plugins.settings.continuous-batching.polcy: [vllm, sarathi]\n",
     "space.plugins.settings.continuous-batching.polcy",
     "plugin 'continuous-batching' has no setting 'polcy' (did you mean 'policy'?)"),
    ("  cluster.models.0.replicas: [1, 2]\n  plugins.settings.continuous-batching.policy: [vllm, sarathi, sarathy]\n",
     "space.plugins.settings.continuous-batching.policy[2] = 'sarathy'", "Input should be 'vllm' or 'sarathi'"),
], ids=["plugin", "setting", "value"])
def test_an_unknown_plugin_or_setting_or_a_bad_value_in_the_space_is_refused_before_any_run(tmp_path, command, space, key, problem):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n" + space)
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(app, ["sim", command, str(spec), "--backend", "serial", "--no-progress",
                                      "--db", f"sqlite:///{db}"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {spec}: {key}: {problem}"
    assert not db.exists()


def test_a_sweep_into_an_unreachable_database_is_one_line_naming_it(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    url = "postgresql+psycopg://cp:s3cret@127.0.0.1:1/runs"  # (nothing listens on port 1)
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--backend", "serial", "--db", url])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.count("\n") == 1 and "s3cret" not in result.stderr
    assert result.stderr.startswith("error: database: postgresql+psycopg://cp:***@127.0.0.1:1/runs: OperationalError: ")


def test_a_sweep_killed_with_sigkill_is_listed_crashed_and_resumes(tmp_path):
    """A real `controlplane sim sweep` process killed mid-sweep: the next command marks its sweep row
    ``crashed`` (`controlplane.storage.crashed`), `runs sweeps` shows it, the same command resumes it."""
    import json
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 200}\nspace:\n  cluster.models.0.replicas: [1, 2, 3, 4, 5, 6, 7, 8]\n")
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    cli = [sys.executable, "-m", "controlplane.cli"]
    sweep = [*cli, "sim", "sweep", str(spec), "--db", url, "--backend", "serial", "--json", "--no-progress"]
    proc = subprocess.Popen(sweep, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, stored = time.monotonic() + 120, 0
    while time.monotonic() < deadline and proc.poll() is None and not stored:  # a run is stored, more to come
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                stored = conn.execute("SELECT count(*) FROM run WHERE status = 'finished'").fetchone()[0]
        except sqlite3.Error:
            pass  # not made yet
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        status, spec_json = conn.execute("SELECT status, spec FROM sweep WHERE id = 1").fetchone()
    assert status == "running" and json.loads(spec_json)["process"]["pid"] == proc.pid  # nobody closed it

    listed = subprocess.run([*cli, "runs", "sweeps", "--db", url], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("│ 1 "))
    assert "crashed" in row and "running" not in row, listed.stdout
    assert f"sweep 1 was left running by pid {proc.pid}" in listed.stderr

    resumed = subprocess.run(sweep, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.splitlines()[-1])
    assert result["sweep_id"] == 1 and result["resumed"] and result["skipped"] >= 1
    assert result["skipped"] + result["ran"] == result["total"] == 8 and len(result["runs"]) == 8
    listed = subprocess.run([*cli, "runs", "sweeps", "--db", url], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "COLUMNS": "200"})
    row = next(line for line in listed.stdout.splitlines() if line.startswith("│ 1 "))
    assert "finished" in row and "8/8" in row, listed.stdout


def test_runs_compare_of_a_sweep_refuses_several_points_and_says_when_it_is_not_finished(tmp_path):
    """`--a-sweep` pooled every finished run: a sweep's points were taken as seeds of one configuration, and a
    crashed sweep was cut to its finished runs without a word."""
    from sqlalchemy import delete, update

    from controlplane.storage import make_engine
    from controlplane.storage.models import Run, Sweep
    from sim.sweep import load_spec, run_sweep

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    grid = run_sweep(load_spec(data={"name": "grid", "trace": {"limit": 20}, "seeds": [0, 1],
                                     "space": {"cluster.models.0.replicas": [1, 2]}}), db, backend="serial")
    one = run_sweep(load_spec(data={"name": "one", "trace": {"limit": 20}, "seeds": [0, 1, 2],
                                    "space": {"cluster.models.0.replicas": [2]}}), db, backend="serial")
    result = CliRunner().invoke(app, ["runs", "compare", "--a-sweep", str(grid.sweep_id), "--b-sweep",
                                      str(one.sweep_id), "--no-ci", "--db", db])
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert (f"--a-sweep: sweep {grid.sweep_id} holds 2 configurations (points), not one over seeds; compare one "
            "point's runs with --a RUN,RUN: replicas=1: runs 1,2; replicas=2: runs 3,4") in said
    engine = make_engine(db)
    with engine.begin() as conn:  # the one-point sweep crashed after two of its three runs
        conn.execute(delete(Run).where(Run.id == max(one.run_ids.values())))
        conn.execute(update(Sweep).where(Sweep.id == one.sweep_id).values(status="crashed"))
    engine.dispose()
    result = CliRunner().invoke(app, ["runs", "compare", "--a-sweep", str(one.sweep_id), "--b", "4", "--no-ci",
                                      "--db", db])
    assert result.exit_code == 0, result.output
    assert f"note: --a-sweep: sweep {one.sweep_id} is crashed: comparing its 2 of 3 finished runs" in result.stderr


def test_runs_compare_refuses_an_interrupted_sweep_of_several_points_by_its_spec(tmp_path):
    """A 24-point sweep interrupted after one point's runs was taken as "one configuration" (its finished runs'
    points were counted, not its spec's), and compared with a note "2 of 72 finished runs"."""
    from sqlalchemy import delete, update

    from controlplane.storage import make_engine
    from controlplane.storage.models import Run, Sweep
    from sim.sweep import load_spec, run_sweep

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    grid = run_sweep(load_spec(data={"name": "grid", "trace": {"limit": 20}, "seeds": [0, 1],
                                     "space": {"cluster.models.0.replicas": [1, 2, 3]}}), db, backend="serial")
    engine = make_engine(db)
    with engine.begin() as conn:  # interrupted once the first point's two runs were stored
        conn.execute(delete(Run).where(Run.id > 2))
        conn.execute(update(Sweep).where(Sweep.id == grid.sweep_id).values(status="interrupted"))
    engine.dispose()
    result = CliRunner().invoke(app, ["runs", "compare", "--a-sweep", str(grid.sweep_id), "--b", "1", "--no-ci",
                                      "--db", db])
    assert result.exit_code == 2, result.output
    assert (f"--a-sweep: sweep {grid.sweep_id} holds 3 configurations (points; 1 with finished runs, the sweep "
            "interrupted), not one over seeds; compare one point's runs with --a RUN,RUN: replicas=1: runs 1,2"
            ) in " ".join(result.stderr.split())


def test_a_random_sweep_says_when_its_draws_repeated_points(tmp_path):
    """`samples: 5` over replicas [2, 3] ran 2 points without saying it dropped repeated draws."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nmode: random\nsamples: 5\nspace:\n  cluster.models.0.replicas: [2, 3]\n")
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", f"sqlite:///{tmp_path / 'runs.db'}",
                                      "--backend", "serial"])
    assert result.exit_code == 0, result.output
    assert ("note: mode random drew 5 samples, 3 of them a point drawn before (run once): 2 distinct points to run"
            in " ".join(result.stderr.split()))


def test_a_search_with_no_winner_says_so_in_its_summary_and_its_report(tmp_path):
    """With no winner it said "N cheaper candidates rejected" (cheaper than nothing), and `runs report --sweep` said
    only that no run of the full trace was stored."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: hopeless\ntrace: {limit: 60}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0], neighbours: 0, screen_fraction: 1.0}\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "0.001", "--slo-tpot", "0.001",
                                      "--slo-attainment", "0.9", "--backend", "serial", "--db", db])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "every candidate rejected" in said and "cheaper candidates rejected" not in said
    page = tmp_path / "search.html"
    assert CliRunner().invoke(app, ["runs", "report", "--sweep", "1", "--db", db, "--html", str(page)]).exit_code == 0
    assert "<b>no candidate met the target</b> (SLO attainment 0.9)" in page.read_text()


def test_a_searchs_stored_runs_are_named_as_a_sweeps_are(tmp_path):
    """They were stored without a name (`runs list` showed "-")."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: named\ntrace: {limit: 60}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0, 1], neighbours: 0}\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "30", "--slo-tpot", "5",
                                      "--slo-attainment", "0.5", "--backend", "serial", "--db", db])
    assert result.exit_code == 0, result.output
    from controlplane.storage import list_runs, make_engine

    engine = make_engine(db)
    names = sorted(r["name"] for r in list_runs(engine))
    engine.dispose()
    assert names and all(re.fullmatch(r"named #\d+ seed [01]", n) for n in names), names  # were all None


def test_the_sweep_table_shows_gpu_hours_to_4_significant_figures():
    """GPU-hours were rounded to two decimals (0.1289 and 0.1261 both read 0.13) beside a 4-figure cost."""
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    runs = [{"id": i + 1, "seed": 0, "overrides": {"cluster.models.0.replicas": i + 1},
             "summary": {"slo_attainment": 1.0, "gpu_seconds": gpu_h * 3600, "cost_usd": gpu_h * 0.8}}
            for i, gpu_h in enumerate((0.1289, 0.1261, 12345.6 / 3600))] + [
            {"id": 4, "seed": 0, "overrides": {"cluster.models.0.replicas": 4}, "summary": {"error": "boom"}}]
    console = Console(width=200, record=True)
    console.print(sweep_table(runs, "sweep 1"))
    rows = [line.split() for line in console.export_text().splitlines() if re.match(r" \d", line)]
    assert [row[-2] for row in rows] == ["0.1289", "0.1261", "3.429", "-"]  # (no GPU-seconds: not 0.00)


@pytest.mark.parametrize("width", [40, 30])
def test_a_terminal_too_narrow_for_a_run_a_row_gets_a_key_and_value_a_line(width):
    """At 40 columns the table dropped its last columns (gpu-h, cost) and cut 0.2133 to 0.21, with no mark:
    now every key and value shows whole, one a line, a run after the other."""
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    runs = [{"id": i + 1, "seed": 0, "overrides": {"cluster.models.0.gpu": gpu, "cluster.models.0.replicas": n},
             "summary": {"slo_attainment": 0.9833, "ttft_p99_s": 1.234, "tpot_p99_s": 0.05678, "gpu_seconds": 768.0,
                         "cost_usd": cost}}
            for i, (gpu, n, cost) in enumerate([("h100-80gb", 2, 0.2133), ("a100-80gb", 3, 0.4125)])]
    console = Console(width=width, record=True)
    console.print(sweep_table(runs, "sweep 1", width=width))
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
    keys = ("run", "seed", "gpu", "replicas", "attainment", "ttft p99 (s)", "tpot p99 (s)", "gpu-h", "cost (USD)")
    said = [(key, line[len(key) + 1:].strip()) for line in text.splitlines() for key in keys
            if re.match(rf" {re.escape(key)}  +\S+ *$", line)]
    assert said == [(key, value) for run in (("1", "0", "h100-80gb", "2", "0.9833", "1.234", "0.05678", "0.2133", "0.2133"),
                                             ("2", "0", "a100-80gb", "3", "0.9833", "1.234", "0.05678", "0.2133", "0.4125"))
                    for key, value in zip(keys, run)]
    wide = Console(width=120, record=True)  # (a table that fits: a run a row, as before)
    wide.print(sweep_table(runs, "sweep 1", width=120))
    assert re.search(r" 1 +0 +h100-80gb +2 +0\.9833 +1\.234 +0\.05678 +0\.2133 +0\.2133", wide.export_text())


def test_in_80_columns_an_override_header_wraps_between_words_not_inside_one():
    """examples/sweep.yaml at 80 columns headed its replicas column 'replica' over 's': the overrides' columns
    were narrowed below their header's longest word."""
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    base = ["queue-limit", "continuous-batching", "fixed-replicas"]
    runs = [{"id": 10 * i + 1, "seed": i % 2, "overrides": {"cluster.models.0.replicas": replicas,
                                                            "plugins.enabled": [base[0], router, *base[1:]],
                                                            "plugins.settings.continuous-batching.policy": policy},
             "summary": {"slo_attainment": 0.001333, "ttft_p99_s": 165.9, "tpot_p99_s": 0.2143,
                         "gpu_seconds": 3412.0, "cost_usd": 2.558}}
            for i, (replicas, router, policy) in enumerate([(2, "least-loaded", "vllm"), (4, "round-robin", "sarathi"),
                                                            (8, "least-loaded", "sarathi")])]
    console = Console(width=80, record=True)
    console.print(sweep_table(runs, "sweep 1 (replicas-batching-routing)", width=80))
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    header = text[:text.index("───")].split()
    for word in ("replicas", "enabled", "policy", "attainment", "gpu-h"):
        assert word in header, text
    assert len(_metric_rows(text)) == 3


def test_a_dotted_override_header_wraps_after_a_dot():
    """(Rich folds a one-word header inside the word: '0.replicas' read '0.replica' over 's'.)"""
    from controlplane.cli.sweep import sweep_table
    from rich.console import Console

    runs = [{"id": 10 * i + 1, "seed": 0, "overrides": {"cluster.models.0.replicas": n, "cluster.models.1.replicas": n,
                                                        "plugins.settings.continuous-batching.policy": policy},
             "summary": {"slo_attainment": 0.001333, "ttft_p99_s": 165.9, "tpot_p99_s": 0.2143,
                         "gpu_seconds": 3412.0, "cost_usd": 2.558}}
            for i, (n, policy) in enumerate([(2, "vllm"), (4, "sarathi-serve-chunked"), (8, "sarathi")])]
    console = Console(width=82, record=True)
    console.print(sweep_table(runs, "sweep 1", width=82))
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 82 and len(_metric_rows(text)) == 3
    header = text[:text.index("───")].split()
    assert header.count("0.") == header.count("1.") == 1 and header.count("replicas") == 2, text
