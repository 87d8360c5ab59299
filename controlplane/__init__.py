"""controlplane: a simulation-backed control plane for LLM serving clusters.

Plugin authors need `hookimpl`, `Plugin`, `PluginSettings` and the decision types in
`controlplane.decisions`; see docs/plugins.md.
"""

from controlplane.hookspecs import hookimpl
from controlplane.plugin import Plugin, PluginSettings

__version__ = "0.1.0"

__all__ = ["hookimpl", "Plugin", "PluginSettings", "__version__"]
