"""Spill files: the last copy of rows the database would not take.

A spill file is JSON lines: a header object, then one ``{"table", "row"}``
object per pending row (``table`` is a table name, or ``run_update`` for a
pending :meth:`RunRecorder.finish_run`). It is written to a temporary name,
fsynced and renamed, so a file with the final name is always complete.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from controlplane.storage.errors import StorageError
from controlplane.storage.jsoncodec import encode_default

FORMAT: Final = "controlplane-spill"
VERSION: Final = 1
RUN_UPDATE: Final = "run_update"
_DATETIME_FIELDS: Final = frozenset({"finished_at"})


def _file_name(run_ids: Sequence[int]) -> str:
    runs = "-".join(str(r) for r in sorted(set(run_ids))) or "none"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"controlplane-spill-run{runs}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"


def write_spill(
    entries: Iterable[tuple[str, dict[str, Any]]],
    *,
    directories: Sequence[Path],
    run_ids: Sequence[int],
    source: str,
) -> Path:
    """Write ``(table, row)`` entries to a new spill file in the first writable directory."""
    name = _file_name(run_ids)
    header = {"format": FORMAT, "version": VERSION, "source": source, "created_at": datetime.now(timezone.utc)}
    failures: list[str] = []
    lines = [json.dumps(header, default=encode_default)]
    lines.extend(json.dumps({"table": t, "row": r}, default=encode_default) for t, r in entries)
    payload = "\n".join(lines) + "\n"
    for directory in directories:
        final = directory / name
        partial = directory / (name + ".partial")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with open(partial, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, final)
            return final
        except OSError as exc:
            failures.append(f"{directory}: {exc}")
            partial.unlink(missing_ok=True)
    raise StorageError(f"could not write spill file {name} to any of: {'; '.join(failures)}")


def default_directories(preferred: Path | None) -> list[Path]:
    """Where to try spilling: the preferred directory (or the cwd), then the temp directory."""
    first = preferred if preferred is not None else Path.cwd()
    fallback = Path(tempfile.gettempdir())
    return [first] if first.resolve() == fallback.resolve() else [first, fallback]


def read_spill(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield the ``(table, row)`` entries of a spill file, checking its header."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError as exc:
            raise StorageError(f"{path} is not a controlplane spill file: {exc}") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise StorageError(f"{path} is not a controlplane spill file (header {first.strip()[:200]!r})")
        if header.get("version") != VERSION:
            raise StorageError(f"{path} is spill format version {header.get('version')}, expected {VERSION}")
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
            yield table, row
