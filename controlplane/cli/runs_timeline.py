"""A run's scale decisions as a timeline (`controlplane runs show RUN --timeline`), and where two
sequences of decisions differ: a run's active policy against its shadow (advisory) policies, or two
runs' policies against each other (`controlplane runs compare A B --decisions`)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, select

from controlplane.cli.common import fmt_value
from controlplane.cli.tables import TEXT, WHOLE, WORDS
from controlplane.storage.models import Decision
from controlplane.storage.queries import get_run

__all__ = ["TIMELINE_KINDS", "compare_decisions", "decision_comparisons", "decision_differences", "differences_table",
           "scale_decisions", "shortened_reason", "starting_replicas", "target_steps", "timeline_table"]

SCALE_ACTIONS = ("scale", "shadow_scale", "scale_unplaced", "scale_held")
ACTION_LABELS = {"scale": "scale", "shadow_scale": "shadow", "scale_unplaced": "unplaced", "scale_held": "held"}


def scale_decisions(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    """The run's scale decisions (active ``scale``, advisory ``shadow_scale``, ``scale_unplaced``: a
    replica a scale-up started that no device or worker slot was free for, and ``scale_held``: a target a
    shared rule such as the cooldown held back) in time order."""
    get_run(engine, run_id)
    d = Decision.__table__
    stmt = (select(d.c.time_s, d.c.plugin, d.c.action, d.c.subject, d.c.payload, d.c.reason, d.c.is_error)
            .where(d.c.run_id == run_id, d.c.hook == "cp_scale", d.c.action.in_(SCALE_ACTIONS))
            .order_by(d.c.time_s, d.c.id))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for r in rows:
        if isinstance(r["payload"], str):
            r["payload"] = json.loads(r["payload"])
        r["payload"] = r["payload"] or {}
    _unplaced_targets(rows)
    return rows


def _unplaced_targets(rows: list[dict[str, Any]]) -> None:
    """Give each ``scale_unplaced`` row the active target it leaves (``from`` -> ``from - 1``): a scale-up
    to 3 of which one replica found no slot put 2 to work, and the targets (the timeline, `runs compare
    --decisions`) follow what was placed. (A row before any ``scale`` of its model keeps no target.)"""
    last: dict[str, int] = {}
    for r in rows:
        model, p = r["subject"] or "-", r["payload"]
        if r["action"] == "scale" and "to" in p:
            last[model] = int(p["to"])
        elif r["action"] == "scale_unplaced" and model in last:
            r["payload"] = {**p, "from": last[model], "to": max(0, last[model] - 1)}
            last[model] = r["payload"]["to"]


def _clock(t: float) -> str:
    m, s = divmod(int(round(t)), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def _signals(signals: dict[str, Any] | None, limit: int) -> str:
    if not signals:
        return "-"
    items = [f"{k}={fmt_value(v)}" for k, v in signals.items()]
    return ", ".join(items[:limit]) + (f", +{len(items) - limit}" if len(items) > limit else "")


#: How much of a reason the timeline shows without ``--full``.
REASON_CHARS = 160
_CLAUSE = " | "


def shortened_reason(reason: str, limit: int = REASON_CHARS) -> str:
    """``reason`` in at most ``limit`` characters, ``...`` where it was cut. A reason of several clauses keeps its
    last whole and cuts the ones before it: the core's clause on a policy's reason says what became of the decision
    (a held scale-up's ``POLICY'S REASON | core: 3 -> 2 (unplaced: ...; the next one waits until 263.0s, 10.0s
    left)``), and cutting the end lost that, the reason's actionable part. A last clause too long to fit whole keeps
    its end (where a hold says until when) after the reason's start."""
    if len(reason) <= limit:
        return reason
    head, sep, last = reason.rpartition(_CLAUSE)
    if not sep:
        return reason[:limit - 3] + "..."
    room = limit - len(last) - len(sep) - 3  # what of the clauses before it fits, "..." after them
    if room >= 20:
        return head[:room] + "..." + sep + last
    start = 40
    return reason[:start - 3] + "..." + reason[-(limit - start):]


#: What of `timeline_table`'s columns a narrow terminal may wrap (`controlplane.cli.tables.fitted`): never the
#: time, clock, action, confidence, nor a target's numbers.
TIMELINE_KINDS = (WHOLE, WHOLE, TEXT, WHOLE, TEXT, WORDS, WHOLE, TEXT, TEXT)


def timeline_table(rows: list[dict[str, Any]], title: str, *, full: bool = False) -> Table:
    """One line per decision: when, which policy, active or shadow, from -> to, confidence, signals, reason."""
    t = Table(title=title, header_style="bold", show_lines=full)
    for col, kw in (("time (s)", {"justify": "right"}), ("clock", {}), ("policy", {}), ("action", {}),
                    ("model", {}), ("from -> to", {"justify": "right"}), ("confidence", {"justify": "right"}),
                    ("signals", {"overflow": "fold"}), ("reason", {"overflow": "fold"})):
        t.add_column(col, **kw)
    cut = False
    for r in rows:
        p = r["payload"]
        reason = r["reason"] or "-"
        if not full and len(reason) > REASON_CHARS:
            reason, cut = shortened_reason(reason), True
        cut = cut or (not full and len(p.get("signals") or {}) > 4)
        target = f"{p.get('from', '?')} -> {p.get('to', '?')}" if "to" in p or r["action"] != "scale_unplaced" else "-"
        if r["action"] == "shadow_scale" and "active_to" in p:
            target += f" (active {p['active_to']})"
        elif r["action"] == "scale_held" and "wanted" in p:
            target += f" (wanted {p['wanted']})"
        t.add_row(f"{r['time_s']:.1f}", _clock(r["time_s"]), r["plugin"],
                  ACTION_LABELS.get(r["action"], r["action"]), r["subject"] or "-", target,
                  fmt_value(p.get("confidence")), _signals(p.get("signals"), 99 if full else 4),
                  Text(reason))  # (text, not markup: "[slope +0.045/s²]" was dropped as a style tag)
    if not rows:
        t.add_row("-", "-", "-", "-", "-", "-", "-", "-", "no scale decisions recorded")
    if cut:
        t.caption = (f"reasons cut at {REASON_CHARS} characters (a reason's last clause, the core's, kept whole) and "
                     "signals at 4 (+N: how many more): --full shows them whole")
    return t


def target_steps(rows: list[dict[str, Any]], *, action: str = "scale", plugin: str | None = None,
                 start: dict[str, int] | None = None) -> dict[str, list[tuple[float, int]]]:
    """Per model, the target replica count over time, (time, target) at each change. `start`, the run's
    starting count per model, opens each model's sequence (a model never scaled stays at it throughout);
    without it a model's first decision's ``from`` does. The active targets (``scale``) follow what was
    placed: a replica no slot was free for (``scale_unplaced``) takes its scale-up's target one down from the
    scale-up on (its step is rewritten, not followed by another: a count never placed is no target, not even for
    the milliseconds until the pool said so)."""
    steps: dict[str, list[tuple[float, int]]] = {model: [(float("-inf"), int(count))]
                                                 for model, count in (start or {}).items()}
    for r in rows:
        placed = action == "scale" and r["action"] == "scale_unplaced" and "to" in r["payload"]
        if (r["action"] != action and not placed) or (plugin is not None and r["plugin"] != plugin):
            continue
        model = r["subject"] or "-"
        seq = steps.setdefault(model, [])
        if placed and seq and seq[-1][0] != float("-inf"):  # (its scale-up's step, the model's last)
            seq[-1] = (seq[-1][0], int(r["payload"]["to"]))
            continue
        if not seq and "from" in r["payload"]:
            seq.append((float("-inf"), int(r["payload"]["from"])))
        seq.append((float(r["time_s"]), int(r["payload"]["to"])))
    return steps


def starting_replicas(engine: Engine, run_id: int) -> dict[str, int]:
    """The run's starting replica count per model, from its stored config (empty when not stored)."""
    config = get_run(engine, run_id).get("config")
    models = ((config.get("cluster") or {}).get("models") or []) if isinstance(config, dict) else []
    return {m["name"]: int(m.get("replicas", 1)) for m in models if isinstance(m, dict) and "name" in m}


def _at(seq: list[tuple[float, int]], t: float) -> int | None:
    value = None
    for when, target in seq:
        if when > t:
            break
        value = target
    return value


def decision_differences(a: dict[str, list[tuple[float, int]]], b: dict[str, list[tuple[float, int]]],
                         end_s: float | None = None) -> list[dict[str, Any]]:
    """Intervals where two target sequences disagree: model, start, end (None: to the end), a, b;
    up to ``end_s`` when given (the earlier end of two runs: a run's last target does not go on
    after it ended)."""
    out: list[dict[str, Any]] = []
    for model in sorted(set(a) | set(b)):
        sa, sb = a.get(model, []), b.get(model, [])
        if not sa or not sb:  # a model one run does not serve: its targets' range against "not served"
            targets = sorted({v for _, v in sa or sb})
            served = f"{targets[0]}" if len(targets) == 1 else f"{targets[0]}-{targets[-1]}"
            out.append({"model": model, "start_s": 0.0, "end_s": end_s, "a": served if sa else "not served",
                        "b": served if sb else "not served"})
            continue
        times = sorted({t for t, _ in sa} | {t for t, _ in sb} | ({end_s} if end_s is not None else set()))
        if end_s is not None:
            times = [t for t in times if t <= end_s]
        current: dict[str, Any] | None = None
        for t in times:
            va, vb = _at(sa, t), _at(sb, t)
            if t == end_s:  # (the comparison ends here)
                va = vb = None
            if va != vb and va is not None and vb is not None:
                if current is None or (current["a"], current["b"]) != (va, vb):
                    if current is not None:
                        current["end_s"] = t
                        out.append(current)
                    current = {"model": model, "start_s": max(t, 0.0), "end_s": None, "a": va, "b": vb}
            elif current is not None:
                current["end_s"] = t
                out.append(current)
                current = None
        if current is not None:
            out.append(current)
    return out


def differences_table(diffs: list[dict[str, Any]], title: str, label_a: str, label_b: str) -> Table:
    t = Table(title=title, header_style="bold")
    for col in ("model", "from (s)", "to (s)", "clock", label_a, label_b):
        t.add_column(col, justify="right" if col not in ("model", "clock") else "left")
    for d in diffs:
        end = "end" if d["end_s"] is None else f"{d['end_s']:.0f}"
        t.add_row(d["model"], f"{d['start_s']:.0f}", end, _clock(d["start_s"]), str(d["a"]), str(d["b"]))
    if not diffs:
        t.add_row("-", "-", "-", "-", "-", "the same targets throughout")
    return t


def _end_s(engine: Engine, run_id: int) -> float | None:
    """The simulated (or live) second a run ended at (its row's ``sim_end_s``)."""
    from controlplane.storage import get_run

    run = get_run(engine, run_id)
    return run.get("sim_end_s") if run else None


def decision_comparisons(engine: Engine, run_a: int, run_b: int) -> list[dict[str, Any]]:
    """What `runs compare A B --decisions` compares, as data (its ``--json``): A's active targets against B's
    (``{"kind": "runs", "a": A, "b": B, "up_to_s": the shorter run's end or None, "differences": [...]}``),
    then each shadow policy of either run against that run's active one (``{"kind": "shadow", "run": R,
    "shadow": plugin, "differences": [...]}``); each difference as `decision_differences` gives it."""
    rows_a, rows_b = scale_decisions(engine, run_a), scale_decisions(engine, run_b)
    start = {run_a: starting_replicas(engine, run_a), run_b: starting_replicas(engine, run_b)}
    steps_a, steps_b = target_steps(rows_a, start=start[run_a]), target_steps(rows_b, start=start[run_b])
    ends = {run_id: _end_s(engine, run_id) for run_id in (run_a, run_b)}
    known = [e for e in ends.values() if e is not None]
    first_end = min(known) if len(known) == 2 and ends[run_a] != ends[run_b] else None
    found = [{"kind": "runs", "a": run_a, "b": run_b, "up_to_s": first_end,
              "shorter": (run_a if ends[run_a] == first_end else run_b) if first_end is not None else None,
              "differences": decision_differences(steps_a, steps_b, first_end)}]
    for run_id, rows in ((run_a, rows_a), (run_b, rows_b)):
        active = target_steps(rows, start=start[run_id])
        for shadow in sorted({r["plugin"] for r in rows if r["action"] == "shadow_scale"}):
            shadow_steps = target_steps(rows, action="shadow_scale", plugin=shadow, start=start[run_id])
            found.append({"kind": "shadow", "run": run_id, "shadow": shadow,
                          "differences": decision_differences(active, shadow_steps)})
    return found


def compare_decisions(engine: Engine, run_a: int, run_b: int) -> list[Table]:
    """Tables for `runs compare A B --decisions`: A's active policy against B's, then each shadow
    policy of either run against that run's active one (`decision_comparisons`)."""
    tables = []
    for c in decision_comparisons(engine, run_a, run_b):
        if c["kind"] == "runs":
            title = f"scale targets: run {run_a} vs run {run_b} (where they differ)"
            if c["up_to_s"] is not None:  # (the shorter run's last target does not go on after it ended)
                title += f", up to {c['up_to_s']:.0f} s, when run {c['shorter']} ended"
            tables.append(differences_table(c["differences"], title, f"run {run_a}", f"run {run_b}"))
        else:
            tables.append(differences_table(c["differences"], f"run {c['run']}: active vs shadow {c['shadow']} "
                                            "(where they differ)", "active", c["shadow"]))
    return tables
