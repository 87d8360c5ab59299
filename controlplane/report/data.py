"""What a report shows, read from the database: a run's requests, time series and decisions,
or a sweep's runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, case, func, select

from controlplane.storage.db import describe_url
from controlplane.storage.models import Decision, MetricSample, Request, Run, Sweep
from controlplane.storage.queries import get_run

__all__ = ["RunData", "SweepData", "load_run", "load_sweep"]

#: Decisions listed one by one in a run's report (the rest are counted): policy choices that are
#: rare enough to read, unlike routing and batching, which happen once per request or batch.
NOTABLE_LIMIT = 300


@dataclass
class RunData:
    run: dict[str, Any]
    arrival: np.ndarray
    finish: np.ndarray  # NaN unless completed
    latency: dict[str, np.ndarray]  # ttft, tpot, e2e, queue (NaN where undefined)
    status: np.ndarray
    # metric name -> (time_s, value summed over labels); replicas and replicas_starting at the workers' events' times
    series: dict[str, tuple[np.ndarray, np.ndarray]]
    decision_counts: list[dict[str, Any]]  # hook, plugin, action, count, errors
    timeline: dict[str, np.ndarray]  # hook -> decision times (sampled for very busy hooks)
    timeline_errors: np.ndarray  # times of decisions that were plugin errors
    notable: list[dict[str, Any]] = field(default_factory=list)  # rare decisions with their reasons


def _array(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _replicas(engine: Engine, run_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The replicas ready and starting, summed over models, at each worker event's time (`worker_replicas`: a
    metrics sample's every 5 s showed 0 ready until the second sample); {} for a run without worker events (its
    samples, then)."""
    from controlplane.report.worker_replicas import worker_replicas

    _, total = worker_replicas(engine, run_id)
    return {} if total is None else {"replicas": total[:2], "replicas_starting": (total[0], total[2])}


def load_run(engine: Engine, run_id: int, *, busy_hook_points: int = 5000) -> RunData:
    run = get_run(engine, run_id)
    r = Request.__table__
    m = MetricSample.__table__
    d = Decision.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(r.c.arrival_s, r.c.finish_s, r.c.status, r.c.ttft_s, r.c.tpot_s, r.c.e2e_s,
                                   r.c.queue_s).where(r.c.run_id == run_id).order_by(r.c.arrival_s)).all()
        samples = conn.execute(select(m.c.name, m.c.time_s, func.sum(m.c.value)).where(m.c.run_id == run_id)
                               .group_by(m.c.name, m.c.time_s).order_by(m.c.name, m.c.time_s)).all()
        counts = conn.execute(select(d.c.hook, d.c.plugin, d.c.action, func.count(),
                                     func.sum(case((d.c.is_error, 1), else_=0)))
                              .where(d.c.run_id == run_id).group_by(d.c.hook, d.c.plugin, d.c.action)).all()
        hooks = {}
        for hook, n in ((c[0], c[3]) for c in counts):
            hooks[hook] = hooks.get(hook, 0) + n
        timeline = {}
        for hook, n in hooks.items():
            stmt = select(d.c.time_s).where(d.c.run_id == run_id, d.c.hook == hook)
            if n > busy_hook_points:  # every k-th decision of a busy hook: the density shows, the page stays small
                stmt = stmt.where(d.c.id % (n // busy_hook_points + 1) == 0)
            timeline[hook] = np.array([t for (t,) in conn.execute(stmt)], dtype=np.float64)
        errors = np.array([t for (t,) in conn.execute(select(d.c.time_s).where(d.c.run_id == run_id, d.c.is_error))],
                          dtype=np.float64)
        rare = sorted((h for h, n in hooks.items() if n <= NOTABLE_LIMIT), key=str)
        notable = [dict(x._mapping) for x in conn.execute(
            select(d.c.time_s, d.c.plugin, d.c.hook, d.c.subject, d.c.action, d.c.reason, d.c.is_error)
            .where(d.c.run_id == run_id, d.c.hook.in_(rare) | d.c.is_error).order_by(d.c.time_s, d.c.id)
            .limit(NOTABLE_LIMIT))]
    series: dict[str, tuple[list, list]] = {}
    for name, t, v in samples:
        xs, ys = series.setdefault(name, ([], []))
        xs.append(t)
        ys.append(v)
    return RunData(
        run=run,
        arrival=_array([x[0] for x in rows]),
        finish=_array([x[1] if x[2] == "completed" else None for x in rows]),
        latency={k: _array([x[i] for x in rows]) for i, k in enumerate(("ttft", "tpot", "e2e", "queue"), start=3)},
        status=np.array([x[2] for x in rows], dtype=object),
        series={**{k: (np.array(v[0]), np.array(v[1])) for k, v in series.items()}, **_replicas(engine, run_id)},
        decision_counts=[{"hook": c[0], "plugin": c[1], "action": c[2], "count": int(c[3]), "errors": int(c[4] or 0)}
                         for c in sorted(counts, key=lambda c: (str(c[0]), str(c[1]), str(c[2])))],
        timeline=timeline,
        timeline_errors=errors,
        notable=notable,
    )


@dataclass
class SweepData:
    sweep: dict[str, Any]
    runs: list[dict[str, Any]]  # its finished runs: id, seed, status, summary, config, overrides, stage
    failed: list[dict[str, Any]] = field(default_factory=list)  # its failed runs, the same (summary["error"]: why)


def load_sweep(engine: Engine, sweep_id: int) -> SweepData:
    s = Sweep.__table__
    r = Run.__table__
    with engine.connect() as conn:
        row = conn.execute(select(s).where(s.c.id == sweep_id)).mappings().first()
        if row is None:
            raise LookupError(f"sweep {sweep_id} not found in {describe_url(engine)}")  # (as a missing run)
        runs = [dict(x._mapping) for x in conn.execute(
            select(r.c.id, r.c.seed, r.c.status, r.c.summary, r.c.config, r.c.notes)
            .where(r.c.sweep_id == sweep_id, r.c.status.in_(("finished", "failed"))).order_by(r.c.id))]
    for run in runs:
        notes = json.loads(run.pop("notes") or "{}")
        run["overrides"] = notes.get("overrides") or {}
        run["stage"] = notes.get("stage")
    return SweepData(dict(row), [r for r in runs if r["status"] == "finished"],
                     [r for r in runs if r["status"] == "failed"])
