"""Self-contained HTML reports: inline CSS, PNGs as data URIs, a few lines of inline JS to sort
tables. Nothing is fetched from a network."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from controlplane.output_file import check_folder, check_not_read, database_files, replaced_on_success
from controlplane.report import plots
from controlplane.report.configs import configurations, point_id, search_aggregated_runs, split_by_seeds
from controlplane.report.cost import cost_unit, run_cost, unknown_cost_reason
from controlplane.report.data import load_run, load_sweep
from controlplane.report.pareto import pareto_front
from controlplane.report.summary import by_gpu_table, by_model_table, other_rows, shown_rows

__all__ = ["run_report", "sweep_report", "write_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}img{max-width:100%;display:block;margin:8px 0}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#aaa}
.muted{color:#777;font-size:13px}.err{color:#b00}table.errors td{white-space:pre-wrap;vertical-align:top}
"""

# Click a header to sort by that column (numbers numerically), again to reverse.
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
    var b=t.tBodies[0],rows=Array.from(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
    rows.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,c=y.cells[i].dataset.v||y.cells[i].textContent;
      var na=parseFloat(a),nc=parseFloat(c);var r=(isNaN(na)||isNaN(nc))?a.localeCompare(c):na-nc;return asc?r:-r;});
    rows.forEach(function(r){b.appendChild(r);});});});});
"""


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _range(low: float | None, high: float | None) -> str:
    """A seeds' spread: ``low - high``, or the one value when they agree."""
    if low is None or high is None:
        return "-"
    return _fmt(low) if low == high else f"{_fmt(low)} - {_fmt(high)}"


def _table(headers: list[str], rows: list[list[Any]], *, sortable: bool = False, left: int = 1,
           cls: str = "") -> str:
    cls = ' class="sortable"' if sortable else (f' class="{cls}"' if cls else "")
    head = "".join(f'<th class="l">{html.escape(h)}</th>' if i < left else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            num = f' data-v="{v}"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            klass = ' class="l"' if i < left else ""
            cells.append(f"<td{klass}{num}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}<script>{SORT_JS}</script></body></html>")


def run_report(engine: Engine, run_id: int) -> str:
    """One run's page: summary, latency CDFs, per-minute throughput and latency, replicas and
    queue over time, the decision timeline and the rare decisions with their reasons."""
    data = load_run(engine, run_id)
    run = data.run
    summary = run.get("summary") or {}
    parts = [f"<h1>run {run_id} {html.escape(run.get('name') or '')}</h1>",
             f'<p class="muted">mode {run["mode"]}, status {run["status"]}, seed {run.get("seed")}, '
             f'trace {html.escape(str(run.get("trace")))}; {data.arrival.size} requests stored</p>',
             "<h2>summary</h2>",
             _table(["metric", "value"], shown_rows(summary, run.get("mode")))]
    for title, table in (("by model", by_model_table(summary)),
                         ("GPU time by GPU type", by_gpu_table(summary, run.get("config") or {}))):
        if table is not None:
            parts += [f"<h3>{title}</h3>", _table(*table)]
    if other := other_rows(summary):  # (plugin figures, means, token counts: under their summary keys)
        parts += [f"<details><summary>other summary figures ({len(other)})</summary>",
                  _table(["summary key", "value"], other), "</details>"]
    cost = run_cost(run.get("config") or {}, summary)
    if cost is not None:
        parts.append(f'<p class="muted">cost {cost:.4g} {cost_unit()}</p>')
    elif why := unknown_cost_reason(run.get("config") or {}, summary):
        parts.append(f'<p class="muted">cost not known: {html.escape(why)}</p>')
    parts += ["<h2>latency CDFs</h2>", _img(plots.latency_cdfs(data), "latency CDFs"),
              "<h2>per minute</h2>", _img(plots.per_minute(data), "throughput and latency per minute"),
              "<h2>replicas and queue</h2>", _img(plots.replicas_and_queue(data), "replicas and queue over time"),
              "<h2>decisions</h2>", _img(plots.timeline(data), "decision timeline"),
              _table(["hook", "plugin", "action", "count", "errors"],
                     [[c["hook"], c["plugin"], c["action"], c["count"], c["errors"]] for c in data.decision_counts],
                     sortable=True, left=3)]
    if data.notable:
        parts += [f"<details><summary>rare decisions and plugin errors, with their reasons ({len(data.notable)})"
                  "</summary>",
                  _table(["time (s)", "hook", "plugin", "subject", "action", "reason"],
                         [[n["time_s"], n["hook"], n["plugin"], n["subject"], n["action"], n["reason"]]
                          for n in data.notable], sortable=True, left=0), "</details>"]
    return _page(f"run {run_id}", "".join(parts))


def sweep_report(engine: Engine, sweep_id: int) -> str:
    """A sweep's (or search's) page: the Pareto front of cost against attainment, a sortable table."""
    data = load_sweep(engine, sweep_id)
    sweep = data.sweep
    unit = cost_unit()
    result = sweep.get("result") or {}
    full = [r for r in data.runs if r.get("stage") in (None, "full", "confirm")]
    # (a search's candidate over the seeds its `best` is: the confirmation's, not the selection seed's run too)
    aggregated = search_aggregated_runs(full, result) if sweep["kind"] == "search" else full
    configs = configurations(aggregated, lambda r: run_cost(r["config"] or {}, r["summary"] or {}))
    seeds = (sweep.get("spec") or {}).get("seeds") if sweep["kind"] != "search" else None
    configs, partial = split_by_seeds(configs, seeds)  # (a point missing seeds: its minimum is not the point's)
    front = pareto_front(configs)
    on_front = {point_id(c["overrides"]) for c in front}
    keys = sorted({k for r in data.runs for k in r["overrides"]})
    rows = []
    for r in full:
        s = r["summary"] or {}
        rows.append([r["id"], r["seed"], r.get("stage") or "-", *(_fmt(r["overrides"].get(k)) for k in keys),
                     run_cost(r["config"] or {}, s), s.get("slo_attainment"), s.get("ttft_p99_s"), s.get("tpot_p99_s"),
                     s.get("e2e_p50_s"), s.get("throughput_rps"), point_id(r["overrides"]) in on_front])
    parts = [f"<h1>{html.escape(sweep['kind'])} {sweep_id} {html.escape(sweep.get('name') or '')}</h1>",
             f'<p class="muted">status {sweep["status"]}, {len(data.runs)} runs stored'
             + (f', <span class="err">{len(data.failed)} failed</span>' if data.failed else "")
             + f', trace {html.escape(str(sweep.get("trace")))}; cost in {unit}</p>']
    if data.failed:  # (the points that did not run, and why: a resumed sweep runs them again)
        parts += [f'<h2 class="err">failed runs ({len(data.failed)})</h2>',
                  '<p class="muted">stored failed, with their errors; running the same spec again runs them again</p>',
                  _table(["run", "seed", "overrides", "error"],
                         [[r["id"], r["seed"], json.dumps(r["overrides"], sort_keys=True),
                           (r["summary"] or {}).get("error") or "-"] for r in data.failed], left=4, cls="errors")]
    if result.get("best") is not None:
        best = result["best"]
        parts.append(f"<p><b>best</b>: {html.escape(json.dumps(best['overrides'], sort_keys=True))}, cost "
                     f"{_fmt(best['cost'])}, attainment {_fmt(best['attainment'])} over seeds "
                     f"{html.escape(', '.join(best.get('attainment_by_seed', {})))}; "
                     f"{result.get('candidates')} candidates, {result.get('runs')} runs, {result.get('wall_s')} s</p>")
    elif sweep["kind"] == "search" and "candidates" in result:  # (a search that ended with no winner)
        failed = len(result.get("failed") or [])
        parts.append(f"<p><b>no candidate met the target</b> (SLO attainment {_fmt(result.get('target'))}): "
                     f"{result.get('candidates')} candidates" + (f" ({failed} failed)" if failed else "")
                     + f", {result.get('runs')} runs, {result.get('wall_s')} s</p>")
    if unpriced := _unknown_costs(full):
        parts.append(f'<p class="muted">cost not known (shown <code>-</code>, kept off the Pareto front) for '
                     f'{html.escape(unpriced)}</p>')
    if not configs and not partial:  # (a search killed while screening, a sweep stopped before its first run: nothing to plot)
        parts.append(f"<p><b>no run of the full trace is stored</b> for this {html.escape(sweep['kind'])} (status "
                     f"{html.escape(str(sweep['status']))}): no Pareto front and no table.</p>")
        return _page(f"sweep {sweep_id}", "".join(parts))
    parts += ["<h2>Pareto front</h2>",
              '<p class="muted">one point per configuration, over its seeds as <code>sim search</code> confirms a '
              "candidate: its SLO attainment the minimum over its seeds (it must hold on every seed), its cost the "
              "mean; the bars span its seeds' values"
              + ("; a search's confirmed candidate over its confirmation seeds, as its <b>best</b> (its selection "
                 "run too only where that seed confirms), another over its selection run"
                 if sweep["kind"] == "search" else "") + "</p>",
              _img(plots.pareto_plot(configs, front, unit, result.get("target")), "Pareto front"),
              _table(["configuration", "runs", "seeds", "cost (mean)", "cost range", "attainment (min)",
                      "attainment range"],
                     [[json.dumps(c["overrides"], sort_keys=True), ", ".join(map(str, c["runs"])),
                       ", ".join(map(str, c["seeds"])), c["cost"], _range(c["cost_low"], c["cost_high"]),
                       c["attainment"], _range(c["attainment_low"], c["attainment_high"])] for c in front], left=1),
              *_partial_table(partial, seeds),
              "<h2>runs</h2><p class=\"muted\">click a column to sort</p>",
              _table(["run", "seed", "stage", *keys, "cost", "attainment", "ttft p99 (s)", "tpot p99 (s)",
                      "e2e p50 (s)", "throughput (req/s)", "configuration on front"], rows, sortable=True, left=0)]
    return _page(f"sweep {sweep_id}", "".join(parts))


def _partial_table(partial: list[dict[str, Any]], seeds: list[int] | None) -> list[str]:
    """The configurations missing some of the sweep's seeds (interrupted, or a run failed), kept off the front."""
    if not partial:
        return []
    return [f'<h3>configurations missing seeds ({len(partial)}), kept off the front</h3>',
            '<p class="muted">only some of their seeds finished (the sweep was interrupted, or a run failed): the '
            "minimum over those is not the configuration's; resume the sweep to run the rest</p>",
            _table(["configuration", "runs", "seeds", "cost (mean)", "attainment (min of those)"],
                   [[json.dumps(c["overrides"], sort_keys=True), ", ".join(map(str, c["runs"])),
                     f"{len(c['seeds'])} of {len(seeds or [])} seeds ({', '.join(map(str, c['seeds']))}; missing "
                     f"{', '.join(map(str, c['missing_seeds']))})", c["cost"], c["attainment"]] for c in partial],
                   left=3)]


def _unknown_costs(runs: list[dict[str, Any]]) -> str:
    """The runs whose cost is not known, by reason: ``runs 1, 3: no price for GPU 'x': set ...``."""
    by_reason: dict[str, list[int]] = {}
    for r in runs:
        if why := unknown_cost_reason(r["config"] or {}, r["summary"] or {}):
            by_reason.setdefault(why, []).append(r["id"])
    return "; ".join(f"run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: {why}"
                     for why, ids in by_reason.items())


def write_report(engine: Engine, path: str | Path, *, run_id: int | None = None, sweep_id: int | None = None,
                 option: str | None = None) -> Path:
    """Write a run's or a sweep's report to ``path``; return it. ``path`` is never the SQLite database
    ``engine`` reads (an error, ``option`` naming the setting that gave it), and is replaced only by a
    complete report (`controlplane.output_file`)."""
    if (run_id is None) == (sweep_id is None):
        raise ValueError("give a run or a sweep")
    out = Path(path)
    reads = database_files(engine)
    check_not_read(out, reads, option=option)  # (before the report is made)
    check_folder(out)  # (a missing folder is refused, as runs export -o refuses it: no folders made)
    page = run_report(engine, run_id) if run_id is not None else sweep_report(engine, sweep_id)
    with replaced_on_success(out, reads=reads, option=option) as partial:
        partial.write_text(page, encoding="utf-8")
    return out
