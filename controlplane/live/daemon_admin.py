"""The daemon's admin routes, behind ``Authorization: Bearer $CONTROLPLANE_ADMIN_TOKEN`` (404 when
no token is set): ``GET /admin/plugins``, ``GET /admin/workers``, ``POST /admin/reload``,
``POST /admin/drain``, ``POST /admin/resume``."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.requests import Request as HTTPRequest

from controlplane.config import load_config
from controlplane.live.daemon_config import daemon_config
from controlplane.errors import ConfigError
from controlplane.live.api_keys import KeyRing
from controlplane.live.daemon_config import with_request_deadline
from controlplane.live.daemon_deps import APIError, DaemonDep, DriverDep, require_admin

__all__ = ["router"]

log = logging.getLogger("controlplane.daemon")

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


@router.get("/plugins")
async def admin_plugins(driver: DriverDep) -> dict[str, Any]:
    """The loaded plugins, their settings' URLs without passwords (a Redis store's ``redis_url``), as a run row's."""
    from controlplane.session import without_password

    plugins = driver.plugin_listing()
    settings = {p["name"]: p["settings"] for p in plugins if isinstance(p["settings"], dict)}
    masked = without_password({"plugins": {"settings": settings}})["plugins"]["settings"]
    return {"run_id": driver.run_id, "plugins": [{**p, "settings": masked.get(p["name"], p["settings"])}
                                                 for p in plugins]}


@router.get("/workers")
async def admin_workers(driver: DriverDep) -> dict[str, Any]:
    """The generation workers (``role: generation``, with the shared guardians each hosts) and the
    guardians' workers of their own (``role: guardian``: guardian, checks, busy seconds)."""
    return {"pool": driver.pool.kind, "workers": driver.worker_listing()}


@router.post("/reload")
async def admin_reload(daemon: DaemonDep) -> JSONResponse:
    """Re-read the config file (with the command line's overrides) and swap in its plugins."""
    opts = daemon.options
    try:
        if opts.config_flags is not None:  # as the start made it: the file's models, then the command line's
            cfg, _ = await asyncio.to_thread(lambda: daemon_config(opts.config_path, **opts.config_flags))
        else:
            cfg = await asyncio.to_thread(load_config, opts.config_path, opts.overrides)
        cfg = with_request_deadline(cfg, opts.request_timeout_s)
        _refuse_guardians_not_running(daemon.driver, cfg)
        keys_off = _keys_turned_off(daemon.keys, cfg)
        changed = daemon.driver.reload(cfg)
        daemon.keys = KeyRing(cfg.auth.api_keys)  # keys rotate with the config
        changed = {**changed, "api_keys": len(cfg.auth.api_keys)}
    except ConfigError as exc:
        log.warning("POST /admin/reload refused, old plugins kept: %s", exc)
        raise APIError(400, str(exc)) from None
    except Exception as exc:  # e.g. a plugin that fails to load: keep the old plugins
        log.exception("POST /admin/reload failed, old plugins kept")
        raise APIError(400, f"reload failed, old plugins kept: {type(exc).__name__}: {exc}") from None
    log.info("POST /admin/reload: plugins reloaded from %s: %s; made afresh: %s; finished: %s%s",
             opts.config_path or "the environment and the command line", ", ".join(changed["plugins"]),
             ", ".join(changed["restarted"]) or "none", ", ".join(changed["finished"]) or "none",
             f"; changed but needing a restart: {', '.join(changed['needs_restart'])}" if changed["needs_restart"]
             else "")
    if keys_off:
        log.warning("POST /admin/reload: %s", keys_off)
        changed["warning"] = keys_off
    if opts.config_path is None:  # (the environment's CONTROLPLANE_* settings are still re-read)
        changed["note"] = ("the daemon was started without --config: only the environment's CONTROLPLANE_* "
                           "settings and the command line were re-read")
    return JSONResponse({"reloaded": True, "config": str(opts.config_path) if opts.config_path else None, **changed})


def _keys_turned_off(keys: KeyRing, cfg: Any) -> str | None:
    """What a reload that leaves no API keys while the daemon requires one does: refused (`ConfigError`) when the
    config merely lacks them (an ``auth`` section removed or lost: the API would open to anyone, silently); a
    warning to log and answer when it says ``auth: {api_keys: []}``, turning keys off deliberately."""
    if not keys.enabled or cfg.auth.api_keys:
        return None
    if "api_keys" not in cfg.auth.model_fields_set:
        raise ConfigError("the config lists no API keys (no auth.api_keys) while the daemon requires one: the "
                          "inference endpoints would answer anyone without a key. Reload refused, old plugins and "
                          "keys kept; to turn API keys off deliberately, write `auth: {api_keys: []}` in the config")
    return ("API keys turned off (auth.api_keys: []): the inference endpoints answer anyone without a key from now "
            "on")


def _refuse_guardians_not_running(driver: Any, cfg: Any) -> None:
    """A reload whose plans name a guardian the running daemon has no workers for is refused, old
    plugins kept: guardians start with the daemon (a changed ``guardians`` section needs a restart),
    so every check by it would answer ``unavailable``, which fails open: checking off, while the
    reload said it succeeded. Plugins say which guardians their plans name with a
    ``guardians_named(settings)`` class method (the built-in guardian planners do)."""
    from controlplane.plugin_manager import discover_plugins

    running = list(driver.guardians.guardians)
    declared = {g.name for g in cfg.guardians.models}
    available = discover_plugins()
    for name in cfg.plugins.enabled:
        target = available[name].target if name in available else None
        named = getattr(target, "guardians_named", None)
        if named is None:
            continue
        try:
            settings = target.Settings.model_validate(cfg.plugins.settings.get(name) or {})
        except Exception:
            continue  # bad settings: the plugin swap says so
        missing = [g for g in named(settings) if g not in running]
        if not missing:
            continue
        new = [g for g in missing if g in declared]
        why = ("the config declares them, but guardians start with the daemon: restart it to add one" if new
               == missing else "guardians.models does not declare them")
        raise ConfigError(f"plugins.settings.{name} names guardian(s) {', '.join(map(repr, missing))} that the "
                          f"running daemon does not run (it runs: {', '.join(running) or 'none'}); {why}. "
                          "Their checks would answer 'unavailable' (checking off); reload refused, old plugins kept")


@router.post("/drain")
async def admin_drain(request: HTTPRequest, daemon: DaemonDep) -> JSONResponse:
    """Drain, then exit (no body, or ``{"exit": true}``); with ``{"exit": false}`` drain and stay up
    (`/admin/resume` undoes it). Any other body (``{}``, bad JSON, ``"exit": "false"``) is a 400: it never
    exits by mistake."""
    exit_after = _exit_after(await request.body())
    if exit_after:
        daemon.request_exit("POST /admin/drain")  # (which logs it)
    else:
        daemon.driver.begin_drain()
        log.info("POST /admin/drain: draining, %d requests pending; staying up (POST /admin/resume takes requests "
                 "again)", daemon.driver.num_pending)
    return JSONResponse({"draining": True, "exit": exit_after, "pending": daemon.driver.num_pending}, 202)


def _exit_after(raw: bytes) -> bool:
    """``exit`` of a drain request's body: true without a body, else the body's ``exit``, a JSON boolean."""
    if not raw.strip():
        return True
    try:
        body = json.loads(raw)
    except ValueError:
        raise APIError(400, 'the body is not valid JSON: send nothing, or {"exit": false}', code="invalid") from None
    if not isinstance(body, dict) or set(body) != {"exit"}:  # (``{}`` too: it drained and exited)
        raise APIError(400, 'the body must be {"exit": true} or {"exit": false} (or no body: drain, then exit)',
                       code="invalid")
    exit_after = body["exit"]
    if not isinstance(exit_after, bool):
        raise APIError(400, f"exit must be true or false, not {json.dumps(exit_after)[:40]}", param="exit",
                       code="invalid")
    return exit_after


@router.post("/resume")
async def admin_resume(daemon: DaemonDep) -> JSONResponse:
    if daemon.exiting:
        raise APIError(409, "the daemon is shutting down")
    daemon.driver.resume()
    log.info("POST /admin/resume: taking requests again")
    return JSONResponse({"draining": False})
