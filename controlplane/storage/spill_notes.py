"""Where a run's unwritten rows went, for the runs of dead processes that are not crashed.

A run that ends while its database is away (after the close's wait, `RunRecorder.close`) saves
its last rows, and the update that finishes the run, to a spill file; its row stays ``running``
and its process exits. Without a trace of the spill, the next command on this host would mark
the run ``crashed`` and say its rows stop where it was killed. So the recorder that spills at its
close leaves a note in the run's journal directory (a daemon's ``--journal-dir``, which
`controlplane.storage.crashed.claim_run` tells this module: `remember_journal`), else this process's
(`controlplane.storage.journal.journal_dir`): the spill file, the runs it holds and their database.
`controlplane.storage.crashed` reads it, looking in the directory of the run's stored journal
(``config["process"]["journal"]``) as well as its own, so a reader without the daemon's
``$CONTROLPLANE_JOURNAL_DIR`` finds it too, and says where the rows are and how to load them;
loading the file (`controlplane db load-spill`) writes the run's end and forgets the note.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from controlplane.storage.identity import database_identity, same_database
from controlplane.storage.journal import journal_dir

__all__ = ["database_key", "forget", "note_spill", "remember_journal", "spills_of"]

log = logging.getLogger("controlplane.storage")

_PREFIX = "spilled-"

#: The journal directories of this process's runs, ``{(database key, run id): directory}`` (`remember_journal`).
_JOURNALS: dict[tuple[str, int], Path] = {}


def remember_journal(database: str, run_id: int, directory: Path) -> None:
    """Note that run ``run_id`` of ``database`` (`database_key`) keeps its journal in ``directory``: a
    spill of its rows leaves its note there (`note_spill`), where a reader finds it from the run's
    stored journal, whatever its own ``$CONTROLPLANE_JOURNAL_DIR``."""
    _JOURNALS[(database, run_id)] = Path(directory)


def _directories(extra: Iterable[Path] = ()) -> list[Path]:
    """``extra`` (in order), then this process's journal directory, each once."""
    out: list[Path] = []
    for directory in (*extra, journal_dir()):
        if directory not in out:
            out.append(directory)
    return out


def database_key(url: str, sqlite_file: Path | None) -> str:
    """What names a database in a note: a SQLite file's absolute path, else the database its URL names
    (`controlplane.storage.identity.database_identity`: not the URL's spelling, so a command that gives
    ``localhost`` for ``127.0.0.1``, another user, or another port of the same host, finds the note of a run that
    spilled: `spills_of`)."""
    return str(sqlite_file.resolve()) if sqlite_file is not None else database_identity(url)


def note_spill(path: Path, run_ids: Iterable[int], database: str, rows: int) -> None:
    """Leave a note that ``path`` holds ``rows`` unwritten rows of ``run_ids`` of ``database``
    (`database_key`), in the runs' journal directories (`remember_journal`), else in this process's
    (`journal_dir`). A note that cannot be written is logged at DEBUG: the spill file is what counts."""
    run_ids = sorted(run_ids)
    note = {"spill": str(path.resolve()), "run_ids": run_ids, "database": database, "rows": rows,
            "created_at": datetime.now(timezone.utc).isoformat()}
    own = [_JOURNALS[(database, r)] for r in run_ids if (database, r) in _JOURNALS]
    for directory in dict.fromkeys(own or [journal_dir()]):
        final = directory / f"{_PREFIX}{uuid.uuid4().hex}.json"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            partial = final.with_suffix(".partial")
            partial.write_text(json.dumps(note), encoding="utf-8")
            os.replace(partial, final)
        except OSError as exc:
            log.debug("storage: no note of spill file %s in %s: %s", path, directory, exc)


def _notes(directories: Sequence[Path] = ()) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    paths: list[Path] = []
    for directory in _directories(directories):
        try:
            paths += sorted(directory.glob(f"{_PREFIX}*.json"))
        except OSError:
            continue
    for path in paths:
        try:
            note = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(note, dict) and isinstance(note.get("spill"), str):
            out.append((path, note))
    return out


def spills_of(run_id: int, database: str, since: datetime | None = None,
              directories: Sequence[Path] = ()) -> list[Path]:
    """The spill files still present that hold unwritten rows of ``run_id`` of ``database``,
    written at or after ``since`` (the run's start: a note of an older run with the same id is no
    note of this one), by the notes in ``directories`` (the run's journal directory) and in this
    process's journal directory. Notes whose spill file is gone (loaded, deleted) are removed."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)  # (SQLite gives back naive UTC)
    found: list[Path] = []
    for note_path, note in _notes(directories):
        spill = Path(note["spill"])
        if not spill.exists():
            note_path.unlink(missing_ok=True)
            continue
        noted = note.get("database")
        if not isinstance(noted, str) or run_id not in (note.get("run_ids") or []):
            continue
        # (the same database through another port too, as `db load-spill` takes it; an older note names a URL)
        if noted != database and not same_database(noted, database, any_port=True):
            continue
        try:
            created = datetime.fromisoformat(note["created_at"])
        except (KeyError, TypeError, ValueError):
            created = None
        if since is not None and created is not None and created < since:
            continue
        if spill not in found:
            found.append(spill)
    return found


def forget(path: Path, directories: Sequence[Path] = ()) -> None:
    """Remove the notes of the spill file ``path`` (its rows are written), in ``directories`` (its
    runs' journal directories) and in this process's journal directory."""
    resolved = str(Path(path).resolve())
    for note_path, note in _notes(directories):
        if note["spill"] == resolved:
            note_path.unlink(missing_ok=True)
