"""What the daemon's admin endpoints do to a running live run: swap its plugins for a new
config's, and list its plugins and workers."""

from __future__ import annotations

from typing import Any

from controlplane.config import RunConfig
from controlplane.hook_calls import _isolated
from controlplane.types import Decision

__all__ = ["APPLIED_AT_RUN_TIME", "plugin_listing", "summary_so_far", "swap_plugins", "worker_listing"]

#: The config sections a reload applies: the plugins here, the API keys (``auth``) in the daemon's
#: reload route; a change to any other is reported as needing a restart.
APPLIED_AT_RUN_TIME = ("plugins", "auth")


def swap_plugins(session: Any, core: Any, old: RunConfig, new: RunConfig, extras: list[object],
                 now_s: float) -> dict[str, Any]:
    """Build ``new``'s plugins (keeping the run's recorder and ``extras``) and bind them to the
    core; the swap is recorded as a ``reload`` decision. A plugin enabled before and after with the
    same settings keeps its running instance (a module of hook functions: the module) and with it
    its state (quotas in flight, token buckets, cached answers, measured timings); only changed and
    new plugins are made afresh and get ``cp_run_started``. The instances a reload replaces (settings
    changed) or drops (no longer enabled) get ``cp_run_finished`` first, with the run's summary so
    far (`summary_so_far`), so they flush what they keep; their errors are the run's, as any hook's.
    Returns the plugins loaded, those made afresh, those finished and the config sections that
    changed but need a restart (all but `APPLIED_AT_RUN_TIME`)."""
    from controlplane.plugin_manager import build_plugin_set, discover_plugins
    from controlplane.session import fallback_plugins

    available = discover_plugins(refresh=True)
    running = {n: session.plugins.get(n) for n in old.plugins.enabled if session.plugins.get(n) is not None}
    unchanged = {n: inst for n, inst in running.items()
                 if n in new.plugins.enabled and n in available and _same_settings(old, new, n)
                 and _is_running(available[n].target, inst)}
    available.update({n: _running(available[n], inst) for n, inst in unchanged.items()})
    kept = [p for p in (session.plugins.get("sql-recorder"),) if p is not None] + list(extras)
    plugins = build_plugin_set(new.plugins.enabled, new.plugins.settings, extra=kept, available=available)
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    restart = sorted(k for k in after if k not in APPLIED_AT_RUN_TIME and after[k] != before.get(k))
    retired = [n for n in running if n not in unchanged]  # replaced or dropped: in the old config's order
    finishing = [impl for impl in reversed(session.plugins.hook.cp_run_finished.get_hookimpls())
                 if impl.plugin_name in retired and not (impl.hookwrapper or getattr(impl, "wrapper", False))]
    core.bind_plugins(plugins, fallback_plugins(available))
    session.plugins = plugins
    session.clock.now_s = max(session.clock.now_s, now_s)
    if finishing:
        summary = summary_so_far(core, now_s)
        for impl in finishing:  # isolated, its errors counted in the new set's monitor (the run's counts go on)
            fn = _isolated(getattr(impl.function, "__wrapped__", impl.function), impl.plugin_name,
                           "cp_run_finished", plugins.monitor)
            fn(*({"ctx": core.ctx, "summary": summary}[a] for a in impl.argnames))
    names = [p.info.name for p in plugins.loaded]
    fresh = [p.info.name for p in plugins.loaded[:len(plugins.loaded) - len(kept)] if p.info.name not in unchanged]
    for impl in reversed(plugins.hook.cp_run_started.get_hookimpls()):  # in pluggy's order, the new ones only
        if impl.plugin_name in fresh:
            impl.function(*(core.ctx for _ in impl.argnames))
    plugins.hook.cp_on_event(
        ctx=core.ctx,
        event=Decision(now_s, "admin", "daemon", "reload", None, "plugins reloaded from the config",
                       {"plugins": names, "restarted": fresh, "finished": retired, "needs_restart": restart}),
    )
    calls = getattr(core, "calls", None)
    if calls is not None:  # the error decisions of a finished or started plugin, now rather than at the next event
        calls.drain_errors()
    return {"plugins": names, "restarted": fresh, "finished": retired, "needs_restart": restart}


def summary_so_far(core: Any, now_s: float) -> dict[str, Any]:
    """What a plugin a reload replaces or drops gets as ``cp_run_finished``'s summary: the run's headline numbers
    at the reload (`controlplane.metrics.RunStats.summary`: the requests finished so far; those in flight are not
    counted, and the run end's cost, per-model and per-plugin-error breakdowns are left out), the plugin errors
    so far, and ``reload: True`` (the run goes on; its real summary comes at its end, to the plugins then loaded)."""
    stats = getattr(core, "stats", None)
    summary = stats.summary(now_s) if stats is not None else {}
    monitor = getattr(core, "_monitor", None)
    if monitor is not None:
        summary["num_plugin_errors"] = monitor.num_errors
    summary["reload"] = True
    return summary


def _same_settings(old: RunConfig, new: RunConfig, name: str) -> bool:
    return (old.plugins.settings.get(name) or {}) == (new.plugins.settings.get(name) or {})


def _is_running(target: Any, instance: object) -> bool:
    """Whether ``instance`` is the running plugin of ``target`` (what its entry point loads now): an instance of
    the class, or the module of hook functions itself (importing it again gives the same module)."""
    return isinstance(instance, target) if isinstance(target, type) else instance is target


def _running(info: Any, instance: object) -> Any:
    """``info`` with a target that hands back ``instance``, the running plugin, where a new one would
    be made: `build_plugin_set` still validates its settings and registers it where the config lists it.
    A module of hook functions is its own running plugin: ``info`` as it is."""
    from controlplane.plugin_manager import PluginInfo

    cls = info.target
    if not isinstance(cls, type):
        return info
    same = type(cls.__name__, (cls,), {"__new__": lambda _cls, *_args: instance, "__module__": cls.__module__})
    return PluginInfo(info.name, same, info.dist, info.version, info.entry_point)


def plugin_listing(plugins: Any) -> list[dict[str, Any]]:
    """The loaded plugins: name, distribution, version, entry point, hooks and settings."""
    from controlplane.plugin_manager import instance_settings

    out = []
    for p in plugins.loaded:
        out.append({
            "name": p.info.name,
            "dist": p.info.dist,
            "version": p.info.version,
            "entry_point": p.info.entry_point,
            "hooks": sorted(n for n in dir(p.instance) if n.startswith("cp_")),
            "settings": instance_settings(p.instance),
        })
    return out


def worker_listing(core: Any, pool: Any, facts: dict[str, dict[str, Any]], guardians: Any = None,
                   ) -> list[dict[str, Any]]:
    """The core's workers (``role: generation``) with their state and load, the pool's view
    (alive, pid, device), the device facts each reported when it started and the shared guardians
    each hosts (checks, busy seconds); then the guardians' workers of their own (``role:
    guardian``, `LiveGuardians.worker_listing`)."""
    out = []
    for wid, w in core.workers.items():
        row = {
            "worker_id": wid,
            "role": "generation",
            "model": w.model,
            "state": w.state.value,
            "waiting": len(w.waiting),
            "running": len(w.running),
            "busy": w.busy,
            "num_completed": w.num_completed,
            "alive": pool.alive(wid),
            **pool.info(wid),
            "facts": facts.get(wid),
        }
        if guardians is not None and guardians.declared:
            row["guardians"] = guardians.hosted(wid)
        out.append(row)
    if guardians is not None:
        out.extend(guardians.worker_listing(pool))
    return out
