"""Rows the database refused for good, and what a recorder tells about them.

A duplicate key or a value a column refuses (``IntegrityError``/``DataError``) fails the same way
at every retry. Rather than let one such row hold back every row written after it, a flush that
meets one commits again row by row (:mod:`controlplane.storage.isolate`): the database takes
every other row, and the refused ones go to a file of their own in the spill format
(``controlplane-refused-run<N>-....jsonl``, beside the spills), without flush numbers, so
:meth:`RunRecorder.replay_spill` loads every row of it once the rows are mended. Plain standard
library (no SQLAlchemy): the replaying process reads a writer process's :class:`RefusedRows`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from controlplane.storage.jsoncodec import encode_default

__all__ = ["MAX_IDS", "Refusal", "RefusedRows", "cause", "constraint", "refusal_message", "sequence_behind",
           "sequence_fix"]

#: Request ids a message names, at most (a file can repeat thousands).
MAX_IDS: Final = 5
#: Rows a message quotes when they could not be saved to a file, at most.
_MAX_QUOTED: Final = 20

Entry = tuple[str, dict[str, Any], int]
"""``(table, row, seq)``: a refused row (spill entry: JSON columns decoded) and its flush."""


@dataclass
class Refusal:
    """What one isolating commit set aside: the refused rows and, by table, the database's first message."""

    entries: list[Entry] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    #: Each entry's cause (`cause`), in the entries' order.
    causes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, table: str, row: dict[str, Any], seq: int, error: str) -> None:
        self.entries.append((table, row, seq))
        self.causes.append(cause(row, error))
        self.errors.setdefault(table, error)

    def extend(self, other: Refusal) -> None:
        self.entries += other.entries
        self.causes += other.causes
        for table, error in other.errors.items():
            self.errors.setdefault(table, error)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for table, _, _ in self.entries:
            out[table] = out.get(table, 0) + 1
        return out

    def request_ids(self) -> list[str]:
        """The refused request rows' ids, in order, each once."""
        return list(dict.fromkeys(str(row.get("request_id")) for table, row, _ in self.entries if table == "request"))

    def request_causes(self) -> dict[str, list[str]]:
        """The refused request rows' ids (in order, each once) by their `cause`."""
        out: dict[str, dict[str, None]] = {}
        for (table, row, _), why in zip(self.entries, self.causes):
            if table == "request":
                out.setdefault(why, {})[str(row.get("request_id"))] = None
        return {why: list(ids) for why, ids in out.items()}

    def run_ids(self) -> set[int]:
        return {row["id"] if "run_id" not in row else row["run_id"] for _, row, _ in self.entries}

    def file_entries(self) -> list[tuple[str, dict[str, Any]]]:
        """The entries as a refused file keeps them: without flush numbers, so a replay skips none."""
        return [(table, row) for table, row, _ in self.entries]


@dataclass
class RefusedRows:
    """A recorder's refused rows so far: how many, by table, the request ids (the first
    :data:`MAX_IDS`), and the files that hold them. Picklable plain data."""

    count: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    #: The refused request rows by `cause`: how many, and their ids (the first :data:`MAX_IDS`).
    causes: dict[str, int] = field(default_factory=dict)
    cause_ids: dict[str, list[str]] = field(default_factory=dict)
    #: The refused rows by run, then table (what the run's summary says: ``rows_refused``).
    by_run: dict[int, dict[str, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, refusal: Refusal, path: Path | None) -> None:
        self.count += len(refusal)
        for table, n in refusal.counts().items():
            self.by_table[table] = self.by_table.get(table, 0) + n
        for table, row, _ in refusal.entries:
            run = self.by_run.setdefault(row["id"] if "run_id" not in row else row["run_id"], {})
            run[table] = run.get(table, 0) + 1
        for rid in refusal.request_ids():
            if len(self.request_ids) < MAX_IDS and rid not in self.request_ids:
                self.request_ids.append(rid)
        for table, error in refusal.errors.items():
            self.errors.setdefault(table, error)
        for (table, _, _), why in zip(refusal.entries, refusal.causes):
            if table == "request":
                self.causes[why] = self.causes.get(why, 0) + 1
        for why, ids in refusal.request_causes().items():
            kept = self.cause_ids.setdefault(why, [])
            kept += [rid for rid in ids if rid not in kept][:MAX_IDS - len(kept)]
        if path is not None:
            self.paths.append(path)

    def warning(self) -> str:
        """One line for the end of a run: how many rows, which ids, where they are, what to do."""
        tables = ", ".join(f"{n:,} {table}" for table, n in sorted(self.by_table.items()))
        where = ", ".join(map(str, self.paths)) if self.paths else "no file (see the error logged)"
        text = f"the database refused {tables} row(s): the run's stored rows lack them (every other row was written)"
        for why in _CAUSES:
            if self.cause_ids.get(why):
                text += f"; {_said(why, self.cause_ids[why], self.causes[why], self.errors.get('request', ''))}"
        for table in sorted(self.by_table):
            if table != "request" and sequence_behind(self.errors.get(table, "")) == table:
                text += f"; {_behind(table)}"
        load = " (`controlplane db load-spill FILE` loads each)" if self.paths else ""
        return f"{text}; the refused rows are in {where}{load}"


#: Why the database refused a request row: its id repeats one stored in the run (the unique key
#: ``uq_request_run_id_request_id``); the table's id sequence is behind its stored ids, so the new row's ``id``
#: repeats one (its primary key ``pk_request``: a table restored from a dump without its sequence, a sequence set
#: back by hand); a text field holds what no database stores as text (PostgreSQL refuses NUL, a lone UTF-16
#: surrogate is no UTF-8); another reason.
DUPLICATE, SEQUENCE, TEXT, OTHER = "duplicate", "sequence", "text", "other"
_CAUSES = (DUPLICATE, SEQUENCE, TEXT, OTHER)
_REQUEST_KEY_PREFIX: Final = "uq_request_run_id"  # (``uq_request_run_id_request_id``)
_PG_CONSTRAINT: Final = re.compile(r'constraint "([^"]+)"')
_SQLITE_UNIQUE: Final = re.compile(r"UNIQUE constraint failed: (\w+)\.(\w+(?:, \w+\.\w+)*)")


def constraint(error: str) -> str | None:
    """The unique constraint ``error`` (the database's message) names, by its name in the schema: PostgreSQL
    names it (``duplicate key value violates unique constraint "pk_request"``); SQLite names its columns
    (``UNIQUE constraint failed: request.run_id, request.request_id``), from which its name is made as the schema's
    naming convention makes it. None where the message names none."""
    m = _PG_CONSTRAINT.search(error)
    if m is not None:
        return m.group(1)
    m = _SQLITE_UNIQUE.search(error)
    if m is None:
        return None
    table, columns = m.group(1), [c.rsplit(".", 1)[-1] for c in m.group(2).split(", ")]
    return f"pk_{table}" if columns == ["id"] else f"uq_{table}_{'_'.join(columns)}"


def sequence_behind(error: str) -> str | None:
    """The table whose id sequence is behind its stored ids, where ``error`` is a violation of its primary key
    (``pk_<table>``: the recorder never gives a row's ``id``, the database's sequence does), else None."""
    name = constraint(error)
    return name[len("pk_"):] if name is not None and name.startswith("pk_") else None


def sequence_fix(table: str) -> str:
    """What sets ``table``'s id sequence past its stored ids (PostgreSQL)."""
    return f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"


def cause(row: dict[str, Any], error: str) -> str:
    """Why ``row`` was refused with ``error`` (the database's message, `describe_error`): its own
    text first (a repeated id that is also unstorable text would be refused for its text anyway), then the
    constraint the message names: a primary key (the id sequence behind), the request's own key (a repeated
    request id); a message naming no constraint but a repeat (an older driver's) is taken for a repeated id."""
    if any(isinstance(v, str) and not _storable(v) for v in row.values()):
        return TEXT
    name = constraint(error)
    if name is not None:
        if name.startswith("pk_"):
            return SEQUENCE
        return DUPLICATE if name.startswith(_REQUEST_KEY_PREFIX) else OTHER
    low = error.lower()
    return DUPLICATE if "unique" in low or "duplicate" in low else OTHER


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _said(why: str, ids: list[str], count: int, error: str) -> str:
    """The cause of ``count`` refused request rows, naming their ids (the first few)."""
    shown = ", ".join(repr(i) for i in ids[:MAX_IDS])
    more = f" and {count - min(len(ids), MAX_IDS):,} more" if count > min(len(ids), MAX_IDS) else ""
    if why == DUPLICATE:
        return (f"request ids must be unique within a run; the trace (or client) repeats id {shown}{more} "
                "(its first request with that id is stored)")
    if why == SEQUENCE:
        return (f"request {shown}{more}: its new row's id repeats a stored row's, since the request table's id "
                "sequence is behind its stored ids (a table restored without its sequence, or a sequence set back "
                f"by hand; not a repeated request id): set it past them with `{sequence_fix('request')}`, then load "
                "the refused rows")
    if why == TEXT:
        return (f"request {shown}{more} holds text no database column stores (a NUL character or a lone UTF-16 "
                "surrogate in its id, tenant or another text field): take it out of the trace (or client)")
    return f"request {shown}{more} refused ({error or 'no message'})"


def _behind(table: str) -> str:
    return (f"the {table} table's id sequence is behind its stored ids (a restore, or a sequence set back by hand): "
            f"set it past them with `{sequence_fix(table)}`, then load the refused rows")


def refusal_message(refusal: Refusal, path: Path | None) -> str:
    """The error logged once per isolating commit: by table, how many rows and the database's
    message; the repeated request ids; where the rows went and what to do."""
    parts = []
    counts = refusal.counts()
    for table in sorted(counts):
        part = f"{counts[table]:,} row(s) of table {table} ({refusal.errors.get(table, 'no message')})"
        if table == "request":
            by_cause = refusal.request_causes()
            rows = [why for (t, _, _), why in zip(refusal.entries, refusal.causes) if t == "request"]
            part += ": " + "; ".join(_said(why, by_cause[why], rows.count(why), refusal.errors["request"])
                                     for why in _CAUSES if why in by_cause)
        elif sequence_behind(refusal.errors.get(table, "")) == table:
            part += f": {_behind(table)}"
        parts.append(part)
    text = "storage: the database refused " + "; ".join(parts) + "; the flush's other rows were written"
    if path is not None:
        mend = ", e.g. give a repeated request id a new one there" if DUPLICATE in refusal.causes else " (as said)"
        return (f"{text}; the refused rows were saved to {path} (mend what refused them{mend}, then load them with "
                f"`controlplane db load-spill {shlex.quote(str(path))}`)")
    quoted = [json.dumps({"table": t, "row": r}, default=encode_default) for t, r, _ in refusal.entries[:_MAX_QUOTED]]
    return f"{text}; they could not be saved to a file, so here they are: " + " ".join(quoted)
