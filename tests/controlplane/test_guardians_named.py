"""A planner of your own opts into the start's check of the guardians its plans name with a
``guardians_named(settings)`` class method (docs/guardians.md, Writing a planner); the error names the
settings key that holds the undeclared name, whatever the planner calls it (it read `guardian`, a key
such a planner may not have)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import GuardianPlan
from controlplane.errors import ConfigError
from controlplane.guardian_config import naming_key, refuse_undeclared_guardians
from controlplane.testing import make_config


class KeywordPlanner(Plugin):
    name = "kw-planner"

    class Settings(PluginSettings):
        keywords: tuple[str, ...] = ("bomb",)
        screeners: tuple[str, ...] = ("kw", "clf")

    @classmethod
    def guardians_named(cls, settings) -> tuple[str, ...]:
        return tuple(settings.screeners)

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        return GuardianPlan(True, guardians=self.settings.screeners, mode="sync", reason="keyword")


class Unnamed(KeywordPlanner):
    guardians_named = None  # says nothing: not checked


def _config(name, **settings):
    return make_config(plugins={"enabled": [name, "queue-limit", "least-loaded", "continuous-batching",
                                            "fixed-replicas", "static-memory"], "settings": {name: settings}},
                       guardians={"models": [{"name": "kw"}, {"name": "clf"}]})


def test_a_planner_of_your_own_with_guardians_named_is_refused_naming_its_key():
    available = {"kw-planner": SimpleNamespace(target=KeywordPlanner)}
    with pytest.raises(ConfigError, match=r"plugins.settings.kw-planner.screeners: guardian\(s\) 'cfl' not declared"):
        refuse_undeclared_guardians(_config("kw-planner", screeners=["kw", "cfl"]), available)
    refuse_undeclared_guardians(_config("kw-planner"), available)  # both declared
    # without guardians_named nothing is checked (its checks would answer 'unavailable')
    refuse_undeclared_guardians(_config("kw-planner", screeners=["cfl"]), {"kw-planner": SimpleNamespace(target=Unnamed)})


def test_the_naming_key_prefers_the_built_in_keys_and_falls_back_to_guardian():
    s = KeywordPlanner.Settings(screeners=("a", "b"))
    assert naming_key(s, "b") == "screeners" and naming_key(s, "zz") == "guardian"
