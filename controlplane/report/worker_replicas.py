"""A run's ready and starting replicas at the exact times its workers changed (its ``worker_event`` rows), for the
plots' replica lines: the metric samples are taken every ``control.metrics_interval_s`` (5 s by default), so a
step line of them held the first sample (0 ready) until the next one, though the workers were ready at 1.4 s."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from controlplane.storage.models import WorkerEvent

__all__ = ["Replicas", "worker_replicas"]

#: (time_s, ready, starting): the counts after each change, at its time.
Replicas = tuple[np.ndarray, np.ndarray, np.ndarray]


def _model(worker_id: str, kind: str, detail: Any) -> str:
    """The deployment a worker serves: its ``starting`` event names it (its first), else its id's ``MODEL-N``."""
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            detail = None
    if kind == "starting" and isinstance(detail, dict) and detail.get("model"):
        return str(detail["model"])
    return worker_id.rsplit("-", 1)[0]


def worker_replicas(engine: Engine, run_id: int) -> tuple[dict[str, Replicas], Replicas | None]:
    """Per model, and summed over models, the replicas ready and starting after each worker event (a worker counts
    as its last event says: ``ready``, ``starting``; ``draining``, ``failed`` and ``stopped`` count in neither, as
    the ``replicas`` metric counts them). ``({}, None)`` for a run without worker events."""
    w = WorkerEvent.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(w.c.time_s, w.c.worker_id, w.c.kind, w.c.detail)
                            .where(w.c.run_id == run_id).order_by(w.c.time_s, w.c.id)).all()
    model_of: dict[str, str] = {}
    state: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    points: dict[str | None, dict[float, tuple[int, int]]] = {}  # (the last counts at each time: one step a time)
    for t, wid, kind, detail in rows:
        model = model_of.setdefault(wid, _model(wid, kind, detail))
        count = counts.setdefault(model, {"ready": 0, "starting": 0})
        if state.get(wid) in count:
            count[state[wid]] -= 1
        state[wid] = kind
        if kind in count:
            count[kind] += 1
        points.setdefault(model, {})[float(t)] = (count["ready"], count["starting"])
        total = [sum(c[k] for c in counts.values()) for k in ("ready", "starting")]
        points.setdefault(None, {})[float(t)] = (total[0], total[1])

    def arrays(at: dict[float, tuple[int, int]]) -> Replicas:
        ts = np.asarray(list(at), dtype=float)
        values = np.asarray(list(at.values()), dtype=float).reshape(-1, 2)
        return ts, values[:, 0], values[:, 1]

    total = points.pop(None, None)
    return {m: arrays(at) for m, at in sorted(points.items())}, (arrays(total) if total is not None else None)
