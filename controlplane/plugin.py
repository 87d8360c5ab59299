"""Base class for plugins: a name, a pydantic settings model, per-run state on the instance.

A plugin is instantiated once per run with its validated settings, so its attributes are its
own state for that run and two runs never share it::

    class MyRouter(Plugin):
        name = "my-router"

        class Settings(PluginSettings):
            spread: int = 2

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            ...

Register it under the ``controlplane`` entry-point group of your distribution.

A plugin whose ``cp_on_event`` needs only some event types names them in ``observes``; the
event bus then calls it for events of those types (and their subclasses) only. The bus runs a
few times per simulated request, so this is worth saying. Without it (``None``) every event
comes; either way the method should check what it got, since under pluggy's own caller (hook
wrappers, tracing) every event still reaches it.

A plugin whose settings make a hook defer every call (return None: a queue limit with no limit,
a guardian sampling nothing) can say so when it is made, ``self.withdraw("cp_admit_request")``:
it is then neither registered for that hook nor asked as the hook's built-in fallback, so the
core does not call it per request; calling the method directly still returns None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# The errors a plugin's tests meet (a bad setting; a plugin the run cannot use), importable beside the base class.
from controlplane.errors import PluginError, SettingsError

__all__ = ["Plugin", "PluginError", "PluginSettings", "SettingsError", "is_withdrawn"]


class PluginSettings(BaseModel):
    """Settings of one plugin; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Plugin:
    name: ClassVar[str]
    Settings: ClassVar[type[PluginSettings]] = PluginSettings
    #: Event types ``cp_on_event`` is called for (None: every event).
    observes: ClassVar[tuple[type[Any], ...] | None] = None

    def __init__(self, settings: PluginSettings | Mapping[str, Any] | None = None) -> None:
        """``settings``: an instance of this plugin's ``Settings``, a dict of its fields (validated, as a
        config's ``plugins.settings`` are: a bad value is a `SettingsError` now, not an error of every hook
        call later), or None for the defaults. Settings of another class are refused, and so is a ``Settings``
        class that would take a typo silently (not a `PluginSettings`: a `PluginError`, as when a run loads it)."""
        _check_settings_class(type(self))
        if settings is None:
            settings = self.Settings()
        elif not isinstance(settings, self.Settings):
            settings = _settings_for(type(self), settings)
        self.settings = settings

    def withdraw(self, hook: str) -> None:
        """Leave ``hook`` unimplemented by this instance: with its settings it defers every call.
        The method is replaced by one that returns None and carries no hook-implementation
        mark, so the plugin manager does not register it and no fallback caller asks it."""
        if not callable(getattr(self, hook, None)):
            raise AttributeError(f"{self.name} has no hook {hook!r} to withdraw")
        setattr(self, hook, _defers)

    def __repr__(self) -> str:
        return f"<plugin {getattr(self, 'name', type(self).__name__)}>"


def _check_settings_class(cls: type[Plugin]) -> None:
    """Refuse ``cls.Settings`` unless it refuses unknown keys (`plugin_checks.check_settings_class`)."""
    from controlplane.plugin_checks import check_settings_class

    check_settings_class(getattr(cls, "name", cls.__name__), cls.Settings)


def _settings_for(cls: type[Plugin], given: Any) -> PluginSettings:
    """``cls.Settings`` from a dict of its fields; anything else (another plugin's settings) is a `PluginError`."""
    from controlplane.plugin_checks import settings_of

    name = getattr(cls, "name", cls.__name__)
    if isinstance(given, Mapping):
        return settings_of(cls.Settings, given, f"{cls.__name__}.Settings")
    raise PluginError(f"plugin {name!r} takes {cls.__name__}.Settings(...) or a dict of its fields, got "
                      f"{type(given).__qualname__} ({given!r})")


def _defers(*_args: Any, **_kwargs: Any) -> None:
    """A withdrawn hook (`Plugin.withdraw`): it defers."""
    return None


def is_withdrawn(method: Any) -> bool:
    """Whether ``method`` is a hook an instance withdrew (`Plugin.withdraw`)."""
    return method is _defers
