"""What the run config's environment variables give, read without building the config: for commands that use one
setting alone (`controlplane.config.load_config` reads them all)."""

from __future__ import annotations

import os
from typing import Any

from controlplane.config_errors import ENV_PREFIX
from controlplane.errors import ConfigError

__all__ = ["configured_storage_url"]


def configured_storage_url() -> str:
    """``storage.url`` as `load_config` (no file, no overrides) reads it, and nothing else: ``CONTROLPLANE_STORAGE__URL``,
    else the ``url`` of ``CONTROLPLANE_STORAGE``'s JSON, else the default. For commands that only open the
    database (``runs list``): another run setting's bad variable (``CONTROLPLANE_SEED=abc``) is not theirs to refuse."""
    import json

    from controlplane.config import StorageConfig
    from controlplane.storage.url import database_url

    names = {k.lower(): k for k in os.environ}
    nested, section = names.get(f"{ENV_PREFIX}storage__url".lower()), names.get(f"{ENV_PREFIX}storage".lower())
    value: Any = StorageConfig.model_fields["url"].default
    if nested is not None:
        value, name = os.environ[nested], nested
    elif section is not None:
        name = section
        try:
            value = json.loads(os.environ[section]).get("url", value)
        except (ValueError, AttributeError):
            raise ConfigError(f"invalid configuration: the environment variable {section} cannot be read (a "
                              "section's variable holds a JSON object)") from None
    if not isinstance(value, str):
        raise ConfigError(f"invalid configuration:\n  storage.url: Input should be a valid string, got {value!r} "
                          f"(from the environment: {name})")
    return database_url(value)
