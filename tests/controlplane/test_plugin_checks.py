"""Checks of a plugin as a run takes it in: errors that say what to fix (`controlplane.plugin_checks`)."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import RouteDecision
from controlplane.errors import ConfigError, PluginError
from controlplane.plugin_manager import build_plugin_set
from controlplane.testing import make_plugin_set


def test_a_hook_method_without_hookimpl_is_a_plugin_error_not_silently_ignored():
    class Forgot(Plugin):
        name = "forgot"

        def cp_route_request(self, ctx, request, workers):  # @hookimpl forgotten: never called
            return RouteDecision(workers[-1].worker_id, "last")

    with pytest.raises(PluginError, match="plugin 'forgot': cp_route_request is not marked @hookimpl"):
        make_plugin_set(Forgot())


def test_a_withdrawn_hook_is_not_taken_for_a_forgotten_hookimpl():
    class Quiet(Plugin):
        name = "quiet"

        def __init__(self, settings=None):
            super().__init__(settings)
            self.withdraw("cp_admit_request")

        @hookimpl
        def cp_admit_request(self, ctx, request):
            return None

    assert make_plugin_set(Quiet()).get("quiet") is not None


def test_a_hook_name_typo_suggests_the_hook():
    class Typo(Plugin):
        name = "typo"

        @hookimpl
        def cp_form_batches(self, ctx, worker):
            return None

    with pytest.raises(PluginError) as exc:
        make_plugin_set(Typo())
    assert str(exc.value) == ("a plugin implements a hook that does not exist: "
                              "'cp_form_batches' in plugin 'typo' (did you mean 'cp_form_batch'?)")


def test_an_argument_the_hook_does_not_pass_is_a_plugin_error_naming_the_hook_s_arguments():
    class BadArg(Plugin):
        name = "bad-arg"

        @hookimpl
        def cp_route_request(self, ctx, req, workers):
            return None

    with pytest.raises(PluginError) as exc:
        make_plugin_set(BadArg())
    msg = str(exc.value)
    assert msg.startswith("plugin 'bad-arg': cp_route_request takes 'req'")
    assert "the hook passes: ctx, request, workers" in msg
    assert "\n" not in msg


def test_an_unknown_plugin_close_to_an_installed_one_is_suggested():
    with pytest.raises(ConfigError, match=r"'least-loadd' \(did you mean 'least-loaded'\?\)"):
        build_plugin_set(["least-loadd", "queue-limit"])


def test_an_unknown_plugin_far_from_any_installed_one_says_how_plugins_are_found():
    with pytest.raises(ConfigError) as exc:
        build_plugin_set(["my_package.routers:MyRouter", "queue-limit"])
    msg = str(exc.value)
    assert "'my_package.routers:MyRouter'" in msg and "did you mean" not in msg
    assert "entry-point group 'controlplane'" in msg and "docs/plugins.md#registering-a-plugin" in msg


@pytest.mark.parametrize("observes", [("RequestFinished",), "RequestFinished", "one type"])
def test_observes_that_is_not_a_tuple_of_event_types_is_a_plugin_error_naming_it(observes):
    from controlplane.events import RequestFinished, WorkerChanged

    if observes == "one type":
        observes = RequestFinished  # a type alone, not in a tuple

    class Watcher(Plugin):
        name = "watcher"

        @hookimpl
        def cp_on_event(self, ctx, event):
            pass

    Watcher.observes = observes
    with pytest.raises(PluginError, match=r"plugin 'watcher': observes must be a tuple of event types"):
        make_plugin_set(Watcher())
    Watcher.observes = (RequestFinished, WorkerChanged)
    make_plugin_set(Watcher())


def _settings_plugin(settings_cls: type) -> type:
    return type("WithSettings", (Plugin,), {"name": "with-settings", "Settings": settings_cls})


@pytest.mark.parametrize("kind", ["plain class", "pydantic model taking unknown keys"])
def test_settings_that_would_not_refuse_a_typo_are_a_plugin_error(kind):
    from pydantic import BaseModel

    from controlplane.plugin_manager import PluginInfo

    if kind == "plain class":
        class Settings:
            limit = 3
    else:
        class Settings(BaseModel):
            limit: int = 3

    cls = _settings_plugin(Settings)
    available = {"with-settings": PluginInfo("with-settings", cls, None, None, None)}
    with pytest.raises(PluginError, match=r"plugin .with-settings.: Settings must subclass controlplane\.PluginSettings"):
        build_plugin_set(["with-settings"], {"with-settings": {"limt": 4}}, available=available)


def test_plugin_settings_subclasses_are_accepted():
    from controlplane import PluginSettings
    from controlplane.plugin_manager import PluginInfo

    class Settings(PluginSettings):
        limit: int = 3

    cls = _settings_plugin(Settings)
    available = {"with-settings": PluginInfo("with-settings", cls, None, None, None)}
    assert build_plugin_set(["with-settings"], {"with-settings": {"limit": 4}},
                            available=available).get("with-settings").settings.limit == 4
