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
