"""controlplane: a simulation-backed control plane for LLM serving clusters.

Plugin authors need `hookimpl`, `Plugin`, `PluginSettings` and the decision types in
`controlplane.decisions`; see docs/plugins.md.
"""

from __future__ import annotations

#: The package's names for plugin authors, imported when first read: ``controlplane sim replay``
#: forks its writer process before pydantic and pluggy are imported (see ``controlplane.cli.main``),
#: so the child starts its own imports a tenth of a second sooner.
_WHERE: dict[str, str] = {"hookimpl": "hookspecs", "Plugin": "plugin", "PluginSettings": "plugin",
                          "PluginError": "errors", "SettingsError": "errors"}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import gc
    from importlib import import_module

    enabled = gc.isenabled()
    gc.disable()  # importing pydantic and pluggy makes only long-lived objects: no collection can free any
    try:
        value = getattr(import_module(f"{__name__}.{module}"), name)
    finally:
        if enabled:
            gc.enable()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__version__ = "0.1.0"

__all__ = ["hookimpl", "Plugin", "PluginError", "PluginSettings", "SettingsError", "__version__"]
