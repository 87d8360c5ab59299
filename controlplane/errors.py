"""Errors users see: each says what is wrong and where (config key, plugin, file/line)."""


class ControlPlaneError(Exception):
    """Base class of the project's errors."""


class ConfigError(ControlPlaneError, ValueError):
    """Invalid configuration; the message names the key."""


class PluginError(ControlPlaneError):
    """A plugin could not be found, loaded or registered."""
