"""SQL storage for runs: schema, migrations, the bulk recorder and read-side queries.

Typical use::

    engine = make_engine(url)          # default sqlite:///controlplane.db
    ensure_schema(engine)              # migrate to head if needed
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(...)
        rec.add_request({...})
        rec.finish_run(run_id, ...)
    export_rows(engine, run_id, "requests", "csv", sys.stdout)

Its names are imported when first used (``from controlplane.storage import RunRecorder``
works as before): a submodule that needs no SQLAlchemy (``columns``, ``rows``, ``errors``,
``early``) can be imported without it, which is how a simulator run packs its rows while its
writer process imports the database side.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> the submodule that defines it.
_WHERE: dict[str, str] = {
    **dict.fromkeys(("DEFAULT_URL", "current_revisions", "ensure_schema", "head_revisions", "make_engine", "upgrade"),
                    "db"),
    "StorageError": "errors",
    **dict.fromkeys(("Base", "Decision", "Iteration", "MetricSample", "Request", "Run", "WorkerEvent"), "models"),
    **dict.fromkeys(("EXPORT_COLUMNS", "decision_counts", "export_rows", "get_run", "iter_request_rows", "iter_rows",
                     "iteration_rows", "list_runs", "list_sweeps", "plugin_errors", "run_config"), "queries"),
    **dict.fromkeys(("FlushFailure", "RunRecorder"), "recorder"),
    "derive_latencies": "rows",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


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
    "list_sweeps",
    "plugin_errors",
    "make_engine",
    "run_config",
    "upgrade",
]
