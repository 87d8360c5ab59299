"""`PluginSet.versions`, a run row's ``plugins``: the loaded plugins in call order, with the settings of those
passed in code (the config's are in its ``plugins.settings``)."""

from __future__ import annotations

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import RouteDecision
from controlplane.testing import make_plugin_set, make_trace, replay_with


class FirstWorker(Plugin):
    name = "first-worker"

    class Settings(PluginSettings):
        spread: int = 1
        redis_url: str = "redis://user:secret@cache:6379/0"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision(workers[0].worker_id, "first")


class Deferring:
    """A plugin that is not a `Plugin` (no settings), asked after FirstWorker."""

    name = "deferring"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return None


def test_plugins_passed_in_code_are_listed_first_as_pluggy_asks_them_with_their_settings():
    """They were listed last (registration order), though pluggy asks the last registered first, and their settings
    were stored nowhere."""
    plugins = make_plugin_set(FirstWorker({"spread": 3}), Deferring(), enabled=["least-loaded", "continuous-batching"])
    asked = [i.plugin_name for i in reversed(plugins.hook.cp_route_request.get_hookimpls())]
    rows = plugins.versions()
    names = [p["name"] for p in rows]
    assert asked == ["first-worker", "deferring", "least-loaded"] == [n for n in names if n in asked]
    assert names == ["first-worker", "deferring", "least-loaded", "continuous-batching"]
    assert rows[0]["settings"] == {"spread": 3, "redis_url": "redis://user:***@cache:6379/0"}  # (masked)
    assert "settings" not in rows[1] and "settings" not in rows[2]  # none; the config's: in plugins.settings


def test_a_stored_run_row_lists_them_in_call_order_with_the_event_log_replay_with_adds(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = replay_with(FirstWorker({"spread": 2}), trace=make_trace(5), db_url=url)
    run = _stored_run(url, result.run_id)
    names = [p["name"] for p in run["plugins"]]
    # the project's own observers first: the recorder, then the plugins passed, then replay_with's event log
    assert names[:3] == ["sql-recorder", "first-worker", "event-log"]
    assert run["plugins"][1]["settings"]["spread"] == 2
    assert names[3:] == list(run["config"]["plugins"]["enabled"])


def _stored_run(url: str, run_id: int) -> dict:
    from controlplane.storage import get_run, make_engine

    engine = make_engine(url)
    try:
        return get_run(engine, run_id)
    finally:
        engine.dispose()
