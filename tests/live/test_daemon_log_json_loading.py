"""``--log-format json`` while a saved model loads: every line of the daemon's output is one JSON object.

transformers drew its "Loading weights" progress bar (and a blank line) on stderr as a causal-LM guardian loaded
from a directory, in the daemon's process (thread pool) or a worker's (process pool): a log shipper reading one
JSON object a line met lines that are not."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.live.daemon_process import DaemonProcess
from tests.live.tiny_guardian_models import save_tiny_judge

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> Path:
    return save_tiny_judge(tmp_path_factory.mktemp("judge"))


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_every_line_is_json_while_a_saved_guardian_model_loads(tmp_path, judge_dir, pool):
    config = tmp_path / "judge.yaml"
    config.write_text(f"guardians:\n  models:\n    - {{name: judge, kind: causal-lm, model: '{judge_dir}'}}\n"
                      "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: sync, guardian: judge}\n")
    daemon = DaemonProcess(tmp_path, ["--config", str(config), "--pool", pool, "--workers", "1", "--cpu-threads", "1",
                                      "--db", f"sqlite:///{tmp_path / 'json.db'}", "--log-format", "json"])
    try:
        daemon.wait_ready()
        time.sleep(0.5)  # (anything the loading printed late)
    finally:
        daemon.stop()
    lines = daemon.log_path.read_text().split("\n")
    assert lines[-1] == ""  # (the output ends with its last line's newline)
    bad = []
    for line in lines[:-1]:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert not bad, bad
    assert any("guardian judge: worker guardian-judge-0 ready" in json.loads(line)["message"] for line in lines[:-1])
