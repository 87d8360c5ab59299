"""The `Plugin` base class."""

from __future__ import annotations

import pytest

from controlplane import Plugin


def test_a_plugin_without_a_name_still_has_a_repr():
    class Unnamed(Plugin):
        pass

    class Named(Plugin):
        name = "named"

    assert repr(Unnamed()) == "<plugin Unnamed>"
    assert repr(Named()) == "<plugin named>"


# --- settings passed in code -------------------------------------------------------------------


def test_settings_passed_in_code_as_a_dict_are_validated_like_a_configs():
    from controlplane import Plugin, PluginSettings
    from controlplane.errors import PluginError, SettingsError

    class Spill(Plugin):
        name = "spill"

        class Settings(PluginSettings):
            spill_load: int = 4

    class Other(Plugin):
        name = "other"

        class Settings(PluginSettings):
            depth: int = 1

    assert Spill({"spill_load": 2}).settings == Spill.Settings(spill_load=2)
    assert Spill().settings.spill_load == 4 and Spill(Spill.Settings(spill_load=3)).settings.spill_load == 3
    with pytest.raises(SettingsError, match=r"Spill\.Settings\.spil_load: Extra inputs are not permitted"):
        Spill({"spil_load": 2})
    with pytest.raises(SettingsError, match=r"Spill\.Settings\.spill_load: .*integer"):
        Spill({"spill_load": "many"})
    with pytest.raises(PluginError, match=r"plugin 'spill' takes Spill\.Settings\(\.\.\.\) or a dict of its fields, "
                                          r"got .*Other\.Settings"):
        Spill(Other.Settings())


def test_a_plugin_made_in_code_with_settings_that_would_take_a_typo_is_refused():
    """A ``Settings`` that is a plain pydantic model (unknown keys ignored) is refused when the plugin is made in
    code, as it is when a run loads the plugin by name: ``P({"max_queud": 5})`` ran with ``max_queue=1``."""
    from pydantic import BaseModel

    from controlplane.errors import PluginError
    from controlplane.plugin_manager import build_plugin_set

    class Limit(Plugin):
        name = "limit"

        class Settings(BaseModel):
            max_queue: int = 1

    for made in (lambda: Limit({"max_queud": 5}), lambda: Limit(), lambda: Limit({"max_queue": 5})):
        with pytest.raises(PluginError, match=r"plugin 'limit': Settings must subclass controlplane\.PluginSettings"):
            made()

    class OwnInit(Limit):  # made without Plugin.__init__: the run refuses it as it starts
        name = "own-init"

        def __init__(self) -> None:
            self.settings = self.Settings()

    with pytest.raises(PluginError, match=r"plugin 'own-init': Settings must subclass controlplane\.PluginSettings"):
        build_plugin_set([], extra=[OwnInit()], available={})


def test_the_errors_a_plugins_tests_meet_are_importable_beside_the_base_class():
    """docs/plugins.md named SettingsError and PluginError without their module; `from controlplane.plugin
    import SettingsError` failed."""
    from controlplane import errors
    from controlplane.plugin import PluginError, SettingsError

    assert SettingsError is errors.SettingsError and PluginError is errors.PluginError


def test_the_errors_a_plugin_s_tests_meet_are_importable_from_the_package():
    import controlplane
    from controlplane import PluginError, SettingsError
    from controlplane.errors import PluginError as P, SettingsError as S

    assert (PluginError, SettingsError) == (P, S) and {"PluginError", "SettingsError"} <= set(controlplane.__all__)
