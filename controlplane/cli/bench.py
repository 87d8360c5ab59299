"""`controlplane profile`, `controlplane bench quant`, `controlplane calibrate`: measure live workers.

* ``profile`` times a live worker's iterations over a grid of batch shapes and writes a
  ``controlplane-profile/1`` file, which the simulator loads as ``latency_model: measured``.
* ``bench quant`` compares precisions and compilation (tokens/s, latency, peak memory, size).
* ``calibrate RUN...`` fits a profile from a recorded live run's own iterations, as the control
  plane saw them (backend time plus the live driver's per-iteration overhead); given repeats of
  the same traffic, it calibrates each, prints their spread and freezes the median one.

A live run records its iterations (the ``iteration`` table) when its config says
``storage.record_iterations: true``; the calibration itself is the library's workflow,
`sim.calibration.calibrate`, which ``benchmarks/fidelity.py`` runs too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from controlplane.cli.common import DB_READ_HELP, err, open_stored_runs, out, user_errors

if TYPE_CHECKING:
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.profiling import ProfileGrid

app = typer.Typer(help="Profile, benchmark and calibrate live workers.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks of live workers.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def grids() -> dict[str, ProfileGrid]:
    """The named profiling grids: ``small`` (a minute on a CPU) and ``full`` (GPU-sized shapes)."""
    from controlplane.live.profiling import ProfileGrid

    return {
        "small": ProfileGrid(prefill_tokens=(0, 16, 64, 256), prefill_seqs=(1, 4), decode_batch_sizes=(0, 1, 4, 16),
                             context_lens=(32, 256), repeats=3),
        "full": ProfileGrid(prefill_tokens=(0, 16, 64, 128, 256, 512, 1024), prefill_seqs=(1, 4),
                            decode_batch_sizes=(0, 1, 2, 4, 8, 16, 32, 64), context_lens=(16, 128, 512, 1024),
                            repeats=5),
    }


# --- commands ---------------------------------------------------------------------------------------


def _settings(preset: str | None, model_path: str | None, precision: str, compile_: bool, device: str,
              max_seq_len: int, seed: int = 0) -> WorkerModelSettings:
    from controlplane.live.model_source import WorkerModelSettings, check_model_path

    if preset and model_path:
        raise ValueError("give --preset or --model-path, not both")
    from pydantic import ValidationError

    source = {"path": model_path} if model_path else {"preset": preset or "tiny-llama"}
    try:
        check_model_path(model_path)  # (before loading: Hugging Face's "Repo id must use alphanumeric chars")
    except ValueError as exc:
        raise ValueError(f"--model-path: {exc}") from None
    try:
        return WorkerModelSettings(**source, precision=precision, compile=compile_, device=device,
                                   max_seq_len=max_seq_len, seed=seed)
    except ValidationError as exc:  # (pydantic's four lines named a field, not the option)
        option = {"path": "--model-path", "compile": "--compile", "max_seq_len": "--max-seq-len"}
        raise ValueError("; ".join(f"{option.get(str(e['loc'][0]), '--' + str(e['loc'][0]).replace('_', '-'))}: "
                                   f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file: a profile is frozen once written, and its hash says which one a result used."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _progress(label: str, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, disable=not enabled, transient=True)


def _fit_table(title: str, model: Any, rows: Any = None) -> Any:
    """The fitted model's price of a few shapes; with the profile's ``rows``, a shape beyond them (more sequences,
    longer prompts or contexts than any row timed) is marked as extrapolated."""
    from rich.table import Table

    from sim.latency.base import IterationShape

    t = Table(title=title, header_style="bold")
    t.add_column("shape")
    t.add_column("predicted", justify="right")
    shapes = [
        ("prefill 1 x 128 tokens", IterationShape((128,), (0,), ())),
        ("prefill 4 x 64 tokens", IterationShape((64,) * 4, (0,) * 4, ())),
        ("decode 1 seq @ 256", IterationShape((), (), (256,))),
        ("decode 8 seqs @ 256", IterationShape((), (), (256,) * 8)),
        ("decode 32 seqs @ 256", IterationShape((), (), (256,) * 32)),
    ]
    marked = False
    for label, shape in shapes:
        beyond = rows is not None and beyond_rows(shape, rows)
        marked |= beyond
        t.add_row(label + (" *" if beyond else ""), f"{model.iteration_s(shape) * 1000:.2f} ms")
    stats = getattr(model, "fit_stats", {})
    notes = []
    if stats:
        notes.append(f"fit on {int(stats['rows'])} rows: median |rel err| {stats['median_rel_err']:.1%}, "
                     f"p90 {stats['p90_rel_err']:.1%}")
    if marked:
        notes.append("* beyond every row of the profile: extrapolated")
    t.caption = "; ".join(notes) or None
    return t


def beyond_rows(shape: Any, rows: Any) -> bool:
    """Whether ``shape`` (a prefill-only or decode-only iteration) has more sequences, or longer prompts or
    contexts, than every row of its kind in ``rows``: priced by extrapolating the fit."""
    n, nd = len(shape.prefill_chunk_tokens), len(shape.decode_context_tokens)
    if n:
        timed = [(r["num_prefill_seqs"], r["num_prefill_tokens"] / r["num_prefill_seqs"])
                 for r in rows if r["num_prefill_seqs"]]
        longest = max(shape.prefill_chunk_tokens)
    else:
        timed = [(r["num_decode_seqs"], r["sum_decode_context"] / r["num_decode_seqs"])
                 for r in rows if r["num_decode_seqs"]]
        longest = max(shape.decode_context_tokens) if nd else 0
    count = n or nd
    return not timed or count > max(k for k, _ in timed) or longest > max(x for _, x in timed)


@app.command("profile")
def profile(
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile file to write (JSON).")] = Path(
        "profile.json"),
    preset: Annotated[Optional[str], typer.Option(help="Random-weight preset: tiny-llama, small-llama, medium-llama.")]
    = None,
    model_path: Annotated[Optional[str], typer.Option(help="Local Hugging Face model directory.")] = None,
    config_path: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="A daemon (or run) config: profile the worker of its deployment --model as the daemon "
                         "builds it (path, worker.config or preset, and its precision, device, max_seq_len, seed), "
                         "labelled as a live run of it records it.")] = None,
    model: Annotated[Optional[str], typer.Option(
        help="With --config: the deployment (cluster.models[].name) whose worker to profile (default: the only "
             "one).")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="auto | fp32 | bf16 | fp16 | int8 | nf4 (default: auto; with --config, the worker's).")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model (with --config: also when "
                                                             "the worker does).")] = False,
    device: Annotated[Optional[str], typer.Option(
        help="auto | cpu | cuda | cuda:N (default: auto; with --config, the worker's).")] = None,
    grid: Annotated[str, typer.Option(help="Batch shapes to time: small | full | limits (from --max-prompt-tokens, "
                                           "--max-output-tokens and --max-batch: the model's limits, no trace).")]
    = "small",
    max_prompt_tokens: Annotated[int, typer.Option(min=1, help="--grid limits: the longest prompt served.")] = 256,
    max_output_tokens: Annotated[int, typer.Option(min=1, help="--grid limits: the longest output served.")] = 48,
    max_batch: Annotated[int, typer.Option(min=1, help="--grid limits: the largest decode batch.")] = 32,
    repeats: Annotated[Optional[int], typer.Option(min=1, help="Timed iterations per shape (default: the grid's).")]
    = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch intra-op threads (CPU).")] = None,
    interleave: Annotated[bool, typer.Option(help="Time the grid in passes, one iteration per shape each, so a "
                                                  "machine whose speed drifts does not skew shapes against "
                                                  "each other (--grid limits always does).")] = False,
    max_seq_len: Annotated[Optional[int], typer.Option(
        min=2, help="Context the worker allows (default: 2048; with --config, the worker's).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Time a live worker's iterations over a grid of batch shapes; write a profile the simulator loads.

    Use it with ``latency_model: measured`` and ``latency: {path: PROFILE}`` in a deployment. The worker is
    ``--preset`` / ``--model-path``, or a daemon config's deployment (``--config FILE [--model NAME]``).
    """
    import dataclasses

    from controlplane.extras import extra_needed

    with user_errors(), extra_needed("controlplane profile", "live", "torch and transformers"):  # (one line, exit 2)
        import torch
        from controlplane.live.backend import CausalLMBackend
        from controlplane.hardware.profile_format import write_profile
        from controlplane.live.profiling import profile_backend, profile_meta
        from sim.latency.measured import MeasuredProfileModel

    with user_errors():
        from controlplane.cli.profile_worker import config_worker, with_options
        from controlplane.live.profiling import ProfileGrid

        if config_path is not None:
            if preset or model_path:
                raise ValueError("--config names the worker: give --config or --preset / --model-path, not both")
            settings = with_options(config_worker(config_path, model), precision=precision, device=device,
                                    compile=compile_ or None, max_seq_len=max_seq_len)
        elif model is not None:
            raise ValueError(f"--model {model!r} names a deployment of a daemon config: give the config (--config)")
        else:
            settings = _settings(preset, model_path, precision or "auto", compile_, device or "auto",
                                 max_seq_len or 2048)
        max_seq_len = settings.max_seq_len
        named = grids()
        if grid == "limits":
            shapes = ProfileGrid.from_limits(max_prompt_tokens, max_output_tokens, max_batch, repeats or 2)
            if max_seq_len < (needed := shapes.left_out(max_seq_len)[2]):  # (it was raised unsaid, and too little)
                err.print(f"--grid limits: --max-seq-len raised from {max_seq_len} to {needed}, so the grid's longest "
                          f"prompt ({max_prompt_tokens}) and context (--max-prompt-tokens + --max-output-tokens) fit "
                          "with the timed steps", highlight=False)
                max_seq_len = needed
                settings = with_options(settings, max_seq_len=needed)
        elif grid not in named:
            raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(named)}, limits")
        else:
            shapes = dataclasses.replace(named[grid], repeats=repeats or named[grid].repeats, interleave=interleave)
        left_out_warning(shapes, max_seq_len)
        if threads:
            torch.set_num_threads(threads)
        err.print(f"loading {settings.source_name()} ({settings.precision}) on {settings.device} ...", highlight=False)
        from controlplane.live.quantize import PrecisionUnavailable

        try:
            backend = CausalLMBackend.from_settings(settings)
        except PrecisionUnavailable as exc:
            raise ValueError(str(exc)) from None
        bar = _progress("profile", progress and err.is_terminal)
        with bar:
            task = bar.add_task("profile", total=None)
            rows = profile_backend(backend, shapes, progress=lambda done, total: bar.update(task, completed=done,
                                                                                               total=total))
        meta = {**profile_meta(backend), "grid": grid, "interleaved": shapes.interleave, "spread": shapes.spread,
                "source": "controlplane profile"}
        path = write_profile(output, rows, meta)
        model = MeasuredProfileModel.from_file(path)
    out.print(_fit_table(f"{meta['model']} {meta['precision']} on {meta['device']}", model, rows))
    out.print(f"wrote {len(rows)} rows to {path} (sha256 {file_sha256(path)}); simulate with "
              f"latency_model: measured, latency: {{path: {path}}}", highlight=False)
    warning = noisy_fit_warning(getattr(model, "fit_stats", {}))
    if warning:
        err.print(f"[yellow]{warning}[/]", highlight=False)


def left_out_warning(shapes: ProfileGrid, max_seq_len: int) -> str:
    """Say (on stderr) which of the grid's prompt lengths and decode contexts ``--max-seq-len`` leaves out
    (`ProfileGrid.left_out`; they were dropped unsaid: 57 rows of 144); returns the text ('' when none)."""
    tokens, contexts, needed = shapes.left_out(max_seq_len)
    if not tokens and not contexts:
        return ""
    parts = ([f"prefills of {', '.join(map(str, tokens))} tokens"] if tokens else []) + (
        [f"decodes at context {', '.join(map(str, contexts))}"] if contexts else [])
    text = (f"--max-seq-len {max_seq_len} leaves {' and '.join(parts)} out of the grid (they do not fit the worker's "
            f"context with the timed steps); --max-seq-len {needed} times them all")
    err.print(f"[yellow]{text}[/]", highlight=False)
    return text


#: A grid profile whose fitted model misses its own rows by more than this at the median was timed on
#: a machine whose speed moved under it (the same grid on this project's 2-core host: 3.5% quiet, 29% with
#: other jobs running): shapes timed at different speeds, and a calibration prices on them the shapes its
#: live run never reached.
NOISY_FIT_MEDIAN = 0.15


def noisy_fit_warning(stats: dict[str, float]) -> str:
    """What to do about a grid profile fitted this badly ('' when the fit is fine)."""
    median = stats.get("median_rel_err") if stats else None
    if median is None or median <= NOISY_FIT_MEDIAN:
        return ""
    return (f"the fit misses its own rows by {median:.0%} at the median (steady timings give a few percent): "
            "the machine's speed moved while it profiled (other jobs?); profile again when it is quieter, "
            "or with more --repeats (a calibration prices the shapes its live run never reached on this grid)")


def parse_repeats(specs: list[str]) -> list[list[int]]:
    """``["3", "4+5"]`` -> ``[[3], [4, 5]]``: each argument one repeat, ``+`` joins runs within one."""
    repeats = []
    for spec in specs:
        try:
            ids = [int(part) for part in spec.split("+")]
        except ValueError:
            raise ValueError(f"run {spec!r}: expected a run id or ids joined by '+', like 3 or 3+4") from None
        repeats.append(ids)
    for spec, ids in zip(specs, repeats):  # (`1+1` joined a run with itself)
        if len(set(ids)) < len(ids):
            raise ValueError(f"run {spec!r} names a run more than once: join different runs")
    groups = [tuple(sorted(ids)) for ids in repeats]
    if len(set(groups)) < len(groups):  # (`1 1` priced the same iterations "0.0% apart")
        twice = next(g for g in groups if groups.count(g) > 1)
        raise ValueError(f"run {'+'.join(map(str, twice))} is named as more than one repeat in {' '.join(specs)}: "
                         "repeats are different runs of the same traffic")
    return repeats


def unfinished_run_warning(engine: Any, run_id: int, iterations: int) -> str:
    """What to say of a run that did not finish (interrupted, crashed): its iterations are a part of its window
    ('' for a finished run)."""
    from controlplane.storage import get_run

    run = get_run(engine, run_id)
    if run.get("status") == "finished":
        return ""
    summary = run.get("summary") or {}
    done = (f", {summary['num_completed']} of {summary['num_requests']} requests completed"
            if "num_completed" in summary and "num_requests" in summary else "")
    return (f"run {run_id} did not finish ({run.get('status')}: {iterations} iterations{done}): it calibrates on "
            "the part of its window it served; a finished run is a fuller sample")


@app.command("calibrate")
def calibrate(
    runs: Annotated[list[str], typer.Argument(
        help="A recorded live run whose iterations were timed (ID); several put on one timeline (ID+ID, e.g. a light "
             "and a heavy run); or repeats of the same traffic, one argument each (3+4 5+6 7+8): each repeat is "
             "calibrated into NAME.repeat-K.json, their spread printed, and the median one (of an even count the "
             "upper median, the dearer of the middle two) written to --output.",
        metavar="RUN")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile file to write.")] = Path(
        "calibrated-profile.json"),
    db: Annotated[Optional[str], typer.Option("--db", help=DB_READ_HELP)] = None,
    profile_path: Annotated[
        Optional[Path],
        typer.Option("--profile", help="A grid profile of the same worker: add the run's measured overhead to it "
                                       "instead of fitting the run's own iterations alone."),
    ] = None,
    worker: Annotated[Optional[str], typer.Option(help="Only this worker's iterations.")] = None,
    timing: Annotated[str, typer.Option(help="wall: as the control plane saw them (with the live overhead); "
                                             "backend: the backend's own time (without --profile).")] = "wall",
    from_s: Annotated[Optional[float], typer.Option(
        "--from-s", min=0.0, help="Only the iterations that started at or after this run time (s). Default: a "
                                  "run's recorded warm-up end (`warm_up_until_s`, benchmarks/fidelity.py's runs), "
                                  "else all; 0 keeps a warm-up's iterations.")]
    = None,
) -> None:
    """Fit a measured latency profile from recorded live runs' own iteration timings (repeats: freeze the median)."""
    from controlplane.live.iteration_log import read_live_run
    from controlplane.live.iteration_samples import join_runs
    from sim.calibration import calibrate_repeats
    from controlplane.cli.shown_warnings import shown_once
    from sim.latency.measured import MeasuredProfileModel

    # (the fits' rows measured far from them: said below of the profile written, which holds them, as a replay says it)
    with user_errors(), shown_once(lambda text: None):
        if timing not in ("wall", "backend"):
            raise ValueError("--timing must be wall or backend")
        if timing == "backend" and profile_path is not None:  # (it ignored --profile: the same file either way)
            raise ValueError(f"--timing backend fits the engine's own times alone and does not use --profile "
                             f"{profile_path}: drop --profile, or calibrate with --timing wall")
        repeats = parse_repeats(runs)
        engine = open_stored_runs(db)  # (as `runs show`: a --db naming no file is an error, not a new empty one)
        try:
            from controlplane.output_file import check_not_read, database_files

            check_not_read(output, database_files(engine))  # (the profile is written over it at the end)
            loaded = [[read_live_run(engine, run_id, worker, from_s=from_s) for run_id in ids] for ids in repeats]
            for group in loaded:
                for run in group:
                    if warning := unfinished_run_warning(engine, run.run_id, len(run.samples)):
                        err.print(f"[yellow]{warning}[/]", highlight=False)
                    if run.left_out:
                        err.print(f"run {run.run_id}: {run.left_out} iterations before {run.from_s:g} s left out"
                                  + ("" if from_s is not None else " (its warm-up; --from-s 0 keeps them)"),
                                  highlight=False)
        finally:
            engine.dispose()
        samples = [join_runs(*(r.samples for r in group)) if len(group) > 1 else group[0].samples
                   for group in loaded]
        if len(repeats) == 1:
            from sim.calibration import calibrate as calibrate_profile

            done = calibrate_profile(samples[0], output, grid=profile_path, timing=timing, meta=loaded[0][0].meta,
                                     run_ids=repeats[0])
            spread = None
        else:
            several = calibrate_repeats(samples, output, run_ids=repeats, grid=profile_path, timing=timing,
                                        meta=loaded[0][0].meta)
            done, spread = several.median, several.spread
        model = MeasuredProfileModel.from_file(output)
    label = "+".join(str(i) for i in repeats[spread.median_index if spread else 0])
    out.print(_fit_table(f"run {label}: {len(done.samples)} iterations", model, done.calibration.rows))
    cal = done.calibration
    oh = cal.overhead
    out.print(f"live overhead per iteration: {oh.base_s * 1e3:.2f} ms + {oh.per_seq_s * 1e6:.1f} us/seq "
              f"+ {oh.per_prompt_s * 1e3:.2f} ms/prompt prefilled (median {oh.median_s * 1e3:.2f} ms over "
              f"{oh.samples} iterations, hand-off to the next batch {cal.handoff_s * 1e3:.2f} ms included)"
              + (f"; live backend {cal.slowdown:.2f}x the profile" if cal.slowdown else "")
              + (f"; {cal.stalls} stall(s) of the host or driver left out" if cal.stalls else ""))
    if spread is not None:
        out.print(_spread_table(repeats, several, spread))
        which = ("the median" if spread.median_label == "median" else
                 "the upper median (an even count has no middle one: the dearer of the middle two, so predictions err "
                 "slow, not fast)")
        out.print(f"the repeats price the same {spread.iterations} iterations {spread.spread_pct:.1f}% apart "
                  f"(max - min over mean): read it beside the live-vs-live noise of repeated runs; {which}, "
                  f"repeat {spread.median_index + 1}, is frozen")
    out.print(f"wrote {len(cal.rows)} rows to {output}; frozen: sha256 {file_sha256(output)} (check it "
              f"before each replay: `sha256sum {output}`); simulate with latency_model: measured, "
              f"latency: {{path: {output}}}", highlight=False)
    if model.far_rows_note:  # (a stall while timing, a clock glitch: each replay on the profile warns it too)
        from rich.markup import escape

        err.print(f"[yellow]warning:[/] {escape(model.far_rows_note)}; each replay on {escape(str(output))} says so "
                  "too (to replace them, profile or serve the window again on a quiet machine)", highlight=False,
                  soft_wrap=True)


def _spread_table(repeats: list[list[int]], several: Any, spread: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"repeats of the calibration (every repeat's iterations priced on each profile; "
                        f"files beside {several.path.name})")
    for col in ("repeat", "runs", "ms per iteration", f"vs {spread.median_label}", "profile"):
        table.add_column(col, justify="left" if col in ("runs", "profile") else "right")
    per_iter = spread.mean_iteration_ms()
    for k, (ids, fit) in enumerate(zip(repeats, several.fits)):
        mark = f" (frozen: {spread.median_label})" if k == spread.median_index else ""
        table.add_row(f"{k + 1}{mark}", "+".join(map(str, ids)), f"{per_iter[k]:.3f}",
                      f"{spread.relative_to_median()[k]:+.1f}%", fit.path.name)
    return table


def parse_batch_sizes(text: str) -> list[int]:
    """``--batch-sizes 1,8,32``: whole numbers of at least 1 (a bad one was a row of its own, or Python's error)."""
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--batch-sizes: {part!r} in {text!r} is not a whole number of at least 1")
        sizes.append(int(part))
    return sizes


def parse_variants(text: str) -> list[str]:
    """``--variants fp32,int8+compile``: known precisions, each optionally +compile (an unknown one was an
    "error: KeyError" row and exit 0; none at all an empty table)."""
    from typing import get_args

    from controlplane.live.model_source import Precision

    known = [p for p in get_args(Precision) if p != "auto"]
    specs = [v.strip() for v in text.split(",")]
    for spec in specs:
        precision, _, extra = spec.partition("+")
        if precision not in known or extra not in ("", "compile"):
            raise ValueError(f"--variants: {spec!r} in {text!r} is not PRECISION or PRECISION+compile "
                             f"(precisions: {', '.join(known)})")
    return specs


@bench_app.command("quant")
def quant(
    preset: Annotated[Optional[str], typer.Option(help="Random-weight preset (default tiny-llama).")] = None,
    model_path: Annotated[Optional[str], typer.Option(help="Local Hugging Face model directory.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    variants: Annotated[str, typer.Option(help="Comma-separated PRECISION or PRECISION+compile.")] =
    "fp32,bf16,int8,nf4",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Prompt length of every sequence, in tokens.")] = 32,
    new_tokens: Annotated[int, typer.Option(min=1, help="Tokens each sequence generates (timed decode).")] = 32,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per variant and batch size.")] = 3,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch intra-op threads (CPU).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json-out", "-o", help="Also write the rows to this file, "
                                                      "as JSON.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    json_old: Annotated[Optional[Path], typer.Option("--json", hidden=True, help="--json-out's former name.")] = None,
) -> None:
    """Quantization / compilation benchmark: each variant loaded, warmed up, timed at several batch sizes."""
    import torch

    from controlplane.live.quant_bench import run_quant_bench, render_table

    if json_old is not None:  # (--json PATH, as it was; elsewhere --json is a flag for JSON on stdout)
        if json_path is not None:
            raise typer.BadParameter("--json is --json-out's former name: give one", param_hint="--json")
        json_path = json_old
    with user_errors():
        if json_path is not None:  # (its folder, before the benchmark's minutes rather than after them)
            from controlplane.output_file import check_folder

            check_folder(json_path)
        if threads:
            torch.set_num_threads(threads)
        sizes = parse_batch_sizes(batch_sizes)
        specs = parse_variants(variants)
        base = _settings(preset, model_path, "auto", False, device, prompt_tokens + new_tokens + 1)
        rows = []
        bar = _progress("bench quant", progress and err.is_terminal)
        with bar:
            task = bar.add_task("quant", total=len(specs))
            for spec in specs:
                rows += run_quant_bench(base, [spec], sizes, prompt_tokens, new_tokens, repeats)
                bar.advance(task)
    out.print(render_table(rows, title=f"{base.source_name()} (threads={torch.get_num_threads()})"))
    if json_path is not None:
        from controlplane.output_file import replaced_on_success

        with user_errors(), replaced_on_success(json_path, option="--json-out") as partial:
            partial.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
        out.print(f"wrote {json_path}", highlight=False)


if __name__ == "__main__":  # python -m controlplane.cli.bench profile|calibrate|bench quant ...
    app()
