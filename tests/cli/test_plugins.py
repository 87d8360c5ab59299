"""`controlplane plugins list`: which plugins the two defaults a user meets enable, and what the columns mean."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.config import DEFAULT_PLUGINS, load_config
from controlplane.testing import make_trace
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
    # (its installed path: sim/data/default_replay.yaml is relative to a checkout, not found from elsewhere)
    assert f"replay: enabled by the bundled run config {bundled_default_config_path()}, which" in text


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


class _Commented:
    """A settings class written the ways the plugins comment theirs (parsed from this file's source)."""

    short: int = 1  # a trailing comment that ended here
    # the block directly above `above`: its own
    above: int = 2
    wrapped: int = 3  # a trailing comment long enough that the sentence went on to the next line, as ones
    # in slo-planner's settings do: this line is its continuation
    next_one: int = 4
    last: int = 5  # a trailing comment whose note runs on past the field
    # with no field directly after it

    unrelated: int = 6


def test_a_comment_block_directly_above_a_field_is_that_field_s():
    """`plugins show continuous-batching` gave `long_prompts`' comment (the block above it) to `chunk_size`, whose
    line had a trailing comment, and `max_padding`'s to `max_iterations`: long_prompts and max_padding had none."""
    from controlplane.cli.plugins import _field_comments, settings_rows
    from plugins.batching import ContinuousBatching

    rows = {r["setting"]: r["description"] for r in settings_rows(ContinuousBatching)}
    assert rows["chunk_size"] == "sarathi: token budget per iteration"
    assert rows["long_prompts"].startswith("vllm: a prompt longer than the batch token budget is prefilled alone")
    assert rows["max_iterations"] == "cap on a multi-iteration decode step"
    assert rows["max_padding"].startswith("vllm, for engines that pad a prefill batch to its longest prompt")
    got = _field_comments(_Commented)
    assert got["short"] == "a trailing comment that ended here"
    assert got["above"] == "the block directly above `above`: its own"
    assert got["wrapped"].endswith("as ones in slo-planner's settings do: this line is its continuation")
    assert "next_one" not in got
    assert got["last"].endswith("with no field directly after it") and "unrelated" not in got


def test_wrapped_trailing_comments_of_slo_planner_stay_with_their_field():
    from controlplane.cli.plugins import settings_rows
    from plugins.autoscaling_slo import SLOPlanner

    rows = {r["setting"]: r["description"] for r in settings_rows(SLOPlanner)}
    assert rows["band_errors"].endswith("an over-forecast does not widen the upper bound)")
    assert rows["steady_capacity_from"].startswith("on a steady load (steady_cv)")
    assert rows["steady_cv"].endswith("instead of holding each one wanted (None: off)") and not rows["steady_buckets"]


# --- a plugin every run would refuse is not listed as fine ------------------------------------------------------

_REFUSED = '''
from pydantic import BaseModel

from controlplane import Plugin, hookimpl


class TypoHook(Plugin):
    """Batches, under a hook name of its own."""

    name = "typo-hook"

    @hookimpl
    def cp_form_batches(self, ctx, worker):
        return None


class BadArg(Plugin):
    """Routes, reading an argument the hook does not pass."""

    name = "bad-arg"

    @hookimpl
    def cp_route_request(self, ctx, req, workers):
        return None


class NotAGenerator(Plugin):
    name = "not-a-generator"

    @hookimpl(wrapper=True)
    def cp_scale(self, ctx, model, scaling):
        return None


class LooseSettings(Plugin):
    name = "loose-settings"

    class Settings(BaseModel):
        rate: float = 1.0

    @hookimpl
    def cp_run_started(self, ctx):
        pass


class Fine(Plugin):
    """Routes nowhere; takes fewer arguments than the hook, and one with a default."""

    name = "fine"

    @hookimpl
    def cp_route_request(self, request, extra=None):
        return None

    @staticmethod
    @hookimpl
    def cp_run_started(ctx):
        pass
'''

_REFUSED_MODULE = '''
from controlplane import hookimpl


@hookimpl
def cp_admit_request(ctx, requests):
    return None
'''


def _install_refused(tmp_path, monkeypatch) -> None:
    """Installs plugins every run refuses as it starts ('typo-hook', 'bad-arg', 'not-a-generator', 'loose-settings',
    'module-bad-arg', a module of hook functions) and one it takes ('fine')."""
    import sys

    from controlplane import plugin_manager

    site = tmp_path / "site"
    site.mkdir()
    (site / "cp_refused.py").write_text(_REFUSED)
    (site / "cp_refused_module.py").write_text(_REFUSED_MODULE)
    info = site / "cp_refused-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cp-refused\nVersion: 0.1\n")
    names = {"typo-hook": "TypoHook", "bad-arg": "BadArg", "not-a-generator": "NotAGenerator",
             "loose-settings": "LooseSettings", "fine": "Fine"}
    (info / "entry_points.txt").write_text("[controlplane]\n" + "".join(f"{n} = cp_refused:{c}\n" for n, c in
                                                                        names.items())
                                           + "module-bad-arg = cp_refused_module\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugin_manager, "_discovered", None)
    for module in ("cp_refused", "cp_refused_module"):  # (imported afresh, and gone after)
        monkeypatch.setitem(sys.modules, module, None)
        del sys.modules[module]


REFUSALS = {
    "typo-hook": "a plugin implements a hook that does not exist: 'cp_form_batches' in plugin 'typo-hook' "
                 "(did you mean 'cp_form_batch'?)",
    "bad-arg": "plugin 'bad-arg': cp_route_request takes 'req', which the hook does not pass (the hook passes: ctx, "
               "request, workers; take any of them, by name)",
    "not-a-generator": "plugin 'not-a-generator': cp_scale is marked as a wrapper but is not a generator function",
    "loose-settings": "plugin 'loose-settings': Settings must subclass controlplane.PluginSettings",
    "module-bad-arg": "plugin 'module-bad-arg': cp_admit_request takes 'requests', which the hook does not pass",
}


def test_plugins_list_flags_a_plugin_every_run_refuses(tmp_path, monkeypatch):
    """Before, `plugins list` listed 'typo-hook' (cp_form_batches) and 'bad-arg' (req) as fine, exit 0, and every
    run enabling them failed at its start."""
    from controlplane.cli import common

    _install_refused(tmp_path, monkeypatch)
    monkeypatch.setattr(common.out, "_width", 400)  # (each row on one line)
    result = CliRunner().invoke(app, ["plugins", "list"])
    assert result.exit_code == 2, result.output
    rows = {ln.strip("│").split("│")[0].strip(): ln for ln in result.stdout.splitlines() if ln.startswith("│")}
    for name in REFUSALS:
        assert "refused by every run (error below)" in rows[name], rows[name]
    assert "refused by every run" not in rows["fine"] and "Routes nowhere" in rows["fine"]
    errors = " ".join(result.stderr.split())
    for message in REFUSALS.values():
        assert f"error: {message}" in errors
    assert "'fine'" not in errors


def test_plugins_show_flags_a_plugin_every_run_refuses(tmp_path, monkeypatch):
    _install_refused(tmp_path, monkeypatch)
    for name, message in REFUSALS.items():
        result = CliRunner().invoke(app, ["plugins", "show", name])
        assert result.exit_code == 2, (name, result.output)
        assert result.stdout.splitlines()[0] == f"{name} (cp-refused 0.1)"  # what it is, then why runs refuse it
        assert f"error: {message}" in " ".join(result.stderr.split())
    result = CliRunner().invoke(app, ["plugins", "show", "fine"])
    assert result.exit_code == 0, result.output
    assert "hooks: cp_route_request, cp_run_started" in result.stdout


def test_what_plugins_list_refuses_is_what_a_run_refuses(tmp_path, monkeypatch):
    from controlplane.errors import PluginError
    from controlplane.testing import make_config, replay_with

    _install_refused(tmp_path, monkeypatch)
    for name, message in REFUSALS.items():
        with pytest.raises(PluginError) as refused:
            replay_with(trace=make_trace(2), config=make_config(plugins={"enabled": [name, *DEFAULT_PLUGINS]}))
        assert str(refused.value).startswith(message)
    res = replay_with(trace=make_trace(2), config=make_config(plugins={"enabled": ["fine", *DEFAULT_PLUGINS]}))
    assert res.summary["num_completed"] == 2
