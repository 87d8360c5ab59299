"""Executemany of a compiled Core ``insert(table)`` without per-row SQLAlchemy overhead.

``Connection.execute(insert(table), rows)`` builds and type-processes a
parameter set per row in Python, about 10 µs per 22-column request row:
more than SQLite needs to store it, and a cap of ~50k rows/s on a small
machine. Here the same ``insert(table)`` is compiled once per dialect and run
through ``Connection.exec_driver_sql`` as one DBAPI executemany, with rows
turned into parameter tuples (or dicts, for named paramstyles) by
``itemgetter``. Bind processors are skipped for the column types that
:class:`~controlplane.storage.rows.RowSpec` has already prepared (plain
``int``/``float``/``str``/``bool``, JSON encoded to text) and applied for any
other type. Execution still goes through the
Connection, so transactions, pool events and error wrapping
(``sqlalchemy.exc.DBAPIError``) are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Dialect, Float, Integer, String, Table, insert

_PREPARED = (Integer, Float, String, Boolean, JSON)


class BulkInsert:
    """``insert(table)`` compiled for one dialect, for every column except ``id``."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        columns = [c for c in table.columns if c.name != "id"]
        compiled = insert(table).inline().compile(dialect=dialect, column_keys=[c.name for c in columns])
        self.table = table
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        names: Sequence[str] = compiled.positiontup if self.positional else [c.name for c in columns]
        if sorted(names) != sorted(c.name for c in columns):
            raise RuntimeError(f"unexpected bind names {names} compiling insert into {table.name}")
        self.names = tuple(names)
        self._get = itemgetter(*self.names)
        self._processors: list[tuple[int, str, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.names):
            type_ = table.c[name].type
            if isinstance(type_, _PREPARED):
                continue
            processor = type_.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors.append((index, name, processor))

    def parameters(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """DBAPI parameter sets for ``rows``, leaving the rows themselves untouched for a retry."""
        if self.positional:
            get = self._get
            if not self._processors:
                return list(map(get, rows))
            out = []
            for row in rows:
                values = list(get(row))
                for index, _, process in self._processors:
                    if values[index] is not None:
                        values[index] = process(values[index])
                out.append(tuple(values))
            return out
        if not self._processors:
            return list(rows)  # built rows carry exactly the bound columns
        out_dicts = []
        for row in rows:
            values = {name: row[name] for name in self.names}
            for _, name, process in self._processors:
                if values[name] is not None:
                    values[name] = process(values[name])
            out_dicts.append(values)
        return out_dicts

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` (dicts with every column but ``id``) in the connection's transaction."""
        if rows:
            conn.exec_driver_sql(self.sql, self.parameters(rows))
