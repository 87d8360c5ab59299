"""``--db`` and ``storage.url`` as users type them: a database URL, or the path of a SQLite file.

Kept free of SQLAlchemy so the config can normalise its URL without importing the database side.
"""

from __future__ import annotations

import os
import re
from typing import Final

_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_WINDOWS_DRIVE: Final = re.compile(r"^[A-Za-z]:[\\/]")


def database_url(text: str) -> str:
    """``text`` as a database URL: a URL as given (``sqlite:///runs.db``, ``postgresql+psycopg://...``),
    and anything without a scheme as the path of a SQLite file (``runs.db`` -> ``sqlite:///runs.db``,
    ``~/runs.db`` -> ``sqlite:////home/me/runs.db``). A string that starts like a scheme but is not a
    URL (``postgresql:/host``) is left as it is, so that parsing it names the mistake."""
    text = text.strip()
    if not text or (_SCHEME.match(text) and not _WINDOWS_DRIVE.match(text)):
        return text
    return f"sqlite:///{os.path.expanduser(text)}"
