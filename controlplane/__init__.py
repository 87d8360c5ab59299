"""controlplane: a simulation-backed control plane for LLM serving clusters.

Plugin authors need `hookimpl`, `Plugin`, `PluginSettings` and the decision types in
`controlplane.decisions`; see docs/plugins.md.
"""

import gc as _gc

_gc_enabled = _gc.isenabled()
_gc.disable()  # importing pydantic and pluggy makes only long-lived objects: no collection can free any
try:
    from controlplane.hookspecs import hookimpl
    from controlplane.plugin import Plugin, PluginSettings
finally:
    if _gc_enabled:
        _gc.enable()
    del _gc, _gc_enabled

__version__ = "0.1.0"

__all__ = ["hookimpl", "Plugin", "PluginSettings", "__version__"]
