"""Row specs: each table's unrolled ``pack`` accepts, coerces and refuses exactly what the
generic one does."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from controlplane.storage.rows import SPECS
from controlplane.types import ReasonCode

POOL = [None, 0, 1, 2.5, np.float64(1.5), np.int64(3), np.bool_(True), "x", "completed", "prefill_fit", True, False,
        {"a": 1}, [1, 2], float("nan"), object(),
        # JSON values the plain orjson call refuses (each goes to `dumps`) or encodes itself
        {1: "non-str key"}, np.array([1.0, 2.0]), {"n": np.float64(2.0)}, {"big": 2**70}, {"set": {2, 1}}, b"bytes",
        {"inf": float("inf"), "nested": [{"x": None}, (1, 2)]}, {"e": next(iter(ReasonCode))}]


def _outcome(fn, values):
    try:
        return ("ok", fn(values, 7))
    except Exception as exc:  # the generic pack's refusals, compared by type and message
        return ("error", type(exc).__name__, str(exc))


@pytest.mark.parametrize("table", sorted(SPECS))
def test_the_unrolled_pack_equals_the_generic_one_on_any_values(table):
    spec = SPECS[table]
    rng = random.Random(table)
    outcomes = set()
    for _ in range(3000):
        values = tuple(rng.choice(POOL) for _ in spec.columns)
        fast, generic = _outcome(spec.pack, values), _outcome(spec.generic_pack, values)
        assert repr(fast) == repr(generic), values
        outcomes.add(fast[0])
    assert "error" in outcomes  # refusals compared, not only acceptances
    assert _outcome(spec.pack, (None,) * (len(spec.columns) + 1))[0] == "error"  # wrong length


@pytest.mark.parametrize("table", sorted(SPECS))
def test_a_packer_of_attributes_equals_the_pack_of_their_values(table):
    spec = SPECS[table]
    attributes = tuple(f"a_{c}" for c in spec.columns)
    packer = spec.packer(attributes)
    assert spec.packer(list(attributes)) is packer and spec.packer() is spec.pack
    rng = random.Random(f"packer-{table}")
    for _ in range(2000):
        values = tuple(rng.choice(POOL) for _ in spec.columns)
        obj = SimpleNamespace(**dict(zip(attributes, values)))
        assert repr(_outcome(packer, obj)) == repr(_outcome(spec.pack, values)), values
    with pytest.raises(ValueError, match="one attribute name per column"):
        spec.packer(attributes[:-1])


def test_a_valid_request_row_is_coerced_once_and_typed():
    spec = SPECS["request"]
    values = ["r1", "m", None, np.int64(2), "w0", "completed", None, None, np.float64(1.0), 1.5, 2.0, 3.0,
              np.int64(100), 10, np.int64(12), 0, None, 0, None, None, None, None, None]
    row = spec.pack(tuple(values), 3)
    assert row[0] == 3 and row[1] == "r1" and type(row[9]) is float and type(row[13]) is int
    assert row[15] == 12 and type(row[15]) is int
    assert row[4] == 2 and type(row[4]) is int


def _described(column) -> tuple:
    """A SQLAlchemy column as ``controlplane.storage.columns`` describes it."""
    from sqlalchemy import JSON, Boolean, Float, Integer, String

    kinds = ((Boolean, "bool"), (Integer, "int"), (Float, "float"), (String, "str"), (JSON, "json"))
    kind = next((name for type_, name in kinds if isinstance(column.type, type_)), None)
    if column.default is not None:
        assert column.default.is_scalar, f"{column}: only scalar defaults are described"
        assert column.default.arg is not None, f"{column}: a default of None reads as no default"
    return column.name, kind, column.nullable, column.default.arg if column.default is not None else None


@pytest.mark.parametrize("table", sorted(SPECS))
def test_the_plain_column_catalog_is_the_tables(table):
    from controlplane.storage.columns import TABLE_COLUMNS
    from controlplane.storage.models import metadata

    sql_table = metadata.tables[table]
    assert TABLE_COLUMNS[table] == tuple(_described(c) for c in sql_table.columns if c.name not in ("id", "run_id"))
    assert SPECS[table].table is sql_table
    assert list(TABLE_COLUMNS) == list(SPECS)


def test_rows_are_checked_and_packed_without_sqlalchemy():
    import subprocess
    import sys

    code = ("import sys, controlplane.recording; "
            "from controlplane.storage.rows import SPECS; "
            "SPECS['decision'].pack((1.0, 'p', 'h', None, None, {'a': 1}, None, False), 1); "
            "print('sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
