"""The "YAML reads off/no/yes/on (unquoted) as booleans; quote it" hint fits a boolean where text was expected
(`gpu: no`, `startup_release: off`); it was also given for an unknown key whose value is true/false
(`plugins.settings.least-loaded.byy: Extra inputs are not permitted, got False: YAML reads ...`, `sim: {exactt:
true}`, the daemon's /admin/reload 400 body, which is this message), and for a section or a number given one."""

from __future__ import annotations

import pytest

from controlplane.config import load_config
from controlplane.errors import ConfigError

HINT = "YAML reads off/no/yes/on"


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return str(exc.value)


@pytest.mark.parametrize(("text", "line"), [
    ("sim: {exactt: true}\n", "sim.exactt: Extra inputs are not permitted\n"),
    ("sim: {exactt: no}\n", "sim.exactt: Extra inputs are not permitted\n"),
    ("control: no\n", "control: Input should be a valid dictionary or instance of ControlConfig, got False\n"),
])
def test_an_unknown_key_or_a_section_given_a_boolean_gets_no_quoting_hint(tmp_path, text, line):
    said = _error(tmp_path, text) + "\n"
    assert line in said and HINT not in said, said


@pytest.mark.parametrize(("text", "line"), [
    ("cluster: {models: [{name: a, gpu: no}]}\n",
     "cluster.models.0.gpu: Input should be a valid string, got False: YAML reads off/no/yes/on (unquoted) as "
     "booleans; quote it"),
    ("name: off\n", "name: Input should be a valid string, got False: YAML reads off/no/yes/on (unquoted) as "
                    "booleans; quote it"),
])
def test_a_boolean_where_text_was_expected_keeps_the_hint(tmp_path, text, line):
    assert line in _error(tmp_path, text)


def test_an_unknown_plugin_setting_given_a_boolean_gets_no_quoting_hint(tmp_path):
    from controlplane.errors import SettingsError
    from controlplane.session import RunSession

    path = tmp_path / "run.yaml"
    path.write_text("plugins: {settings: {least-loaded: {byy: false}}}\n")
    with pytest.raises(SettingsError) as exc:
        RunSession(load_config(path), mode="sim", record=False)
    said = str(exc.value)
    assert "plugins.settings.least-loaded.byy: Extra inputs are not permitted" in said and HINT not in said, said
