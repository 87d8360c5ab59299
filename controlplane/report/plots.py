"""The report's figures, drawn with matplotlib (Agg, no display) and returned as PNG bytes.

Each is a ``matplotlib.figure.Figure`` on its own Agg canvas, never a pyplot figure: a report
made from a notebook or a script leaves the caller's pyplot alone (its backend, its open
figures; ``matplotlib.use("Agg", force=True)`` here had switched a notebook's ``plt.show()`` off)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from controlplane.report.data import RunData

__all__ = ["latency_cdfs", "pareto_plot", "per_minute", "png", "replicas_and_queue", "timeline"]


def _figure(**kwargs: Any) -> Any:
    """A figure drawn by Agg, outside pyplot (no backend chosen, nothing to close)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("HTML reports need matplotlib: pip install 'controlplane[report]'") from None

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _subplots(*shape: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``plt.subplots`` without pyplot: the figure and its axes."""
    fig = _figure(figsize=figsize)
    return fig, fig.subplots(*shape)


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def seconds_label(data: RunData) -> str:
    """A time axis's label: a live run's clock is no simulated time."""
    return "run seconds" if data.run.get("mode") == "live" else "simulated seconds"


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888")


def latency_cdfs(data: RunData) -> bytes:
    fig, axes = _subplots(1, 4, figsize=(15, 3.4))
    for ax, name in zip(axes, ("ttft", "tpot", "e2e", "queue")):
        x = data.latency[name]
        x = np.sort(x[~np.isnan(x)])
        ax.set_title(f"{name.upper()} CDF")
        ax.set_xlabel("seconds")
        if x.size == 0:
            _empty(ax, "no values")
            continue
        ax.plot(x, np.arange(1, x.size + 1) / x.size)
        if x[0] > 0 and x[-1] / x[0] > 100:
            ax.set_xscale("log")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    slo = (data.run.get("config") or {}).get("slo") or {}
    for ax, key in ((axes[0], "ttft_s"), (axes[1], "tpot_s")):
        if slo.get(key):
            ax.axvline(slo[key], color="tab:red", ls="--", lw=1, label="SLO")
            ax.legend(loc="lower right")
    fig.tight_layout()
    return png(fig)


def per_minute(data: RunData) -> bytes:
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(15, 3.4))
    if data.arrival.size == 0:
        _empty(ax1, "no requests")
        _empty(ax2, "no requests")
        return png(fig)
    end = np.nanmax(np.concatenate([data.arrival, data.finish[~np.isnan(data.finish)]]))
    bins = np.arange(0, end // 60 + 2) * 60.0
    minutes = bins[:-1] / 60
    arrived = np.histogram(data.arrival, bins)[0]
    done = np.histogram(data.finish[~np.isnan(data.finish)], bins)[0]
    ax1.plot(minutes, arrived / 60, ".-", label="arrivals/s")
    ax1.plot(minutes, done / 60, ".--", label="completions/s")
    ax1.set_title("throughput per minute")
    ax1.set_xlabel("minute")
    ax1.legend()
    ax1.grid(alpha=0.3)
    idx = np.digitize(data.arrival, bins) - 1
    for name, q, style in (("ttft", 50, ".-"), ("ttft", 99, ".--"), ("e2e", 50, ".:")):
        x = data.latency[name]
        ys = [np.nanpercentile(x[idx == i], q) if np.any(~np.isnan(x[idx == i])) else np.nan
              for i in range(len(minutes))]
        ax2.plot(minutes, ys, style, label=f"{name} p{q}")
    ax2.set_title("latency per minute (by arrival)")
    ax2.set_xlabel("minute")
    ax2.set_ylabel("seconds")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def replicas_and_queue(data: RunData) -> bytes:
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(15, 3.4))
    for ax, names, title in ((ax1, ("replicas", "replicas_starting", "running"), "replicas and running requests"),
                             (ax2, ("queue_length",), "queued requests")):
        shown = False
        for name in names:
            if name in data.series:
                t, v = data.series[name]
                ax.step(t, v, where="post", label=name)
                shown = True
        ax.set_title(title)
        ax.set_xlabel(seconds_label(data))
        if shown:
            ax.legend()
            ax.grid(alpha=0.3)
        else:
            _empty(ax, "no metric samples")
    fig.tight_layout()
    return png(fig)


def timeline(data: RunData) -> bytes:
    hooks = sorted(data.timeline, key=str)
    fig, ax = _subplots(figsize=(15, 0.5 * max(len(hooks), 2) + 1.2))
    for i, hook in enumerate(hooks):
        t = data.timeline[hook]
        ax.scatter(t, np.full(t.size, i), s=4, alpha=0.5)
    if data.timeline_errors.size:
        ax.scatter(data.timeline_errors, np.full(data.timeline_errors.size, -1), s=10, color="tab:red")
        hooks = ["plugin errors", *hooks]
        ax.set_yticks(range(-1, len(hooks) - 1), hooks)
    else:
        ax.set_yticks(range(len(hooks)), hooks)
    if not hooks:
        _empty(ax, "no decisions recorded")
    ax.set_xlabel(seconds_label(data))
    ax.set_title("decision timeline (busy hooks sampled)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return png(fig)


def pareto_plot(points: list[dict[str, Any]], front: list[dict[str, Any]], unit: str, target: float | None) -> bytes:
    """Cost against attainment, a point per configuration (`controlplane.report.configs`): where a
    point has its seeds' spread (``cost_low``/``cost_high``, ``attainment_low``/``attainment_high``),
    bars span it."""
    fig, ax = _subplots(figsize=(9, 4.5))
    shown = [p for p in points if p.get("cost") is not None and p.get("attainment") is not None]
    if shown:
        x = np.array([p["cost"] for p in shown], dtype=float)
        y = np.array([p["attainment"] for p in shown], dtype=float)

        def spread(key: str, at: np.ndarray) -> np.ndarray:  # (bars from the seeds' low to their high value)
            lo = np.array([v if p.get(f"{key}_low") is None else p[f"{key}_low"] for p, v in zip(shown, at)])
            hi = np.array([v if p.get(f"{key}_high") is None else p[f"{key}_high"] for p, v in zip(shown, at)])
            return np.vstack([np.maximum(at - lo, 0), np.maximum(hi - at, 0)])

        ax.errorbar(x, y, xerr=spread("cost", x), yerr=spread("attainment", y), fmt="o", ms=4, alpha=0.5, lw=0.8,
                    capsize=2, label="configurations (min attainment, mean cost; bars: seeds' range)")
    if front:
        ax.plot([p["cost"] for p in front], [p["attainment"] for p in front], "o-", color="tab:red",
                label="Pareto front")
    if target is not None:
        ax.axhline(target, color="tab:green", ls="--", lw=1, label=f"target {target}")
    if not shown:
        _empty(ax, "no finished runs")
    ax.set_xlabel(f"cost ({unit})")
    ax.set_ylabel("SLO attainment")
    ax.set_title("cost against SLO attainment")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return png(fig)
