"""What a run's start refuses of its config, refused by `sim replay` and `live-replay` before they touch the
database or start a worker (as the daemon does before it listens), and by a sweep or search for every point before
its first run (`sim.sweep.spec_checks`): the plugins' names and settings, and for a simulated run its latency
models and the static memory plan (`static-memory`'s, enabled or the core's fallback). Without it a typo in a plugin
setting left a new, empty database behind (or a PostgreSQL schema upgraded), or came after a live worker's start. A
SQLite file in a folder that does not exist is refused too: ``--db /nonexistent/dir/x.db`` made the folders and stored
the run there.

`CONTROLPLANE_LOAD_PLUGINS` (the allow-list) leaving out enabled plugins is warned about, and the config the
run gets, and stores, lists the plugins that run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from controlplane.config import RunConfig
from controlplane.errors import ConfigError

__all__ = ["allow_listed", "check_database_folder", "checked_run_config"]


def check_database_folder(url: str) -> None:
    """A SQLite file's folder must exist (a new file in it is made; a new folder is not): a typo in ``--db``'s folder
    is an error naming it, rather than a tree of folders made with the run stored at its end."""
    from pathlib import Path

    from controlplane.storage.errors import mask_password
    from controlplane.storage.shared_file import sqlite_path  # (not storage.db: the replay imports no SQLAlchemy)

    name = sqlite_path(url)
    path = Path(name) if name is not None else None
    if path is not None and not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "no such folder"
        raise ConfigError(f"database {mask_password(url)}: {path.parent}: {what}, so no run can be "
                          "stored there; check --db (storage.url), or make the folder first")


def checked_run_config(config: RunConfig, *, simulated: bool, warn: Callable[[str], None],
                       path: Any = None, database: bool = True) -> RunConfig:
    """``config`` checked as its run's start would check it (`ConfigError`, `PluginError` ...), nothing built that
    the run keeps; its ``plugins.enabled`` limited to the plugins the allow-list lets load (``warn`` says which it
    leaves out). ``simulated``: also build its latency models (their settings' errors) and plan its memory;
    ``path``: the config file, named by their errors; ``database``: also check ``storage.url``'s folder (a sweep's
    points are stored where its ``--db`` says)."""
    from controlplane.guardian_config import refuse_undeclared_guardians
    from controlplane.plugin_checks import check_hook_names
    from controlplane.plugin_manager import ALLOW_ENV, checked_plugin_names, discover_plugins, validated_settings

    if database:
        check_database_folder(config.storage.url)
    plugins, available = config.plugins, discover_plugins()
    enabled = checked_plugin_names(plugins.enabled, plugins.settings, available, warn_left_out=False)
    for name in enabled:
        validated_settings(available[name], plugins.settings.get(name))
        check_hook_names(name, available[name].target)
    refuse_undeclared_guardians(config, available)  # a planner's misspelt guardian: a key named, not checks off
    config, left_out = allow_listed(config)
    if left_out:
        warn(f"${ALLOW_ENV}={os.environ.get(ALLOW_ENV, '')!r} leaves out {', '.join(left_out)} of plugins.enabled: "
             f"the run goes without {'it' if len(left_out) == 1 else 'them'}, and its stored config lists the "
             "plugins that ran")
    if simulated:
        where = f"invalid configuration{f' in {path}' if path else ''}:\n  "
        _check_latency_models(config, enabled, available, where)
        _check_memory_plans(config, config.plugins.enabled, available, where)
    _warn_unknown_gpus(config, warn, path)
    if simulated:
        _warn_unknown_models(config, warn, path)
    _note_profile_followed(config, warn, path)
    return config


def allow_listed(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """``config`` with ``plugins.enabled`` (and their settings) limited to the allow-list
    (`CONTROLPLANE_LOAD_PLUGINS`), and the enabled plugins it leaves out: the config a run under it
    gets and stores (`sim replay`, and each point of a sweep: its stored config named plugins that never ran)."""
    from controlplane.plugin_manager import ALLOW_ENV

    allow = os.environ.get(ALLOW_ENV)
    if not allow:
        return config, []
    allowed = {n.strip() for n in allow.split(",") if n.strip()}
    plugins = config.plugins
    left_out = [name for name in plugins.enabled if name not in allowed]
    if not left_out:
        return config, []
    enabled = [name for name in plugins.enabled if name in allowed]
    kept = {name: s for name, s in plugins.settings.items() if name in allowed}
    return config.model_copy(update={"plugins": plugins.model_copy(update={"enabled": enabled,
                                                                           "settings": kept})}), left_out


def _check_latency_models(config: RunConfig, enabled: list[str], available: dict[str, Any], where: str) -> None:
    """Build each deployment's latency model as the run will (`sim.replay.build_latency_models`: an unknown model,
    a setting it does not take or refuses, a default ``tensor_parallel`` that is not ``gpus_per_replica``), from
    the plugins that register latency models."""
    from controlplane.plugin_manager import build_plugin_set
    from sim.replay import build_latency_models

    registering = [n for n in enabled if hasattr(available[n].target, "cp_register_latency_models")]
    plugin_set = build_plugin_set(registering, {n: config.plugins.settings[n] for n in registering
                                                if n in config.plugins.settings}, available=available)
    build_latency_models(SimpleNamespace(config=config, plugins=plugin_set))  # type: ignore[arg-type]


def _check_memory_plans(config: RunConfig, enabled: list[str], available: dict[str, Any], where: str) -> None:
    """Plan each deployment's KV cache as `static-memory` will (`memory_planner`: enabled, or the fallback of a run
    that enables no other memory planner); `refuse_unplannable`."""
    from controlplane.plugin_manager import instantiate

    if "static-memory" not in available:
        return  # (no static-memory installed: nothing plans as it would)
    planner = memory_planner(config, enabled, lambda name: hasattr(available[name].target, "cp_plan_memory"),
                             lambda settings: instantiate(available["static-memory"], settings))
    if planner is not None:
        refuse_unplannable(config, planner, where, fallback="static-memory" not in enabled)


def check_run_memory(config: RunConfig, plugins: Any, available: Any) -> None:
    """`refuse_unplannable` for a run whose plugins are loaded (``plugins``: its `PluginSet`, extra plugins included;
    ``available``: the plugins it was loaded from, for the fallback): what `sim.replay.replay` checks before its run
    row, as the CLI's start check did before it. A library replay of a model that does not fit ran with an unlimited
    KV cache, the plan's error a plugin error of an otherwise normal run."""
    from controlplane.plugin_manager import instantiate

    if "static-memory" not in available:
        return
    enabled = [p.info.name for p in plugins.loaded]
    planner = memory_planner(config, enabled, lambda name: hasattr(plugins.get(name), "cp_plan_memory"),
                             lambda settings: plugins.get("static-memory") if "static-memory" in enabled
                             else instantiate(available["static-memory"], settings))
    if planner is not None:
        refuse_unplannable(config, planner, "invalid configuration:\n  ", fallback="static-memory" not in enabled)


#: Memory planners that plan no simulated worker: it reports no device facts (`plugins/device_memory.py`).
DEFER_IN_SIMULATION = frozenset({"device-memory"})


def memory_planner(config: RunConfig, enabled: Iterable[str], plans_memory: Callable[[str], bool],
                   make: Callable[[Any], Any]) -> Any:
    """The `static-memory` that will plan a simulated run's KV caches, made by ``make(settings)``: the enabled
    one (its settings), else the core's fallback (`controlplane.config.FALLBACK_PLUGINS`: default settings) when
    no other enabled plugin plans memory (``plans_memory(name)``; device-memory defers in simulation); None where
    another plugin's plan decides, not known before the run."""
    enabled = list(enabled)
    if "static-memory" in enabled:
        return make(config.plugins.settings.get("static-memory"))
    if any(plans_memory(name) for name in enabled if name not in DEFER_IN_SIMULATION):
        return None
    return make(None)


def refuse_unplannable(config: RunConfig, planner: Any, where: str, *, fallback: bool = False) -> None:
    """`ConfigError` naming the key, for the first deployment whose KV cache ``planner`` (a `static-memory`)
    cannot plan: a request slot shorter than a KV block, a GPU the catalogue lacks under a known model, or a model
    whose weights leave no room for one request's KV cache in ``memory_fraction`` of its GPUs. Each raised at every
    worker of the run, which went on with an unlimited cache. ``fallback``: the planner is the core's fallback (the
    config enables no memory planner), with its default settings."""
    from controlplane.errors import did_you_mean
    from controlplane.hardware.memory_plan import known_model, slot_below_block
    from controlplane.hardware.specs import GPUS, UnknownSpecError, get_gpu

    settings = getattr(planner, "settings", None)
    slot = getattr(settings, "request_slot_tokens", None)
    if fallback:  # (its settings are the defaults: no key of the config holds them)
        plan = ("the plan of static-memory, the fallback memory planner (no enabled plugin plans a simulated "
                "worker's memory), with its default settings")
        slot_key, fraction = "its request_slot_tokens", f"memory_fraction {getattr(settings, 'memory_fraction', '')}"
    else:
        plan = "static-memory's plan"
        slot_key = "plugins.settings.static-memory.request_slot_tokens"
        fraction = "plugins.settings.static-memory.memory_fraction"
    for i, d in enumerate(config.cluster.models):
        if d.num_kv_blocks or known_model(d) is None:
            continue  # (the cache as configured: nothing planned)
        if slot and slot < d.kv_block_size:
            raise ConfigError(f"{where}{slot_key} and cluster.models.{i}.kv_block_size: "
                              f"{slot_below_block(slot, d.kv_block_size)} ({plan})")
        try:
            get_gpu(d.gpu)
        except UnknownSpecError:
            raise ConfigError(
                f"{where}cluster.models.{i}.gpu: unknown gpu {d.gpu!r}{did_you_mean(d.gpu, GPUS, cutoff=0.85)}; "
                f"known: {', '.join(sorted(GPUS))} ({plan}: {known_model(d).name}'s KV cache is what the GPU's memory "
                "leaves); give a catalogue GPU, one of your own described under cluster.gpus.NAME (memory_gib, "
                "fp16_tflops, memory_bandwidth_gb_s), or the cache's size as num_kv_blocks") from None
        try:
            getattr(planner, "kv_blocks", lambda d: None)(d)
        except ValueError as exc:
            raise ConfigError(f"{where}cluster.models.{i}: {exc} ({plan}: {fraction} of each GPU, less the weights, "
                              "must hold one request's KV cache); give more gpus_per_replica, a GPU with more memory, "
                              "a lower precision, or num_kv_blocks") from None


def _warn_unknown_models(config: RunConfig, warn: Callable[[str], None], path: Any) -> None:
    """A deployment whose latency model times a model the catalogue lacks runs with an unlimited KV cache and the
    default cold start unless it gives them: said once per deployment
    (`controlplane.hardware.unplanned.unknown_model_warning`)."""
    from controlplane.hardware.unplanned import unknown_model_warning

    for i, d in enumerate(config.cluster.models):
        if (text := unknown_model_warning(d, f"cluster.models.{i}")) is not None:
            warn(f"{path}: {text}" if path else text)


def _note_profile_followed(config: RunConfig, warn: Callable[[str], None], path: Any) -> None:
    """A deployment's gpu (gpus_per_replica) left out and following its measured profile to another value than the
    default older releases billed: said once per deployment and key, as the same config's cost changed with the
    upgrade (`controlplane.hardware.deployment_fit.profile_followed_notes`)."""
    from controlplane.hardware.deployment_fit import profile_followed_notes

    for i, d in enumerate(config.cluster.models):
        for text in profile_followed_notes(d, f"cluster.models.{i}"):
            warn(f"{path}: {text}" if path else text)


def _warn_unknown_gpus(config: RunConfig, warn: Callable[[str], None], path: Any) -> None:
    """A GPU name the catalogue lacks: a model's or guardian's without a price (its cost unknown; no memory plan
    either), or a price of one that nothing runs on (`controlplane.hardware.cost.unknown_gpu_names`)."""
    from controlplane.hardware.cost import unknown_gpu_names

    used = {f"cluster.models.{i}.gpu": d.gpu for i, d in enumerate(config.cluster.models)}
    used.update({f"guardians.models.{i}.gpu": g.gpu for i, g in enumerate(config.guardians.models) if g.gpu})
    for text in unknown_gpu_names(config.cluster.gpu_prices, used):
        warn(f"{path}: {text}" if path else text)
