"""`controlplane profile`, `controlplane bench quant`, `controlplane calibrate`: measure live workers.

* ``profile`` times a live worker's iterations over a grid of batch shapes and writes a
  ``controlplane-profile/1`` file, which the simulator loads as ``latency_model: measured``.
* ``bench quant`` compares precisions and compilation (tokens/s, latency, peak memory, size).
* ``calibrate RUN_ID`` fits a profile from a recorded live run's own iterations, as the control
  plane saw them (backend time plus the live driver's per-iteration overhead).

A live run records its iterations when its workers run in a `TimedPool` (the fidelity benchmark
does this): every step becomes an ``iteration`` decision holding the batch's shape, the backend's
own time and the effective time from the core's start of the batch to the reply.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from controlplane.cli.common import DB_OPTION_HELP, err, out, resolve_db, user_errors
from controlplane.hookspecs import hookimpl
from controlplane.live.pool import StepCommand, StepReply, WorkerPool
from controlplane.types import Decision

if TYPE_CHECKING:
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.profiling import ProfileGrid

app = typer.Typer(help="Profile, benchmark and calibrate live workers.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks of live workers.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

#: The ``action`` of the decisions a `TimedPool` records, one per worker iteration.
ITERATION_ACTION = "iteration"
from sim.latency.profile_format import PADDED_FIELDS as PADDED_KEYS  # noqa: E402
from sim.latency.profile_format import ROW_FIELDS as ROW_KEYS  # noqa: E402


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


# --- timing live iterations as the control plane sees them ------------------------------------------


@dataclass(frozen=True, slots=True)
class IterationSample:
    """One live iteration: its shape and backend time (``row``) and when the core started and saw it end."""

    worker_id: str
    batch_id: int
    start_s: float  # run time the core started the batch
    end_s: float  # run time the reply was back on the driver's loop (the batch's BatchFinished)
    row: dict[str, float]  # the backend's profile row (shape + its own iteration_s) and the padded counts

    @property
    def backend_s(self) -> float:
        return float(self.row["iteration_s"])

    @property
    def wall_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def num_seqs(self) -> int:
        return int(self.row["num_prefill_seqs"]) + int(self.row["num_decode_seqs"])

    def wall_row(self) -> dict[str, float]:
        """The profile row with the time the control plane saw instead of the backend's."""
        return {**self.row, "iteration_s": self.wall_s}


class _BatchStarts:
    """Observer: the run time at which the core started each batch."""

    name = "step-timer"

    def __init__(self) -> None:
        self.start_s: dict[int, float] = {}

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is Decision and event.action == "batch" and event.payload:
            self.start_s[event.payload["batch"]] = event.time_s


class TimedPool(WorkerPool):
    """A worker pool that times every iteration as the control plane sees it (wraps another pool).

    Give ``pool.observer`` to the driver as an extra plugin (it sees when the core starts each
    batch) and call ``attach(driver)`` after building the driver: each step is then kept in
    ``samples`` and sent to the run's event bus as an ``iteration`` decision, which the SQL
    recorder stores for ``controlplane calibrate``.
    """

    kind = "timed"

    def __init__(self, inner: WorkerPool, *, emit: bool = True) -> None:
        super().__init__(cpu_threads=inner.cpu_threads)
        self.inner = inner
        self.emit = emit
        self.observer = _BatchStarts()
        self.samples: list[IterationSample] = []
        self._driver: Any = None
        self._kv: dict[str, dict[str, int]] = {}  # worker -> request -> tokens it holds in the KV cache

    def attach(self, driver: Any) -> TimedPool:
        self._driver = driver
        return self

    def _now(self) -> float:
        now = getattr(self._driver, "_now", None)  # the driver's run clock (LiveDriver has no public one yet)
        return now() if now is not None else time.monotonic()

    def bind(self, loop: Any, on_failure: Any) -> None:
        super().bind(loop, on_failure)
        self.inner.bind(loop, on_failure)

    def threads_for(self, expected_workers: int) -> int:
        return self.inner.threads_for(expected_workers)

    async def start(self, worker_id: str, settings: WorkerModelSettings, *, expected_workers: int = 1) -> dict[str, Any]:
        return await self.inner.start(worker_id, settings, expected_workers=expected_workers)

    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        called = self._now()
        padded = self._padded(worker_id, cmd)
        reply = await self.inner.step(worker_id, cmd)
        end = self._now()
        self._advance(worker_id, cmd, reply)
        if reply.profile and (reply.profile.get("num_prefill_tokens") or reply.profile.get("num_decode_seqs")):
            starts = self.observer.start_s
            start = starts.pop(cmd.batch_id, called)
            if len(starts) > 4096:  # batches that never reached a worker (middle prefill chunks)
                for b in [b for b in starts if b < cmd.batch_id - 1024]:
                    del starts[b]
            sample = IterationSample(worker_id, cmd.batch_id, start, end, {**reply.profile, **padded})
            self.samples.append(sample)
            if self.emit:
                self._record(sample)
        return reply

    def _padded(self, worker_id: str, cmd: StepCommand) -> dict[str, int]:
        """What the padded backend computes: prefills x the longest prompt, decodes x the KV length."""
        kv = self._kv.setdefault(worker_id, {})
        for rid in cmd.removes:
            kv.pop(rid, None)
        for a in cmd.adds:
            kv.pop(a.request_id, None)
        lengths = {a.request_id: len(a.prompt_ids) + len(a.generated) for a in cmd.adds}
        width = max((lengths.get(rid, 0) for rid in cmd.prefill_ids), default=0)
        columns = max(kv.values(), default=0) if cmd.decode_ids else 0
        return {"padded_prefill_tokens": len(cmd.prefill_ids) * width,
                "padded_decode_context": len(cmd.decode_ids) * columns}

    def _advance(self, worker_id: str, cmd: StepCommand, reply: StepReply) -> None:
        kv = self._kv[worker_id]
        lengths = {a.request_id: len(a.prompt_ids) + len(a.generated) for a in cmd.adds}
        for rid in cmd.decode_ids:
            kv[rid] = kv.get(rid, 0) + 1
        for rid in cmd.prefill_ids:
            kv[rid] = lengths.get(rid, 0)
        for o in reply.outputs:
            if o.finished:
                kv.pop(o.request_id, None)

    def _record(self, s: IterationSample) -> None:
        driver = self._driver
        session = getattr(driver, "session", None)
        if session is None or driver.core is None:
            return
        payload = {"batch": s.batch_id, **s.row, "start_s": s.start_s, "wall_s": s.wall_s}
        session.plugins.hook.cp_on_event(
            ctx=driver.core.ctx,
            event=Decision(s.end_s, "worker", self.observer.name, ITERATION_ACTION, s.worker_id, None, payload),
        )

    async def stop(self, worker_id: str) -> None:
        await self.inner.stop(worker_id)

    def alive(self, worker_id: str) -> bool:
        return self.inner.alive(worker_id)

    def info(self, worker_id: str) -> dict[str, Any]:
        return self.inner.info(worker_id)

    async def close(self) -> None:
        await self.inner.close()

    def worker_ids(self) -> list[str]:
        return self.inner.worker_ids()


# --- folding the live overhead into a profile ----------------------------------------------------


@dataclass(frozen=True)
class Overhead:
    """Per-iteration time the live path adds to the backend's: ``base_s + per_seq_s`` x sequences."""

    base_s: float
    per_seq_s: float
    samples: int
    median_s: float

    def at(self, num_seqs: int) -> float:
        return self.base_s + self.per_seq_s * num_seqs

    def as_dict(self) -> dict[str, float]:
        return {"overhead_base_s": self.base_s, "overhead_per_seq_s": self.per_seq_s,
                "overhead_median_s": self.median_s, "overhead_samples": self.samples}


def fit_overhead(samples: Iterable[IterationSample]) -> Overhead:
    """Fit the live per-iteration overhead (wall - backend) as a + b x sequences.

    A least-squares (mean) fit, not a median: latencies add up iteration times, so the odd
    stall (a GC pause, a noisy neighbour taking the CPU) belongs in the expectation.
    """
    import numpy as np
    from sklearn.linear_model import LinearRegression

    pairs = [(s.num_seqs, max(0.0, s.wall_s - s.backend_s)) for s in samples]
    if not pairs:
        raise ValueError("no live iterations to measure the overhead from")
    seqs = np.array([[1.0, n] for n, _ in pairs])
    extra = np.array([x for _, x in pairs])
    median = float(np.median(extra))
    if len({n for n, _ in pairs}) == 1:
        return Overhead(float(extra.mean()), 0.0, len(pairs), median)
    coef = LinearRegression(positive=True, fit_intercept=False).fit(seqs, extra).coef_
    return Overhead(float(coef[0]), float(coef[1]), len(pairs), median)


def aggregate_rows(rows: Iterable[dict[str, Any]], *, buckets_per_octave: int = 2) -> list[dict[str, Any]]:
    """Mean row per shape (same sequence counts, token and context counts within a fraction of an octave).

    Fitting means instead of single noisy iterations keeps the relative-error fit from leaning
    low, and stops the commonest shapes of a live run from drowning the rare large ones.
    """
    import math

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        nd = r["num_decode_seqs"]
        ctx = r["sum_decode_context"] / nd if nd else 0.0
        key = (r["num_prefill_seqs"], round(math.log2(r["num_prefill_tokens"] + 1) * buckets_per_octave), nd,
               round(math.log2(ctx + 1) * buckets_per_octave))
        groups.setdefault(key, []).append(r)
    out_rows = []
    for members in groups.values():
        keys = [k for k in members[0] if all(k in m for m in members)]
        out_rows.append({k: statistics.fmean(float(m[k]) for m in members) for k in keys})
    return out_rows


def add_overhead(rows: Iterable[dict[str, Any]], overhead: Overhead) -> list[dict[str, Any]]:
    """Profile rows with the live overhead added to each iteration's time."""
    out_rows = []
    for r in rows:
        seqs = int(r["num_prefill_seqs"]) + int(r["num_decode_seqs"])
        out_rows.append({**r, "iteration_s": float(r["iteration_s"]) + overhead.at(seqs)})
    return out_rows


def live_slowdown(grid_rows: Sequence[dict[str, Any]], grid_meta: dict[str, Any],
                  samples: Sequence[IterationSample]) -> float:
    """How much slower the live backend ran than the grid profile predicts for the same shapes.

    The grid times uniform batches on an idle engine; live batches mix lengths (padding masks),
    merge and compact their KV cache as requests come and go, and share the machine with the
    driver. Sum of live backend time over sum of predicted, over the live iterations.
    """
    from sim.latency.base import IterationShape
    from sim.latency.measured import MeasuredProfileModel

    model = MeasuredProfileModel.fit(aggregate_rows(grid_rows), grid_meta)
    predicted = actual = 0.0
    for s in samples:
        r = s.row
        n, nd = int(r["num_prefill_seqs"]), int(r["num_decode_seqs"])
        width = r.get("padded_prefill_tokens", r["num_prefill_tokens"]) / n if n else 0
        ctx = r.get("padded_decode_context", r["sum_decode_context"]) / nd if nd else 0
        predicted += model.iteration_s(IterationShape([width] * n, [0] * n, [ctx] * nd))
        actual += s.backend_s
    return actual / predicted if predicted > 0 else 1.0


@dataclass(frozen=True)
class Calibration:
    """Profile rows for the simulator from a live run, and what was folded into them."""

    rows: list[dict[str, Any]]
    overhead: Overhead
    slowdown: float | None  # live backend / grid profile; None without a grid

    def meta(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"live_slowdown": self.slowdown} if self.slowdown is not None else {}
        return {**self.overhead.as_dict(), **extra}


def calibrate_rows(samples: Sequence[IterationSample], grid_rows: Sequence[dict[str, Any]] | None = None,
                   grid_meta: dict[str, Any] | None = None) -> Calibration:
    """The live run's own iterations as the control plane saw them (mean per shape); with a grid
    profile of the same worker, also the grid's rows scaled by the live slowdown plus the live
    per-iteration overhead, for the shapes the run did not reach."""
    if not samples:
        raise ValueError("no live iterations to calibrate from")
    overhead = fit_overhead(samples)
    rows = aggregate_rows(s.wall_row() for s in samples)
    if grid_rows is None:
        return Calibration(rows, overhead, None)
    slowdown = live_slowdown(grid_rows, grid_meta or {}, samples)
    scaled = [{**r, "iteration_s": r["iteration_s"] * slowdown} for r in aggregate_rows(grid_rows)]
    return Calibration(add_overhead(scaled, overhead) + rows, overhead, slowdown)


def run_iterations(engine: Any, run_id: int, worker: str | None = None) -> list[IterationSample]:
    """The iterations a live run recorded (``iteration`` decisions), oldest first."""
    from controlplane.storage import iter_rows

    found = []
    for d in iter_rows(engine, run_id, "decisions"):
        if d["action"] != ITERATION_ACTION or not d.get("payload"):
            continue
        if worker is not None and d["subject"] != worker:
            continue
        p = d["payload"]
        row = {k: p[k] for k in (*ROW_KEYS, *PADDED_KEYS) if k in p}
        found.append(IterationSample(d["subject"], int(p["batch"]), float(p["start_s"]),
                                     float(p["start_s"]) + float(p["wall_s"]), row))
    return found


def _worker_meta(engine: Any, run_id: int) -> dict[str, Any]:
    """Model, device and precision of a run's first ready worker (its reported facts)."""
    from controlplane.storage import iter_rows

    for e in iter_rows(engine, run_id, "worker_events"):
        if e["kind"] == "ready" and e.get("detail"):
            d = e["detail"]
            return {k: d[k] for k in ("model", "device", "precision", "device_name") if d.get(k) is not None}
    return {}


# --- commands ---------------------------------------------------------------------------------------


def _settings(preset: str | None, model_path: str | None, precision: str, compile_: bool, device: str,
              max_seq_len: int, seed: int = 0) -> WorkerModelSettings:
    from controlplane.live.model_source import WorkerModelSettings

    if preset and model_path:
        raise ValueError("give --preset or --model-path, not both")
    source = {"path": model_path} if model_path else {"preset": preset or "tiny-llama"}
    return WorkerModelSettings(**source, precision=precision, compile=compile_, device=device,
                               max_seq_len=max_seq_len, seed=seed)


def _progress(label: str, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, disable=not enabled, transient=True)


def _fit_table(title: str, model: Any) -> Any:
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
    for label, shape in shapes:
        t.add_row(label, f"{model.iteration_s(shape) * 1000:.2f} ms")
    stats = getattr(model, "fit_stats", {})
    if stats:
        t.caption = (f"fit on {int(stats['rows'])} rows: median |rel err| {stats['median_rel_err']:.1%}, "
                     f"p90 {stats['p90_rel_err']:.1%}")
    return t


@app.command("profile")
def profile(
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile file to write (JSON).")] = Path(
        "profile.json"),
    preset: Annotated[Optional[str], typer.Option(help="Random-weight preset: tiny-llama, small-llama, medium-llama.")]
    = None,
    model_path: Annotated[Optional[str], typer.Option(help="Local Hugging Face model directory.")] = None,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16 | int8 | nf4.")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    grid: Annotated[str, typer.Option(help="Batch shapes to time: small | full.")] = "small",
    repeats: Annotated[Optional[int], typer.Option(min=1, help="Timed iterations per shape (default: the grid's).")]
    = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch intra-op threads (CPU).")] = None,
    max_seq_len: Annotated[int, typer.Option(min=2, help="Context the worker allows.")] = 2048,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Time a live worker's iterations over a grid of batch shapes; write a profile the simulator loads.

    Use it with ``latency_model: measured`` and ``latency: {path: PROFILE}`` in a deployment.
    """
    import dataclasses

    import torch

    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.profiling import profile_backend, profile_meta, write_profile
    from sim.latency.measured import MeasuredProfileModel

    with user_errors():
        named = grids()
        if grid not in named:
            raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(named)}")
        shapes = named[grid] if repeats is None else dataclasses.replace(named[grid], repeats=repeats)
        if threads:
            torch.set_num_threads(threads)
        settings = _settings(preset, model_path, precision, compile_, device, max_seq_len)
        err.print(f"loading {settings.source_name()} ({precision}) on {device} ...", highlight=False)
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
        meta = {**profile_meta(backend), "grid": grid, "source": "controlplane profile"}
        path = write_profile(output, rows, meta)
        model = MeasuredProfileModel.from_file(path)
    out.print(_fit_table(f"{meta['model']} {meta['precision']} on {meta['device']}", model))
    out.print(f"wrote {len(rows)} rows to {path}; simulate with "
              f"latency_model: measured, latency: {{path: {path}}}", highlight=False)


@app.command("calibrate")
def calibrate(
    run_id: Annotated[int, typer.Argument(help="A recorded live run whose iterations were timed.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile file to write.")] = Path(
        "calibrated-profile.json"),
    db: Annotated[Optional[str], typer.Option("--db", help=DB_OPTION_HELP)] = None,
    profile_path: Annotated[
        Optional[Path],
        typer.Option("--profile", help="A grid profile of the same worker: add the run's measured overhead to it "
                                       "instead of fitting the run's own iterations alone."),
    ] = None,
    worker: Annotated[Optional[str], typer.Option(help="Only this worker's iterations.")] = None,
    timing: Annotated[str, typer.Option(help="wall: as the control plane saw them (with the live overhead); "
                                             "backend: the backend's own time.")] = "wall",
) -> None:
    """Fit a measured latency profile from a recorded live run's own iteration timings."""
    from controlplane.storage import get_run, make_engine
    from sim.latency.measured import MeasuredProfileModel, read_profile, write_profile

    with user_errors():
        if timing not in ("wall", "backend"):
            raise ValueError("--timing must be wall or backend")
        engine = make_engine(resolve_db(db))
        try:
            run = get_run(engine, run_id)
            if run["mode"] != "live":
                raise ValueError(f"run {run_id} is a {run['mode']} run; calibrate needs a live run")
            samples = run_iterations(engine, run_id, worker)
            meta = {"model": "model", "device": "unknown", **_worker_meta(engine, run_id)}
        finally:
            engine.dispose()
        if not samples:
            raise ValueError(
                f"run {run_id} recorded no iteration timings: its workers must run in a TimedPool "
                "(controlplane.cli.bench), as benchmarks/fidelity.py does"
            )
        meta["batching"] = "padded"  # live runs come from CausalLMBackend
        if timing == "backend":  # the engine alone, as `controlplane profile` measures it
            cal = Calibration(aggregate_rows(s.row for s in samples), fit_overhead(samples), None)
            meta["source"] = f"live run {run_id} (backend timings, mean per shape)"
        elif profile_path is not None:
            grid_rows, grid_meta = read_profile(profile_path)
            cal = calibrate_rows(samples, grid_rows, grid_meta)
            meta = {**grid_meta, "source": f"live run {run_id} + {profile_path} scaled to it"}
        else:
            cal = calibrate_rows(samples)
            meta["source"] = f"live run {run_id} (as the control plane saw it, mean per shape)"
        meta.update({"run_id": run_id, "timing": timing, **cal.meta()})
        meta.pop("path", None)
        path = write_profile(output, cal.rows, meta)
        model = MeasuredProfileModel.from_file(path)
    out.print(_fit_table(f"run {run_id}: {len(samples)} iterations", model))
    oh = cal.overhead
    out.print(f"live overhead per iteration: {oh.base_s * 1e3:.2f} ms + {oh.per_seq_s * 1e6:.1f} us/seq "
              f"(median {oh.median_s * 1e3:.2f} ms over {oh.samples} iterations)"
              + (f"; live backend {cal.slowdown:.2f}x the profile" if cal.slowdown else ""))
    out.print(f"wrote {len(cal.rows)} rows to {path}", highlight=False)


@bench_app.command("quant")
def quant(
    preset: Annotated[Optional[str], typer.Option(help="Random-weight preset (default tiny-llama).")] = None,
    model_path: Annotated[Optional[str], typer.Option(help="Local Hugging Face model directory.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    variants: Annotated[str, typer.Option(help="Comma-separated PRECISION or PRECISION+compile.")] =
    "fp32,bf16,int8,nf4",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    prompt_tokens: Annotated[int, typer.Option(min=1)] = 32,
    new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    repeats: Annotated[int, typer.Option(min=1)] = 3,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch intra-op threads (CPU).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the rows here as JSON.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Quantization / compilation benchmark: each variant loaded, warmed up, timed at several batch sizes."""
    import torch

    from controlplane.live.quant_bench import run_quant_bench, render_table

    with user_errors():
        if threads:
            torch.set_num_threads(threads)
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        specs = [v.strip() for v in variants.split(",") if v.strip()]
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
        json_path.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
        out.print(f"wrote {json_path}", highlight=False)


def samples_table(samples: Sequence[IterationSample], title: str) -> Any:
    """Live iterations by batch size: backend time, wall time and the overhead between them (ms)."""
    from rich.table import Table

    by: dict[str, list[IterationSample]] = {}
    for s in samples:
        kind = "prefill" if s.row["num_prefill_seqs"] else "decode"
        by.setdefault(f"{kind} x{s.num_seqs}", []).append(s)
    t = Table(title=title, header_style="bold")
    for col in ("iterations", "n", "backend p50", "wall p50", "overhead p50"):
        t.add_column(col, justify="left" if col == "iterations" else "right")
    for key in sorted(by, key=lambda k: (k.split()[0], int(k.split("x")[1]))):
        xs = by[key]
        t.add_row(key, str(len(xs)), f"{statistics.median(s.backend_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.wall_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.wall_s - s.backend_s for s in xs) * 1e3:.2f} ms")
    return t


if __name__ == "__main__":  # python -m controlplane.cli.bench profile|calibrate|bench quant ...
    app()
