"""An empty config file (a `controlplane runs config 7 > run7.yaml` that failed leaves one) was replayed as the
library's defaults, silently: `sim replay` warns of it on one line naming the file."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("no_controlplane_env")


def test_a_replay_of_an_empty_config_file_warns_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run7.yaml").write_text("")  # (what a `runs config 7 > run7.yaml` that failed leaves)
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "--config", "run7.yaml", "--db",
                                    f"sqlite:///{tmp_path / 'r.db'}", "--json", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert ("warning: config file run7.yaml is empty: the run goes with the library's defaults (not the bundled "
            "config a replay without --config takes)") in done.stderr
