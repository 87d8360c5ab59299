"""Guardian verdicts that came after a request's row was buffered: updates of that row.

A verdict that comes after the reply (`controlplane.verdict_after_reply`) changes a row the
recorder may have written already. It is buffered with the run updates (``finish_run``), in
the order it came: the same chunks, flushes, retries, spills and writer marks carry it, and a
flush writes its rows before its updates, so the update always finds its row. In a spill file
it is a ``request_verdict`` entry. Plain data, nothing to import: a simulator run's replaying
process builds these too (`controlplane.storage.early`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["REQUEST_VERDICT", "is_request_verdict", "request_verdict"]

#: A spill entry's ``table`` (and a key of `RunRecorder.pending_by_table`) for these updates.
REQUEST_VERDICT: Final = "request_verdict"


def request_verdict(run_id: int, request_id: str, verdict: str, reason: str | None) -> dict[str, Any]:
    """The update that sets a request row's ``guardian_verdict`` (and ``reason``, unless None)."""
    return {"run_id": run_id, "request_id": request_id, "guardian_verdict": verdict, "reason": reason}


def is_request_verdict(values: Mapping[str, Any]) -> bool:
    """Whether a pending update is a request row's verdict (else a run's ``finish_run``, keyed by ``id``)."""
    return "request_id" in values

