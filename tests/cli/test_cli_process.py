"""`controlplane sim replay` as a user runs it, a whole process: the same command twice stores
the same run, and CONTROLPLANE_TIMINGS reports where its wall time went."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from controlplane import timings
from controlplane.storage import export_rows, make_engine
from sim.traces import bundled_trace_path
from tests.fixtures.common import VIDUR_ANCHOR_CONFIG

CONFIG = VIDUR_ANCHOR_CONFIG


def _run(cwd: Path, config: Path, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "controlplane.cli", "sim", "replay", str(bundled_trace_path()), "--format", "azure",
           "--config", str(config), "--limit", "300", "--json", "--no-progress"]
    base = {k: v for k, v in os.environ.items() if k != timings.ENV}
    proc = subprocess.run(cmd, cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _requests(db: Path, run_id: int) -> str:
    buf = io.StringIO(newline="")
    export_rows(make_engine(f"sqlite:///{db}"), run_id, "requests", "csv", buf)
    return buf.getvalue()


def test_the_same_command_twice_stores_the_same_summary_and_request_rows(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    summaries, rows = [], []
    for name in ("first", "second"):
        cwd = tmp_path / name
        cwd.mkdir()
        proc = _run(cwd, config)
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["num_requests"] == 300 and summary["num_completed"] == 300
        summaries.append({k: v for k, v in summary.items() if k != "wall_s"})
        rows.append(_requests(cwd / "controlplane.db", summary["run_id"]))  # the default database
    assert summaries[0] == summaries[1]
    assert rows[0].count("\n") == 301 and rows[0] == rows[1]


def test_a_replay_that_fails_before_its_run_starts_leaves_no_database(tmp_path):
    # The writer process gets its database as soon as the config is read, but touches it only
    # when the run starts: a trace that cannot be read leaves nothing behind.
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(CONFIG))
    db = tmp_path / "runs.db"
    proc = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", "t.csv", "--config", "run.yaml",
                           "--db", f"sqlite:///{db}", "--json", "--no-progress"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "CONTROLPLANE_WRITER_PROCESS": "1"})
    assert proc.returncode == 2 and "cannot detect format" in proc.stderr
    assert not db.exists()


def test_a_database_that_cannot_be_reached_is_one_clear_error_line_not_a_traceback(tmp_path):
    # Nothing listens on port 9 (discard): the writer's run row fails, and the command says so in one line.
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(CONFIG))
    trace = bundled_trace_path()
    for writer_process in ("0", "1"):
        proc = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", str(trace), "--config",
                               "run.yaml", "--db", "postgresql+psycopg://postgres@127.0.0.1:9/test", "--limit", "5",
                               "--json", "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CONTROLPLANE_WRITER_PROCESS": writer_process})
        assert proc.returncode == 2, proc.stderr
        assert "error: database:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_timings_stamp_the_phases_in_order_and_only_when_asked(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert timings.parse(_run(tmp_path, config).stderr) is None
    stamps = timings.parse(_run(tmp_path, config, **{timings.ENV: "1"}).stderr)
    order = ["main", "replay_imported", "session_open", "loop_start", "loop_end", "closed", "exit"]
    assert [k for k in stamps if k != "phases"] == order
    assert all(stamps[a] <= stamps[b] for a, b in zip(order, order[1:]))
    assert list(stamps["phases"]) == [f"{a}->{b}" for a, b in zip(order, order[1:])]
    assert stamps["phases"]["loop_start->loop_end"] > 0


def test_every_command_runs_as_itself_when_only_it_is_loaded():
    from controlplane.cli import COMMANDS

    for name in COMMANDS:
        proc = subprocess.run([sys.executable, "-m", "controlplane.cli", name, "--help"], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
        assert proc.returncode == 0, (name, proc.stderr[-1000:])
        assert f"Usage: python -m controlplane.cli {name} " in proc.stdout, (name, proc.stdout[:300])


def test_a_replay_imports_none_of_the_other_commands():
    code = ("import sys\n"
            "from controlplane.cli import build_app\n"
            "build_app(['sim'])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('controlplane.cli.', 'controlplane.live'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # a printed list of module names
    assert "controlplane.cli.sim" in loaded
    assert not [m for m in loaded if m.split(".")[2] in ("live", "bench", "runs", "db", "keys", "plugins")
                or m.startswith("controlplane.live")], loaded


def test_sim_replay_does_not_import_the_sweeps_module_and_the_sim_group_has_every_command():
    code = ("import sys\n"
            "from controlplane.cli import build_app\n"
            "build_app(['sim'], subcommand='replay')\n"
            "print('controlplane.cli.sweep' in sys.modules)\n"
            "from controlplane.cli import sim\n"
            "print(sorted(c.name or c.callback.__name__ for c in sim.app.registered_commands))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "False" and out[1] == "['replay', 'search', 'sweep']", out


def test_the_writer_process_is_forked_before_typer_pydantic_and_pluggy_are_imported():
    # `main` forks a replay's writer first: what is imported before it, the child would wait for.
    code = ("import sys\n"
            "import controlplane.cli\n"
            "print(sorted(m for m in ('typer', 'click', 'pydantic', 'pluggy') if m in sys.modules))\n"
            "import controlplane\n"
            "print(sorted(set(controlplane.__all__) - set(dir(controlplane))))\n"
            "from controlplane import Plugin, PluginSettings, hookimpl\n"  # still the package's names
            "from controlplane import hookspecs, plugin\n"
            "print(Plugin is plugin.Plugin, PluginSettings is plugin.PluginSettings, hookimpl is hookspecs.hookimpl)\n"
            "try:\n"
            "    controlplane.nothing_here\n"
            "except AttributeError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "[]", "True True True", "module 'controlplane' has no attribute 'nothing_here'"]


def test_the_collector_is_paused_from_main_until_the_app_is_built():
    # The CLI's imports, the writer's fork and typer's app make only long-lived objects: no
    # collection walks them; they are frozen once the app is built, and the command collects.
    code = ("import gc, sys\n"
            "import controlplane.cli as cli\n"
            "from controlplane import gc_freeze\n"
            "def build_app(*args, **kwargs):\n"
            "    print('building, collecting:', gc.isenabled(), 'frozen:', gc_freeze.any_frozen())\n"
            "    return lambda: print('running, collecting:', gc.isenabled(), 'frozen:', gc_freeze.any_frozen())\n"
            "cli.build_app = build_app\n"
            "sys.argv = ['controlplane', 'plugins', 'list']\n"
            "cli.main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["building, collecting: False frozen: False", "running, collecting: True frozen: True"]


def test_sim_replay_builds_the_sim_group_with_replay_alone():
    import typer

    from controlplane.cli import build_app

    def sim_commands(app):
        group = typer.main.get_command(app).commands["sim"]
        return sorted(group.commands)

    assert sim_commands(build_app(["sim"])) == ["replay", "search", "sweep"]
    assert sim_commands(build_app(["sim"], subcommand="sweep")) == ["replay", "search", "sweep"]
    assert sim_commands(build_app(["sim"], subcommand="replay")) == ["replay"]
    # `controlplane sim replay ...` as a process: what it builds is what a user's command line gets.
    proc = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", "--help"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and "Usage: python -m controlplane.cli sim replay [OPTIONS] [TRACE]" in proc.stdout


def test_pydantic_is_told_no_plugin_is_installed_only_when_the_cache_knows_it(monkeypatch):
    from controlplane import cli, entry_point_cache

    for cached_none, preset, expected in ((True, None, "__all__"), (False, None, None), (True, "0", "0")):
        if preset is None:
            monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
        else:
            monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", preset)
        monkeypatch.setattr(entry_point_cache, "no_pydantic_plugins", lambda answer=cached_none: answer)
        cli._skip_pydantic_plugin_scan()
        assert os.environ.get("PYDANTIC_DISABLE_PLUGINS") == expected


def test_help_shows_no_type_after_on_off_flags():
    """Flags take no value: ``--json``, not ``--json <bool>`` (typer 0.2x's rich panels name every
    option's type); options with a value keep theirs."""
    for command, flags, valued in (
            (["runs", "list"], ["--help"], {"--limit": "<int range> [x>=0]", "--db": "<str>"}),
            (["sim", "replay"], ["--json", "--exact", "--progress", "--help"],
             {"--speed-up": "<float>", "--opt": "KEY=VALUE"}),
            (["sim", "sweep"], ["--fresh", "--json", "--help"], {"--workers": "<int range> [x>=1]"}),
            (["live-replay"], ["--json", "--progress", "--help"], {"--save-trace": "<path>"})):
        proc = subprocess.run([sys.executable, "-m", "controlplane.cli", *command, "--help"], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
        assert proc.returncode == 0, proc.stderr[-1000:]
        assert "<bool>" not in proc.stdout, proc.stdout
        # An option's row: its names, its type (if it takes a value), its help (cells 2+ spaces apart).
        rows = {cells[0]: cells[1:] for line in proc.stdout.splitlines() if line.startswith("│ --")
                for cells in [re.split(r"\s{2,}", line.strip("│ "))]}
        for flag in flags:
            assert not any(cell.startswith("<") for cell in rows[flag]), (command, flag, rows[flag])
        for option, shown in valued.items():
            assert shown in rows[option], (command, option, rows[option])


def test_a_bad_transform_on_the_plain_command_line_names_its_option(tmp_path):
    from controlplane.cli import replay_args

    args = ["--speed-up", "0", "--window-end", "30", "--json", "--db", f"sqlite:///{tmp_path / 'runs.db'}"]
    assert replay_args.parse(args) is not None  # read without typer: the path of a user's plain replay
    proc = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == "error: --speed-up must be a finite number > 0, got 0\n", proc.stderr
