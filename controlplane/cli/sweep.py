"""`controlplane sim sweep SPEC.yaml`: a grid or random sweep over config keys and seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from controlplane.cli import common
from controlplane.cli.common import fmt_value, resolve_db, user_errors
from controlplane.cli.sweep_table import points_table, short_names, sweep_table  # noqa: F401 (compare_ci, tests)

BACKEND_HELP = "ray | pool | serial; default: ray when installed, else a local process pool."

SpecArg = Annotated[Path, typer.Argument(help="Sweep spec (YAML): base config, trace, space of keys, seeds. "
                                              "See docs/sweeps.md.", metavar="SPEC")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Database URL, or a SQLite file's path (default: "
                                                             "$CONTROLPLANE_STORAGE__URL, else storage.url of the "
                                                             "spec's config, else sqlite:///controlplane.db).")]
BackendOpt = Annotated[str, typer.Option("--backend", help=BACKEND_HELP)]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Parallel runs (default: the machine's cores).")]
RayOpt = Annotated[Optional[str], typer.Option("--ray-address", help="An existing Ray cluster (auto, or "
                                                                     "ray://host:10001 with ray[client] installed); "
                                                                     "default: a local Ray.")]


def progress_bar(label: str, show: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=common.err, disable=not show, transient=True)


def sweep(
    spec: SpecArg,
    db: DbOpt = None,
    backend: BackendOpt = "auto",
    workers: WorkersOpt = None,
    ray_address: RayOpt = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start a new sweep even if this spec has one to resume.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON line: sweep id, runs, their summaries, "
                                                          "points (each over its seeds).")]
    = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Run every point of a sweep spec once per seed, in parallel, each run stored under one sweep id.

    Rerunning the same spec against the same database resumes it: runs already stored are skipped.
    """
    from controlplane.cli.config_checks import check_database_folder
    from controlplane.storage import make_engine
    from sim.sweep import load_spec, run_sweep
    from sim.sweep.points import point_aggregates
    from sim.sweep.seeds import seeds_change_nothing
    from sim.sweep.store import sweep_runs

    with user_errors(db):
        loaded = load_spec(spec.expanduser())  # (a quoted "~/spec.yaml" reaches the command as typed)
    say_repeated_draws(loaded)
    url = resolve_db(db or (loaded.base_config.get("storage") or {}).get("url"))  # (as `sim replay --config`)
    with user_errors(url):
        check_database_folder(url)  # (before any run: a typo in --db's folder made the folders)
        bar = progress_bar("sweep", progress and common.err.is_terminal and not json_out)
        with bar:
            task = bar.add_task("", total=None)

            def on_start(total: int, stored: int, name: str) -> None:
                bar.update(task, total=total, completed=stored, description=f"on {name}")

            def on_run(outcome, run_id: int) -> None:
                bar.advance(task)

            try:
                result = run_sweep(loaded, url, backend=backend, workers=workers, ray_address=ray_address,
                                   fresh=fresh, on_start=on_start, on_run=on_run)
            except KeyboardInterrupt as exc:  # (Ctrl-C or SIGTERM: say what was kept and how to go on)
                from sim.interrupts import exit_status
                from sim.sweep.interrupt import hold_interrupts_until_exit

                hold_interrupts_until_exit()  # (a further Ctrl-C cut the exit's cleanup into a traceback)
                bar.stop()
                if json_out and getattr(exc, "sweep_id", None) is not None:  # (the promised line: what was stored)
                    _print_interrupted_json(url, exc)
                _say_interrupted(exc)
                raise typer.Exit(exit_status(exc)) from None  # (130; 143 after SIGTERM)
        engine = make_engine(url)
        runs = sweep_runs(engine, result.sweep_id)
        engine.dispose()
    same = seeds_change_nothing(runs)
    say_runs_stored_before(result, runs)
    if same:  # (on stderr, --json or not: stdout stays the JSON line)
        common.err.print("note: " + SAME_RUN_NOTE.format(what="every point's seeds"), highlight=False)
    say_cache_store_outages(runs)
    if json_out:
        typer.echo(json.dumps({"sweep_id": result.sweep_id, "status": "failed" if result.failed else "finished",
                               "resumed": result.resumed, "total": result.total,
                               "skipped": result.skipped, "ran": result.ran, "backend": result.backend,
                               "failed": result.failed, "seeds_change_nothing": same,
                               "runs": _runs_json(runs), "points": point_aggregates(runs)},
                              sort_keys=True, default=str))
        if result.failed:
            raise typer.Exit(1)  # (a script sees a sweep with failed runs)
        return
    common.out.print(sweep_table(runs, f"sweep {result.sweep_id} ({loaded.name})", width=common.out.width))
    points = point_aggregates(runs)
    if any(p["n"] > 1 for p in points):  # (a point a row over its seeds; with one seed each, the runs' table says it)
        common.out.print(points_table(points, f"sweep {result.sweep_id}: each point over its seeds",
                                      width=common.out.width))
    from rich.markup import escape  # (an error's `cluster.models[default]`: rich took [default] for a style)

    for key, error in list(result.failed.items())[:5]:
        common.err.print(f"[bold red]run {result.run_ids.get(key)} failed:[/] {escape(error)}", highlight=False)
    if result.failed:
        common.err.print(f"{len(result.failed)} runs failed (stored as failed; a resumed sweep runs them again)")
    verb = "resumed" if result.resumed else "ran"
    done = (f"{result.ran} runs now on {result.backend}, {result.skipped} already stored" if result.ran
            else f"nothing to run, all {result.total} runs already stored")
    db_arg, note = common.db_option(url, common.default_db_url())  # (the sweep is in this database, not the default)
    common.out.print(f"{verb} sweep {result.sweep_id}: {done}; see `controlplane runs report --sweep "
                     f"{result.sweep_id}{db_arg} --html sweep.html`{note}", highlight=False)
    if result.failed:
        raise typer.Exit(1)


#: Said when seeds changed no run: where seeds come in, and what that makes of them.
SAME_RUN_NOTE = ("{what} gave the same run (only the run ids and wall times differ): nothing in this "
                 "trace or these plugins draws from the seed (a trace's own arrivals are replayed as they are; seeds "
                 "vary a replay through random draws only: a synthetic trace, rate scaling, sampled guardians), so "
                 "the seeds add runs, not evidence")


def say_cache_store_outages(runs: list[dict]) -> None:
    """Warn of the runs whose cache store (Redis) failed during the run (their summaries' ``cache_store_outages``):
    their caches served misses meanwhile, so their hit rates and latencies measured the outage too. A sweep with
    ``record: summary`` stores no ``cache_store_down`` decision, and said nothing of it."""
    from rich.markup import escape

    failed = [r for r in runs if ((r.get("summary") or {}).get("cache_store_outages") or 0) > 0]
    if not failed:
        return
    shown = []
    for r in failed[:10]:
        s = r["summary"]
        point = ", ".join(f"{k}={fmt_value(v)}" for k, v in (r.get("overrides") or {}).items())
        n = s["cache_store_outages"]
        shown.append(f"run {r['id']} (seed {r.get('seed')}{', ' + point if point else ''}): {n} outage"
                      f"{'s' if n != 1 else ''}, {fmt_value(s.get('cache_store_down_s'))} s down")
    more = f"; and {len(failed) - 10} more runs" if len(failed) > 10 else ""
    common.err.print(f"[bold yellow]warning:[/] the cache store failed in {len(failed)} of {len(runs)} runs, whose "
                     "caches served misses while it was down (their hit rates and latencies measured the outage "
                     f"too): {escape('; '.join(shown))}{more}. Each outage's cause: the server's log, or the run's "
                     "cache_store_down decisions (stored with record: full)", highlight=False)


def say_runs_stored_before(result: Any, runs: list[dict], now: Any = None) -> None:
    """A note on stderr when a resume skipped runs: which process stored them and when the last finished (a
    `sim sweep` of the same spec started just before this one and finished first: ``skipped`` counted its runs)."""
    from datetime import datetime, timezone

    ran_now = set(result.run_ids.values())
    before = [r for r in runs if r["id"] not in ran_now and r["status"] == "finished"]
    if not result.resumed or not before:
        return
    owners = sorted({f"pid {o.get('pid')} on {o.get('host')}" for r in before
                     if isinstance(o := (r.get("config") or {}).get("process"), dict)})
    last = max((r["finished_at"] for r in before if r.get("finished_at") is not None), default=None)
    when = ""
    if last is not None:
        last = last if last.tzinfo else last.replace(tzinfo=timezone.utc)
        when = f", the last {_ago(((now or datetime.now(timezone.utc)) - last).total_seconds())}"
    n = len(before)
    common.err.print(f"note: resumed sweep {result.sweep_id}: its {n} run{'s' if n != 1 else ''} stored before, by "
                     f"{', '.join(owners) or 'an earlier process'}{when}, {'are' if n != 1 else 'is'} not run again "
                     "(--fresh runs every point again)", highlight=False)


def _ago(seconds: float) -> str:
    """``4 s ago``, ``12 min ago``, ``3 h ago``, ``2 days ago``."""
    seconds = max(seconds, 0)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def say_repeated_draws(loaded: Any) -> None:
    """A note on stderr when mode random drew some point more than once: it runs once, so fewer
    points run than ``samples`` asked for."""
    if repeated := loaded.spec.repeated_draws():
        n = loaded.spec.samples - repeated
        common.err.print(f"note: mode random drew {loaded.spec.samples} samples, {repeated} of them a point drawn "
                         f"before (run once): {n} distinct point{'s' if n != 1 else ''} to run", highlight=False)


def _runs_json(runs: list[dict]) -> list[dict]:
    return [{"run_id": r["id"], "key": r["sweep_key"], "seed": r["seed"], "overrides": r["overrides"],
             "summary": r["summary"]} for r in runs]


def _print_interrupted_json(url: str, exc: KeyboardInterrupt) -> None:
    """``--json``'s one line for a sweep Ctrl-C stopped (`sim.sweep.run.SweepInterrupted`): ``status``
    ``interrupted``, the sweep id, ``stored`` of ``total`` runs finished, and the runs stored, as a finished
    sweep's line has them. Where the database cannot be read back, ``runs`` is null and ``error`` says why."""
    from controlplane.storage import make_engine
    from sim.sweep.points import point_aggregates
    from sim.sweep.store import sweep_runs

    sweep_id = getattr(exc, "sweep_id")
    line: dict[str, Any] = {"sweep_id": sweep_id, "status": "interrupted", "total": getattr(exc, "total", None),
                            "stored": getattr(exc, "stored", None)}
    try:
        engine = make_engine(url)
        try:
            runs = sweep_runs(engine, sweep_id)
            line["runs"], line["points"] = _runs_json(runs), point_aggregates(runs)
        finally:
            engine.dispose()
    except Exception as error:  # noqa: BLE001 - the line is printed all the same, saying why it has no runs
        line["runs"], line["points"], line["error"] = None, None, f"{type(error).__name__}: {error}"
    typer.echo(json.dumps(line, sort_keys=True, default=str))


def _interrupted(exc: KeyboardInterrupt) -> str:
    """``interrupted``, or ``interrupted by SIGTERM`` where SIGTERM stopped it (`sim.interrupts.sigterm_stops`)."""
    return "interrupted by SIGTERM" if getattr(exc, "interrupted_by", None) == "SIGTERM" else "interrupted"


def _say_interrupted(exc: KeyboardInterrupt) -> None:
    """One line on stderr: the sweep Ctrl-C (or SIGTERM) left, its runs stored, and how to resume it."""
    if (sweep_id := getattr(exc, "sweep_id", None)) is None:  # (`sim.sweep.run.SweepInterrupted`)
        common.err.print(f"{_interrupted(exc)} before the sweep started: nothing was stored", highlight=False)
        return
    common.err.print(f"{_interrupted(exc)}: sweep {sweep_id} is stored with status 'interrupted', {exc.stored} of its "
                     f"{exc.total} runs finished; run the same command again to resume it (--fresh starts over)",
                     highlight=False)


def _say_search_interrupted(exc: KeyboardInterrupt) -> None:
    """One line on stderr: what a search Ctrl-C (or SIGTERM) stopped kept (`sim.sweep.search.SearchInterrupted`),
    and that it does not resume."""
    again = "a search does not resume: run the same command again to start afresh"
    if (sweep_id := getattr(exc, "sweep_id", None)) is None:
        common.err.print(f"{_interrupted(exc)}: nothing was stored; {again}", highlight=False)
        return
    common.err.print(f"{_interrupted(exc)}: search {sweep_id} is stored with status 'interrupted', {exc.stored} "
                     f"full-trace runs finished (a candidate's screen and rungs are not stored); {again}",
                     highlight=False)


def search(
    spec: SpecArg,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Trace file (default: the spec's trace).")] = None,
    format: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="azure | mooncake | vidur | canonical | burstgpt | bailian.")]
    = None,
    slo_ttft: Annotated[Optional[float], typer.Option("--slo-ttft", help="TTFT target (s); default: the spec's.")]
    = None,
    slo_tpot: Annotated[Optional[float], typer.Option("--slo-tpot", help="TPOT target (s); default: the spec's.")]
    = None,
    slo_attainment: Annotated[float, typer.Option("--slo-attainment", min=0.0, max=1.0,
                                                  help="Share of requests that must meet both targets.")] = 0.99,
    db: Annotated[Optional[str], typer.Option("--db", help="Store the runs under a new sweep in this database "
                                                           "(default: not stored).")] = None,
    backend: BackendOpt = "auto",
    workers: WorkersOpt = None,
    ray_address: RayOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON line: best, candidates, runs, wall_s, "
                                                          "rejected_cheaper, pareto, warnings, failed.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Find the cheapest configuration of the spec's space that meets the SLO attainment target.

    Cheapest (estimated) first: screens candidates on a prefix of the trace (stopping runs that
    can no longer meet the target), refines the survivors on rungs of more of the trace up to all
    of it, skips candidates estimated above the cheapest one found meeting the target, then
    confirms the winner and its next-cheaper neighbours over seeds other than the one that chose them
    (search.select_seed, search.confirm_seeds), and warns when the winner's margin over the target is
    within seed noise. Cost is money from the cost model
    (USD per GPU-hour by GPU type) when installed, else GPU-hours; the output says which. A candidate
    whose run raises is failed (rejected, shown with its error): the command then exits 1.
    """
    from sim.sweep import load_spec
    from sim.sweep.search import search as run_search
    from sim.sweep.search import unused_seeds_note

    trace = trace.expanduser() if trace is not None else None  # (quoted, "~/t.csv" reaches it as typed)
    with user_errors():
        loaded = load_spec(spec.expanduser())
        say_repeated_draws(loaded)
        base: dict = {}
        if slo_ttft is not None:
            base["slo.ttft_s"] = slo_ttft
        if slo_tpot is not None:
            base["slo.tpot_s"] = slo_tpot
        if base:
            loaded = loaded.with_base(base)
        if trace is not None and not trace.is_file():
            raise FileNotFoundError(f"trace file not found: {trace}")
        if db:
            from controlplane.cli.config_checks import check_database_folder

            check_database_folder(resolve_db(db))
        bar = progress_bar("search", progress and common.err.is_terminal)
        with bar:
            task = bar.add_task("", total=None)

            def on_progress(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=total)

            try:
                result = run_search(loaded, target=slo_attainment, backend=backend, workers=workers,
                                    ray_address=ray_address, db_url=resolve_db(db) if db else None,
                                    trace_path=str(trace) if trace else None, trace_format=format,
                                    on_progress=on_progress)
            except KeyboardInterrupt as exc:  # (Ctrl-C or SIGTERM: say what was kept, and that a search starts afresh)
                from sim.interrupts import exit_status
                from sim.sweep.interrupt import hold_interrupts_until_exit

                hold_interrupts_until_exit()
                bar.stop()
                _say_search_interrupted(exc)
                raise typer.Exit(exit_status(exc)) from None  # (130; 143 after SIGTERM)
    d = result.as_dict()
    if not json_out or common.err.is_terminal:
        console = common.err if json_out else common.out
        _print_search(d, console)
        if d.get("sweep_id") is not None:  # (--db: where its full-trace runs are, and how to see them)
            _say_stored(d, db, console)
    if d["seeds_change_nothing"]:  # (on stderr, --json or not: stdout stays the JSON line)
        common.err.print("note: " + SAME_RUN_NOTE.format(what="each confirmed candidate's seeds"), highlight=False)
    if note := unused_seeds_note(loaded):  # (once the search ran: a spec it refuses says only why)
        common.err.print(f"note: {note}", highlight=False)
    from rich.markup import escape

    for warning in d["warnings"]:  # (a margin within seed noise; the selection seed confirming: the JSON's too)
        common.err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    if json_out:
        typer.echo(json.dumps(d, sort_keys=True, default=str))
    if d["failed"]:
        raise typer.Exit(1)  # (as a sweep with failed runs: a script sees that some candidates never ran)


def _say_stored(d: dict, db: str, console) -> None:
    """Where a search with --db stored its full-trace runs and how to see them; or, when it stored
    none (every run stopped early), that its sweep is empty and why, rather than point at a report of 0 runs."""
    from controlplane.storage.errors import mask_password

    if d.get("stored") == 0:
        console.print(f"stored no runs in {mask_password(db)} (search {d['sweep_id']} holds none): only runs that "
                      "replayed the whole trace are stored, and every run was stopped early, once it could no longer "
                      "meet the target, or dropped on a prefix of the trace", highlight=False)
        return
    db_arg, note = common.db_option(db, common.default_db_url())
    runs = f"its {d['stored']} full-trace runs" if d.get("stored") else "its full-trace runs"
    console.print(f"stored in {mask_password(db)} as sweep {d['sweep_id']} ({runs}); see "
                  f"`controlplane runs report --sweep {d['sweep_id']}{db_arg} --html search.html`{note}",
                  highlight=False)


def _print_search(d: dict, console) -> None:
    from rich.table import Table

    unit = "USD" if d["cost_unit"] == "usd" else "GPU-hours"
    t = Table(title="stages", header_style="bold")
    for col in ("stage", "runs", "stopped early", "wall (s)"):
        t.add_column(col)
    for s in d["stages"]:
        t.add_row(s["stage"], str(s["runs"]), str(s["stopped_early"]), fmt_value(s["wall_s"]))
    console.print(t)
    p = Table(title=f"Pareto front: cost ({unit}) against SLO attainment", header_style="bold")
    for col in ("cost", "attainment", "overrides"):
        p.add_column(col)
    for row in d["pareto"]:
        p.add_row(fmt_value(row["cost"]), fmt_value(row["attainment"]), json.dumps(row["overrides"]))
    console.print(p)
    best = d["best"]
    if best is None:
        console.print(f"[bold red]no candidate meets attainment {d['target']}[/] (SLO {d['slo']})")
    else:
        console.print(f"[bold]best[/]: {json.dumps(best['overrides'])} cost {best['cost']} {unit}, "
                      + _confirmation(best, d), highlight=False)
    failed = d.get("failed") or []
    if best is None:  # (nothing to be cheaper than: every candidate was rejected)
        console.print(f"{d['candidates']} candidates ({d['replayed']} replayed), {d['runs']} runs, {d['wall_s']} s; "
                      f"every candidate rejected{f' ({len(failed)} failed)' if failed else ''}", highlight=False)
    else:
        cheaper_failed = sum("error" in c for c in d["rejected_cheaper"])
        console.print(f"{d['candidates']} candidates ({d['replayed']} replayed, {d['skipped_by_cost']} estimated above "
                      f"the best's cost), {d['runs']} runs, {d['wall_s']} s; {len(d['rejected_cheaper'])} cheaper "
                      f"candidates rejected{f' ({cheaper_failed} of them failed)' if cheaper_failed else ''}",
                      highlight=False)
    _say_failed(failed)


def _confirmation(best: dict, d: dict) -> str:
    """The winner's attainment over its confirmation seeds and its margin over the target: ``attainment 0.923 (min
    over confirm seeds [1, 2, 3]; mean 0.926, SD 0.0036), margin 0.006 over 0.92 (chosen under seed 0 at 0.93)``."""
    seeds = [int(s) for s in best.get("attainment_by_seed", {})]
    sd = best.get("attainment_sd")
    chosen = best.get("selection_attainment")
    return (f"attainment {best['attainment']} (min over confirm seeds {seeds}; mean "
            f"{fmt_value(best.get('attainment_mean'))}" + (f", SD {fmt_value(sd)}" if sd is not None else "")
            + f"), margin {fmt_value(best.get('margin'))} over {d['target']}"
            + (f" (chosen under seed {d.get('select_seed')} at {chosen})" if chosen is not None else ""))


def _say_failed(failed: list[dict]) -> None:
    """A failed candidate's error on stderr (the first 5), then how many failed: they were never measured, so
    the answer holds only over the candidates that ran (the command then exits 1, as a sweep with failed runs)."""
    from rich.markup import escape

    for f in failed[:5]:
        where = f"{f.get('stage')}, seed {f.get('seed')}" if f.get("stage") else ""
        common.err.print(f"[bold red]candidate {escape(json.dumps(f['overrides']))} failed[/] ({where}): "
                         f"{escape(str(f['error']))}", highlight=False)
    if failed:
        n = len(failed)
        common.err.print(f"{n} candidate{'s' if n != 1 else ''} failed (a run raised; not measured, rejected): the "
                         "answer holds only over the candidates that ran", highlight=False)
