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
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class PluginSettings(BaseModel):
    """Settings of one plugin; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Plugin:
    name: ClassVar[str]
    Settings: ClassVar[type[PluginSettings]] = PluginSettings
    #: Event types ``cp_on_event`` is called for (None: every event).
    observes: ClassVar[tuple[type[Any], ...] | None] = None

    def __init__(self, settings: PluginSettings | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    def __repr__(self) -> str:
        return f"<plugin {self.name}>"
