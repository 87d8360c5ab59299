"""The tables `controlplane sim sweep` prints: a run a row, the overrides that tell its point from
the others, then its metrics (attainment, TTFT and TPOT p99, GPU-hours, cost); and, where a point ran
under several seeds, a point a row over its seeds (`points_table`). No terminal width cuts the metrics:
an override's value wraps instead, and a key with one value in every run is said once, in the caption.
A terminal too narrow for a row gets a key and value a line instead."""

from __future__ import annotations

import re
from typing import Any

from controlplane.cli.common import fmt_value

__all__ = ["points_table", "short_names", "sweep_table"]


def sweep_table(runs: list[dict], title: str, width: int | None = None) -> Any:
    """The runs of a sweep, one a row: the overrides that differ, attainment, p99s, GPU-hours and
    cost (USD, from the run's summary). With the terminal's ``width``, a table wider than it wraps
    its headers and the overrides' values; the metrics are never cut."""
    guarded = any("guardian_gpu_hours" in (r["summary"] or {}) for r in runs)  # guardians hold GPUs too
    priced = not guarded and any("cost_usd" in (r["summary"] or {}) for r in runs)
    metrics = []
    for r in runs:
        s = r["summary"] or {}
        # (4 significant figures as the other metrics: 0.1289 and 0.1261 GPU-hours both read 0.13 at 2 decimals)
        gpu_h = None if s.get("gpu_seconds") is None else float(s["gpu_seconds"]) / 3600
        metrics.append((fmt_value(s.get("slo_attainment")), fmt_value(s.get("ttft_p99_s")),
                        fmt_value(s.get("tpot_p99_s")), fmt_value(gpu_h),
                        *((fmt_value(s.get("cost_usd")),) if priced else ()),
                        *((fmt_value(float(s.get("guardian_gpu_hours") or 0)), fmt_value(s.get("total_cost_usd")))
                          if guarded else ())))
    columns = ("attainment", "ttft p99 (s)", "tpot p99 (s)", "gpu-h", *(("cost (USD)",) if priced else ()),
               *(("guardian gpu-h", "total cost (USD)") if guarded else ()))
    return _overrides_table(title, [r["overrides"] for r in runs], ("run", "seed"),
                            [(str(r["id"]), str(r["seed"])) for r in runs], columns, metrics, width)


def points_table(points: list[dict], title: str, width: int | None = None) -> Any:
    """A sweep's points over their seeds (`sim.sweep.points.point_aggregates`), one a row: the overrides that
    differ, how many seeds finished, the attainment's mean, minimum and SD (``-`` with one seed), the mean
    GPU-hours and the mean cost (USD; with guardians, the total). Folded as `sweep_table` is."""
    priced = any(p["cost_usd_mean"] is not None for p in points)
    metrics = [(fmt_value(p["attainment_mean"]), fmt_value(p["attainment_min"]), fmt_value(p["attainment_sd"]),
                fmt_value(p["gpu_hours_mean"]), *((fmt_value(p["cost_usd_mean"]),) if priced else ()))
               for p in points]
    columns = ("attainment mean", "attainment min", "attainment sd", "gpu-h mean",
               *(("cost mean (USD)",) if priced else ()))
    return _overrides_table(title, [p["overrides"] for p in points], ("seeds",), [(str(p["n"]),) for p in points],
                            columns, metrics, width)


def _overrides_table(title: str, overrides: list[dict], lead: tuple[str, ...], lead_cells: list[tuple[str, ...]],
                     columns: tuple[str, ...], cells: list[tuple[str, ...]], width: int | None) -> Any:
    """A row per item: its ``lead`` cells, the overrides that tell it from the others (a key of one value
    everywhere said once, in the caption), then its metrics' ``cells``; fitted into ``width`` (`_fit`), else
    a key and value a line (`_vertical`)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    keys = sorted({k for o in overrides for k in o})
    values = {k: [o.get(k) for o in overrides] for k in keys}
    same = [k for k in keys if len(overrides) > 1 and all(v == values[k][0] for v in values[k])]
    varied = [k for k in keys if k not in same]
    names = short_names(varied)
    legend = "; ".join(f"{names[k]} = {k}" for k in varied if names[k] != k)
    if same:  # (a column of one value says nothing: said once)
        legend += ("; " if legend else "") + "in every run: " + "; ".join(f"{k} = {_text(values[k][0])}" for k in same)
    # (no column rules, one space of padding between columns: an 80-column terminal needs them for the values)
    t = Table(title=title, header_style="bold", caption=Text(legend) if legend else None, box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True)
    shown = {k: _differences(values[k]) for k in varied}
    rows = [(*lead_cells[i], *(shown[k][i] for k in varied), *cells[i]) for i in range(len(overrides))]
    all_columns = (*lead, *(names[k] for k in varied), *columns)
    for col in all_columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(Text(cell) for cell in row))  # (a value's brackets are not markup)
    if width is not None and not _fit(t, rows, all_columns, range(len(lead), len(lead) + len(varied)), width):
        return _vertical(title, rows, all_columns, t.caption)
    return t


def _vertical(title: str, rows: list[tuple[str, ...]], columns: tuple[str, ...], caption: Any) -> Any:
    """The runs one key and value a line, a run after the other (a terminal too narrow for a run a row:
    no column is dropped and no number cut). The keys are whole; a long value folds onto the next lines."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, show_header=False, caption=caption, box=box.SIMPLE, pad_edge=False,
              collapse_padding=True)
    t.add_column("key", style="bold", no_wrap=True, min_width=max(len(c) for c in columns))
    t.add_column("value", overflow="fold")
    for i, row in enumerate(rows):
        for j, (column, cell) in enumerate(zip(columns, row)):
            t.add_row(column, Text(cell), end_section=j == len(row) - 1 and i < len(rows) - 1)
    return t


def _fit(t: Any, rows: list[tuple[str, ...]], columns: tuple[str, ...], overrides: range, width: int) -> bool:
    """Fit the table ``t`` into ``width`` when it is wider: every column but the overrides' as wide as
    its widest value (its header wraps between words), the overrides' values folded into what is
    left, the widest first, each at least as wide as its header's longest word (a header wraps
    between words or after a dot of a dotted key, never inside a word); where the overrides have
    not that much room, at least 3 characters, their headers folded too. False where even that is
    wider than ``width`` (a value would be cut or a column dropped: `_vertical` then)."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=max(width, 1000), height=25)  # (with a height: a dumb terminal's console is 80 wide else)
    caption, t.caption = t.caption, None  # (measured without its caption, which wraps in any width)
    try:
        if Measurement.get(console, console.options, t).maximum <= width:
            return True
        longest_word = [max(len(w) for w in _header_words(column)) for column in columns]
        widths = [max([len(row[j]) for row in rows] + [longest_word[j]]) for j in range(len(columns))]
        natural = {j: max([len(row[j]) for row in rows] + [len(columns[j])]) for j in overrides}
        for j, column in enumerate(t.columns):
            column.min_width = column.max_width = widths[j]
        chrome = Measurement.get(console, console.options, t).maximum - sum(widths)  # (edges, padding, rules)
        room = width - chrome - sum(w for j, w in enumerate(widths) if j not in overrides)
        narrowest = {j: min(natural[j], max(longest_word[j], 3)) for j in overrides}
        whole_words = sum(narrowest.values()) <= room
        if not whole_words:
            narrowest = {j: min(natural[j], 3) for j in overrides}

        def capped(j: int, cap: int) -> int:
            return max(narrowest[j], min(natural[j], cap))

        cap = max(natural.values(), default=0)
        while cap > 3 and sum(capped(j, cap) for j in overrides) > room:
            cap -= 1
        for j in overrides:
            t.columns[j].overflow = "fold"
            t.columns[j].min_width = t.columns[j].max_width = capped(j, cap)
            if whole_words:
                t.columns[j].header = _wrapped_header(columns[j], capped(j, cap))
        return Measurement.get(console, console.options, t).maximum <= width
    finally:
        t.caption = caption


def _header_words(header: str) -> list[str]:
    """Where a header may wrap: between its words, and after each dot of a dotted key
    (``latency.gpu`` -> ``latency.``, ``gpu``)."""
    return [w for w in re.split(r"(?<=\.)|\s+", header) if w]


def _wrapped_header(header: str, width: int) -> str:
    """``header`` in lines of at most ``width`` characters, broken only where `_header_words` allows (Rich
    itself would break a dotted key inside a word: ``latenc`` over ``y.gpu``)."""
    lines: list[str] = []
    for word in _header_words(header):
        glue = "" if not lines or lines[-1].endswith(".") else " "
        if lines and len(lines[-1]) + len(glue) + len(word) <= width:
            lines[-1] += glue + word
        else:
            lines.append(word)
    return "\n".join(lines)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's column name: its last part, with as many parts before it as make it unique
    (``cluster.models.0.replicas`` -> ``replicas``), so that the table's values, not its keys, get
    the width of the terminal; the table's caption gives the full keys."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if not any(other != key and (other == name or other.endswith(f".{name}")) for other in keys):
                break
        out[key] = name
    return out


def _text(v: Any) -> str:
    """A value as the caption says it: a list's items without quotes (``[queue-limit, least-loaded]``)."""
    if isinstance(v, list):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return fmt_value(v)


def _differences(values: list[Any]) -> list[str]:
    """One column's cells. Where every value is a list (``plugins.enabled``), each cell shows only
    the items not common to all of them (the router that differs, not six plugin names a row)."""
    if len(values) < 2 or not all(isinstance(v, list) for v in values):
        return [_text(v) for v in values]
    common = set.intersection(*(set(map(str, v)) for v in values))
    if all(set(map(str, v)) == common for v in values):
        return [_text(v) for v in values]
    return [", ".join(str(x) for x in v if str(x) not in common) or "-" for v in values]
