"""`controlplane plugins list`: which plugins the two defaults a user meets enable, and what the columns mean."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.config import DEFAULT_PLUGINS, load_config
from sim.traces.bundled import bundled_default_config_path


def _rows() -> tuple[dict[str, list[str]], str]:
    """Each plugin's first table row as its cells (by header), and the whole output."""
    result = CliRunner().invoke(app, ["plugins", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(ln for ln in lines if re.search(r"┃ name +┃", ln))
    columns = [c.strip() for c in header.strip("┃").split("┃")]
    rows = {}
    for ln in lines:
        cells = [c.strip() for c in ln.strip("│").split("│")]
        if ln.startswith("│") and cells[0]:
            rows[cells[0]] = dict(zip(columns, cells))
    return rows, " ".join(result.stdout.split())


def test_the_list_says_what_the_library_default_and_the_bundled_replay_enable():
    # (one "default" column marked fixed-replicas and not slo-planner, though `sim replay` scales with slo-planner)
    rows, text = _rows()
    replay = load_config(bundled_default_config_path()).plugins.enabled
    for name, row in rows.items():
        assert row["default"] == ("yes" if name in DEFAULT_PLUGINS else ""), name
        assert row["replay"] == ("yes" if name in replay else ""), name
    assert rows["slo-planner"]["replay"] == "yes" and rows["slo-planner"]["default"] == ""
    assert "default: enabled when a config does not set plugins.enabled" in text
    assert "replay: enabled by the bundled run config sim/data/default_replay.yaml" in text


# --- a plugin's own text, and `plugins show` ------------------------------------------------------------------


def _install(tmp_path, monkeypatch) -> None:
    """An installed distribution (a dist-info folder on sys.path) with the plugin 'bracket-scaler'."""
    from controlplane import plugin_manager

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugin_manager, "_discovered", None)  # (restored after: later runs do not see it)
    (site / "bracket_scaler.py").write_text('''
from typing import Literal

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl


class BracketScaler(Plugin):
    """Replicas = queued / per_replica, within [min, max]; scale down after [hold] seconds."""

    name = "bracket-scaler"

    class Settings(PluginSettings):
        per_replica: int = Field(24, ge=1)  # queued requests a replica takes

        max_replicas: int | None = None  # [none]: no cap; a number caps
        # the count, whatever the queue
        mode: Literal["fast", "slow"] = Field("fast", description="how quickly it scales")
        names: list[str] = Field(default_factory=list)

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return None
''')
    info = site / "bracket_scaler-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bracket-scaler\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[controlplane]\nbracket-scaler = bracket_scaler:BracketScaler\n")


def test_a_description_with_square_brackets_is_listed_as_written(tmp_path, monkeypatch):
    """Rich read "[min, max]" as markup: the list showed "within ; scale down"."""
    from controlplane.cli import common

    _install(tmp_path, monkeypatch)
    monkeypatch.setattr(common.out, "_width", 400)  # (its row on one line)
    result = CliRunner().invoke(app, ["plugins", "list"])
    assert result.exit_code == 0, result.output
    row = next(ln for ln in result.stdout.splitlines() if "│ bracket-scaler " in ln)
    assert "within [min, max]; scale down after [hold] seconds." in row


def test_plugins_show_prints_each_setting_with_its_type_default_and_description(tmp_path, monkeypatch):
    from controlplane.cli import common

    _install(tmp_path, monkeypatch)
    monkeypatch.setattr(common.out, "_width", 300)  # (each row on one line)
    result = CliRunner().invoke(app, ["plugins", "show", "bracket-scaler"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "bracket-scaler (bracket-scaler 0.1)"
    assert "within [min, max]; scale down after [hold] seconds." in lines[1] and "hooks: cp_scale" in lines
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("│").split("│")]
                                              for ln in lines if ln.startswith("│"))}
    assert rows["per_replica"] == ["int (>= 1)", "24", "queued requests a replica takes"]
    assert rows["max_replicas"] == ["int | None", "null", "[none]: no cap; a number caps the count, whatever the queue"]
    assert rows["mode"] == ["'fast' | 'slow'", "fast", "how quickly it scales"]
    assert rows["names"] == ["list[str]", "[]", ""]
    assert "plugins.settings.bracket-scaler" in result.stdout


def test_plugins_show_of_a_plugin_without_settings_and_of_an_unknown_name():
    result = CliRunner().invoke(app, ["plugins", "show", "builtin-latency-models"])
    assert result.exit_code == 0, result.output
    assert "settings: none" in result.stdout
    result = CliRunner().invoke(app, ["plugins", "show", "least-loadd"])
    assert result.exit_code == 2
    assert "unknown plugin 'least-loadd' (did you mean 'least-loaded'?)" in " ".join(result.output.split())
