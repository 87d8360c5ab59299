"""Spill files: the last copy of rows the database would not take.

A spill file is JSON lines: a header object, then one ``{"table", "row"}``
object per pending row (``table`` is a table name, or ``run_update`` for a
pending :meth:`RunRecorder.finish_run`). The header names the database (``source``, its URL with
the password hidden, and ``database``, `controlplane.storage.identity.database_identity`), a refused
file its ``kind`` (``refused``: loading it takes its rows off its runs' ``rows_refused``) and,
where the recorder knows them, its runs' names and starts (``runs``): loading the file checks both,
so its rows go to no other database and no other run of the same id. Rows a recorder spilled also carry
the ``seq`` of the flush they belong to, and the header the recorder's
``writer`` id, so a later replay can skip rows whose commit did succeed (see
:mod:`controlplane.storage.backlog`). It is written to a temporary name,
fsynced and renamed, so a file with the final name is always complete.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from controlplane.storage.errors import StorageError
from controlplane.storage.jsoncodec import encode_default

FORMAT: Final = "controlplane-spill"
VERSION: Final = 1
RUN_UPDATE: Final = "run_update"
_DATETIME_FIELDS: Final = frozenset({"finished_at"})


def _file_name(run_ids: Sequence[int], kind: str) -> str:
    runs = "-".join(str(r) for r in sorted(set(run_ids))) or "none"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"controlplane-{kind}-run{runs}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"


Entry = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], int | None]
"""``(table, row)``, or ``(table, row, seq)`` for a row of a recorder's numbered flush."""


def write_spill(
    entries: Iterable[Entry] | Callable[[], Iterable[Entry]],
    *,
    directories: Sequence[Path],
    run_ids: Iterable[int],
    source: str,
    writer: str | None = None,
    kind: str = "spill",
    runs: Mapping[int, Mapping[str, Any]] | None = None,
) -> Path:
    """Write entries to a new spill file in the first writable directory, line by line.

    ``entries`` may be a callable returning a fresh iterable, so a large spill streams from
    its sources and can start over in the next directory when one fails. ``kind`` names the
    file (``controlplane-<kind>-run...``): ``refused`` for rows the database refused
    (`controlplane.storage.refused`), which a retry would not mend. ``runs``: the runs' identities
    (``{run_id: {"name", "started_at"}}``), for the header.
    """
    from controlplane.storage.identity import database_identity

    run_ids = list(run_ids)
    name = _file_name(run_ids, kind)
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "source": source,
                              "database": database_identity(source), "created_at": datetime.now(timezone.utc)}
    known = {str(r): dict(runs[r]) for r in sorted(set(run_ids)) if runs is not None and r in runs}
    if known:
        header["runs"] = known
    if writer is not None:
        header["writer"] = writer
    if kind != "spill":  # (``refused``: loading it takes its rows off its runs' ``rows_refused``)
        header["kind"] = kind
    failures: list[str] = []
    for directory in directories:
        final = directory / name
        partial = directory / (name + ".partial")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with open(partial, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(header, default=encode_default) + "\n")
                for entry in entries() if callable(entries) else entries:
                    line = {"table": entry[0], "row": entry[1]}
                    if len(entry) > 2 and entry[2] is not None:
                        line["seq"] = entry[2]
                    fh.write(json.dumps(line, default=encode_default) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, final)
            return final
        except OSError as exc:
            failures.append(f"{directory}: {exc}")
            try:
                partial.unlink(missing_ok=True)
            except OSError:  # (a file where the folder should be: nothing was made there)
                pass
    raise StorageError(f"could not write {kind} file {name} to any of: {'; '.join(failures)}")


def default_directories(preferred: Path | None) -> list[Path]:
    """Where to try spilling, in order: the preferred directory (a SQLite file's folder, a ``spill_dir``), then
    the working directory, then the temp directory; each once. (The working directory was left out after a
    preferred one, which docs/configuration.md names: a database's folder that refused the file went to the
    temp directory.)"""
    out: list[Path] = []
    for directory in (preferred, Path.cwd(), Path(tempfile.gettempdir())):
        if directory is not None and all(directory.resolve() != d.resolve() for d in out):
            out.append(directory)
    return out


def read_header(path: Path) -> dict[str, Any]:
    """A spill file's header, checked (``StorageError`` if it is not a spill file of this version)."""
    with open(path, encoding="utf-8") as fh:
        return _header(path, fh.readline())


def _header(path: Path, first: str) -> dict[str, Any]:
    try:
        header = json.loads(first)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{path} is not a controlplane spill file: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StorageError(f"{path} is not a controlplane spill file (header {first.strip()[:200]!r})")
    if header.get("version") != VERSION:
        raise StorageError(f"{path} is spill format version {header.get('version')}, expected {VERSION}")
    return header


def read_entries(path: Path) -> Iterator[tuple[str, dict[str, Any], int | None]]:
    """Yield the ``(table, row, seq)`` entries of a spill file (``seq`` None where not recorded)."""
    with open(path, encoding="utf-8") as fh:
        _header(path, fh.readline())
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                table, row = entry["table"], entry["row"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise StorageError(f"{path}:{lineno}: malformed spill entry: {exc}") from exc
            for field in _DATETIME_FIELDS & row.keys():
                if row[field] is not None:
                    row[field] = datetime.fromisoformat(row[field])
            yield table, row, entry.get("seq")


def load_advice(path: Path, source: str) -> str:
    """How to load the spill file ``path`` of the database ``source`` (its URL, password hidden):
    the command, with ``--db`` where the file's header cannot give the URL (a hidden password)."""
    db = f" --db {source}" if "***" in source else ""
    hint = " (with its password)" if db else ""
    return (f"load them with `controlplane db load-spill {shlex.quote(str(path))}{db}`{hint} once the database is "
            "back")


def read_spill(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield the ``(table, row)`` entries of a spill file, checking its header."""
    for table, row, _ in read_entries(path):
        yield table, row
