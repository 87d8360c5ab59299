"""`controlplane sim replay` compiles through the code cache (controlplane/code_cache.py): the first
run writes what both of its processes compiled, the next compiles nothing and leaves the file alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from controlplane import code_cache, timings
from controlplane.cache_dir import CACHE_ENV
from controlplane.storage.early import ENV_SWITCH
from tests.cli.test_cli_process import CONFIG


def _texts(cache: Path) -> set[tuple[int, str]]:
    files = list((cache / "code").glob("*.marshal"))
    assert len(files) == 1, files
    tables = code_cache._read(files[0])
    assert tables is not None
    return {(i, text) for i, codes in enumerate(tables) for text in codes}


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (timings.ENV, ENV_SWITCH, CACHE_ENV)}
    return {**env, CACHE_ENV: str(cache), ENV_SWITCH: "1"}  # a writer process, busy host or not


def test_the_replay_and_its_writer_process_keep_what_they_compiled(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "trace.csv").write_text("request_id,arrival_s,prompt_tokens,output_tokens\n"
                                        + "".join(f"{i},{i * 0.5:.1f},{100 + i},{5 + i % 7}\n" for i in range(20)))
    cmd = [sys.executable, "-m", "controlplane.cli", "sim", "replay", "trace.csv", "--format", "canonical",
           "--config", "run.yaml", "--json", "--no-progress"]
    cache = tmp_path / "cache"
    outputs, states = [], []
    for _ in range(2):
        proc = subprocess.run(cmd, cwd=tmp_path, env=_env(cache), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout.strip().splitlines()[-1])
        file = next((cache / "code").glob("*.marshal"))
        states.append((file.stat().st_mtime_ns, _texts(cache)))
    assert states[1] == states[0]  # nothing new the second time: the file is not written again
    # What the writer process alone compiles (SQLAlchemy's dataclasses and named tuples) is there too.
    writer_only = tmp_path / "writer-only"
    probe = "from controlplane import code_cache; code_cache.install(); import controlplane.storage.writer_process"
    proc = subprocess.run([sys.executable, "-c", probe], env=_env(writer_only), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    missing = _texts(writer_only) - states[0][1]
    assert not missing, sorted(missing, key=repr)[:3]
    first, second = ({k: v for k, v in json.loads(o).items() if k not in ("run_id", "wall_s")} for o in outputs)
    assert first == second and first["num_completed"] == 20
