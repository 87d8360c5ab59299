"""``--db`` and ``storage.url`` as users type them: a database URL, or the path of a SQLite file.

Kept free of SQLAlchemy so the config can normalise its URL without importing the database side.
"""

from __future__ import annotations

import os
import re
from typing import Final

_URL: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
#: A dialect's name followed by a colon, without ``//`` (``postgresql:/host``): a mistyped URL, not a path.
_DIALECT: Final = re.compile(r"^(sqlite|postgres|postgresql|mysql|mariadb|oracle|mssql)([+.][A-Za-z0-9_.\-]*)?:",
                             re.IGNORECASE)
_WINDOWS_DRIVE: Final = re.compile(r"^[A-Za-z]:[\\/]")
#: What SQLAlchemy reads as more than a path in ``sqlite:///PATH`` (a query, a fragment, a percent-escape).
_NOT_PATH: Final = {"%": "%25", "?": "%3F", "#": "%23"}


def database_url(text: str) -> str:
    """``text`` as a database URL: a URL as given (``sqlite:///runs.db``, ``postgresql+psycopg://...``),
    and anything else as the path of a SQLite file (``runs.db`` -> ``sqlite:///runs.db``,
    ``~/runs.db`` -> ``sqlite:////home/me/runs.db``, ``a:b.db`` a file of that name). A path's ``%``, ``?`` and
    ``#`` are escaped: SQLAlchemy read ``my?runs.db`` as the file ``my`` with a query and ``a%20b.db`` as
    ``a b.db``. A string that starts like a database URL but is not one (``postgresql:/host``) is left as it is,
    so that parsing it names the mistake."""
    text = text.strip()
    if not text or ((_URL.match(text) or _DIALECT.match(text)) and not _WINDOWS_DRIVE.match(text)):
        return text
    path = os.path.expanduser(text)
    return "sqlite:///" + "".join(_NOT_PATH.get(c, c) for c in path)
