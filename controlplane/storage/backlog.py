"""Rows the recorder has taken from its buffers but the database has not yet committed.

Each flush takes whatever was appended since the last one as a numbered *chunk*. Chunks are
committed oldest first, and the same transaction sets the recorder's row in ``writer_mark``
to the newest chunk it wrote. When a commit fails in a way that leaves its outcome unknown (the
connection died while committing), the next attempt reads the mark back first and drops the
chunks it covers: nothing is lost and nothing is written twice, in every table, not only the
one with a unique key.

During a long outage the chunks would grow without bound, so past a row limit the oldest go
to a spill file (still numbered); files are written back, in order, before the chunks still
in memory. A spill file left behind by a process that died is an ordinary spill file that
:meth:`RunRecorder.replay_spill` loads. A commit writes its chunks' rows first, then their
updates (``finish_run``'s, and request rows' verdicts after the reply), in order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from controlplane.storage import spill
from controlplane.storage.bulk import BulkInsert
from controlplane.storage.db import describe_url
from controlplane.storage.deleted_runs import deleted_error, is_foreign_key_violation, missing_runs
from controlplane.storage.isolate import insert_isolated, update_runs_isolated
from controlplane.storage.models import Request, Run, WriterMark
from controlplane.storage.refused import Refusal
from controlplane.storage.request_verdicts import REQUEST_VERDICT, is_request_verdict
from controlplane.storage.retry import ROW_REFUSED
from controlplane.storage.rows import SPECS

log = logging.getLogger("controlplane.storage.recorder")

_MARK: Final = WriterMark.__table__
_RUN: Final = Run.__table__
_REQUEST: Final = Request.__table__
#: A request row's verdict after its reply (`controlplane.storage.request_verdicts`): its reason too, when given.
_SET_VERDICT: Final = (
    update(_REQUEST)
    .where(_REQUEST.c.run_id == bindparam("b_run"), _REQUEST.c.request_id == bindparam("b_rid"))
    .values(guardian_verdict=bindparam("b_verdict"), reason=func.coalesce(bindparam("b_reason"), _REQUEST.c.reason))
)


@dataclass
class Chunk:
    """One flush's worth of rows: stored tuples by table, and pending updates: runs' (``finish_run``)
    and request rows' verdicts after the reply (`controlplane.storage.request_verdicts`), in order."""

    seq: int
    rows: dict[str, list[tuple]]
    updates: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(map(len, self.rows.values())) + len(self.updates)

    def run_ids(self) -> set[int]:
        ids = {row[0] for rows in self.rows.values() for row in rows}
        return ids | {update_run(u) for u in self.updates}

    def without(self, run_ids: set[int]) -> Chunk:
        """The chunk without the rows and updates of ``run_ids``."""
        return Chunk(self.seq, {name: [r for r in rows if r[0] not in run_ids] for name, rows in self.rows.items()},
                     [u for u in self.updates if update_run(u) not in run_ids])

    def entries(self) -> Iterator[tuple[str, dict[str, Any], int]]:
        """The chunk as spill entries (JSON columns decoded, for people), rows before updates."""
        for name, rows in self.rows.items():
            decoded = SPECS[name].decoded
            for row in rows:
                yield name, decoded(row), self.seq
        for values in self.updates:
            yield update_kind(values), values, self.seq


@dataclass
class SpillFile:
    """Chunks ``first_seq`` to ``last_seq`` saved to ``path`` while the database was away."""

    path: Path
    first_seq: int
    last_seq: int
    counts: dict[str, int]
    run_ids: set[int]

    def __len__(self) -> int:
        return sum(self.counts.values())


def chunks_from_entries(entries: Iterator[tuple[str, dict[str, Any], int | None]], default_seq: int) -> list[Chunk]:
    """Spill entries grouped back into chunks by ``seq`` (oldest first), rows rebuilt as stored tuples."""
    chunks: dict[int, Chunk] = {}
    for table, row, seq in entries:
        key = default_seq if seq is None else seq
        chunk = chunks.get(key)
        if chunk is None:
            chunk = chunks[key] = Chunk(key, {name: [] for name in SPECS})
        if table == spill.RUN_UPDATE or table == REQUEST_VERDICT:
            chunk.updates.append(row)
        else:
            spec = SPECS[table]
            chunk.rows[table].append(spec.to_tuple(spec.build(row, row.pop("run_id"))))
    return [chunks[k] for k in sorted(chunks)]


class Backlog:
    """Uncommitted chunks in memory and spilled chunks on disk, oldest first, and committing
    them exactly once under ``writer``'s mark; see the module docstring."""

    def __init__(self, writer: str) -> None:
        self.writer = writer
        self.chunks: list[Chunk] = []
        self.files: list[SpillFile] = []
        self._mark_exists = False
        self._uncertain = False  # the last commit failed: it may have happened all the same
        self._refused = Refusal()  # rows refused by committed transactions, not yet returned
        self._refused_unsure: Refusal | None = None  # refused by a transaction whose commit failed
        self.deleted: set[int] = set()  # runs deleted while being written: their rows are dropped (`drop_runs`)

    def __len__(self) -> int:
        return self.in_memory + sum(map(len, self.files))

    @property
    def in_memory(self) -> int:
        return sum(map(len, self.chunks))

    def counts(self, *, spilled: bool = True) -> dict[str, int]:
        """Rows by table (and ``run_update``, ``request_verdict``), in memory and (``spilled``) spilled."""
        out = _no_rows()
        for c in self.chunks:
            for name, rows in c.rows.items():
                out[name] += len(rows)
            count_updates(c.updates, out)
        for f in self.files if spilled else ():
            for name, n in f.counts.items():
                out[name] += n
        return out

    def drop_through(self, seq: int) -> dict[str, int]:
        """Forget the chunks and whole spill files up to ``seq`` (committed); return their row counts.

        A file only partly covered stays; its committed rows are skipped when it is read back.
        """
        counts = _no_rows()
        for f in [f for f in self.files if f.last_seq <= seq]:
            f.path.unlink(missing_ok=True)
            for name, n in f.counts.items():
                counts[name] += n
        for c in [c for c in self.chunks if c.seq <= seq]:
            for name, rows in c.rows.items():
                counts[name] += len(rows)
            count_updates(c.updates, counts)
        self.files = [f for f in self.files if f.last_seq > seq]
        self.chunks = [c for c in self.chunks if c.seq > seq]
        return counts

    def drop_runs(self, run_ids: set[int]) -> int:
        """Drop the rows and updates of ``run_ids`` (runs deleted while being written, `deleted_runs`): from the
        chunks, and the spill files holding no other run's (a file with others' rows too loses them when it is
        read back: `commit`); return how many."""
        self.deleted |= run_ids
        before = len(self)
        self.chunks = [c.without(run_ids) for c in self.chunks]
        for f in [f for f in self.files if f.run_ids <= run_ids]:
            f.path.unlink(missing_ok=True)
        self.files = [f for f in self.files if not f.run_ids <= run_ids]
        return before - len(self)

    def spill(self, directories: Sequence[Path], *, source: str, writer: str,
              runs: Mapping[int, Mapping[str, Any]] | None = None) -> SpillFile:
        """Move every chunk in memory to a new spill file (``StorageError`` if none can be written);
        ``runs``: the runs' identities, for its header (`controlplane.storage.spill.write_spill`)."""
        chunks = self.chunks
        counts = _no_rows()
        run_ids: set[int] = set()
        for c in chunks:
            for name, rows in c.rows.items():
                counts[name] += len(rows)
            count_updates(c.updates, counts)
            run_ids |= c.run_ids()
        path = spill.write_spill(lambda: (e for c in chunks for e in c.entries()), directories=directories,
                                 run_ids=run_ids, source=source, writer=writer, runs=runs)
        saved = SpillFile(path, chunks[0].seq, chunks[-1].seq, counts, run_ids)
        self.files.append(saved)
        self.chunks = []
        return saved

    def commit(self, engine: Engine, inserts: Mapping[str, BulkInsert], chunks: list[Chunk],
               saved: SpillFile | None = None) -> Refusal | None:
        """Write ``chunks`` (read from ``saved`` once connected, if given) and the writer's mark
        in one transaction, leaving out what a commit whose outcome was lost did write
        (``chunks`` keeps only what is left). Raises what the database raised, except a row it
        refuses for good: then everything else is committed (:mod:`controlplane.storage.isolate`)
        and the refused rows are returned, to be saved by the caller."""
        try:
            try:
                with engine.begin() as conn:
                    if saved is not None and not chunks:  # no use reading the file while the database is away
                        loaded = chunks_from_entries(spill.read_entries(saved.path), saved.last_seq)
                        chunks.extend(c.without(self.deleted) if self.deleted else c for c in loaded)
                    if self._uncertain:
                        mark = read_mark(conn, self.writer)
                        self._mark_exists = mark is not None
                        self._settle_refused(mark)
                        if mark is not None and any(c.seq <= mark for c in chunks):
                            chunks[:] = [c for c in chunks if c.seq > mark]
                            log.warning("storage: rows up to flush %d were committed before the connection was "
                                        "lost; not writing them again", mark)
                    if not chunks:
                        return self._refused_done()
                    for name, insert_ in inserts.items():
                        rows = chunks[0].rows[name] if len(chunks) == 1 else [r for c in chunks for r in c.rows[name]]
                        insert_.execute(conn, rows)
                    verdicts = []
                    for chunk in chunks:
                        for values in chunk.updates:
                            if is_request_verdict(values):
                                verdicts.append(values)
                                continue
                            changes = {k: v for k, v in values.items() if k != "id"}
                            done = conn.execute(update(_RUN).where(_RUN.c.id == values["id"]).values(changes))
                            if done.rowcount == 0:  # (its row deleted since it started: the rows were dropped too)
                                raise deleted_error([values["id"]], describe_url(engine))
                    set_verdicts(conn, verdicts)  # after the inserts: the rows they update are in
                    write_mark(conn, self.writer, chunks[-1].seq, exists=self._mark_exists)
            except ROW_REFUSED as exc:  # rolled back for sure: commit all but the refused rows
                if is_foreign_key_violation(exc):  # (rows naming no run: first ask once whether a run was deleted)
                    gone = missing_runs(engine, {i for c in chunks for i in c.run_ids()})
                    if gone:
                        raise deleted_error(gone, describe_url(engine)) from None
                self._commit_isolated(engine, inserts, chunks)
        except BaseException:
            self._uncertain = True
            raise
        self._mark_exists = True
        self._uncertain = False
        return self._refused_done()

    def _commit_isolated(self, engine: Engine, inserts: Mapping[str, BulkInsert], chunks: list[Chunk]) -> None:
        """``chunks`` and the mark in one transaction, each table in savepoints (the refused rows
        go to ``_refused_unsure`` until the commit is known to have happened)."""
        refusal = Refusal()
        self._refused_unsure = refusal  # (if the commit's outcome is lost, the mark tells: `_settle_refused`)
        where = describe_url(engine)
        with engine.begin() as conn:
            for name, insert_ in inserts.items():
                insert_isolated(conn, name, insert_, [(c.seq, r) for c in chunks for r in c.rows[name]], refusal)
            updates = [(c.seq, v) for c in chunks for v in c.updates]
            update_runs_isolated(conn, [(seq, v) for seq, v in updates if not is_request_verdict(v)], refusal, where)
            set_verdicts(conn, [v for _, v in updates if is_request_verdict(v)])  # (a refused row's: no change)
            write_mark(conn, self.writer, chunks[-1].seq, exists=self._mark_exists)
        self._refused_unsure = None
        self._refused.extend(refusal)

    def _settle_refused(self, mark: int | None) -> None:
        """After a commit whose outcome was lost: the rows its isolation refused are refused for
        good if the mark covers their flush (it committed), else its chunks are written again."""
        unsure, self._refused_unsure = self._refused_unsure, None
        if unsure is not None and mark is not None:
            self._refused.extend(Refusal([e for e in unsure.entries if e[2] <= mark], unsure.errors))

    def _refused_done(self) -> Refusal | None:
        """The refused rows not yet returned (None, the usual case, when there are none)."""
        refused = self._refused
        if not refused.entries:
            return None
        self._refused = Refusal()
        return refused

    def all_entries(self) -> Iterator[tuple[str, dict[str, Any], int | None]]:
        """Every pending row as spill entries, oldest first: the spill files, then memory."""
        for f in self.files:
            yield from spill.read_entries(f.path)
        for c in self.chunks:
            yield from c.entries()

    def run_ids(self) -> set[int]:
        ids: set[int] = set()
        for f in self.files:
            ids |= f.run_ids
        for c in self.chunks:
            ids |= c.run_ids()
        return ids


def _no_rows() -> dict[str, int]:
    counts = {name: 0 for name in SPECS}
    counts[spill.RUN_UPDATE] = counts[REQUEST_VERDICT] = 0
    return counts


def update_run(values: Mapping[str, Any]) -> int:
    """The run a pending update (a run's, or a request verdict's) is of."""
    return values["run_id"] if is_request_verdict(values) else values["id"]


def update_kind(values: Mapping[str, Any]) -> str:
    """``request_verdict`` or ``run_update``: a pending update's spill entry ``table`` and count key."""
    return REQUEST_VERDICT if is_request_verdict(values) else spill.RUN_UPDATE


def count_updates(updates: Iterable[Mapping[str, Any]], counts: dict[str, int]) -> None:
    """Add ``updates`` to ``counts`` by kind (`update_kind`)."""
    for values in updates:
        counts[update_kind(values)] += 1


def set_verdicts(conn: Connection, verdicts: Sequence[Mapping[str, Any]]) -> None:
    """Write request rows' verdicts after the reply (`controlplane.storage.request_verdicts`), in
    order; one whose row is not in the database (refused for good) changes nothing."""
    if verdicts:
        conn.execute(_SET_VERDICT, [{"b_run": v["run_id"], "b_rid": v["request_id"], "b_verdict": v["guardian_verdict"],
                                     "b_reason": v["reason"]} for v in verdicts])


# -- the writer mark ---------------------------------------------------------------------------


def read_mark(conn: Connection, writer: str) -> int | None:
    """The last sequence number ``writer`` committed, or None if it never committed."""
    return conn.execute(select(_MARK.c.seq).where(_MARK.c.writer == writer)).scalar_one_or_none()


def write_mark(conn: Connection, writer: str, seq: int, *, exists: bool) -> None:
    """Record in the current transaction that ``writer`` committed everything up to ``seq``."""
    if exists:
        conn.execute(update(_MARK).where(_MARK.c.writer == writer).values(seq=seq))
    else:
        conn.execute(insert(_MARK).values(writer=writer, seq=seq))


def skip_committed(entries: Iterator[tuple[str, dict[str, Any], int | None]],
                   mark: int | None) -> Iterator[tuple[str, dict[str, Any], int | None]]:
    """The entries not covered by ``mark`` (entries without a ``seq`` are always kept)."""
    for entry in entries:
        if mark is None or entry[2] is None or entry[2] > mark:
            yield entry

