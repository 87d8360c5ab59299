"""Turning caller dicts into complete, valid, self-contained rows for the bulk writer.

Rows are checked when they are appended, not when they are flushed: a bad
row found at flush time would fail its whole batch, far from the code that
produced it. So :meth:`RowSpec.build`

* completes the row to the table's full column set (an executemany needs the
  same keys in every parameter set) and fills defaults;
* refuses unknown columns, missing required values and unknown enum values;
* makes numbers, strings and booleans plain ``int``/``float``/``str``/``bool``
  (numpy scalars and integer ids from traces are common; drivers reject or
  mistype them);
* encodes JSON columns to text right away, which both surfaces
  unserialisable payloads at the call site and snapshots dicts the caller
  may go on mutating.
"""

from __future__ import annotations

import json
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from functools import cached_property
from typing import Any, Final

from controlplane.request_latency import stored_latencies
from controlplane.storage.columns import (
    CACHE_HITS,
    REQUEST_STATUSES,
    TABLE_COLUMNS,
    WORKER_EVENT_KINDS,
    Column,
)
from controlplane.storage.jsoncodec import dumps, orjson
from controlplane.types import ReasonCode

REASON_CODES: Final = frozenset(c.value for c in ReasonCode)

Coercion = Callable[[str, Any], Any]


def _as_int(column: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{column} = {value!r} must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{column} = {value!r} must be an integer") from None


def _as_float(column: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{column} = {value!r} must be a real number")
    return float(value)


def _as_str(column: str, value: Any) -> str:
    if isinstance(value, Enum):  # str() of a (str, Enum) member is its name, not its value
        value = value.value
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise ValueError(f"{column} = {value!r} must be a string")
    return str(value)


def _as_bool(column: str, value: Any) -> bool:
    if value in (0, 1):  # also numpy.bool_
        return bool(value)
    raise ValueError(f"{column} = {value!r} must be a bool")


def _as_json(column: str, value: Any) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{column} = {value!r} is not JSON-serialisable: {exc}") from None


#: orjson's encoder called without options (None without orjson): a JSON column's fast path.
_plain_json: Final = orjson.dumps if orjson is not None else None


class _AlwaysCoerce:
    """Stands in for an exact type no value has, so JSON values are always encoded."""


#: A column kind (``controlplane.storage.columns``) -> the exact type kept as it is, and the coercion of others.
_COERCIONS: Final[dict[str | None, tuple[type, Coercion]]] = {
    "bool": (bool, _as_bool),
    "int": (int, _as_int),
    "float": (float, _as_float),
    "str": (str, _as_str),
    "json": (_AlwaysCoerce, _as_json),
}


def _keep(column: str, value: Any) -> Any:
    return value


class RowSpec:
    """What a caller may and must put in a row of table ``name``, and how to complete it.

    ``columns`` are the table's (``controlplane.storage.columns.TABLE_COLUMNS``): building
    and packing rows needs no SQLAlchemy; :attr:`table` (the SQLAlchemy table, for writing)
    is imported when first asked for. :meth:`build` runs once per recorded row, so it copies
    a prepared template and visits only the keys the caller gave, rather than every column.
    """

    def __init__(self, name: str, columns: Sequence[Column],
                 allowed: Mapping[str, frozenset[str | None]] | None = None) -> None:
        self.name = name
        self.columns: tuple[str, ...] = tuple(c[0] for c in columns)
        self.defaults: dict[str, Any] = {c[0]: c[3] for c in columns}
        self.required = tuple(c[0] for c in columns if not c[2] and c[3] is None)
        self.allowed = dict(allowed or {})
        self.json_columns = tuple(c[0] for c in columns if c[1] == "json")
        self._template = {**self.defaults, "run_id": None}
        self._exact: dict[str, type] = {}
        self._coerce: dict[str, Coercion] = {}
        for column, kind, _, _ in columns:
            self._exact[column], self._coerce[column] = _COERCIONS.get(kind, (object, _keep))
        #: The order of a stored row: ``run_id``, then :attr:`columns`.
        self.fields: tuple[str, ...] = ("run_id", *self.columns)
        required = set(self.required)
        self._checks = tuple(
            (name, f"{self.name}.{name}", self._exact[name], self._coerce[name], name in required,
             self.defaults[name])
            for name in self.columns
        )
        self._allowed_at = tuple((self.columns.index(c), c, v) for c, v in self.allowed.items())
        self._packers: dict[tuple[str, ...], Callable[[Any, int], tuple]] = {}

    @property
    def table(self) -> Any:
        """The SQLAlchemy table these rows go to (imports the schema: the writer's side)."""
        from controlplane.storage.models import metadata

        return metadata.tables[self.name]

    def build(self, row: Mapping[str, Any], run_id: int) -> dict[str, Any]:
        """Return ``row`` completed, coerced, JSON-encoded and with ``run_id``; ``ValueError`` if invalid."""
        exact = self._exact
        if not row.keys() <= exact.keys():
            unknown = sorted(row.keys() - exact.keys())
            raise ValueError(f"{self.name} row has unknown column(s) {unknown}; columns are {list(self.columns)}")
        out = self._template.copy()
        for column, value in row.items():
            if value is None:
                continue
            if type(value) is not exact[column]:
                value = self._coerce[column](f"{self.name}.{column}", value)
            out[column] = value
        for column in self.required:
            if out[column] is None:
                missing = sorted(c for c in self.required if out[c] is None)
                raise ValueError(f"{self.name} row is missing required column(s) {missing}: {dict(row)!r}")
        for column, values in self.allowed.items():
            if out[column] not in values:
                allowed = sorted(v for v in values if v is not None)
                raise ValueError(f"{self.name}.{column} = {out[column]!r} is not one of {allowed}")
        out["run_id"] = run_id
        return out

    def to_tuple(self, row: Mapping[str, Any]) -> tuple:
        """A row :meth:`build` returned, as the stored tuple (:attr:`fields` order)."""
        return tuple([row[name] for name in self.fields])

    def packer(self, attributes: Sequence[str] | None = None) -> Callable[[Any, int], tuple]:
        """:meth:`pack` (``attributes`` None), or :meth:`pack` of an object's ``attributes`` (one
        per column, in :attr:`columns` order) read from it without a tuple in between:
        ``packer(names)(obj, run_id)`` is ``pack(tuple(getattr(obj, a) for a in names), run_id)``
        (the run's SQL recorder gives its events' attributes). Made once per ``attributes``."""
        if attributes is None:
            return self.pack
        attributes = tuple(attributes)
        made = self._packers.get(attributes)
        if made is None:
            if len(attributes) != len(self.columns) or not all(a.isidentifier() for a in attributes):
                raise ValueError(f"{self.name}: {attributes} are not one attribute name per column {self.columns}")
            made = self._packers[attributes] = self.compiled(attributes)
        return made

    def compiled(self, attributes: Sequence[str] | None = None, *, head: str = "", finish: str = "return {row}",
                 env: Mapping[str, Any] | None = None) -> Callable[..., Any]:
        """A function with :attr:`pack`'s checks and coercions unrolled for this table's columns,
        of a tuple of values (``values``) or of an object's ``attributes`` (``obj``).

        By default it is ``pack(values, run_id)`` (or ``pack(obj, run_id)``) and returns the
        stored tuple. With ``head`` (lines of code that set ``run_id``) it takes the row alone,
        and ``finish`` (lines in which ``{row}`` is the stored tuple) does what the recorder does
        with it: the row appended to a buffer without another call. Names the lines use come
        in ``env``.
        What :meth:`generic_pack` refuses goes to ``_slow(row, run_id)``: the generic pack
        (of the attributes read again), which raises its error, unless ``env`` gives another.
        """
        generic = self.generic_pack
        names = [f"v{i}" for i in range(len(self.columns))]
        namespace: dict[str, Any] = {"_n": len(self.columns)}
        if attributes is None:
            arg = "values"
            reads = ["    if len(values) != _n:", "        return _slow(values, run_id)",
                     f"    {', '.join(names)}{',' if len(names) == 1 else ''} = values"]
            namespace["_slow"] = generic
        else:
            arg = "obj"
            reads = [f"    {v} = obj.{a}" for v, a in zip(names, attributes)]
            namespace["_slow"] = lambda obj, run_id: generic(tuple(getattr(obj, a) for a in attributes), run_id)
        lines = [f"def pack({arg}, run_id):" if not head else f"def pack({arg}):",
                 *("    " + line for line in head.splitlines()), *reads]
        for i, (_, label, exact, coerce, required, default) in enumerate(self._checks):
            v = names[i]
            namespace[f"_e{i}"], namespace[f"_c{i}"], namespace[f"_l{i}"] = exact, coerce, label
            namespace[f"_d{i}"] = default
            if required:
                if_none = f"return _slow({arg}, run_id)"
            elif default is not None:
                if_none = f"{v} = _d{i}"
            else:
                if_none = "pass"
            if coerce is _keep:
                lines += [f"    if {v} is None:", f"        {if_none}"]
            elif coerce is _as_json and _plain_json is not None:
                # orjson's plain call (no options, no default hook) gives the text `dumps` gives
                # for what it accepts, and refuses the rest with a TypeError: those go to `dumps`.
                namespace["_j"] = _plain_json
                lines += [f"    if {v} is None:", f"        {if_none}", "    else:", "        try:",
                          f"            {v} = _j({v}).decode()", "        except TypeError:",
                          f"            {v} = _c{i}(_l{i}, {v})"]
            else:
                lines += [f"    if {v} is None:", f"        {if_none}", f"    elif type({v}) is not _e{i}:",
                          f"        {v} = _c{i}(_l{i}, {v})"]
        for index, _, allowed in self._allowed_at:
            namespace[f"_a{index}"] = allowed
            lines += [f"    if {names[index]} not in _a{index}:", f"        return _slow({arg}, run_id)"]
        lines += ["    " + line for line in finish.replace("{row}", f"(run_id, {', '.join(names)})").splitlines()]
        namespace.update(env or {})
        exec("\n".join(lines), namespace)  # noqa: S102  (code made here from the table's own columns)
        return namespace["pack"]

    @cached_property
    def pack(self) -> Callable[[Sequence[Any], int], tuple]:
        """``pack(values, run_id)``: the stored tuple for ``values`` given for every column, in
        :attr:`columns` order. The fast path of :meth:`build` for producers that know the table
        (the run's SQL recorder): the same checks and coercions, without the dict round trips;
        :meth:`generic_pack` unrolled by :meth:`compiled` when first used (a replay uses
        two or three of the tables' five)."""
        return self.compiled()

    def generic_pack(self, values: Sequence[Any], run_id: int) -> tuple:
        """:attr:`pack` as a loop over the columns: what it refuses, with its messages."""
        if len(values) != len(self.columns):
            raise ValueError(f"{self.name} row has {len(values)} values for {len(self.columns)} columns "
                             f"{list(self.columns)}")
        out = [run_id]
        append = out.append
        for value, (column, label, exact, coerce, required, default) in zip(values, self._checks):
            if value is None:
                if required:
                    raise ValueError(f"{self.name} row is missing required column {column!r}")
                value = default
            elif type(value) is not exact:
                value = coerce(label, value)
            append(value)
        for index, column, allowed in self._allowed_at:
            if out[index + 1] not in allowed:
                names = sorted(v for v in allowed if v is not None)
                raise ValueError(f"{self.name}.{column} = {out[index + 1]!r} is not one of {names}")
        return tuple(out)

    def decoded(self, row: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        """A stored row (tuple or built dict) with its JSON columns decoded again, for spill
        files a person may read."""
        out = dict(row) if isinstance(row, Mapping) else dict(zip(self.fields, row))
        for column in self.json_columns:
            if out[column] is not None:
                out[column] = json.loads(out[column])
        return out


def derive_latencies(row: dict[str, Any]) -> dict[str, Any]:
    """Fill ``ttft_s``, ``tpot_s``, ``e2e_s`` and ``queue_s`` from the timestamps, unless given.

    The definitions are :func:`controlplane.request_latency.stored_latencies`, the same the run
    summary uses, so stored rows and summaries agree (a one-token output's TPOT is NULL; a row
    whose status is not ``completed`` has none).
    """
    derived = stored_latencies(row["status"], row["arrival_s"], row["scheduled_s"], row["first_token_s"],
                               row["finish_s"], row["output_tokens"])
    for column, value in zip(("ttft_s", "tpot_s", "e2e_s", "queue_s"), derived):
        if row[column] is None:
            row[column] = value
    return row


_ALLOWED: Final[dict[str, dict[str, frozenset[str | None]]]] = {
    "request": {"status": REQUEST_STATUSES, "cache_hit": CACHE_HITS | {None}, "reason_code": REASON_CODES | {None}},
    "worker_event": {"kind": WORKER_EVENT_KINDS},
}

SPECS: Final[dict[str, RowSpec]] = {
    name: RowSpec(name, columns, _ALLOWED.get(name)) for name, columns in TABLE_COLUMNS.items()
}
"""Row specs by table name, in foreign-key-safe write order."""
