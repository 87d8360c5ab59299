"""`controlplane live-replay`: replay a trace against live workers through the control plane.

The live side of ``controlplane sim replay``: the same trace readers and transforms, the same
config and plugins, the run stored with its iterations. Step 2 of the calibration workflow
(docs/calibration.md): ``controlplane calibrate RUN`` folds the run into a profile, and
``controlplane runs compare SIM_RUN LIVE_RUN`` sets a simulated replay of the same requests beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from controlplane.cli import common
from controlplane.cli.common import user_errors
from controlplane.cli.config_checks import checked_run_config
from controlplane.cli.summary_table import summary_table
from controlplane.cli.unknown_models import served_by_first_warning
from controlplane.cli.worker_options import CpuThreadsOpt, ModelPathOpt, PrecisionOpt, PresetOpt
from controlplane.errors import ConfigError
from controlplane.storage.errors import mask_password

#: Requests are read before any worker starts; a live replay runs in real time, so this is a lot.
MAX_REQUESTS = 1_000_000


def live_replay(
    trace: Annotated[Optional[Path], typer.Argument(
        help="Trace file. Default: the bundled Azure LLM code trace (give --limit or a window: it runs in real time).",
        metavar="TRACE")
    ] = None,
    format: Annotated[
        Optional[str], typer.Option("--format", "-f", help="azure | mooncake | vidur | canonical | burstgpt | bailian "
                                                           "(default: detect).")
    ] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="Run config (YAML, TOML or JSON): its plugins, and its models' `worker` settings. "
                               "Default: one random-weight tiny-llama CPU worker.")] = None,
    db: Annotated[Optional[str], typer.Option(help="Database URL, or a SQLite file's path (default: the config's "
                                                   "storage.url).")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, help="Seed of the run (and of the prompts' token ids).")] = None,
    name: Annotated[Optional[str], typer.Option(help="A name for the run.")] = None,
    window_start: Annotated[Optional[float], typer.Option(help="Keep requests arriving at or after this second.")] = None,
    window_end: Annotated[Optional[float], typer.Option(help="Keep requests arriving before this second.")] = None,
    speed_up: Annotated[Optional[float], typer.Option(help="Divide arrival times by this factor.")] = None,
    rate_scale: Annotated[
        Optional[float], typer.Option(help="Thin (<1) or replicate (>1) requests to scale the rate.")
    ] = None,
    rate_profile: Annotated[Optional[str], typer.Option(
        metavar="T:F,...", help="A rate factor that changes over time, as `sim replay --rate-profile` (e.g. "
                                "0:1,600:2: the load doubles over ten minutes).")] = None,
    copies: Annotated[Optional[str], typer.Option(
        metavar="clumped|shuffled|shifted",
        help="Where the rate change puts a request's copies, as `sim replay --copies`."
    )] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Replay at most this many requests.")] = None,
    prompt_scale: Annotated[Optional[float], typer.Option(
        help="Multiply each prompt's tokens by this (rounded, at least 1; before --max-prompt-tokens): a long-context "
             "trace on a small model with its length distribution kept (`sim replay` takes the same option).")
    ] = None,
    output_scale: Annotated[Optional[float], typer.Option(
        help="Multiply each output's tokens by this (rounded, at least 1; before --max-output-tokens).")] = None,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(
        min=1, help="Cut longer prompts to this many tokens (a small model's context is short; `sim replay` "
                    "takes the same option).")] = None,
    max_output_tokens: Annotated[Optional[int], typer.Option(
        min=1, help="Cut longer outputs to this many tokens.")] = None,
    opt: Annotated[Optional[list[str]], typer.Option(
        "--opt", metavar="KEY=VALUE", help="A trace format option, as `sim replay --opt` (repeatable), e.g. "
                                           "--opt failed=drop for BurstGPT. The formats' options: docs/traces.md.")
    ] = None,
    preset: PresetOpt = None,
    model_path: ModelPathOpt = None,
    precision: PrecisionOpt = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Replicas of the model (default: the config's "
                                                            "replicas, else one per GPU, or one CPU worker).")] = None,
    pool: Annotated[str, typer.Option(help="Where workers run: thread | process | ray.")] = "process",
    cpu_threads: CpuThreadsOpt = None,
    save_trace: Annotated[Optional[Path], typer.Option(
        help="Write the requests as served (their lengths, the arrivals the live core stamped) as a canonical "
             "trace (.csv or .jsonl): `controlplane sim replay` of it predicts this run. An existing file is "
             "replaced once the trace is written whole; a path naming the run's database (--db) is refused.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Replay a trace against live workers in real time, store the run (with its iterations), print its summary."""
    from controlplane.extras import extra_needed

    # without the `live` extra: one line naming the install, exit 2 (not a traceback ending in "No module named")
    with user_errors(), extra_needed("controlplane live-replay", "live", "torch and transformers"):
        from controlplane.live.daemon_config import daemon_config
    from sim.replay import TraceTransforms
    from sim.traces import parse_rate_profile

    if trace is not None:  # (a quoted '~/t.csv' reaches the command as typed: the shell expands only a bare ~)
        trace = trace.expanduser()
    with user_errors(options=common.TRANSFORM_OPTIONS):
        from controlplane.live.pool import POOL_KINDS

        if pool not in POOL_KINDS:  # (before the banner says a run is recorded)
            raise ConfigError(f"unknown pool {pool!r}; choose one of {', '.join(POOL_KINDS)}")
        if save_trace is not None and not save_trace.parent.is_dir():  # (not found out after the whole run)
            raise ConfigError(f"--save-trace: {save_trace.parent} is not a folder")
        if save_trace is not None:  # (a compression no reader reads, x.jsonl.zst: refused now, not after the run)
            from sim.traces.canonical import check_writable_name

            try:
                check_writable_name(save_trace)
            except ValueError as exc:
                raise ConfigError(f"--save-trace: {exc}") from None
        cfg, _ = daemon_config(config, db=db, workers=workers, preset=preset, model_path=model_path,
                               precision=precision,
                               extra={k: v for k, v in (("seed", seed), ("name", name)) if v is not None})
        cfg = checked_run_config(cfg, simulated=False, path=config, warn=lambda text: common.err.print(
            f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True))  # (before any worker starts)
        if save_trace is not None:  # (not over the database the run goes to: found out now, not after the run)
            from controlplane.output_file import check_not_read, database_files

            check_not_read(save_trace, database_files(cfg.storage.url), option="--save-trace")
        transforms = TraceTransforms(window_start_s=window_start, window_end_s=window_end, speed_up=speed_up,
                                     rate_scale=rate_scale, copies=copies, limit=limit, prompt_scale=prompt_scale,
                                     output_scale=output_scale, max_prompt_tokens=max_prompt_tokens,
                                     max_output_tokens=max_output_tokens,
                                     rate_profile=parse_rate_profile(rate_profile, "--rate-profile")
                                     if rate_profile is not None else None)
        requests, path, read = _requests(cfg, trace, format, transforms, opt)
        check_fits(cfg, requests, path)
        if not json_out:
            models = ", ".join(f"{m.name} x{m.replicas}" for m in cfg.cluster.models)
            span = requests[-1].arrival_s if requests else 0.0
            common.err.print(f"live replay: {len(requests):,} requests over {span:,.0f} s of {Path(path).name} on "
                             f"{models} ({pool} pool)", highlight=False)
        if note := at_the_caps(requests, max_prompt_tokens, max_output_tokens):  # (stderr: with --json too)
            common.err.print(note, highlight=False)
        if note := params_note(requests):
            common.err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
        if note := served_by_first_warning(requests, [m.name for m in cfg.cluster.models]):  # (--json too)
            common.err.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
        def started(run_id: int | None) -> None:  # the run is recorded (and its workers ready): said only now
            if not json_out:
                common.err.print(f"run {run_id} recorded in {mask_password(cfg.storage.url)}", highlight=False)

        try:
            result = _run(cfg, requests, pool, cpu_threads, progress and not json_out and common.err.is_terminal,
                          on_started=started, **read)
        except KeyboardInterrupt as exc:  # (Ctrl-C or SIGTERM, also while the workers load: say what was kept)
            from sim.interrupts import exit_status

            common.say_replay_interrupted(exc)
            raise typer.Exit(exit_status(exc)) from None  # (130; 143 after SIGTERM)
    _report(result, path, json_out, cfg.storage.url, type(cfg.storage).model_fields["url"].default)
    if save_trace is not None:  # after the summary and where the run is stored: a file that cannot be written loses
        from sim.traces.canonical import write_canonical  # neither

        with user_errors():
            columns = [c for c in ("model", "tenant", "priority", "prompt", "params")
                       if any(getattr(r, c) for r in result.served)]
            n = write_canonical(result.served, save_trace, columns=columns)
        if not json_out:
            common.out.print(f"wrote the {n:,} requests as served to {save_trace}", highlight=False)
    if result.summary.get("error"):
        raise typer.Exit(1)


def _requests(cfg: Any, trace: Optional[Path], format: Optional[str], transforms: Any,
              opt: Optional[list[str]] = None) -> tuple[list[Any], Path, dict[str, Any]]:
    """(the requests to replay, the trace's path, how it was read: ``run_trace_live``'s ``trace_read``,
    ``summary_extra``, ``trace`` and ``trace_format``, as `sim.replay.replay` stores them)."""
    from sim.replay import prepared_trace, rows_left_out, trace_read
    from sim.traces import bundled_trace_path, parse_options

    path = trace if trace is not None else bundled_trace_path()
    if format is None and trace is None:
        format = "azure"
    options = parse_options(opt or ())
    reader, stream = prepared_trace(path, seed=cfg.seed, transforms=transforms, trace_format=format,
                                    trace_options=options)
    requests = []
    for r in stream:
        requests.append(r)
        if len(requests) > MAX_REQUESTS:
            raise ConfigError(f"more than {MAX_REQUESTS:,} requests to replay in real time: give --limit or a window")
    if not requests:
        raise ConfigError(f"no requests to replay from {path} (check the window and --limit)")
    seen: set[str] = set()
    for r in requests:  # they name the run's requests
        if r.request_id in seen:
            raise ConfigError(f"{path}: request id {r.request_id!r} appears twice; a live replay keeps the trace's "
                              "ids, which must be unique")
        seen.add(r.request_id)
    return requests, Path(path), {"trace_read": trace_read(transforms, options), "summary_extra": rows_left_out(reader),
                                  "trace": os.path.abspath(path), "trace_format": reader.format if reader is not None else format}


def check_fits(cfg: Any, requests: list[Any], path: Path) -> None:
    """Refuse, before any worker starts, a trace whose requests (after the caps) do not fit the
    context of the model that would serve them: the worker would refuse or cut them, and the run
    would not be the trace's work."""
    from controlplane.live.served_model import worker_settings

    limits = {m.name: min(x for x in (m.max_model_len, worker_settings(cfg, m.name).max_seq_len) if x is not None)
              for m in cfg.cluster.models}
    first = cfg.cluster.models[0].name
    over = []
    for r in requests:
        p, o = r.prompt_tokens, r.output_tokens
        limit = limits.get(r.model, limits[first])
        if p + o > limit:
            over.append((r, p, o, limit))
    if over:
        r, p, o, limit = over[0]
        raise ConfigError(
            f"{len(over):,} of {len(requests):,} requests from {path} do not fit the model's context "
            f"(the first, {r.request_id}: {p} prompt + {o} output tokens > the context, {limit}); "
            "cap them with --max-prompt-tokens / --max-output-tokens, or serve a model with a longer context")


def at_the_caps(requests: list[Any], max_prompt_tokens: Optional[int], max_output_tokens: Optional[int]) -> str:
    """How many requests the length caps left at the cap, in words ('' with no cap). A long-context
    trace (Mooncake: median prompt ~7k tokens) capped for a small model becomes requests of one
    length: the user sees it here, before the run, not after reading the served trace."""
    p_cap, o_cap = max_prompt_tokens, max_output_tokens
    counts = {"prompts": sum(1 for r in requests if p_cap is not None and r.prompt_tokens >= p_cap),
              "outputs": sum(1 for r in requests if o_cap is not None and r.output_tokens >= o_cap)}
    return common.caps_note(len(requests), counts, max_prompt_tokens, max_output_tokens,
                            "`sim replay` with the same caps serves the same lengths")


def params_note(requests: list[Any]) -> str:
    """The trace params a live replay does not submit, in words, once for the run ('' when it submits them all)."""
    from controlplane.live.trace_replay import SUBMITTED_PARAMS, unsubmitted_params

    left = unsubmitted_params(requests)
    if not left:
        return ""
    named = ", ".join(f"{name} ({n:,} of {len(requests):,} requests)" for name, n in left.items())
    return (f"trace params not honoured, the requests are served without them: {named}; a live replay submits "
            f"{', '.join(SUBMITTED_PARAMS)} and always ignores end-of-sequence (ignore_eos true), to generate "
            "each request's output length")


def _run(cfg: Any, requests: list[Any], pool: str, cpu_threads: Optional[int], show: bool, **read: Any) -> Any:
    from controlplane.live.trace_replay import run_trace_live

    if not show:
        return run_trace_live(cfg, requests, pool=pool, cpu_threads=cpu_threads, **read)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]live replay[/]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("t={task.fields[t]:.0f}s"), TimeElapsedColumn(), console=common.err, transient=True)
    with bar:
        task = bar.add_task("live", total=len(requests), t=0.0)
        return run_trace_live(cfg, requests, pool=pool, cpu_threads=cpu_threads, **read,
                              on_progress=lambda n, _submitted, t: bar.update(task, completed=n, t=t))


def _report(result: Any, path: Path, json_out: bool, url: str, default_url: str) -> None:
    summary = {**result.summary, "live_replay": {
        "submitted": result.submitted, "late_s": result.late_s, "unsubmitted_params": result.unsubmitted_params,
        "rejected": [{"request_id": r.request_id, "reason": r.reason} for r in result.rejected]}}
    if json_out:
        common.write_stdout(json.dumps(summary, sort_keys=True, default=str) + "\n")
        return
    common.out.print(summary_table(result.summary, f"run {result.run_id} - {path.name} (live)", mode="live"))
    if result.rejected:
        common.err.print(f"[yellow]{len(result.rejected):,} requests were refused at submission[/] (first: "
                         f"{result.rejected[0].request_id}: {result.rejected[0].reason})", highlight=False)
    db, note = common.db_option(url, default_url)  # (the run is in this database, not the default one)
    if result.summary.get("num_plugin_errors"):
        common.err.print(f"[yellow]{result.summary['num_plugin_errors']:,} plugin errors[/]: `controlplane runs show "
                         f"{result.run_id}{db}` lists them with their first error", highlight=False)
    if result.late_s > 1.0:
        common.err.print(f"[yellow]the replay fell behind the trace by up to {result.late_s:.1f} s[/] (this "
                         "process could not submit at the trace's pace)", highlight=False)
    common.out.print(f"stored in {mask_password(url)} as run {result.run_id}; `controlplane runs show {result.run_id}"
                     f"{db}`, `controlplane calibrate {result.run_id}{db} --profile GRID -o profile.json`{note}",
                     soft_wrap=True)  # (one line: a command it names is never split across two)
