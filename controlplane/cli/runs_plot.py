"""`controlplane runs plot RUN`: one picture of a run's replicas, load, queue and latency over time, with
every scale decision (active and shadow) marked, so "why did it scale at 18:32?" is one picture. The replica
lines change at the workers' own times (`controlplane.report.worker_replicas`), the load and queue at each
metrics sample's.
Drawn with matplotlib without a display, as PNG, SVG or PDF by the output's extension or ``--format`` (a
stream, ``-o -`` or ``-o /dev/stdout``, has no extension: PNG without ``--format``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from controlplane.cli.runs_timeline import scale_decisions
from controlplane.output_file import check_folder, check_not_read, database_files, replaced_on_success, stream_of
from controlplane.report.worker_replicas import worker_replicas
from controlplane.storage.models import MetricSample, Request
from controlplane.storage.queries import get_run

__all__ = ["PLOT_FORMATS", "load_replicas_by_model", "load_series", "plot_format", "plot_run"]

SERIES = ("replicas", "replicas_starting", "queue_length", "running", "arrivals_per_s")
#: The picture an output's extension names: matplotlib's backends for each, without a display.
PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def plot_format(output: Path, given: str | None = None) -> str:
    """The format ``output``'s extension names, or ``given`` (``--format``); another extension is an error
    naming those there are (``-o run.svg`` wrote a PNG under that name), as is a ``--format`` the extension
    contradicts. A stream (``-o -``, ``-o /dev/stdout``) has no extension: ``given``, else PNG."""
    if given is not None and given.lower() not in PLOT_FORMATS.values():
        raise ValueError(f"--format: unknown picture format {given!r}; expected one of "
                         f"{', '.join(PLOT_FORMATS.values())}")
    given = given.lower() if given is not None else None
    if stream_of(output) is not None:
        return given or "png"
    if Path(output).expanduser().is_dir():
        raise IsADirectoryError(21, "Is a directory", str(output))  # (said as an export's -o FOLDER is)
    ext = Path(output).suffix
    fmt = PLOT_FORMATS.get(ext.lower())
    if fmt is None and given is not None and not ext:
        return given  # (a name without an extension, as `runs export --format` writes one)
    if fmt is None:
        why = f"{ext} is not a picture format `runs plot` writes" if ext else "no extension to tell the format by"
        raise ValueError(f"-o {output}: {why}; supported: {', '.join(PLOT_FORMATS)} (or give --format "
                         f"{'|'.join(PLOT_FORMATS.values())} for a name without an extension, or - for stdout)")
    if given is not None and given != fmt:
        raise ValueError(f"--format {given} draws {given.upper()}, but -o {output} names {fmt.upper()} by its "
                         "extension: give a matching extension, or leave --format out")
    return fmt


def load_series(engine: Engine, run_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The run's metric samples of `SERIES`, summed over models: name -> (time_s, value)."""
    m = MetricSample.__table__
    stmt = (select(m.c.name, m.c.time_s, func.sum(m.c.value)).where(m.c.run_id == run_id, m.c.name.in_(SERIES))
            .group_by(m.c.name, m.c.time_s).order_by(m.c.name, m.c.time_s))
    out: dict[str, tuple[list[float], list[float]]] = {}
    with engine.connect() as conn:
        for name, t, v in conn.execute(stmt):
            xs, ys = out.setdefault(name, ([], []))
            xs.append(t)
            ys.append(v)
    return {k: (np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for k, (x, y) in out.items()}


def load_replicas_by_model(engine: Engine, run_id: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per model (the samples' ``model`` label), its ready and starting replicas: model -> (time_s, ready,
    starting), starting zeros where not sampled at the same times."""
    m = MetricSample.__table__
    stmt = (select(m.c.name, m.c.labels, m.c.time_s, m.c.value)
            .where(m.c.run_id == run_id, m.c.name.in_(("replicas", "replicas_starting"))).order_by(m.c.time_s))
    points: dict[str, dict[str, dict[float, float]]] = {}
    with engine.connect() as conn:
        for name, labels, t, v in conn.execute(stmt):
            if isinstance(labels, str):
                labels = json.loads(labels)
            model = (labels or {}).get("model") or "-"
            points.setdefault(model, {}).setdefault(name, {})[t] = v
    out = {}
    for model, by_name in sorted(points.items()):
        ready = by_name.get("replicas", {})
        ts = np.asarray(sorted(ready), dtype=float)
        starting = by_name.get("replicas_starting", {})
        out[model] = (ts, np.asarray([ready[t] for t in ts], dtype=float),
                      np.asarray([starting.get(t, 0.0) for t in ts], dtype=float))
    return out


def _replica_panel(ax, series, per_model, decisions) -> list[str]:
    """The replicas panel: with one model, its ready (+ starting) line and each decision at its target; with
    several, one line per model in its own colour and each decision on its model's line (the summed line put
    one model's target beside the sum of all). Returns the models drawn as lines of their own."""
    models = [m for m in per_model if per_model[m][0].size]
    if len(models) <= 1:
        if "replicas" in series:
            t, ready = series["replicas"]
            starting = series.get("replicas_starting", (t, np.zeros_like(ready)))[1]
            if starting.shape != ready.shape:
                starting = np.zeros_like(ready)
            ax.step(t, ready, where="post", label="ready", color="tab:blue")
            ax.step(t, ready + starting, where="post", label="ready + starting", color="tab:blue", alpha=0.4, ls="--")
        for r in decisions:
            p = r["payload"]
            shadow = r["action"] == "shadow_scale"
            color = "tab:orange" if shadow else ("tab:green" if p.get("to", 0) > p.get("from", 0) else "tab:red")
            ax.scatter([r["time_s"]], [p.get("to", 0)], marker=_marker(r["action"], "o"), s=18,
                       color="black" if r["action"] == "scale_unplaced" else color, zorder=3)
        return []
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for m in models:
        t, ready, starting = per_model[m]
        ax.step(t, ready, where="post", label=f"{m}: ready", color=colors[m])
        ax.step(t, ready + starting, where="post", label=f"{m}: ready + starting", color=colors[m], alpha=0.4, ls="--")
    for r in decisions:
        p, model = r["payload"], r["subject"] or "-"
        up = p.get("to", 0) > p.get("from", 0)
        ax.scatter([r["time_s"]], [p.get("to", 0)], s=24, zorder=3, color=colors.get(model, "black"),
                   marker=_marker(r["action"], "^" if up else "v"))
    return models


def _marker(action: str, active: str) -> str:
    """x: a shadow decision; X: a replica a scale-up started but no device or slot was free for (the
    target it leaves); else ``active``."""
    return {"shadow_scale": "x", "scale_unplaced": "X"}.get(action, active)


def _latency_windows(engine: Engine, run_id: int, window_s: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """p90 TTFT and TPOT of the requests that finished in each window."""
    r = Request.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(r.c.finish_s, r.c.ttft_s, r.c.tpot_s)
                            .where(r.c.run_id == run_id, r.c.status == "completed")).all()
    if not rows:
        return {}
    a = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    bins = np.floor(a[:, 0] / window_s).astype(int)
    order = np.argsort(bins, kind="stable")  # each window's rows in one slice (a mask a window read every row:
    a, bins = a[order], bins[order]  # 24 s of a 500,000-request run's plot)
    windows, starts = np.unique(bins, return_index=True)
    ends = np.append(starts[1:], len(bins))
    out = {}
    for col, name in ((1, "ttft"), (2, "tpot")):
        xs, ys = [], []
        for b, lo, hi in zip(windows, starts, ends):
            vals = a[lo:hi, col]
            vals = vals[~np.isnan(vals)]
            if vals.size:  # at the window's middle, or its last finish in a window the run ended in
                xs.append(min((b + 0.5) * window_s, float(a[lo:hi, 0].max())))
                ys.append(float(np.percentile(vals, 90)))
        out[name] = (np.asarray(xs), np.asarray(ys))
    return out


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("`runs plot` needs matplotlib: pip install 'controlplane[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_run(engine: Engine, run_id: int, output: Path, *, window_s: float = 30.0,
             format: str | None = None) -> dict[str, Any]:
    """Write the picture, in the format ``output``'s extension names (`PLOT_FORMATS`), or ``format`` (`plot_format`);
    returns what it drew (series names, decision counts, the run's row) for the caller to report."""
    fmt = plot_format(output, format)  # (before anything is read or made: a refused extension leaves no file)
    check_not_read(output, database_files(engine))  # (nor a minute's drawing to find out)
    check_folder(output)  # (a missing folder is refused, as runs export -o refuses it: no folders made)
    run = get_run(engine, run_id)
    series = load_series(engine, run_id)
    latency = _latency_windows(engine, run_id, window_s)
    decisions = [r for r in scale_decisions(engine, run_id) if r["action"] != "scale_held"]  # (no target change)
    if not series and not latency and not decisions:  # (a run that failed at its start, a summary-only sweep run)
        error = (run.get("summary") or {}).get("error")
        raise LookupError(f"run {run_id} has nothing to plot: no metric samples, finished requests or scale decisions "
                          f"(status {run['status']}{': ' + error.rstrip(': ') if error else ''})")
    slo = ((run.get("config") or {}).get("slo") or {}) if isinstance(run.get("config"), dict) else {}
    plt = _pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(14, 11), sharex=True)
    ax_rep, ax_load, ax_queue, ax_lat = axes
    replicas, total = worker_replicas(engine, run_id)  # (at the workers' exact times, not every metrics sample's)
    if total is not None:
        series = {**series, "replicas": total[:2], "replicas_starting": (total[0], total[2])}
    else:  # (a run stored without worker events: its metric samples)
        replicas = load_replicas_by_model(engine, run_id)
    per_model = _replica_panel(ax_rep, series, replicas, decisions)
    ax_rep.set_ylabel("replicas")
    marks = "^ up, v down: active decisions on their model's line" if per_model else "o active decisions"
    ax_rep.set_title(f"run {run_id} {run.get('name') or ''}: replicas "
                     f"{'per model ' if per_model else ''}({marks}, x shadow, X unplaced)")
    for name, color in (("arrivals_per_s", "tab:purple"), ("running", "tab:gray")):
        if name in series:
            ax_load.plot(*series[name], label=name.replace("_", " "), color=color, lw=0.8)
    ax_load.set_ylabel("load")
    if "queue_length" in series:
        ax_queue.step(*series["queue_length"], where="post", color="tab:brown", label="queued (incl. unrouted)")
    ax_queue.set_ylabel("queued requests")
    for name, color in (("ttft", "tab:blue"), ("tpot", "tab:red")):
        if name in latency and latency[name][0].size:
            ax_lat.plot(*latency[name], marker=".", lw=0.8, color=color, label=f"{name.upper()} p90 ({window_s:g}s)")
            target = slo.get(f"{name}_s")
            if target:
                ax_lat.axhline(target, color=color, ls=":", lw=1, label=f"{name.upper()} target {target:g}s")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("seconds")
    ax_lat.set_xlabel("run time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    output = Path(output)
    try:  # (never over the database it reads; the file appears, or is replaced, only once drawn whole)
        with replaced_on_success(output, reads=database_files(engine)) as partial:
            fig.savefig(partial, format=fmt, dpi=90)
    finally:
        plt.close(fig)
    return {"run": run, "series": sorted(series), "latency": sorted(latency), "decisions": len(decisions),
            "replicas_per_model": per_model, "path": str(output)}
