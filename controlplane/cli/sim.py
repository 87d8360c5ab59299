"""`controlplane sim ...`: replay traces in the simulator."""

from __future__ import annotations

import contextlib
import json
import math
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from controlplane.cli import common
from controlplane.cli.common import user_errors
from controlplane.cli.shown_warnings import shown_once
from controlplane.cli.summary_table import by_model_table, summary_table

if TYPE_CHECKING:
    import typer

HELP = "Replay request traces through the control plane in the simulator."


#: The config keys `_overrides` sets, by the option that gives each: a bad value is named by its option.
_OPTIONS = {"storage.url": "--db", "seed": "--seed", "name": "--name", "sim.exact": "--exact", "sim.until_s": "--until",
            "slo.ttft_s": "--slo-ttft", "slo.tpot_s": "--slo-tpot"}


def _overrides(
    db: str | None, seed: int | None, name: str | None, exact: bool | None, slo_ttft: float | None, slo_tpot: float | None,
    until: float | None,
) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if db:
        o["storage"] = {"url": db}
    if seed is not None:
        o["seed"] = seed
    if name:
        o["name"] = name
    sim: dict[str, Any] = {}
    if exact is not None:  # --exact or --no-exact; neither: the config's sim.exact
        sim["exact"] = exact
    if until is not None:
        sim["until_s"] = until
    if sim:
        o["sim"] = sim
    slo: dict[str, Any] = {}
    if slo_ttft is not None:
        slo["ttft_s"] = slo_ttft
    if slo_tpot is not None:
        slo["tpot_s"] = slo_tpot
    if slo:
        o["slo"] = slo
    return o


def replay(
    trace: Annotated[
        Optional[Path], typer.Argument(help="Trace file, or bundled:NAME. Default: the bundled Azure LLM code trace "
                                             "(bundled:azure_code, 8,819 requests).", metavar="TRACE")
    ] = None,
    format: Annotated[
        Optional[str], typer.Option("--format", "-f", help="azure | mooncake | vidur | canonical | burstgpt | bailian "
                                                           "(default: detect).")
    ] = None,
    db: Annotated[Optional[str], typer.Option(help=common.DB_OPTION_HELP)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the run's random generator (default: the config's "
                                                     "seed, 0 where it sets none).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Run config (YAML, TOML or JSON; - reads "
                                                   "YAML or JSON from stdin). Default: "
                                                   "the bundled run config (sim/data/default_replay.yaml in the "
                                                   "package; Llama-3-8B on A100s, SLO planner, cold starts).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
    name: Annotated[Optional[str], typer.Option(help="A name for the run.")] = None,
    window_start: Annotated[Optional[float], typer.Option(help="Keep requests arriving at or after this second.")] = None,
    window_end: Annotated[Optional[float], typer.Option(help="Keep requests arriving before this second.")] = None,
    speed_up: Annotated[Optional[float], typer.Option(help="Divide arrival times by this factor.")] = None,
    repeat: Annotated[Optional[int], typer.Option(
        min=1, help="Play the trace (after the window and speed-up) this many times back to back: a long run "
                    "from a short trace. Each copy starts one mean gap after the last arrival of the one before; "
                    "copies' request ids end in .c1, .c2, ...")] = None,
    rate_scale: Annotated[
        Optional[float], typer.Option(help="Thin (<1) or replicate (>1) requests to scale the rate.")
    ] = None,
    rate_profile: Annotated[Optional[str], typer.Option(
        metavar="T:F,...", help="A rate factor that changes over time: TIME_S:FACTOR points, linear between them, "
                                "times in the replay's seconds (after the window, speed-up and repeat), e.g. "
                                "0:1,14400:2 (the load doubles over four hours); times --rate-scale when both.")
    ] = None,
    copies: Annotated[Optional[str], typer.Option(
        metavar="clumped|shuffled|shifted",
        help="Where --rate-scale / --rate-profile put a request's copies: clumped (the default), in the gap after it; "
             "shuffled, the same arrival times dealt the copies of each 64 consecutive requests in a random order, so "
             "one long prompt's copies do not arrive as one burst; shifted, the n-th copies as one more stream of the "
             "trace's own arrivals moved by an offset of its own within each 600-s window: x10 as ten times the "
             "users, whose bursts do not add up (docs/traces.md).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Replay at most this many requests (default: all "
                                                            "of them).")] = None,
    prompt_scale: Annotated[Optional[float], typer.Option(
        help="Multiply each prompt's tokens by this (rounded, at least 1; before --max-prompt-tokens): a long-context "
             "trace on a small model with its length distribution kept. A scaled prompt has no prefix-block hashes.")
    ] = None,
    output_scale: Annotated[Optional[float], typer.Option(
        help="Multiply each output's tokens by this (rounded, at least 1; before --max-output-tokens).")] = None,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(
        min=1, help="Cut longer prompts to this many tokens (as `controlplane live-replay` does).")] = None,
    max_output_tokens: Annotated[Optional[int], typer.Option(
        min=1, help="Cut longer outputs to this many tokens.")] = None,
    qps: Annotated[Optional[float], typer.Option(help="Vidur traces: arrival rate of the synthetic process, requests "
                                                      "a second (default: 1).")] = None,
    arrival: Annotated[Optional[str], typer.Option(help="Vidur traces: poisson | gamma (default: poisson).")] = None,
    opt: Annotated[Optional[list[str]], typer.Option(
        "--opt", metavar="KEY=VALUE", help="A trace format option (repeatable; VALUE read as JSON where it parses), "
                                           "e.g. --opt failed=drop --opt models=GPT-4 for BurstGPT, --opt "
                                           "spread=none for Mooncake. The formats' options: docs/traces.md.")] = None,
    exact: Annotated[Optional[bool], typer.Option(
        help="One control-plane step per iteration (slow, for checking); --no-exact: the fast mode even when the "
             "config sets sim.exact. Default: the config's sim.exact.")] = None,
    until: Annotated[Optional[float], typer.Option(
        help="Stop at this simulated second (sooner when the requests that arrived by then are done): those still "
             "in the system are recorded in flight; later arrivals never happen, and are not counted. Default: "
             "the config's sim.until_s, none where it sets none (every request is replayed to its end).")] = None,
    slo_ttft: Annotated[Optional[float], typer.Option(help="TTFT target (s) for SLO attainment (default: the "
                                                           "config's slo.ttft_s: 2 in the bundled run config).")] = None,
    slo_tpot: Annotated[Optional[float], typer.Option(help="TPOT target (s) for SLO attainment (default: the "
                                                           "config's slo.tpot_s: 0.1 in the bundled run config).")]
    = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr when it is a terminal (with --json "
                                                "too: the JSON alone goes to stdout).")] = True,
) -> None:
    """Replay a trace with the configured plugins, store the run, print its summary."""
    writer = _early_writer()
    try:
        with shown_once(_warn):  # (a measured profile's far rows: a warning line, once for the check and the run)
            _replay(writer, trace, format, db, seed, config, json_out, name, window_start, window_end, speed_up,
                    repeat, rate_scale, rate_profile, copies, limit, prompt_scale, output_scale, max_prompt_tokens,
                    max_output_tokens, qps, arrival, opt, exact, until, slo_ttft, slo_tpot, progress)
    except KeyboardInterrupt as exc:  # (Ctrl-C: say what was kept, then exit as an interrupt does)
        from sim.interrupts import hold_until_exit

        hold_until_exit()  # (a further Ctrl-C, one sent to the process group too, cut this into a traceback)
        _print_ended_summary(exc, json_out, "interrupted", "interrupted")  # (a run stopped cleanly at its next tick)
        common.say_replay_interrupted(exc)
        if (getattr(exc, "summary", None) or {}).get("interrupted_by") == "SIGTERM":
            raise SystemExit(128 + signal.SIGTERM) from None  # (as a process ended by SIGTERM: 143)
        raise
    finally:
        if writer is not None:
            writer.discard()  # (after the run it is closed already: this only reaps a writer left unused)


def _check_vidur_options(path: Path, format: str | None) -> None:
    """--qps and --arrival make a Vidur trace's synthetic arrivals: refused, naming the trace's
    format, for any other trace (whose own timestamps give the arrivals)."""
    from sim.traces import detect_format

    if not path.is_file():
        return  # (the replay says the file is missing)
    fmt = format if format is not None else detect_format(path)
    if fmt != "vidur":
        raise ValueError(f"--qps and --arrival set the synthetic arrivals of Vidur traces (lengths only); {path} is "
                         f"in the {fmt} format, whose timestamps give the arrivals: use --speed-up or --rate-scale to "
                         "change its rate")


def _check_arrival_options(qps: float | None, arrival: str | None) -> None:
    """--qps and --arrival's values, named by their options (the reader names its own keywords)."""
    from sim.traces.vidur import ARRIVALS

    if arrival is not None and arrival not in ARRIVALS:
        raise ValueError(f"--arrival: unknown arrival {arrival!r}; valid choices: {', '.join(ARRIVALS)}")
    if qps is not None and not 0 < qps < math.inf:
        raise ValueError(f"--qps must be a finite number > 0, got {qps:g}")


def _print_ended_summary(exc: BaseException, json_out: bool, how: str, status: str) -> None:
    """The summary an interrupted or spilled run's error carries (``exc.summary``), as a finished run's is printed
    (the JSON with the run's ``status``, which a gate reads: finished, failed or interrupted)."""
    summary = getattr(exc, "summary", None)
    if summary is None:
        return
    if json_out:
        common.write_stdout(json.dumps({**summary, "status": status}, sort_keys=True) + "\n")
    else:
        common.out.print(summary_table(summary, f"run {summary.get('run_id')} - {how}"))


def _early_writer() -> Any:
    """The run's writer process, forked before the simulator's imports so that it imports the
    database side and opens the database meanwhile (``controlplane.storage.early``): the one
    the ``controlplane`` entry point forked at its start, else one forked now; None where it
    cannot help (one CPU, none free now, no fork, ``CONTROLPLANE_WRITER_PROCESS=0``)."""
    from controlplane.storage import early

    writer = early.take_started()
    if writer is None and early.writer_process_possible():
        writer = early.EarlyWriter.fork()
    return writer


def _configure_writer(writer: Any, cfg: Any) -> None:
    """Send the writer process its database as soon as the config names it: it makes the engine
    and the recorder while this process imports the simulator, and the run's start waits only
    for the schema check and the run row (``EarlyWriter.configure``; the run's recorder sends the
    same settings, so nothing again). Nothing for a database it cannot reach (the run discards it)."""
    from controlplane.storage import early

    storage = cfg.storage
    if writer is not None and writer.can_write(storage.url):
        try:
            writer.configure(storage.url, **early.recorder_settings(storage))
        except OSError:
            pass  # the child is gone: the run's recorder finds that and says so


def _replay(writer: Any, trace: Optional[Path], format: Optional[str], db: Optional[str], seed: Optional[int],
            config: Optional[Path], json_out: bool, name: Optional[str], window_start: Optional[float],
            window_end: Optional[float], speed_up: Optional[float], repeat: Optional[int],
            rate_scale: Optional[float], rate_profile: Optional[str], copies: Optional[str], limit: Optional[int],
            prompt_scale: Optional[float], output_scale: Optional[float], max_prompt_tokens: Optional[int],
            max_output_tokens: Optional[int], qps: Optional[float], arrival: Optional[str], opt: Optional[list[str]],
            exact: Optional[bool], until: Optional[float],
            slo_ttft: Optional[float], slo_tpot: Optional[float], progress: bool) -> None:
    with common.gc_paused():  # the config's imports: only long-lived objects
        from controlplane.config import load_config

    if trace is not None:  # (a quoted '~/t.csv' reaches the command as typed: the shell expands only a bare ~)
        trace = trace.expanduser()
    if config is not None and str(config) == "-":  # (the config piped in: `... | controlplane sim replay -c -`)
        config = Path("/dev/stdin")
    with user_errors(options=common.TRANSFORM_OPTIONS):
        if config is None:  # a realistic cluster that scales to its SLO, for the bundled trace or the user's
            from sim.traces.bundled import bundled_default_config_path

            config = bundled_default_config_path()
            if not json_out:
                common.err.print(f"[dim]no --config: using the bundled run config {config} "
                                 "(Llama-3-8B on A100s, SLO planner, cold starts; see docs/autoscaling.md)[/]")
        cfg = load_config(config, _overrides(db, seed, name, exact, slo_ttft, slo_tpot, until), option_names=_OPTIONS)
        with common.gc_paused():  # what the run's start refuses, before the writer touches the database
            from controlplane.cli.config_checks import checked_run_config

            cfg = checked_run_config(cfg, simulated=True, warn=_warn, path=config)
    with user_errors(cfg.storage.url, options=common.TRANSFORM_OPTIONS):  # (a database's error names its URL)
        _configure_writer(writer, cfg)
        with common.gc_paused():  # the simulator's imports, while the writer makes its engine
            from sim.replay import TraceTransforms
            from sim.replay import replay as run_replay
            from sim.replay_trace import failed_note
            from sim.traces import bundled_trace_path, parse_options, parse_rate_profile
            from sim.traces.bundled import bundled_trace
            from sim.traces._io import not_a_trace_file
        path = bundled_trace(str(trace)) if trace is not None else bundled_trace_path()  # (bundled:NAME: its file)
        if format is None and trace is None:
            format = "azure"
        if (error := not_a_trace_file(path)) is not None:  # (before the progress bar counts the rows of a pipe)
            raise error
        options: dict[str, Any] = {}
        if qps is not None:
            options["qps"] = qps
        if arrival is not None:
            options["arrival"] = arrival
        if options:
            _check_vidur_options(Path(path), format)
            _check_arrival_options(qps, arrival)
        for key, value in parse_options(opt or ()).items():
            if key in options:
                raise ValueError(f"--opt {key} and --{key} are both given: give one")
            options[key] = value
        profile = parse_rate_profile(rate_profile, "--rate-profile") if rate_profile is not None else None
        transforms = TraceTransforms(window_start_s=window_start, window_end_s=window_end, speed_up=speed_up,
                                     repeat=repeat, rate_scale=rate_scale, rate_profile=profile, copies=copies,
                                     limit=limit,
                                     prompt_scale=prompt_scale, output_scale=output_scale,
                                     max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens)
        show = progress and common.err.is_terminal  # (with --json too: the bar is on stderr, the JSON on stdout)
        if show:  # (rich, and a pass over the trace to count its rows, only for a bar)
            from controlplane.cli.replay_progress import progress_bar

            bar = progress_bar(Path(path), transforms, limit, options, cfg.sim.until_s)
        else:
            bar = contextlib.nullcontext(None)
        try:
            with bar as on_progress:
                result = run_replay(path, cfg, transforms=transforms, trace_format=format, trace_options=options,
                                    on_progress=on_progress, writer=writer, warn_if_empty=False)
        except Exception as exc:  # (the database away at the run's end: its rows spilled, its summary whole)
            if getattr(exc, "spill_path", None) is not None:
                _print_ended_summary(exc, json_out, "its rows spilled", "finished")
            if getattr(exc, "failed_run_id", None) is not None:  # (the trace failed mid-replay: what it stored)
                _print_ended_summary(exc, json_out, "failed", "failed")
                db, note = common.db_option(cfg.storage.url, type(cfg.storage).model_fields["url"].default)
                common.err.print(failed_note(exc, f"`controlplane runs show {exc.failed_run_id}{db}`{note}"),
                                 highlight=False, soft_wrap=True)
            raise
    summary = result.summary
    refused = getattr(getattr(result.session, "recorder", None), "refused", None)
    if refused and refused.by_table:  # (as its stored summary says: `RunRecorder.close`)
        summary = {**summary, "rows_refused": dict(sorted(refused.by_table.items()))}
    if summary.get("num_requests") == 0:  # (an empty trace is an error of the reader: here, the transforms)
        common.err.print("[yellow]warning:[/] no request was replayed: the trace's requests all fell outside "
                         "--window-start/--window-end, or --limit / --rate-scale / --rate-profile / --until left none",
                         highlight=False)
    if json_out:
        common.write_stdout(json.dumps({**summary, "status": "finished"}, sort_keys=True) + "\n")  # (typer.echo's way)
        _warn_skipped(summary)
        _warn_unknown_models(summary, cfg)
        _warn_refused(result)
        return
    title = f"run {summary.get('run_id')} - {Path(path).name} ({result.trace_format})"
    common.out.print(summary_table(summary, title))
    if (models := by_model_table(summary)) is not None:
        common.out.print(models)
    if max_prompt_tokens is not None or max_output_tokens is not None:
        common.err.print(_caps_line(cfg.storage.url, summary.get("run_id"), max_prompt_tokens, max_output_tokens),
                         highlight=False)
    from controlplane.storage.errors import mask_password

    url = mask_password(cfg.storage.url)  # (never the password: the line goes to logs and terminals)
    db, note = common.db_option(cfg.storage.url, type(cfg.storage).model_fields["url"].default)  # (not the default)
    common.out.print(f"stored in {url} as run {summary.get('run_id')}; "
                     f"see `controlplane runs show {summary.get('run_id')}{db}`{note}",
                     soft_wrap=True)  # (one line: the command it names is never split across two)
    if summary.get("num_plugin_errors"):
        common.err.print(f"[yellow]{summary['num_plugin_errors']:,} plugin errors[/] (each isolated, the next policy "
                         f"decided): `controlplane runs show {summary.get('run_id')}{db}` lists them with their first "
                         "error", highlight=False)
    _warn_skipped(summary)
    _warn_unknown_models(summary, cfg)
    _warn_refused(result)


def _warn(text: str) -> None:
    """A warning line; ``text`` is plain (``guardians.models[rules]``, a path with brackets), not markup."""
    from rich.markup import escape

    common.err.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _caps_line(url: str, run_id: Any, max_prompt_tokens: int | None, max_output_tokens: int | None) -> str:
    """How many of the run's requests the length caps left at the cap (from its stored rows), as
    `controlplane live-replay` says before its run: a long-context trace capped for a short model
    becomes requests of one length."""
    from sqlalchemy.exc import SQLAlchemyError

    from controlplane.storage import StorageError, make_engine
    from controlplane.storage.queries import requests_at_length

    engine = make_engine(url)
    try:
        counts = requests_at_length(engine, int(run_id), prompt_tokens=max_prompt_tokens,
                                    output_tokens=max_output_tokens)
    except (SQLAlchemyError, StorageError, LookupError, ValueError, TypeError):  # the database went away since
        return "length caps: not counted (the run's requests could not be read back)"
    finally:
        engine.dispose()
    return common.caps_note(counts["total"], counts, max_prompt_tokens, max_output_tokens,
                            "`live-replay` with the same caps serves the same lengths")


def _warn_skipped(summary: dict[str, Any]) -> None:
    """The trace's bad rows ``--opt on_error=skip`` left out (never silent): how many, and the first
    few with their file, line, field and error (the run summary keeps them: ``runs show`` says them)."""
    from sim.replay import BAD_ROWS_SKIPPED

    skipped = (summary.get("trace_rows_left_out") or {}).get(BAD_ROWS_SKIPPED)
    if skipped:
        from rich.markup import escape  # (here: a replay with --json imports no rich otherwise)

        first = "; ".join(summary.get("trace_bad_rows") or [])
        common.err.print(f"[yellow]warning:[/] {skipped:,} bad trace row{'s' if skipped != 1 else ''} skipped "
                         f"(--opt on_error=skip), not replayed; the first: {escape(first)}", highlight=False,
                         soft_wrap=True)


def _warn_unknown_models(summary: dict[str, Any], cfg: Any) -> None:
    """The requests rejected for a model the config does not serve (never silent): how many, naming the models."""
    from controlplane.cli.unknown_models import unknown_models_warning

    if text := unknown_models_warning(summary, (m.name for m in cfg.cluster.models)):
        _warn(text)


def _warn_refused(result: Any) -> None:
    """The run's rows the database refused (a repeated request id, an id sequence behind its table's ids), last:
    how many, why, where they were saved; then exit status 1. The run's stored rows lack them: a run that said
    "finished", exit 0, read as complete (every request completed) with half its request rows missing. Its
    summary says so (``rows_refused``), stored and printed."""
    refused = getattr(getattr(result.session, "recorder", None), "refused", None)
    if refused:
        common.err.print(f"[yellow]warning:[/] run {result.summary.get('run_id')}: {refused.warning()}",
                         highlight=False)
        raise SystemExit(1)


_app: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    """``app``: the whole ``sim`` group (replay, sweep, search), made on first use. ``controlplane sim
    replay`` builds `replay_group` instead and does not import the sweep's module."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _import_typer()
        # Sweeps and configuration search (docs/sweeps.md): their own module.
        from controlplane.cli.sweep import search, sweep

        _app = typer.Typer(help=HELP, no_args_is_help=True)
        _app.command()(replay)
        _app.command("sweep")(sweep)
        _app.command("search")(search)
    return _app


def replay_group() -> typer.Typer:
    """The ``sim`` group with ``replay`` alone, for ``controlplane sim replay ...`` (`build_app`)."""
    _import_typer()
    group = typer.Typer(help=HELP, no_args_is_help=True)
    group.command()(replay)
    return group


def _import_typer() -> None:
    """typer, as a global of this module: `replay`'s annotations name it, and typer reads them
    when it makes the command. Imported only then: ``controlplane sim replay`` with a plain command
    line runs `replay` without typer (`controlplane.cli.replay_args`)."""
    global typer
    import typer
