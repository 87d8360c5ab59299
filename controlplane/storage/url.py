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
#: The longest path SQLite's Unix VFS opens (``MAX_PATHNAME``), in bytes; its rollback journal's name adds
#: `JOURNAL_SUFFIX` to the database's, which must fit too (the first write makes it).
SQLITE_MAX_PATH: Final = 512
JOURNAL_SUFFIX: Final = "-journal"


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
    if (why := windows_path_note(path)) is not None:
        import warnings

        warnings.warn(WindowsPathWarning(why), stacklevel=2)
    return "sqlite:///" + "".join(_NOT_PATH.get(c, c) for c in path)


class WindowsPathWarning(UserWarning):
    """A SQLite file's path written as on Windows (``C:\\runs\\win.db``), given on another system, where it
    names a file of that whole name in the working folder. Shown by the commands as one ``warning:`` line."""

    one_line = True


def windows_path_note(path: str) -> str | None:
    """What is wrong with ``path`` as a SQLite file's path on this system when it is written as on Windows (a
    drive, ``C:\\`` or ``C:/``, or a backslash, which only Windows reads as a folder's separator), else None."""
    if os.sep == "\\" or not (_WINDOWS_DRIVE.match(path) or "\\" in path):
        return None
    here = os.path.join(os.getcwd(), path) if not os.path.isabs(path) else path
    return (f"the SQLite file {path} looks like a Windows path: on this system it is the file {here} (no drive "
            "letters here, and a backslash is part of a file's name, not a folder separator); give a path of this "
            "system (runs/win.db, /data/runs/win.db) if another file is meant")


def sqlite_path_too_long(path: str | os.PathLike[str]) -> str | None:
    """Why SQLite cannot open the database file ``path`` for its length, else None: a file name over the
    folder's limit (255 bytes on most file systems) once SQLite's ``-journal`` is added, or a whole path over
    `SQLITE_MAX_PATH` with it. SQLite says only "unable to open database file" there, which reads as a missing
    folder or a permission."""
    full = os.path.abspath(os.path.expanduser(path))
    folder, name = os.path.split(full)
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # (a folder that does not exist, a system without pathconf)
        name_max = 255
    name_bytes, full_bytes = len(os.fsencode(name)), len(os.fsencode(full))
    most_name, most_path = name_max - len(JOURNAL_SUFFIX), SQLITE_MAX_PATH - len(JOURNAL_SUFFIX)
    if name_bytes > most_name:
        return (f"the SQLite file's name is too long ({name_bytes} bytes): a file name here may have {name_max} "
                f"bytes, and SQLite's {JOURNAL_SUFFIX} file beside it adds {len(JOURNAL_SUFFIX)}, so at most "
                f"{most_name}; choose a shorter name")
    if full_bytes > most_path:
        return (f"the SQLite file's path is too long ({full_bytes} bytes as an absolute path): SQLite opens paths "
                f"of at most {SQLITE_MAX_PATH} bytes, its {JOURNAL_SUFFIX} file's included, so at most {most_path}; "
                "choose a shorter path (a folder nearer /)")
    return None
