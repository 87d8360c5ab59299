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
