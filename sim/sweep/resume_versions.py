"""Whether a sweep's stored runs were made with the plugins this process would load.

A sweep's hash (`sim.sweep.spec.LoadedSpec.run_hash`) covers its spec, base config, trace and allow-list, not the
code its plugins run: a plugin changed and bumped from 0.1.0 to 0.2.0 resumed the sweep its 0.1.0 made, skipped
every run and reported 0.1.0's numbers as this build's. Every run row stores the plugins it loaded (``plugins``:
name, dist, version); a resume keeps a sweep only when each of its finished runs was made with the versions this
process loads for that run (each plugin its config enables, and controlplane's own): :func:`version_changes` says
what differs, and `sim.sweep.store.create_or_resume` then starts a new sweep rather than mix runs of two versions
in one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any, NamedTuple

__all__ = ["CONTROLPLANE", "Versions", "controlplane_version", "loaded_versions", "stored_versions",
           "version_changes"]

#: The distribution of controlplane itself (its built-in plugins' ``dist`` in a run's ``plugins``).
CONTROLPLANE = "controlplane"


class Versions(NamedTuple):
    """What a run was (or would be) made with: controlplane's version and each enabled plugin's, by name."""

    controlplane: str | None
    plugins: dict[str, str | None]


def controlplane_version() -> str | None:
    """The installed controlplane's version, as its built-in plugins report it (the distribution's metadata)."""
    try:
        return metadata.version(CONTROLPLANE)
    except metadata.PackageNotFoundError:  # (run from a source tree, not installed)
        from controlplane import __version__

        return __version__


def _enabled(config: Any) -> list[str]:
    plugins = config.get("plugins") if isinstance(config, dict) else None
    enabled = plugins.get("enabled") if isinstance(plugins, dict) else None
    return [n for n in enabled if isinstance(n, str)] if isinstance(enabled, list) else []


def loaded_versions(config: dict[str, Any], available: Mapping[str, Any]) -> Versions:
    """The versions a run of ``config`` would be made with in this process (``available``: the installed plugins,
    `controlplane.plugin_manager.discover_plugins`)."""
    return Versions(controlplane_version(),
                    {name: (available[name].version if name in available else None) for name in _enabled(config)})


def stored_versions(config: Any, plugins: Any, notes: Mapping[str, Any]) -> Versions:
    """The versions a stored run was made with: its enabled plugins' from its ``plugins`` column; controlplane's
    from its built-in plugins there, else from its ``notes`` (``controlplane``, written with the run)."""
    rows = [r for r in plugins if isinstance(r, dict)] if isinstance(plugins, list) else []
    by_name = {r.get("name"): r.get("version") for r in rows}
    built_in = next((r.get("version") for r in rows if r.get("dist") == CONTROLPLANE), None)
    return Versions(built_in or notes.get(CONTROLPLANE), {name: by_name.get(name) for name in _enabled(config)})


def version_changes(runs: Iterable[tuple[Any, Any, Mapping[str, Any]]], available: Mapping[str, Any]) -> list[str]:
    """What differs between the versions stored ``runs`` (each its config, plugins column and notes) were made with
    and those this process would load for them: ``my-spf 0.1.0 (this process loads 0.2.0)``, each once; none when
    every run matches."""
    changes: dict[str, None] = {}
    for config, plugins, notes in runs:
        was, now = stored_versions(config, plugins, notes), loaded_versions(config, available)
        if was.controlplane != now.controlplane:
            changes[_change(CONTROLPLANE, was.controlplane, now.controlplane)] = None
        for name, version in was.plugins.items():
            if version != now.plugins.get(name):
                changes[_change(name, version, now.plugins.get(name))] = None
    return list(changes)


def _change(name: str, was: str | None, now: str | None) -> str:
    return f"{name} {was or 'of unknown version'} (this process loads {now or 'one of unknown version'})"
