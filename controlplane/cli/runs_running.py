"""`runs show`'s line for a run still being written: its summary (counts, latencies, the guardian table) is
written when it ends, so the table is absent; the line says so and counts the request rows stored so far."""

from __future__ import annotations

from typing import Any


def stored_request_counts(engine: Any, run_id: int) -> dict[str, int]:
    """The run's stored request rows by status (``completed``, ``rejected``, ...)."""
    from sqlalchemy import func, select

    from controlplane.storage.models import request

    with engine.connect() as conn:
        rows = conn.execute(select(request.c.status, func.count()).where(request.c.run_id == run_id)
                            .group_by(request.c.status).order_by(request.c.status)).all()
    return {status: int(n) for status, n in rows}


def running_line(engine: Any, run: dict[str, Any]) -> str | None:
    """``still running: its summary (...) is written when it ends; 26 request rows stored so far (24 completed,
    2 rejected) ...`` for a run whose status is ``running``; None for any other."""
    if run.get("status") != "running":
        return None
    counts = stored_request_counts(engine, run["id"])
    total = sum(counts.values())
    by_status = ", ".join(f"{n:,} {status}" for status, n in counts.items())
    return (f"still running: its summary (counts, latencies, SLO attainment, per-model and guardian tables) is "
            f"written when it ends; {total:,} request row{'s' if total != 1 else ''} stored so far"
            + (f" ({by_status})" if by_status else "")
            + f", each when its request finished (`controlplane runs export {run['id']}` reads them)")
