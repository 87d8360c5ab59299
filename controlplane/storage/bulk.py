"""Executemany of a compiled Core ``insert(table)`` without per-row SQLAlchemy overhead.

``Connection.execute(insert(table), rows)`` builds and type-processes a
parameter set per row in Python, about 10 µs per 22-column request row:
more than SQLite needs to store it, and a cap of ~50k rows/s on a small
machine. Here the same ``insert(table)`` is compiled once per dialect and run
through ``Connection.exec_driver_sql`` as one DBAPI executemany, with rows
given as tuples in a fixed field order (turned into dicts for named
paramstyles). Bind processors are skipped for the column types that
:class:`~controlplane.storage.rows.RowSpec` has already prepared (plain
``int``/``float``/``str``/``bool``, JSON encoded to text) and applied for any
other type. Execution still goes through the Connection, so transactions,
pool events and error wrapping
(``sqlalchemy.exc.DBAPIError``) are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Dialect, Float, Integer, String, Table, insert

_PREPARED = (Integer, Float, String, Boolean, JSON)

#: SQLite: rows per multi-row ``INSERT ... VALUES (...), (...)`` statement, at most, and bound
#: parameters per statement, at most (SQLite's limit before 3.32). One statement step per 100
#: rows instead of one per row stores the same rows in the same order, ~20% faster.
MULTI_ROW_MAX_ROWS = 100
MULTI_ROW_MAX_PARAMS = 999


class BulkInsert:
    """``insert(table)`` compiled for one dialect, for rows given as tuples in ``fields`` order."""

    def __init__(self, table: Table, dialect: Dialect, fields: Sequence[str]) -> None:
        self.table = table
        self.fields = tuple(fields)
        if sorted(self.fields) != sorted(c.name for c in table.columns if c.name != "id"):
            raise ValueError(f"fields {self.fields} are not the columns of {table.name} (without id)")
        compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(self.fields))
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        names: Sequence[str] = compiled.positiontup if self.positional else self.fields
        if sorted(names) != sorted(self.fields):
            raise RuntimeError(f"unexpected bind names {names} compiling insert into {table.name}")
        self.names = tuple(names)
        # Positional binds in the fields' own order need no reordering at all.
        self._reorder = None if self.names == self.fields else itemgetter(*(self.fields.index(n) for n in self.names))
        self._processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.fields):
            type_ = table.c[name].type
            if isinstance(type_, _PREPARED):
                continue
            processor = type_.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors.append((index, processor))
        self._multi = self._multi_row(dialect)

    def _multi_row(self, dialect: Dialect) -> tuple[str, int] | None:
        """(statement, rows) of SQLite's multi-row insert of this table, or None (other databases,
        or a compiled insert that is not one plain ``VALUES (?, ...)`` group)."""
        if dialect.name != "sqlite" or not self.positional or dialect.paramstyle != "qmark":
            return None
        head, sep, group = self.sql.rpartition(" VALUES ")
        if not sep or group.strip() != "(" + ", ".join(["?"] * len(self.names)) + ")":
            return None
        per = min(MULTI_ROW_MAX_ROWS, MULTI_ROW_MAX_PARAMS // len(self.names))
        if per < 2:
            return None
        return f"{head}{sep}{', '.join([group.strip()] * per)}", per

    def _processed(self, rows: Sequence[tuple]) -> Sequence[tuple]:
        if not self._processors:
            return rows
        out = []
        for row in rows:
            values = list(row)
            for index, process in self._processors:
                if values[index] is not None:
                    values[index] = process(values[index])
            out.append(tuple(values))
        return out

    def parameters(self, rows: Sequence[tuple]) -> list[Any]:
        """DBAPI parameter sets for ``rows``, leaving the rows themselves untouched for a retry."""
        rows = self._processed(rows)
        if self.positional:
            return list(rows) if self._reorder is None else list(map(self._reorder, rows))
        fields = self.fields
        return [dict(zip(fields, row)) for row in rows]

    def execute(self, conn: Connection, rows: Sequence[tuple]) -> None:
        """Insert ``rows`` (tuples of every column but ``id``, in ``fields`` order) in the
        connection's transaction."""
        if not rows:
            return
        params = self.parameters(rows)
        multi = self._multi
        if multi is not None and len(params) >= multi[1]:
            sql, per = multi
            whole = len(params) - len(params) % per
            conn.exec_driver_sql(sql, [tuple(chain.from_iterable(params[i:i + per])) for i in range(0, whole, per)])
            params = params[whole:]
            if not params:
                return
        conn.exec_driver_sql(self.sql, params)
