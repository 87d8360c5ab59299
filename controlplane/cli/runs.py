"""`controlplane runs ...`: list, show, compare and export stored runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from controlplane.cli import runs_list
from controlplane.cli.compare_deployments import deployment_differences, deployments_note
from controlplane.cli.common import err, fmt_value, open_stored_runs, out, resolve_db, user_errors, working
from controlplane.cli.pipes import quiet_on_closed_pipe
from controlplane.cli.runs_copy import copied_line
from controlplane.cli.runs_list import DbOpt, RunArg
from controlplane.cli.runs_running import running_line
from controlplane.cli.runs_sweep_point import sweep_point_line
from controlplane.cli.runs_served import served_line
from controlplane.cli.runs_notes import (incomplete_note, refused_line, stopped_line, targets_note, transforms_unknown,
                                         workload_note)
from controlplane.cli.summary_table import (by_model_table, compare_table, summary_table, uncalibrated_guardians_line,
                                            uncalibrated_guardians_note)

app = typer.Typer(help="Inspect, compare and export stored runs.", no_args_is_help=True)

# Listing runs and sweeps (`runs list`, `runs sweeps`), in their own module; first in `runs --help`.
app.command("list")(quiet_on_closed_pipe(runs_list.list_))
app.command("sweeps")(quiet_on_closed_pipe(runs_list.sweeps))


def _engine(db: str | None):
    return open_stored_runs(db)


@app.command()
@quiet_on_closed_pipe
def show(
    run_id: RunArg,
    db: DbOpt = None,
    timeline: Annotated[bool, typer.Option("--timeline", help="Print the scale decision timeline (time, policy, "
                                           "action, target, confidence, signals, reason), shadows included.")]
    = False,
    full: Annotated[bool, typer.Option(help="With --timeline: every signal and the whole reason.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object: the run's row (config, summary, "
                                           "plugins), its decision_counts and plugin_errors; with --timeline, its "
                                           "scale_decisions (each signal and reason whole).")] = False,
) -> None:
    """Show one run: its summary, plugins and decision counts (--timeline: its scale decisions)."""
    if full and not timeline:
        raise typer.BadParameter("--full goes with --timeline (every signal and the whole reason of its decisions)",
                                 param_hint="--full")
    if json_out:
        _show_json(db, run_id, timeline)
        return
    if timeline:
        from controlplane.cli.runs_timeline import TIMELINE_KINDS, scale_decisions, timeline_table

        with user_errors():
            engine = _engine(db)
            rows = scale_decisions(engine, run_id)
            if not rows:
                from controlplane.storage import get_run

                events = (get_run(engine, run_id).get("summary") or {}).get("num_scale_events")
        if not rows:  # (a table of one empty row, wrapped into a narrow column, says it worse)
            why = ("its replica count never changed" if not events else
                   f"its summary counts {events} scale events: their decisions were not stored (a sweep with "
                   "`record: summary` stores the run's row alone)")
            out.print(f"run {run_id}: no scale decisions recorded ({why})", highlight=False)
            return
        from controlplane.cli.tables import fitted

        # (times, clocks, actions and targets whole; signals and reasons fold, at least 16 wide, else a
        # decision's fields a line each)
        out.print(fitted(timeline_table(rows, f"run {run_id}: scale decisions", full=full), out.width,
                         TIMELINE_KINDS, least={2: 6, 7: 16, 8: 16}))
        return
    from controlplane.storage import decision_counts, get_run, plugin_errors

    with user_errors():
        engine = _engine(db)
        run = get_run(engine, run_id)
        counts = decision_counts(engine, run_id)
        errors = plugin_errors(engine, run_id)
        served = served_line(engine, run)  # (live: what its workers ran, precision and compile mode)
        still = running_line(engine, run)  # (no summary until it ends: say so, with the rows stored so far)
    out.print(f"[bold]run {run_id}[/] {escape(run.get('name') or '')} mode={run['mode']} status={run['status']} "
              f"seed={run.get('seed')} trace={escape(str(run.get('trace')))}"
              + (f" format={run['trace_format']}" if run.get("trace_format") else ""))  # (names and paths as written)
    if served:
        out.print(served, highlight=False, markup=False)
    if point := sweep_point_line(run):  # (which point of its sweep: the overrides its notes hold)
        out.print(point, highlight=False, markup=False)
    if origin := copied_line(run):  # (`runs copy`: which run of which database)
        out.print(origin, highlight=False, markup=False)
    if read_line := _trace_read_line(run):
        out.print(read_line, highlight=False)
    if stopped := stopped_line(run):  # (--until, a Ctrl-C: not the whole trace)
        out.print(stopped, highlight=False)
    if refused := refused_line(run):  # (rows the database refused: the stored rows lack them)
        out.print(refused, highlight=False)
    for error in (run.get("summary") or {}).get("trace_bad_rows") or []:  # (the first few on_error=skip skipped)
        out.print(f"  bad row skipped: {error}", highlight=False, markup=False)
    for model, f in ((run.get("config") or {}).get("latency_files") or {}).items():
        from sim.latency.measured_box import fit_line

        fit = f"; {fit_line(f['fit'])}" if isinstance(f.get("fit"), dict) else ""  # (runs stored before: no fit)
        out.print(f"latency profile of {model}: {f['path']} sha256 {f['sha256']}{fit}", highlight=False,
                  soft_wrap=True)  # (one line: the hash as printed, whole)
    if guardians := uncalibrated_guardians_line(run.get("summary")):  # (guardians priced at the default latency)
        out.print(guardians, highlight=False, markup=False, soft_wrap=True)
    if (error := (run.get("summary") or {}).get("error")) is not None:
        out.print(f"[bold red]{run['status']}:[/] {escape(error.rstrip(': '))}", highlight=False)
    if still:
        out.print(still, highlight=False, markup=False, soft_wrap=True)
    if (run.get("summary") or {}).get("crashed"):
        out.print(_crashed(run), highlight=False)
    elif run.get("summary"):
        out.print(summary_table(run["summary"], f"run {run_id}", mode=run.get("mode")))
        if (models := by_model_table(run["summary"])) is not None:
            out.print(models)
    plugins = run.get("plugins") or []
    if plugins:
        out.print("plugins: " + ", ".join(f"{p['name']} {p.get('version') or ''}".strip() for p in plugins))
    if counts:
        t = Table(title="decisions", header_style="bold")
        keys = list(counts[0].keys())
        for k in keys:  # action names whole (a narrow terminal folds the hook and plugin names instead)
            whole = k == "action"
            t.add_column(k, no_wrap=whole, overflow="fold",
                         min_width=max((len(str(c[k])) for c in counts), default=0) if whole else None)
        for c in counts:
            t.add_row(*(fmt_value(c[k]) for k in keys))
        out.print(t)
    if errors:  # why the summary counts plugin errors: each plugin and hook, and its first error in words
        out.print(plugin_errors_table(errors, (run.get("summary") or {}).get("plugin_error_counts") or {}))


def _show_json(db: str | None, run_id: int, timeline: bool) -> None:
    """`runs show --json`: the run's row with its decision counts and plugin errors; with ``--timeline`` its
    scale decisions (``run_id`` and ``scale_decisions``, each with its payload: target, signals, confidence)."""
    from controlplane.storage import decision_counts, get_run, plugin_errors

    with user_errors():
        engine = _engine(db)
        if timeline:
            from controlplane.cli.runs_timeline import scale_decisions

            found: dict[str, Any] = {"run_id": run_id, "scale_decisions": scale_decisions(engine, run_id)}
        else:
            found = {**get_run(engine, run_id), "decision_counts": decision_counts(engine, run_id),
                     "plugin_errors": plugin_errors(engine, run_id)}
    typer.echo(json.dumps(found, default=runs_list.jsonable, sort_keys=True))


def plugin_errors_table(errors: list[dict], counted: dict[str, dict[str, int]]) -> Any:
    """The recorded plugin errors by plugin and hook (`controlplane.storage.plugin_errors`), with the
    counts of the run's summary where it has them: only the first ``MAX_RECORDED_ERRORS`` of each
    plugin and hook are recorded as decisions, so the decision rows alone would undercount."""
    from controlplane.plugin_manager import MAX_RECORDED_ERRORS

    t = Table(title="plugin errors (the first of each)", header_style="bold")
    for k in ("plugin", "hook", "count", "first at (s)", "first error"):
        t.add_column(k, overflow="fold")
    for e in errors:
        total = (counted.get(e["plugin"]) or {}).get(e["hook"], e["count"])
        count = str(total) if total <= e["count"] else f"{total} (the first {MAX_RECORDED_ERRORS} recorded)"
        t.add_row(e["plugin"], e["hook"], count, f"{e['first_s']:.1f}", Text(e["reason"] or ""))
    return t


def _crashed(run: dict) -> str:
    """What a ``crashed`` run's summary says (`controlplane.storage.crashed`), in words."""
    s, found = run["summary"], run.get("finished_at")
    found = found.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(found, "strftime") else found
    if s.get("spilled"):  # (it ended while its database was away: its end is in the spill file, not lost)
        line = (f"[bold red]crashed:[/] its process ended while the database was away (found at {found}); "
                f"{s.get('requests_recorded', 0):,} request rows recorded")
        if s.get("lost_note"):  # (it names the spill file and the command that loads it)
            return f"{line}; {escape(s['lost_note'])}"
        return (f"{line}, the rest and its end in {escape(', '.join(s['spilled']))}: `controlplane db load-spill "
                "FILE` writes them")
    line = (f"[bold red]crashed:[/] its process was gone when found at {found} (it never finished); "
            f"{s.get('requests_recorded', 0):,} request rows recorded")
    if s.get("requests_lost") is not None:
        ids = ", ".join(s.get("lost_request_ids") or [])
        answered = s.get("requests_answered_unrecorded")
        answered = sum(answered.values()) if isinstance(answered, dict) else answered
        line += (f"; {s['requests_accepted']:,} accepted"
                 + (f", {answered:,} answered and not recorded (their clients have their answers: not to retry)"
                    if answered else "")
                 + f", {s['requests_lost']:,} never answered (safe to retry)"
                 + (f" ({ids}{', ...' if s.get('lost_request_ids_truncated') else ''})" if ids else ""))
    elif s.get("lost_note"):
        line += f"; {escape(s['lost_note'])}"
    return line


@app.command()
@quiet_on_closed_pipe
def compare(
    run_a: Annotated[Optional[int], typer.Argument(help="Run A (or use --a).", metavar="RUN_A")] = None,
    run_b: Annotated[Optional[int], typer.Argument(help="Run B (or use --b).", metavar="RUN_B")] = None,
    db: DbOpt = None,
    a: Annotated[Optional[str], typer.Option("--a", help="Side A: run ids, e.g. 1,2,3 (one config over seeds).")]
    = None,
    b: Annotated[Optional[str], typer.Option("--b", help="Side B: run ids, e.g. 4,5,6.")] = None,
    a_sweep: Annotated[Optional[int], typer.Option("--a-sweep", help="Side A: the finished runs of this sweep, "
                                                   "one configuration over seeds.")] = None,
    b_sweep: Annotated[Optional[int], typer.Option("--b-sweep", help="Side B: the same, of this sweep.")] = None,
    ci: Annotated[bool, typer.Option(help="Bootstrap confidence intervals of the differences.")] = True,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence level.")] = 0.95,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples (their time grows with them and with "
                                           "the runs' requests: ~1.5 s for 1,000 of two runs of 100,000).")] = 1000,
    json_out: Annotated[bool, typer.Option("--json", help="Print the differences as one JSON object: each "
                                           "metric's verdict and whether it is better for B, the side-by-side rows "
                                           "(counts, throughput, goodput, cost), each run's status, the notes "
                                           "(also on stderr), and the decisions' differences with --decisions "
                                           "(docs/sweeps.md lists every key).")]
    = False,
    decisions: Annotated[bool, typer.Option("--decisions", help="Where the scale decisions differ: A's policy "
                                            "against B's, and each shadow policy against its run's active one.")]
    = False,
    only: Annotated[Optional[str], typer.Option("--metrics", help="Compare only these metrics, e.g. "
                                                "slo_attainment,ttft:p90 (a gate's primary ones: each more is one "
                                                "more chance of a false alarm).")] = None,
) -> None:
    """Compare runs, B - A: side by side, and each metric's difference with a bootstrap confidence
    interval over requests (and over seeds with several runs a side), saying when it is within noise.
    Runs of several models get the same per model (SLO attainment, TTFT, TPOT, E2E percentiles)."""
    from controlplane.cli.compare_ci import (COST_KEYS, COUNT_KEYS, by_model_diffs_json, ci_table, parse_metrics,
                                             parse_run_ids, side_by_side, summary_diffs, summary_means, sweep_run_ids)
    from controlplane.cli.compare_json import (compare_document, covers_note, mixed_side_notes, replayed_note,
                                               reproducibility_note, status_notes)
    from controlplane.cli.compare_progress import CompareProgress
    from controlplane.compare import METRICS, compare_by_model, compare_samples, compare_steps, load_sample
    from controlplane.storage import get_run

    with user_errors():
        metrics_wanted = parse_metrics(only) if only is not None else METRICS
        engine = _engine(db)
        side_a = [run_a] if run_a is not None else []
        side_b = [run_b] if run_b is not None else []
        side_a += parse_run_ids(a, "--a") if a else []
        side_b += parse_run_ids(b, "--b") if b else []
        side_a += sweep_run_ids(engine, a_sweep, "--a-sweep") if a_sweep is not None else []
        side_b += sweep_run_ids(engine, b_sweep, "--b-sweep") if b_sweep is not None else []
        if not side_a or not side_b:
            raise typer.BadParameter("give runs A and B: `runs compare A B`, or --a/--b run ids, or --a-sweep/--b-sweep")
        side_a, side_b = list(dict.fromkeys(side_a)), list(dict.fromkeys(side_b))  # (a run named twice counts once)
        runs_a, runs_b = [get_run(engine, r) for r in side_a], [get_run(engine, r) for r in side_b]
        for r in (*runs_a, *runs_b):
            _check_comparable(r)
        diffs, model_diffs = [], {}
        if ci:
            with working(f"reading the requests of {len(side_a) + len(side_b)} runs"):
                samples_a = [load_sample(engine, r) for r in side_a]
                samples_b = [load_sample(engine, r) for r in side_b]
            requests = sum(len(s.request_ids) for s in (*samples_a, *samples_b))
            with CompareProgress(compare_steps(samples_a, samples_b, resamples, metrics_wanted), resamples,
                                 requests) as progress:
                diffs = compare_samples(samples_a, samples_b, confidence=confidence, n_resamples=resamples,
                                        progress=progress, metrics=metrics_wanted)
                model_diffs = compare_by_model(samples_a, samples_b, confidence=confidence, n_resamples=resamples,
                                               progress=progress)
    with user_errors():
        workloads = workload_note((*runs_a, *runs_b), engine)  # (the runs replayed different requests: '' if not)
        # (two replays the same in all that decides them, whose results differ: a plugin is not reproducible)
        reproducibility = reproducibility_note(runs_a, runs_b, engine)
    if ci and (shared := replayed_note(samples_a, samples_b)):  # (the intervals over the requests every run replayed)
        workloads = shared
    differences = deployment_differences((*runs_a, *runs_b))  # (other models, GPUs or latency models: {} if not)
    deployments = deployments_note((*runs_a, *runs_b), differences)
    # Notes on stderr, as every command's (stdout holds the tables, or the JSON, alone); --json has them too. The
    # SLO targets' in every mode: --no-ci's SLO row too is each run's own.
    notes = [n for n in (*status_notes((*runs_a, *runs_b)), targets_note((*runs_a, *runs_b)), workloads, deployments,
                         reproducibility, *mixed_side_notes(runs_a, runs_b),
                         uncalibrated_guardians_note((*runs_a, *runs_b))) if n]
    if json_out:
        metrics = [d.as_dict() for d in diffs] if ci else summary_diffs(runs_a, runs_b, metrics_wanted)  # (no interval)
        by_model = ({m: [d.as_dict() for d in ds] for m, ds in model_diffs.items()} if ci
                    else by_model_diffs_json(runs_a, runs_b))
        notes += [n for n in (covers_note(metrics, (*runs_a, *runs_b)),) if n]  # (the tables' caption says it)
        found = compare_document(side_a, side_b, runs_a, runs_b, confidence=confidence, metrics=metrics,
                                 by_model=by_model, workloads=workloads, differences=differences,
                                 deployments=deployments, notes=notes, reproducibility=reproducibility)
        if decisions:  # (as the tables say it: A's first run against B's first, then each run's shadows)
            from controlplane.cli.runs_timeline import decision_comparisons

            with user_errors():
                found["decisions"] = decision_comparisons(engine, side_a[0], side_b[0])
        typer.echo(json.dumps(found, sort_keys=True))
        _print_notes(notes)
        return
    if len(side_a) == 1 and len(side_b) == 1:
        ra, rb = runs_a[0], runs_b[0]
        # A live run beside a simulated one (the calibration check): say which is which.
        mixed = ra.get("mode") != rb.get("mode")
        label_a, label_b = (f"run {r['id']}" + (f" ({r.get('mode')})" if mixed else "") for r in (ra, rb))
        modes = (ra.get("mode"), rb.get("mode"))
        out.print(side_by_side(compare_table(ra["summary"], rb["summary"], label_a, label_b, modes), out.width))
        if not ci:  # (with intervals, each model's table below has both sides' values)
            models_a, models_b = ((r["summary"] or {}).get("by_model") or {} for r in (ra, rb))
            for model in sorted(set(models_a) & set(models_b)):
                out.print(side_by_side(compare_table(models_a[model], models_b[model], f"{label_a}: {model}",
                                                     f"{label_b}: {model}", modes), out.width))
    else:
        label_a, label_b = (f"{side} (run {ids[0]})" if len(ids) == 1 else f"{side} (runs {','.join(map(str, ids))}: mean)"
                            for side, ids in (("A", side_a), ("B", side_b)))
        modes = tuple("live" if all(r.get("mode") == "live" for r in rs) else None for rs in (runs_a, runs_b))
        means = (summary_means(runs_a), summary_means(runs_b))
        if ci:  # (the intervals' table has the per-request metrics; counts, GPU time and money are per run: their means)
            means = tuple({k: m[k] for k in (*COUNT_KEYS, *COST_KEYS) if k in m} for m in means)
        out.print(side_by_side(compare_table(*means, label_a, label_b, modes), out.width))
    if diffs:
        names = f"runs {','.join(map(str, side_a))} vs {','.join(map(str, side_b))}"
        out.print(ci_table(diffs, f"{names}: B - A with confidence intervals", confidence, out.width))
        for model, model_diff in model_diffs.items():
            out.print(ci_table(model_diff, f"model {model}: B - A", confidence, out.width))
    _print_notes(notes)
    if decisions:
        from controlplane.cli.runs_timeline import compare_decisions

        with user_errors():
            for table in compare_decisions(engine, side_a[0], side_b[0]):
                out.print(table)


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        err.print(note, highlight=False, markup=False)


@app.command("config")
@quiet_on_closed_pipe
def config_of_run(run_id: RunArg, db: DbOpt = None) -> None:
    """Print the run config a run ran with, as YAML that `--config` takes (to replay it again or change it; URL
    passwords are ***, as the run's row keeps them). Comments above it say what the YAML does not hold: the trace,
    its format, how the run read it (--limit, a window, --opt ...), the command line that replays the run with
    the YAML saved as run1.yaml (for run 1), each command naming the run's database (--db), and that storage.url
    is left out (a replay with the YAML alone stores its run in --db's database, or the default one, not in the
    one the run was read from). A config this release refuses (an older release's) is printed as the run ran with
    it, a comment at the top (and a warning on stderr) saying why and how to replay it now."""
    import yaml

    from controlplane.cli.runs_config_check import stored_config_notes
    from controlplane.cli.runs_replay_command import config_command, replay_header, without_storage_url
    from controlplane.storage import get_run, run_config

    with user_errors():
        engine = _engine(db)
        printed, notes, warning = stored_config_notes(run_config(engine, run_id, validate=False), run_id)
        run = get_run(engine, run_id)
        url = resolve_db(db)
    typer.echo(f"# the config run {run_id} ran with (`{config_command(run_id, url)}`)")
    if warning:
        err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    for line in (*notes, *replay_header(run, f"run{run_id}.yaml", url), *without_storage_url(printed, run_id)):
        typer.echo(line)
    typer.echo(yaml.safe_dump(printed, sort_keys=False), nl=False)


def _check_comparable(run: dict) -> None:
    """A run without a summary's metrics (it failed, or was interrupted) cannot be compared: say
    why, naming its error, rather than compare what it never measured."""
    summary = run.get("summary") or {}
    if "num_requests" not in summary:
        error = summary.get("error")
        raise ValueError(f"run {run['id']} has no summary to compare (status {run['status']}"
                         f"{': ' + error.rstrip(': ') if error else ''})")


@app.command()
@quiet_on_closed_pipe
def plot(
    run_id: RunArg,
    db: DbOpt = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="File to write; its extension picks the format: .png, .svg or .pdf (another is an "
                               "error; a name without one takes --format) (default: run-RUN.png); - (or /dev/stdout) "
                               "writes the picture to stdout (--format, else PNG). An existing file is replaced once "
                               "the picture is drawn; an -o naming the database being read (--db) is refused.")]
    = None,
    window_s: Annotated[float, typer.Option(min=1.0, help="Latency percentile window (s).")] = 30.0,
    format: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="png | svg | pdf (default: the one -o's extension names; PNG on stdout)")] = None,
) -> None:
    """Plot a run's replicas (with every scale decision), load, queue and TTFT/TPOT p90 over time (PNG, SVG or PDF).
    A run still running, or crashed, is plotted as far as its rows go, with a note on stderr saying so."""
    from controlplane.cli.runs_plot import plot_run
    from controlplane.output_file import writes_to_stdout

    output = output or Path(f"run-{run_id}.{(format or 'png').lower()}")
    with user_errors():
        drawn = plot_run(_engine(db), run_id, output, window_s=window_s, format=format)
    said = err if writes_to_stdout(output) else out  # (stdout holds the picture alone)
    said.print(f"wrote {'stdout' if str(output) == '-' else drawn['path']} ({drawn['decisions']} scale decisions; "
               f"series: {', '.join(drawn['series'])})", highlight=False)
    if note := incomplete_note(drawn["run"]):
        err.print(note, highlight=False, soft_wrap=True)


@app.command()
@quiet_on_closed_pipe
def export(
    run_id: RunArg,
    db: DbOpt = None,
    what: Annotated[str, typer.Option(help="requests | decisions | metrics | worker_events | iterations | trace "
                                           "(the run's requests as a canonical trace, CSV or JSONL, that `sim "
                                           "replay --format canonical` replays: docs/traces.md)")] = "requests",
    format: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="csv | json | jsonl (default: the one -o's extension names; on stdout, csv)")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="File to write (default: stdout; - or /dev/stdout too, after what a shell's >> put "
                               "there); its extension picks the format: .csv, .json, "
                               ".jsonl or .ndjson, each with .gz added for gzip (rows.jsonl.gz); another extension "
                               "is an error (a name without one takes --format). An existing file is replaced once "
                               "the export is complete (a failed one leaves it as it was); an -o naming the "
                               "database being read (--db) is refused.")] = None,
) -> None:
    """Export one run's rows as CSV, JSON or JSON Lines (gzip-compressed for a .gz file); --what trace: its
    requests as a trace to replay (each with the tokens it was to generate, its text as stored). A run still
    running, or crashed, exports the rows stored so far, with a note on stderr saying so (stdout holds
    the rows alone)."""
    from controlplane.cli.runs_export import export_target, open_export, write_export
    from controlplane.output_file import database_files, replaced_on_success, writes_to_stdout
    from controlplane.storage import get_run
    from controlplane.storage.queries import check_rows_stored

    with user_errors():
        target = export_target(format, output, what)  # (before the file is made: a refused format leaves none)
        engine = _engine(db)
        run = get_run(engine, run_id)
        check_rows_stored(engine, run)  # (before the file is made: a refused export leaves none)
        if note := incomplete_note(run):
            err.print(note, highlight=False, soft_wrap=True)
        if output is None:
            write_export(engine, run_id, what, target.format, sys.stdout)
        else:  # (never over the database it reads; the file appears, or is replaced, only once complete)
            with replaced_on_success(output, reads=database_files(engine)) as partial, \
                    open_export(partial, target) as f:
                n = write_export(engine, run_id, what, target.format, f)
            said = err if writes_to_stdout(output) else out  # (stdout holds the rows alone)
            said.print(f"wrote {n} rows to {'stdout' if str(output) == '-' else output}", highlight=False)


# HTML reports of a run or a sweep (controlplane.report), in their own module.
from controlplane.cli.report import report as _report  # noqa: E402

app.command("report")(quiet_on_closed_pipe(_report))

# Deleting a run with all its rows (plain SQL on SQLite leaves them behind), in its own module.
from controlplane.cli.runs_delete import delete as _delete  # noqa: E402

app.command("delete")(_delete)

# Copying runs with all their rows into another database (to compare across databases), in its own module.
from controlplane.cli.runs_copy import copy as _copy  # noqa: E402

app.command("copy")(_copy)


def _typed(value: object) -> str:
    """A transform's value as an option takes it back: ``2`` for 2.0, every digit of other floats."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return fmt_value(value)


def _trace_read_line(run: dict) -> str | None:
    """How the run read its trace (``config["trace_read"]``, the replay's transforms and format
    options) and the rows those options left out (``summary["trace_rows_left_out"]``), in one line."""
    read = (run.get("config") or {}).get("trace_read") or {}
    left_out = (run.get("summary") or {}).get("trace_rows_left_out") or {}
    # every digit of a factor (`prompt_scale=0.00886549`, not 4 significant ones): the line says how to read it again
    parts = [f"{k}={_typed(v)}" for k, v in read.get("transforms", {}).items()]
    # format options as --opt takes them back: text as is, anything else as JSON (true, ["GPT-4"], 2.5)
    parts += [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in read.get("options", {}).items()]
    if left_out:
        parts.append("rows left out: " + ", ".join(f"{why} {n:,}" for why, n in left_out.items()))
    if transforms_unknown(run):  # (not "read as it is": a release that did not store how)
        parts.append("transforms unknown (this run's release did not store how it read its trace)")
    return "trace read: " + "; ".join(parts) if parts else None
