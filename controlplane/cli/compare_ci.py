"""`controlplane runs compare` with confidence intervals: which runs, and the table of differences."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from sqlalchemy import Engine, select

from controlplane.cli.common import fmt_value

__all__ = ["ci_table", "parse_run_ids", "sweep_run_ids"]


def parse_run_ids(text: str, option: str) -> list[int]:
    """``"1,2,3"`` or ``"4-6"`` (ranges allowed) as run ids; ``ValueError`` naming the option."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise ValueError(f"{option}: {part!r} is not a run id or range (expected e.g. 1,2,3 or 4-6)") from None
    if not ids:
        raise ValueError(f"{option}: no run ids")
    return ids


def sweep_run_ids(engine: Engine, sweep_id: int, option: str) -> list[int]:
    """The finished runs of a sweep (e.g. one configuration over several seeds)."""
    from controlplane.storage.db import describe_url
    from controlplane.storage.models import Run, Sweep

    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(Run.id).where(Run.sweep_id == sweep_id, Run.status == "finished")
                                          .order_by(Run.id))]
        exists = ids or conn.execute(select(Sweep.id).where(Sweep.id == sweep_id)).first() is not None
    if not exists:
        raise LookupError(f"{option}: sweep {sweep_id} not found in {describe_url(engine)}")
    if not ids:
        raise LookupError(f"{option}: sweep {sweep_id} has no finished runs")
    return ids


def _fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if metric == "slo_attainment" else f"{x:.4g}"


def ci_table(diffs: list[Any], title: str, confidence: float) -> Table:
    t = Table(title=title, header_style="bold")
    for col in ("metric", "A", "B", "B - A", f"{confidence:.0%} CI", "verdict"):
        t.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    covers = list(dict.fromkeys(d.covers for d in diffs if d.covers))
    for d in diffs:
        label = "SLO attainment" if d.metric == "slo_attainment" else f"{d.metric} {d.stat} (s)"
        if d.covers:
            label += " " + "*" * (covers.index(d.covers) + 1)
        if d.within_noise is None:
            verdict = "-"
        elif d.within_noise:
            verdict = "[dim]within noise[/]"
        else:
            verdict = "[bold]B higher[/]" if d.diff > 0 else "[bold]B lower[/]"
        ci = "-" if d.low is None else f"[{_fmt(d.low, d.metric)}, {_fmt(d.high, d.metric)}]"
        diff = "-" if d.diff is None else ("+" if d.diff >= 0 else "") + _fmt(d.diff, d.metric)
        t.add_row(label, _fmt(d.a, d.metric), _fmt(d.b, d.metric), diff, ci, verdict)
    t.caption = f"bootstrap over requests ({fmt_value(diffs[0].method) if diffs else '-'}); " \
                "within noise: the interval contains 0"
    for i, c in enumerate(covers, start=1):  # rows whose A, B and interval are over fewer requests than each run's
        t.caption += f"\n{'*' * i} A, B and the interval over {c} (paired)"
    return t
