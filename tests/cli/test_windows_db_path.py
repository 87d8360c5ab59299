"""``storage.url`` (or ``--db``) written as a Windows path on another system: a file literally named
``C:\\runs\\win.db`` in the working folder was made without a word; a warning says so now
(`controlplane.storage.url.windows_path_note`)."""

from __future__ import annotations

import warnings

import pytest
import yaml
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage.url import WindowsPathWarning, database_url
from sim.traces.bundled import bundled_default_config_path

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")
WINDOWS = "C:\\runs\\win.db"


@pytest.mark.parametrize("path", [WINDOWS, "C:/runs/win.db", "runs\\win.db"])
def test_a_windows_path_is_warned_about(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(WindowsPathWarning, match=r"looks like a Windows path: on this system it is the file "):
        assert database_url(path) == f"sqlite:///{path}"


@pytest.mark.parametrize("path", ["runs.db", "/data/runs.db", "sqlite:///runs.db", "a:b.db", "~/runs.db"])
def test_a_path_of_this_system_is_not(path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        url = database_url(path)
    assert [w for w in seen if issubclass(w.category, WindowsPathWarning)] == []
    assert url.startswith("sqlite:///")


def test_sim_replay_says_it_once_as_a_warning_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(bundled_default_config_path().read_text())
    config["storage"] = {"url": WINDOWS}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    done = CliRunner().invoke(app, ["sim", "replay", "-c", "run.yaml", "--limit", "5", "--json", "--no-progress"])
    assert done.exit_code == 0, done.output
    said = [line for line in done.stderr.splitlines() if "looks like a Windows path" in line]
    assert said == [f"warning: the SQLite file {WINDOWS} looks like a Windows path: on this system it is the file "
                    f"{tmp_path / WINDOWS} (no drive letters here, and a backslash is part of a file's name, not a "
                    "folder separator); give a path of this system (runs/win.db, /data/runs/win.db) if another file "
                    "is meant"]
    assert (tmp_path / WINDOWS).is_file()
