"""What the run config's environment variables give, read without building the config: for commands that use one
setting alone (`controlplane.config.load_config` reads them all)."""

from __future__ import annotations

import os
import re
from typing import Any

from controlplane.config_errors import ENV_PREFIX
from controlplane.errors import ConfigError

__all__ = ["UNEXPANDED", "configured_storage_url", "unexpanded_context", "unexpanded_reference"]

#: A shell-style variable reference as a whole value (``$DB_URL``) or anywhere in it (``${DB_URL}``,
#: ``sqlite:///${HOME}/runs.db``): config values are taken as written, not expanded.
_REFERENCE = re.compile(r"\$\{[^}]*\}?|^\s*\$[A-Za-z_][A-Za-z0-9_]*\s*$")
UNEXPANDED = ("{value} holds the variable reference {reference}, but config values are not expanded: it would be "
              "used as written{consequence}; write the URL itself, or have a shell expand it into the environment "
              "variable that overrides storage.url: CONTROLPLANE_STORAGE__URL=\"{raw}\"")


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
    if context := unexpanded_context(value):
        raise ConfigError(f"invalid configuration:\n  storage.url: {UNEXPANDED.format(**context)} (from the "
                          f"environment: {name})")
    return database_url(value)


def unexpanded_reference(value: str) -> str | None:
    """The first shell-style variable reference in ``value`` (``${DB_URL}``, or a whole value ``$DB_URL``), else
    None: ``storage.url: "${DB_URL}"`` ran into a SQLite file named ``${DB_URL}`` in the working folder. (A
    ``$`` in a URL's password is no reference: percent-encode ``${`` there, as ``%24{``.)"""
    found = _REFERENCE.search(value)
    return found.group(0).strip() if found else None


def unexpanded_context(value: str) -> dict[str, str] | None:
    """`UNEXPANDED`'s fields for a ``storage.url`` holding a variable reference (`unexpanded_reference`), else
    None."""
    from controlplane.storage.url import database_url

    reference = unexpanded_reference(value)
    if reference is None:
        return None
    url = database_url(value)
    consequence = f" (the SQLite file {url.removeprefix('sqlite:///')!r})" if url.startswith("sqlite:///") else ""
    return {"value": repr(value), "reference": reference, "consequence": consequence, "raw": value.strip()}
