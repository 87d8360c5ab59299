"""The recorded child tables' columns, as plain data: what a row may and must hold.

:mod:`controlplane.storage.rows` checks and packs rows from this catalog, so a simulator run
builds its rows without importing SQLAlchemy (a third of a short replay's instructions); the
tables themselves (:mod:`controlplane.storage.models`) are imported only where rows are
written. ``tests/storage/test_rows.py`` checks this catalog against the tables column by
column (name, order, type, nullability, default): a column added to one and not the other
fails there.
"""

from __future__ import annotations

from typing import Any, Final

RUN_MODES: Final = frozenset({"sim", "live"})
RUN_STATUSES: Final = frozenset({"running", "finished", "failed", "interrupted", "crashed"})
REQUEST_STATUSES: Final = frozenset({"completed", "rejected", "failed", "in_flight", "cancelled", "blocked"})
CACHE_HITS: Final = frozenset({"exact", "semantic", "prefix"})
WORKER_EVENT_KINDS: Final = frozenset({"starting", "ready", "failed", "stopped", "draining"})

#: One column: (name, kind, nullable, scalar default or None). ``kind`` is how values are
#: checked: ``bool``, ``int``, ``float``, ``str``, ``json`` (encoded to text), None (kept).
Column = tuple[str, "str | None", bool, Any]

#: Each child table's columns in table order, without ``id`` and ``run_id``; the tables in
#: foreign-key-safe write order.
TABLE_COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "request": (
        ("request_id", "str", False, None),
        ("model", "str", True, None),
        ("tenant", "str", True, None),
        ("priority", "int", True, None),
        ("worker_id", "str", True, None),
        ("status", "str", False, None),
        ("reason", "str", True, None),
        ("reason_code", "str", True, None),
        ("arrival_s", "float", False, None),
        ("scheduled_s", "float", True, None),
        ("first_token_s", "float", True, None),
        ("finish_s", "float", True, None),
        ("prompt_tokens", "int", False, None),
        ("output_tokens", "int", False, None),
        ("max_output_tokens", "int", True, None),
        ("cached_tokens", "int", False, 0),
        ("cache_hit", "str", True, None),
        ("num_preemptions", "int", False, 0),
        ("guardian_verdict", "str", True, None),
        ("ttft_s", "float", True, None),
        ("tpot_s", "float", True, None),
        ("e2e_s", "float", True, None),
        ("queue_s", "float", True, None),
    ),
    "decision": (
        ("time_s", "float", False, None),
        ("plugin", "str", False, None),
        ("hook", "str", False, None),
        ("subject", "str", True, None),
        ("action", "str", True, None),
        ("payload", "json", True, None),
        ("reason", "str", True, None),
        ("is_error", "bool", False, False),
    ),
    "metric_sample": (
        ("time_s", "float", False, None),
        ("name", "str", False, None),
        ("value", "float", False, None),
        ("labels", "json", True, None),
    ),
    "worker_event": (
        ("time_s", "float", False, None),
        ("worker_id", "str", False, None),
        ("kind", "str", False, None),
        ("detail", "json", True, None),
    ),
    "iteration": (
        ("worker_id", "str", False, None),
        ("batch_id", "int", False, None),
        ("start_s", "float", False, None),
        ("end_s", "float", False, None),
        ("num_prefill_tokens", "int", False, None),
        ("num_prefill_seqs", "int", False, None),
        ("num_decode_seqs", "int", False, None),
        ("sum_decode_context", "int", False, None),
        ("sum_prefill_context", "int", False, None),
        ("iteration_s", "float", False, None),
        ("padded_prefill_tokens", "int", True, None),
        ("padded_decode_context", "int", True, None),
    ),
}
