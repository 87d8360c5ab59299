"""`POST /admin/reload`'s plugin swap without a daemon: what a reload keeps and what it makes afresh."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from controlplane.hookspecs import hookimpl
from controlplane.live.driver_admin import swap_plugins
from controlplane.plugin_manager import build_plugin_set
from controlplane.testing import make_config, make_context
from controlplane.types import Request

QUOTA = {"tenants": {"team-a": {"max_in_flight": 1}, "team-b": {"tokens_per_s": 5, "burst_tokens": 100}}}


class Core:
    """What `swap_plugins` uses of the core: ``ctx`` and ``bind_plugins``."""

    def __init__(self) -> None:
        self.ctx = make_context(now_s=5.0)
        self.bound: Any = None

    def bind_plugins(self, plugins: Any, fallbacks: Any) -> None:
        self.bound = plugins


def config(quota: dict[str, Any], enabled: tuple[str, ...] = ("tenant-quota", "exact-cache", "least-loaded")):
    return make_config(plugins={"enabled": list(enabled), "settings": {"tenant-quota": quota}})


def admitted(plugins: Any, ctx: Any, rid: str, tenant: str) -> bool:
    request = Request(rid, ctx.now_s, 10, 20, tenant=tenant)
    return plugins.hook.cp_admit_request(ctx=ctx, request=request) is None


def running(cfg: Any) -> tuple[Any, Core]:
    plugins = build_plugin_set(cfg.plugins.enabled, cfg.plugins.settings)
    core = Core()
    plugins.hook.cp_run_started(ctx=core.ctx)
    return SimpleNamespace(plugins=plugins, clock=core.ctx._clock), core


def test_a_reload_with_unchanged_settings_keeps_each_plugins_running_state():
    cfg = config(QUOTA)
    session, core = running(cfg)
    quota = session.plugins.get("tenant-quota")
    assert admitted(session.plugins, core.ctx, "a1", "team-a") and not admitted(session.plugins, core.ctx, "a2", "team-a")
    assert admitted(session.plugins, core.ctx, "b1", "team-b")  # 30 of team-b's 100 tokens taken

    changed = swap_plugins(session, core, cfg, config(QUOTA), [], 6.0)

    assert not admitted(session.plugins, core.ctx, "a3", "team-a")  # team-a's first request still runs
    assert session.plugins.get("tenant-quota") is quota and core.bound is session.plugins
    assert [p.info.name for p in session.plugins.loaded] == ["tenant-quota", "exact-cache", "least-loaded"]
    assert changed["restarted"] == []
    assert quota.bucket("team-b", 6.0).tokens < 100


class Exporter:
    """An extra plugin the run keeps across reloads (as the daemon's exporters)."""

    name = "exporter"

    def __init__(self) -> None:
        self.starts = 0

    @hookimpl
    def cp_run_started(self, ctx: Any) -> None:
        self.starts += 1


def test_a_reload_makes_changed_and_new_plugins_afresh_and_starts_only_them():
    cfg = config(QUOTA, ("tenant-quota", "exact-cache"))
    session, core = running(cfg)
    quota, cache = session.plugins.get("tenant-quota"), session.plugins.get("exact-cache")
    assert admitted(session.plugins, core.ctx, "a1", "team-a") and not admitted(session.plugins, core.ctx, "a2", "team-a")
    exporter = Exporter()
    looser = {"tenants": {"team-a": {"max_in_flight": 2}}}

    changed = swap_plugins(session, core, cfg, config(looser, ("tenant-quota", "exact-cache", "least-loaded")),
                           [exporter], 6.0)

    assert changed["restarted"] == ["tenant-quota", "least-loaded"]
    assert session.plugins.get("exact-cache") is cache and session.plugins.get("tenant-quota") is not quota
    assert session.plugins.get("exporter") is exporter and exporter.starts == 0  # kept: not started again
    assert admitted(session.plugins, core.ctx, "a2", "team-a")  # a changed plugin starts empty, as documented


def test_a_reload_lists_only_the_changes_it_cannot_apply_as_needing_a_restart():
    """The API keys are applied by the daemon's reload (a removed key is refused at once): a change
    to ``auth`` needs no restart, one to ``control`` does."""
    key = {"sha256": "a" * 64, "tenant": "team-a"}
    cfg = make_config(auth={"api_keys": [key, {"sha256": "b" * 64, "tenant": "team-b"}]})
    session, core = running(cfg)
    fewer_keys = make_config(auth={"api_keys": [key]})
    assert swap_plugins(session, core, cfg, fewer_keys, [], 6.0)["needs_restart"] == []
    slower = make_config(auth={"api_keys": [key]}, control={"metrics_interval_s": 3.0})
    assert swap_plugins(session, core, cfg, slower, [], 7.0)["needs_restart"] == ["control"]


# --- installed plugins of a third party: a module of hook functions, a class that flushes at its end ---------------

_MODULE = '''
from controlplane import hookimpl

STARTS, FINISHES = [], []


@hookimpl
def cp_run_started(ctx):
    STARTS.append(ctx.now_s)


@hookimpl
def cp_run_finished(ctx, summary):
    FINISHES.append(summary)
'''

_CLASS = '''
from controlplane import Plugin, PluginSettings, hookimpl

FLUSHED = []


class Flusher(Plugin):
    """Keeps what it saw, and writes it out (here: to FLUSHED) when its run ends."""

    name = "flusher"

    class Settings(PluginSettings):
        tag: str = "a"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.seen = 0

    @hookimpl
    def cp_on_event(self, event):
        self.seen += 1

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        FLUSHED.append((self.settings.tag, self.seen, summary))


class Failing(Plugin):
    name = "failing-finish"

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        raise RuntimeError("flush failed")
'''


def _install(tmp_path, monkeypatch) -> tuple[Any, Any]:
    """Installs (a dist-info folder on sys.path) 'hook-module', a module of hook functions, and 'flusher' and
    'failing-finish', plugin classes; returns their two modules."""
    import importlib
    import sys

    from controlplane import plugin_manager

    site = tmp_path / "site"
    site.mkdir()
    (site / "cp_admin_hookmod.py").write_text(_MODULE)
    (site / "cp_admin_flusher.py").write_text(_CLASS)
    info = site / "cp_admin_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cp-admin-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[controlplane]\nhook-module = cp_admin_hookmod\n"
                                           "flusher = cp_admin_flusher:Flusher\n"
                                           "failing-finish = cp_admin_flusher:Failing\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugin_manager, "_discovered", None)  # (restored after: later runs do not see them)
    for name in ("cp_admin_hookmod", "cp_admin_flusher"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # (imported afresh, gone after)
    modules = importlib.import_module("cp_admin_hookmod"), importlib.import_module("cp_admin_flusher")
    for name in ("cp_admin_hookmod", "cp_admin_flusher"):
        monkeypatch.setitem(sys.modules, name, sys.modules[name])
    return modules


def _plugins(enabled: tuple[str, ...], **settings: Any):
    return make_config(plugins={"enabled": [*enabled, "least-loaded"], "settings": settings})


def test_an_unchanged_module_of_hook_functions_keeps_running_across_a_reload(tmp_path, monkeypatch):
    """Before, a module plugin was reported ``restarted`` by every reload, and got ``cp_run_started`` again."""
    hookmod, _ = _install(tmp_path, monkeypatch)
    cfg = _plugins(("hook-module",))
    session, core = running(cfg)
    assert hookmod.STARTS == [5.0]

    changed = swap_plugins(session, core, cfg, _plugins(("hook-module",)), [], 6.0)

    assert changed["restarted"] == [] and changed["finished"] == []
    assert session.plugins.get("hook-module") is hookmod
    assert hookmod.STARTS == [5.0] and hookmod.FINISHES == []


def test_a_reload_finishes_the_plugins_it_replaces_or_drops_with_the_summary_so_far(tmp_path, monkeypatch):
    """Before, a replaced or dropped plugin never got ``cp_run_finished``: what it flushes there was lost."""
    from controlplane.metrics import RunStats

    hookmod, flusher = _install(tmp_path, monkeypatch)
    cfg = _plugins(("hook-module", "flusher"), flusher={"tag": "a"})
    session, core = running(cfg)
    core.stats = RunStats()
    core.stats.num_arrived = 3
    old = session.plugins.get("flusher")
    session.plugins.hook.cp_on_event(ctx=core.ctx, event="an event")

    changed = swap_plugins(session, core, cfg, _plugins(("flusher",), flusher={"tag": "b"}), [], 6.0)

    assert changed["finished"] == ["hook-module", "flusher"] and changed["restarted"] == ["flusher"]
    assert session.plugins.get("flusher") is not old
    [(tag, seen, summary)] = flusher.FLUSHED
    assert (tag, seen) == ("a", 1)  # the old instance, with what it kept
    assert summary["reload"] is True and summary["num_requests"] == 3 and summary["num_plugin_errors"] == 0
    assert [s["reload"] for s in hookmod.FINISHES] == [True]

    unchanged = swap_plugins(session, core, _plugins(("flusher",), flusher={"tag": "b"}),
                             _plugins(("flusher",), flusher={"tag": "b"}), [], 7.0)
    assert unchanged["finished"] == [] and len(flusher.FLUSHED) == 1  # kept: not finished


def test_a_plugin_failing_in_its_reload_finish_is_its_error_and_the_reload_goes_on(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch)
    cfg = _plugins(("failing-finish",))
    session, core = running(cfg)

    changed = swap_plugins(session, core, cfg, _plugins(()), [], 6.0)

    assert changed["finished"] == ["failing-finish"]
    errors = session.plugins.monitor.take_errors()
    assert [(e.plugin, e.hook, e.error) for e in errors] == [
        ("failing-finish", "cp_run_finished", "RuntimeError: flush failed (raised at cp_admin_flusher.py:33 in "
                                              "cp_run_finished)")]
