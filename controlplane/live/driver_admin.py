"""What the daemon's admin endpoints do to a running live run: swap its plugins for a new
config's, and list its plugins and workers."""

from __future__ import annotations

from typing import Any

from controlplane.config import RunConfig
from controlplane.types import Decision

__all__ = ["plugin_listing", "swap_plugins", "worker_listing"]


def swap_plugins(session: Any, core: Any, old: RunConfig, new: RunConfig, extras: list[object],
                 now_s: float) -> dict[str, Any]:
    """Build ``new``'s plugins (keeping the run's recorder and ``extras``) and bind them to the
    core; the swap is recorded as a ``reload`` decision. Returns the plugins loaded and the config
    sections that changed but need a restart (only ``plugins`` takes effect at run time)."""
    from controlplane.plugin_manager import build_plugin_set, discover_plugins
    from controlplane.session import fallback_plugins

    available = discover_plugins(refresh=True)
    kept = [p for p in (session.plugins.get("sql-recorder"),) if p is not None] + list(extras)
    plugins = build_plugin_set(new.plugins.enabled, new.plugins.settings, extra=kept, available=available)
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    restart = sorted(k for k in after if k != "plugins" and after[k] != before.get(k))
    core.bind_plugins(plugins, fallback_plugins(available))
    session.plugins = plugins
    session.clock.now_s = max(session.clock.now_s, now_s)
    plugins.hook.cp_run_started(ctx=core.ctx)
    names = [p.info.name for p in plugins.loaded]
    plugins.hook.cp_on_event(
        ctx=core.ctx,
        event=Decision(now_s, "admin", "daemon", "reload", None, "plugins reloaded from the config",
                       {"plugins": names, "needs_restart": restart}),
    )
    return {"plugins": names, "needs_restart": restart}


def plugin_listing(plugins: Any) -> list[dict[str, Any]]:
    """The loaded plugins: name, distribution, version, entry point, hooks and settings."""
    out = []
    for p in plugins.loaded:
        settings = getattr(p.instance, "settings", None)
        out.append({
            "name": p.info.name,
            "dist": p.info.dist,
            "version": p.info.version,
            "entry_point": p.info.entry_point,
            "hooks": sorted(n for n in dir(p.instance) if n.startswith("cp_")),
            "settings": settings.model_dump(mode="json") if hasattr(settings, "model_dump") else None,
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
