"""The names an unknown plugin's error lists: the installed plugins, those that cannot be loaded marked."""

from __future__ import annotations

import pytest

from controlplane.errors import ConfigError


def _install(site, name: str, target: str) -> None:
    """An installed distribution (a dist-info folder on sys.path) declaring the plugin ``name`` -> ``target``."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[controlplane]\n{name} = {target}\n")


def test_an_unknown_plugins_error_marks_the_installed_ones_that_fail_to_load(tmp_path, monkeypatch):
    """'installed: ..., broken-one, ...' offered a plugin that no run can load as if it were usable."""
    from controlplane import plugin_manager
    from controlplane.plugin_manager import build_plugin_set

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugin_manager, "_discovered", None)  # (restored after: later runs do not see them)
    (site / "fine_router.py").write_text(
        "from controlplane import Plugin\n\nclass FineRouter(Plugin):\n    name = 'fine-router'\n")
    _install(site, "fine-router", "fine_router:FineRouter")
    _install(site, "broken-one", "no_such_module_xyz:Thing")
    with pytest.raises(ConfigError) as caught:
        build_plugin_set(["least-loadd"])
    installed = str(caught.value).split("installed: ", 1)[1]
    assert "broken-one (failed to load: ModuleNotFoundError: No module named 'no_such_module_xyz')" in installed
    names = installed.split(", ")
    assert "fine-router" in names and "least-loaded" in names
    assert str(caught.value).startswith("plugins.enabled: unknown plugin(s) 'least-loadd' (did you mean "
                                        "'least-loaded'?)")


def test_an_entry_point_named_unlike_its_class_fails_to_load_as_the_docs_say(tmp_path, monkeypatch):
    """docs/plugins.md said a class's `name` "takes precedence" over its entry point's name, where loading refuses
    the two differing: it now states the one rule, with the error a user meets."""
    import re
    import sys
    from pathlib import Path

    from controlplane import plugin_manager
    from controlplane.errors import PluginError
    from controlplane.plugin_manager import build_plugin_set

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugin_manager, "_discovered", None)  # (restored after: later runs do not see them)
    (site / "cp_shortest_prompt.py").write_text(
        "from controlplane import Plugin\n\nclass ShortestPromptFirst(Plugin):\n    name = 'shortest-prompt-first'\n")
    monkeypatch.setitem(sys.modules, "cp_shortest_prompt", None)  # (imported afresh, and gone after)
    del sys.modules["cp_shortest_prompt"]
    _install(site, "spf", "cp_shortest_prompt:ShortestPromptFirst")
    with pytest.raises(PluginError) as caught:
        build_plugin_set(["spf"])
    docs = " ".join((Path(__file__).parents[2] / "docs" / "plugins.md").read_text().split())
    section = docs.split("## Registering a plugin", 1)[1].split("## ", 1)[0]
    assert f"(`{caught.value}`)" in section
    assert "a class's `name` attribute must be that same name" in section
    assert not re.search(r"precedence", docs)
