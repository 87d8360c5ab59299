"""Alembic command lines for a database that work from any folder.

:func:`alembic_command` names the checkout's ``alembic.ini`` by its path and a SQLite file by its absolute path
(:func:`absolute_url`): the downgrade command `controlplane db upgrade --revision` gives, run from the checkout as
it said, worked on a new, empty file there when ``--db`` was a relative path.
"""

from __future__ import annotations

import os
import shlex

from sqlalchemy import Engine

from controlplane.storage.errors import mask_password

__all__ = ["absolute_url", "alembic_command"]


def absolute_url(engine: Engine) -> str:
    """The engine's URL (password hidden) with a SQLite file's path made absolute: a command run from another
    folder (Alembic's from the checkout) reads the same file, not a new one there."""
    from controlplane.storage.db import describe_url

    url = engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return describe_url(engine)
    prefix = "file:" if database.startswith("file:") else ""
    path = database.removeprefix(prefix)
    if not path or path.startswith("/") or path.startswith(":memory:"):
        return describe_url(engine)
    return mask_password(url.set(database=prefix + os.path.abspath(path)).render_as_string(hide_password=True))


def alembic_command(engine: Engine, action: str) -> str:
    """``alembic -c /checkout/alembic.ini -x url=URL ACTION`` for the engine's database: a command that works from
    any folder (the checkout's config by its path; a SQLite file by its absolute path), quoted for a shell."""
    from controlplane.storage.db import ALEMBIC_DIR

    ini = ALEMBIC_DIR.parent / "alembic.ini"
    return f"alembic -c {shlex.quote(str(ini))} -x {shlex.quote('url=' + absolute_url(engine))} {action}"

