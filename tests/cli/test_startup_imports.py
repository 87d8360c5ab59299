"""What `controlplane sim replay --json` imports, as a whole process: nothing heavy that the run
does not use. Start-up is most of a short replay's wall time (docs/simulator.md, "Where the time goes"), so a
module-level import of the ORM, rich, alembic, pandas, scipy, sklearn or torch on the replay path
would silently cost every run; this test names the one that crept in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from controlplane import timings
from controlplane.config import RunConfig
from controlplane.storage.early import ENV_SWITCH, writer_process_possible
from tests.cli.test_cli_process import CONFIG

#: Never imported by a replay with the Vidur-profiled config once its schema exists and its
#: fitted profile pieces are cached (the second run): what each costs, measured with
#: `python -X importtime`, is in docs/history/simulator.md ("Start-up" and the fifteenth session).
HEAVY = (
    "sqlalchemy.orm",  # the tables are Core Tables
    "alembic",  # only when the schema is created or upgraded
    "rich",  # only when a table or a progress bar is printed
    "pandas", "scipy", "sklearn",  # only when a profile is fitted (then cached on disk)
    "torch", "transformers", "matplotlib", "fastapi", "uvicorn", "httpx", "ray", "redis", "psycopg",
    "yaml",  # the config file's parse is cached on disk by the first run (controlplane.yaml_cache)
    "pydantic_settings",  # only when a CONTROLPLANE_<setting> variable is set (none here)
    "numpy.random",  # only when something draws (a generator is made on first use; nothing draws here)
    "typer", "click",  # a plain command line is read by controlplane.cli.replay_args (typer: ~0.1 G instructions)
)

_PROBE = """
import atexit, json, sys
def _report():
    sys.stderr.write("imported-modules " + json.dumps(sorted(sys.modules)) + "\\n")
atexit.register(_report)
sys.argv = ["controlplane", *sys.argv[1:]]
from controlplane.cli import main
main()
"""


def _replay(tmp_path: Path, trace: Path, config: Path, **extra_env: str) -> tuple[dict, set[str]]:
    cmd = [sys.executable, "-c", _PROBE, "sim", "replay", str(trace), "--format", "canonical", "--config", str(config),
           "--json", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in (timings.ENV, ENV_SWITCH)
           and not k.lower().startswith(tuple(f"controlplane_{f}" for f in RunConfig.model_fields))}
    env.update(extra_env)
    env["CONTROLPLANE_CACHE_DIR"] = str(tmp_path / "cache")  # a cache of this test's own: cold, then warm
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("imported-modules "))
    return json.loads(proc.stdout.strip().splitlines()[-1]), set(json.loads(line.split(" ", 1)[1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_a_second_replay_imports_nothing_heavy(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    trace = tmp_path / "trace.csv"
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens\n"
                     + "".join(f"{i},{i * 0.25:.2f},{200 + 37 * i % 900},{5 + i % 40}\n" for i in range(60)))
    first, first_modules = _replay(tmp_path, trace, config, **{ENV_SWITCH: "0"})  # the schema, written here
    inline, inline_modules = _replay(tmp_path, trace, config, **{ENV_SWITCH: "0"})
    second, modules = _replay(tmp_path, trace, config, **{ENV_SWITCH: "1"})  # a writer process, busy host or not
    assert first["num_completed"] == second["num_completed"] == inline["num_completed"] == 60
    same = ({k: v for k, v in r.items() if k not in ("run_id", "wall_s")} for r in (first, inline, second))
    assert next(same) == next(same) == next(same)
    # The first run created the schema (in this process: the probe sees imports, so an empty list below
    # is not for want of looking), from the kept statements: a new SQLite file needs no Alembic.
    assert "sqlalchemy" in first_modules and "sqlalchemy" in inline_modules and "numpy" in modules
    assert "alembic" not in first_modules
    assert _heavy(inline_modules) == [], f"the replay path imports {_heavy(inline_modules)}: import them where used"
    # With a writer process (two CPUs or more) the database side is the writer's alone.
    heavy = _heavy(modules) + (["sqlalchemy"] if "sqlalchemy" in modules and writer_process_possible() else [])
    assert heavy == [], f"the replaying process imports {heavy}: import them where they are used"
