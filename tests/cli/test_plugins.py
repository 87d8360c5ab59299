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
