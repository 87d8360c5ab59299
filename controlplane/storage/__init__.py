"""SQL storage for runs: schema, migrations, the bulk recorder and read-side queries.

Typical use::

    engine = make_engine(url)          # default sqlite:///controlplane.db
    ensure_schema(engine)              # migrate to head if needed
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(...)
        rec.add_request({...})
        rec.finish_run(run_id, ...)
    export_rows(engine, run_id, "requests", "csv", sys.stdout)
"""

from controlplane.storage.db import (
    DEFAULT_URL,
    current_revisions,
    ensure_schema,
    head_revisions,
    make_engine,
    upgrade,
)
from controlplane.storage.errors import StorageError
from controlplane.storage.models import Base, Decision, Iteration, MetricSample, Request, Run, WorkerEvent
from controlplane.storage.queries import (
    EXPORT_COLUMNS,
    decision_counts,
    export_rows,
    get_run,
    iter_request_rows,
    iter_rows,
    iteration_rows,
    list_runs,
)
from controlplane.storage.recorder import FlushFailure, RunRecorder
from controlplane.storage.rows import derive_latencies

__all__ = [
    "DEFAULT_URL",
    "EXPORT_COLUMNS",
    "Base",
    "Decision",
    "FlushFailure",
    "Iteration",
    "MetricSample",
    "Request",
    "Run",
    "RunRecorder",
    "StorageError",
    "WorkerEvent",
    "current_revisions",
    "decision_counts",
    "derive_latencies",
    "ensure_schema",
    "export_rows",
    "get_run",
    "head_revisions",
    "iter_request_rows",
    "iter_rows",
    "iteration_rows",
    "list_runs",
    "make_engine",
    "upgrade",
]
