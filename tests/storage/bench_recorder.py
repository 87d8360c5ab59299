"""Measure RunRecorder's request insert rate: ``python -m tests.storage.bench_recorder [URL] [N]``.

Without a URL it uses a temporary SQLite file. Reports wall-clock rows/s and
rows per CPU-second of this process (the latter is steadier on a shared
machine), and for SQLite also the rate of the driver's own executemany of the
same, already-built rows: the floor that no Python-side writer can beat.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from controlplane.storage import RunRecorder, ensure_schema, make_engine
from controlplane.storage.bulk import BulkInsert
from controlplane.storage.rows import SPECS, derive_latencies

from .support import request_row, start_run


def _rate(n: int, wall: float, cpu: float) -> str:
    return f"{n / wall:>9,.0f} rows/s wall, {n / cpu:>9,.0f} rows per CPU-second"


def main(url: str | None, n: int) -> None:
    tmp = tempfile.TemporaryDirectory()
    url = url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    engine = make_engine(url)
    ensure_schema(engine)
    rows = [request_row(i) for i in range(n)]
    with RunRecorder(engine) as rec:
        run_id = start_run(rec, name="bench")
        wall, cpu = time.perf_counter(), time.process_time()
        for row in rows:
            rec.add_request(row)
        rec.flush()
        print(f"RunRecorder.add_request+flush, {n} rows: {_rate(n, time.perf_counter() - wall, time.process_time() - cpu)}")

    if engine.dialect.name == "sqlite":
        spec = SPECS["request"]
        insert = BulkInsert(spec.table, engine.dialect, spec.fields)
        built = [spec.to_tuple(derive_latencies(spec.build(dict(r, request_id=f"x{i}"), run_id)))
                 for i, r in enumerate(rows)]
        params = insert.parameters(built)
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, n, 5000):
                cursor.execute("BEGIN")
                cursor.executemany(insert.sql, params[start:start + 5000])
                cursor.execute("COMMIT")
            print(f"sqlite3 executemany of prebuilt tuples:  {_rate(n, time.perf_counter() - wall, time.process_time() - cpu)}")
        finally:
            raw.close()
    engine.dispose()
    tmp.cleanup()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, int(sys.argv[2]) if len(sys.argv) > 2 else 200_000)
