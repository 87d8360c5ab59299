"""Render run summaries as rich tables: one run, or two side by side with deltas."""

from __future__ import annotations

from typing import Any

from controlplane.cli.common import fmt_value
from controlplane.metrics import LATENCY_METRICS, PERCENTILES

HEADLINE = [
    ("num_requests", "requests"),
    ("num_completed", "completed"),
    ("num_rejected", "rejected"),
    ("num_failed", "failed"),
    ("num_in_flight", "in flight at end"),
    ("num_cancelled", "cancelled (client gone, or past the request timeout)"),
    ("num_blocked", "blocked by guardians"),
    ("guardian_blocks_after_reply", "  answered, then blocked after the reply (retracted; counted completed)"),
]
TAIL = [
    ("sim_span_s", "span: first arrival to end (s)"),  # (what the rates below are per; the simulated time is more
    ("throughput_rps", "throughput (req/s over the span)"),  # when the trace's first request comes late)
    ("output_tokens_per_s", "output tokens/s (completed requests, over the span)"),
    ("slo_attainment", "SLO attainment"),
    ("goodput_rps", "goodput (req/s over the span)"),
    ("gpu_seconds", "GPU-seconds"),
    ("gpu_busy_seconds", "GPU-seconds executing batches"),
    ("guardian_gpu_seconds", "guardian GPU-seconds (busy)"),
    ("guardian_busy_s", "guardian busy seconds (any device)"),
    ("peak_replicas", "replicas (peak)"),
    ("gpu_hours", "GPU-hours"),
    ("cost_usd", "cost (USD)"),
    ("cost_per_1k_requests_usd", "cost per 1,000 completed requests (USD)"),
    ("guardian_held_gpu_seconds", "guardian GPU-seconds held"),
    ("guardian_gpu_hours", "guardian GPU-hours (held)"),
    ("guardian_cost_usd", "guardian cost (USD)"),
    ("total_cost_usd", "total cost, models + guardians (USD)"),
    ("cache_hit_rate", "response cache hit rate"),
    ("cache_false_hit_rate", "cache false-hit rate (where known)"),
    ("cache_gpu_seconds_saved", "GPU-seconds saved by cache hits (est., batched)"),
    ("cache_gpu_seconds_saved_upper", "  at most (hits computed one at a time)"),
    ("cache_store_outages", "cache store (Redis) outages"),
    ("cache_store_down_s", "  seconds down (caches served misses)"),
    ("prefix_token_hit_ratio", "prefix cache: share of prompt tokens reused"),
    ("prefix_hits", "prefix cache: lookups with a hit"),
    ("num_preemptions", "preemptions"),
    ("num_scale_events", "scale events"),
    ("num_plugin_errors", "plugin errors"),
    ("sim_end_s", "simulated time (s)"),
    ("wall_s", "wall time (s)"),
]

#: Each guardian's own figures (the summary's ``guardians.NAME``), rows under its name where it has them
#: (the simulator's and the daemon's differ: mean_wait_s is the simulator's, errors and workers the daemon's).
GUARDIAN_FIGURES = (
    ("checks", "checks"),
    # checks asked, whatever their end (a timeout too): "checked" is a verdict got (docs/guardians.md), the share's
    ("checks_input", "prompt checks asked"),
    ("checks_output", "answer checks asked"),
    ("answers_checked_share", "share of answers checked"),
    ("timeouts", "timeouts"),
    ("cut_off", "checks cut off at --until"),
    ("errors", "errors"),
    ("mean_wait_s", "mean wait in its queue (s)"),
    ("busy_s", "busy seconds"),
    ("worker_failures", "worker failures"),
    ("restarts", "worker restarts"),
)
#: A guardian planner's sampling (the summary's ``guardian_sampling.PLUGIN``).
SAMPLING_FIGURES = (("prompts_checked_share", "share of prompts checked"),
                    ("prompts_served_without_verdict", "prompts served without a verdict"),
                    ("answers_checked_share", "share of answers checked"),
                    ("answers_served_without_verdict", "answers served without a verdict"))
_ABSENT = object()

#: Reasons shown in a summary table, most frequent first; the rest are one row. The summary groups
#: reasons by their text before the first ':', so a plugin whose reasons carry numbers without such a
#: prefix ("prompt of 6607 tokens > 1500") would otherwise print one row per distinct number.
MAX_REASON_ROWS = 10


def summary_rows() -> list[tuple[str, str]]:
    rows = list(HEADLINE)
    for m in LATENCY_METRICS:
        for p in PERCENTILES:
            rows.append((f"{m}_p{p}_s", f"{m.upper()} p{p} (s)"))
    return rows + TAIL


#: The row of a run's end (``sim_end_s``): simulated seconds in the simulator, the run's own clock (wall time
#: from its start) in a live run, which read "simulated time" just above its wall time.
END_LABELS = {"sim": "simulated time (s)", "live": "run time (s)"}


def end_label(*modes: str | None) -> str:
    """The ``sim_end_s`` row's label for runs of these modes (None: a simulated run), each column's where
    they differ (``run time (s): simulated | live``)."""
    kinds = ["live" if m == "live" else "sim" for m in modes]
    if len(set(kinds)) == 1:
        return END_LABELS[kinds[0]]
    return "run time (s): " + " | ".join("live" if k == "live" else "simulated" for k in kinds)


def shown_value(summary: dict[str, Any], key: str) -> Any:
    """``summary[key]`` as a table shows it: the span "from the first arrival" of a run where none arrived is
    None ("-"), not the seconds it lasted (its GPU-seconds count those: a warm replica held for them)."""
    if key == "sim_span_s" and summary.get("num_requests") == 0:
        return None
    return summary.get(key)


def slo_targets_text(targets: dict[str, Any]) -> str:
    """``TTFT <= 2 s, TPOT <= 0.1 s`` of a summary's ``slo_targets``."""
    return ", ".join(f"{k.removesuffix('_s').upper()} <= {v:g} s" for k, v in targets.items() if v is not None)


def summary_table(summary: dict[str, Any], title: str, *, mode: str | None = None) -> Any:
    """A rich ``Table`` of one run's summary; ``mode``: the run's (``live``: its end is no simulated time)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key, label in summary_rows():
        if key in summary:
            if key == "slo_attainment" and summary.get("slo_targets"):
                label += f" ({slo_targets_text(summary['slo_targets'])})"
            elif key == "sim_end_s":
                label = end_label(mode)
            t.add_row(label, fmt_value(shown_value(summary, key)))
    for label, (value,) in guardian_rows(summary):
        t.add_row(label, fmt_value(value))
    for key, label in (("cost_error", "cost not known"), ("guardian_cost_error", "guardian cost not known")):
        if summary.get(key):  # (the cost rows read "-": why, where the table shows it)
            t.add_row(label, Text(str(summary[key])))
    for label, n in reason_rows(summary.get("reject_reasons") or {}, summary.get("run_id")):
        # (rejected, failed or cancelled: each reason's requests; a reason as written, not markup)
        t.add_row(Text(f"  not completed: {label}"), str(n))
    return t


def reason_rows(reasons: dict[str, int], run_id: int | None = None,
                limit: int = MAX_REASON_ROWS) -> list[tuple[str, int]]:
    """``reasons`` (text -> requests) as table rows: the ``limit`` most frequent (ties in text order),
    then one row counting the other reasons and their requests, saying where each request's is."""
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = ranked[:limit]
    rest = ranked[limit:]
    if rest:
        run = run_id if run_id is not None else "RUN"
        noun = "reason" if len(rest) == 1 else "reasons"
        rows.append((f"{len(rest)} other {noun} (each request's: controlplane runs export {run} --what requests)",
                     sum(n for _, n in rest)))
    return rows


def compare_table(a: dict[str, Any], b: dict[str, Any], title_a: str, title_b: str,
                  modes: tuple[str | None, ...] = (None, None)) -> Any:
    """A rich ``Table`` of two runs' summaries side by side, with deltas; ``modes``: the runs' (`summary_table`)."""
    from rich.table import Table

    t = Table(title=f"{title_a} vs {title_b}", header_style="bold")
    t.add_column("metric")
    t.add_column(title_a, justify="right")
    t.add_column(title_b, justify="right")
    t.add_column("delta", justify="right")
    t.add_column("delta %", justify="right")
    for key, label in summary_rows():
        if key not in a and key not in b:  # (a key either has, None included, is a row: an unknown cost reads "-")
            continue
        va, vb = shown_value(a, key), shown_value(b, key)
        if key == "sim_end_s":
            label = end_label(*modes)
        delta = pct = "-"
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            d = vb - va
            delta = f"{d:+.4g}" if isinstance(d, float) else f"{d:+d}"
            pct = f"{100 * d / va:+.1f}%" if va else "-"
        t.add_row(label, fmt_value(va), fmt_value(vb), delta, pct)
    for label, (va, vb) in guardian_rows(a, b):
        delta = f"{vb - va:+.4g}" if all(isinstance(v, (int, float)) for v in (va, vb)) else "-"
        t.add_row(label, fmt_value(va), fmt_value(vb), delta, "-")
    return t


def guardian_rows(*summaries: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """Rows of each guardian's own figures and each guardian planner's sampling, in every summary
    given (a figure one summary lacks reads None): (label, the value in each summary)."""
    rows = []
    for section, figures, noun in (("guardian_sampling", SAMPLING_FIGURES, "guardian plan"),
                                   ("guardians", GUARDIAN_FIGURES, "guardian")):
        names = dict.fromkeys(n for s in summaries for n in (s.get(section) or {}))
        for name in names:
            entries = [(s.get(section) or {}).get(name) or {} for s in summaries]
            for key, label in figures:
                values = tuple(e.get(key, _ABSENT) for e in entries)
                # (a figure with no value anywhere, such as the share of answers a plan that checks none planned
                # for, is no row: the bundled replay's table ended "share of answers checked  -")
                if any(v is not _ABSENT and v is not None for v in values):
                    rows.append((f"{noun} {name}: {label}", tuple(None if v is _ABSENT else v for v in values)))
    return rows


#: What a guardian priced at the simulator's default latency is to be set from (`guardian_latency_uncalibrated`).
_CALIBRATE_GUARDIAN = ("set guardians.models[].latency.base_s from a live run's guardians.NAME.mean_check_s "
                       "(docs/guardians.md, Calibrating a guardian's latency)")


def uncalibrated_guardians_line(summary: dict[str, Any] | None) -> str:
    """`runs show`'s line naming the guardians a simulated run priced at the default latency (its summary's
    ``guardian_latency_uncalibrated``, said until now on the replay's stderr and in --json alone); '' for none."""
    names = (summary or {}).get("guardian_latency_uncalibrated") or []
    if not names:
        return ""
    return (f"guardian latency uncalibrated: {', '.join(map(str, names))} (each batch of checks priced at the "
            f"default latency, not what the guardian takes: its check times and costs say nothing of it); "
            f"{_CALIBRATE_GUARDIAN}")


def uncalibrated_guardians_note(runs: Any) -> str:
    """`runs compare`'s note when a run of either side priced guardians at the default latency; '' for none."""
    named = [f"run {run['id']}'s {', '.join(map(str, found))}" for run in runs
             if (found := (run.get("summary") or {}).get("guardian_latency_uncalibrated"))]
    if not named:
        return ""
    return (f"note: guardian latency uncalibrated: {'; '.join(named)} (priced at the default latency, not what the "
            f"guardians take: their check times, waits and costs compare the default, not the guardians); "
            f"{_CALIBRATE_GUARDIAN}")


#: The per-model table's columns: (key of a ``by_model`` entry, heading).
BY_MODEL_COLUMNS = (("num_requests", "requests"), ("num_completed", "completed"), ("ttft_p50_s", "TTFT p50 (s)"),
                    ("ttft_p99_s", "TTFT p99 (s)"), ("tpot_p99_s", "TPOT p99 (s)"), ("e2e_p99_s", "E2E p99 (s)"),
                    ("slo_attainment", "SLO attainment"), ("peak_replicas", "replicas (peak)"),
                    ("gpu_hours", "GPU-hours"), ("cost_usd", "cost (USD)"))


def by_model_table(summary: dict[str, Any]) -> Any:
    """A run of several models: a row per model (its summary's ``by_model``); None for one model."""
    from rich.table import Table
    from rich.text import Text

    by_model = summary.get("by_model")
    if not by_model:
        return None
    t = Table(title="by model", header_style="bold")
    t.add_column("model")
    for _, heading in BY_MODEL_COLUMNS:
        t.add_column(heading, justify="right")
    for model, entry in by_model.items():
        t.add_row(Text(model), *(fmt_value(entry.get(key)) for key, _ in BY_MODEL_COLUMNS))
    return t
