"""A deployment that leaves out gpu (gpus_per_replica) follows its measured profile's device (tensor_parallel) since
release 2026-12-07, where the releases before priced the run as the default a100-80gb (one GPU a replica): the same
config cost 52% less after the upgrade, silently. A replay says so, once per deployment and key."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from tests.cli.test_runs_config_older_release import CONFIG
from tests.sim.latency.test_measured_checks import l40s_rows

pytestmark = pytest.mark.usefixtures("no_controlplane_env")


def test_a_replay_whose_gpu_follows_its_profile_says_so_once(tmp_path, monkeypatch):
    (tmp_path / "a10g.json").write_text(json.dumps({"format": "controlplane-profile/1", "model": "acme/llama-13b",
                                                    "device": "a10g", "precision": "fp16", "tensor_parallel": 2,
                                                    "rows": l40s_rows()}))
    (tmp_path / "measured.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "--config", "measured.yaml", "--db",
                                    f"sqlite:///{tmp_path / 'r.db'}", "--json", "--no-progress"])
    assert done.exit_code == 0, done.output
    said = [line for line in done.stderr.splitlines() if "follows the measured profile" in line]
    assert said == ["warning: measured.yaml: cluster.models.0.gpu follows the measured profile's device: a10g "
                    "(releases before 2026-12-07 billed the default a100-80gb)",
                    "warning: measured.yaml: cluster.models.0.gpus_per_replica follows the measured profile's "
                    "tensor_parallel: 2 (releases before 2026-12-07 billed the default 1)"]
    (tmp_path / "given.yaml").write_text(CONFIG + "      gpu: a10g\n      gpus_per_replica: 2\n")
    given = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "--config", "given.yaml", "--db",
                                     f"sqlite:///{tmp_path / 'r.db'}", "--json", "--no-progress"])
    assert given.exit_code == 0, given.output
    assert "follows the measured profile" not in given.stderr
