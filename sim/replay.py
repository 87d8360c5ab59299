"""Replay a trace through the control plane in the simulator: the library workflow.

``replay`` is what ``controlplane sim replay``, the benchmarks and ``controlplane.testing``
call. It reads a trace file (or takes any stream of ``TraceRequest``), applies the trace
transforms with random streams derived from one seed, builds the run (plugins, core,
recorder), the latency models and the SimPy driver, and runs to the end. Identical arguments
give identical results, whoever calls it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from controlplane import timings
from controlplane.config import RunConfig, checked_config
from controlplane.errors import ConfigError, ReplayInterrupted, did_you_mean
from controlplane.hardware.memory_plan import deployment_cold_start_s
from controlplane.session import RunSession, latency_factories
from sim.driver import SimDriver
from sim.interrupts import stop_on_ctrl_c, stopped_at
from sim.latency.base import LatencyModel
from sim.latency.checked import checked
from sim.latency.estimate import iteration_estimator
from sim.replay_args import checked_trace_arguments, library_names, warn_nothing_replayed
from sim.replay_trace import BAD_ROWS_KEPT, BAD_ROWS_SKIPPED, TraceStop, context_limits, rows_left_out, trace_read
from sim.traces import TraceReader, TraceRequest, apply_transforms, rate_profile_points, read_trace
from sim.traces._io import not_a_trace_file
from sim.traces.stream_check import checked_requests
from sim.traces.transforms import TransformValueError

__all__ = [
    "BAD_ROWS_KEPT",
    "BAD_ROWS_SKIPPED",
    "READER_STREAM",
    "TRANSFORM_STREAM",
    "ReplayInterrupted",
    "ReplayResult",
    "TraceTransforms",
    "build_driver",
    "build_latency_models",
    "first_read",
    "open_trace",
    "prepare_trace",
    "prepared_trace",
    "replay",
    "rows_left_out",
    "trace_read",
    "trace_rng",
]

#: Random streams of a trace, derived from its seed: ``numpy.random.default_rng([seed, stream])``.
#: The reader's (synthetic arrivals of Vidur traces, Mooncake's spread inside a timestamp bucket)
#: and the transforms' (rate scaling). The driver's own stream is ``[seed, 7]``.
READER_STREAM = 11
TRANSFORM_STREAM = 13


def trace_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of one of a trace's random streams (``READER_STREAM`` or ``TRANSFORM_STREAM``)."""
    return np.random.default_rng([seed, stream])


@dataclass(frozen=True, kw_only=True)  # (by name: `TraceTransforms(2)` set window_start_s silently)
class TraceTransforms:
    """Edits to a trace before it is replayed, applied in this order: window, speed-up, repeat,
    rate, limit, length scales, length caps.

    The window is cut in the trace's own time and rebased to start at 0; ``repeat`` plays the
    result that many times back to back (``sim.traces.transforms.repeat``); the rate changes by
    ``rate_scale`` times ``rate_profile``'s factor at each arrival, the profile's times being the
    replay's own seconds (after the window, the speed-up and the copies); ``limit`` counts
    requests after the rate change; the length scales multiply each request's prompt and output
    tokens (``sim.traces.scale_lengths``: rounded, at least 1, a scaled prompt without its prefix
    hashes) before the caps cut them. ``seed`` seeds the trace's random streams (the reader's and
    the rate change's); ``None`` takes the run's ``config.seed``. See docs/traces.md.
    """

    window_start_s: float | None = None  # keep arrivals at or after this second
    window_end_s: float | None = None  # keep arrivals before this second
    speed_up: float | None = None  # divide arrival times by this factor
    repeat: int | None = None  # play the trace this many times back to back
    rate_scale: float | None = None  # thin (< 1) or replicate (> 1) requests, seeded
    # (time_s, factor) points, the rate factor linear between them (``sim.traces.rate_profile``), seeded
    rate_profile: tuple[tuple[float, float], ...] | None = None
    # where the rate change puts a request's copies: "clumped" (None), in the gap after it, "shuffled",
    # the same arrival slots dealt the copies of 64 consecutive requests in a random order, or "shifted",
    # the n-th copies as a stream of the trace's arrivals rotated within each 600-s window (`scale_rate`)
    copies: str | None = None
    limit: int | None = None  # at most this many requests
    prompt_scale: float | None = None  # multiply prompt tokens by this (rounded, at least 1)
    output_scale: float | None = None  # multiply output tokens by this (rounded, at least 1)
    max_prompt_tokens: int | None = None  # cut longer prompts to this many tokens
    max_output_tokens: int | None = None  # cut longer outputs to this many tokens
    seed: int | None = None  # seed of the trace's random streams; None: the run's seed

    def __post_init__(self) -> None:
        if self.rate_profile is not None:  # checked now, and kept as float pairs (comparable, hashable)
            object.__setattr__(self, "rate_profile", rate_profile_points(self.rate_profile))

    @property
    def window(self) -> tuple[float | None, float | None] | None:
        if self.window_start_s is None and self.window_end_s is None:
            return None
        return (self.window_start_s, self.window_end_s)

    def trace_seed(self, run_seed: int) -> int:
        """The seed of the trace's random streams in a run seeded ``run_seed``."""
        return self.seed if self.seed is not None else run_seed

    def apply(self, requests: Iterable[TraceRequest] | Callable[[], Iterable[TraceRequest]],
              run_seed: int) -> Iterator[TraceRequest]:
        """The transformed stream (arguments are checked now, rows are read lazily). ``requests``
        is a stream, or a function that opens one (what ``repeat`` needs: a copy per call)."""
        # Only the rate change draws (a generator not made otherwise: see `open_trace`).
        draws = self.rate_scale is not None or self.rate_profile is not None
        rng = trace_rng(self.trace_seed(run_seed), TRANSFORM_STREAM) if draws else None
        try:
            return apply_transforms(requests, window=self.window, speed_up=self.speed_up, repeat=self.repeat,
                                    rate_scale=self.rate_scale, limit=self.limit, rng=rng,
                                    max_prompt_tokens=self.max_prompt_tokens, max_output_tokens=self.max_output_tokens,
                                    rate_profile=self.rate_profile, prompt_scale=self.prompt_scale,
                                    output_scale=self.output_scale, copies=self.copies)
        except TransformValueError as exc:  # (named by this class's fields: window_end_s, not the window's end_s)
            raise library_names(exc) from None


NO_TRANSFORMS = TraceTransforms()
timings.mark("replay_imported")  # (CONTROLPLANE_TIMINGS) the simulator's modules are imported


def open_trace(
    path: str | os.PathLike[str],
    trace_format: str | None = None,
    *,
    seed: int,
    options: Mapping[str, Any] | None = None,
) -> TraceReader:
    """A trace file's reader, its format detected unless given, its random choices (synthetic
    arrivals, Mooncake's spread) from ``[seed, READER_STREAM]``; a row repeating a request id is a
    bad row (``unique_ids``: a run names its requests by id)."""
    if (error := not_a_trace_file(path)) is not None:  # (missing, a folder, a pipe or a device: said so)
        raise error
    # The generator is made only for a format that draws: a replay that draws nothing does not
    # import ``numpy.random`` (~0.03 G instructions of its start).
    if options and "unique_ids" in options:
        raise ValueError("unknown trace option 'unique_ids': a replay always refuses a row that repeats a request id")
    return read_trace(path, trace_format, rng=partial(trace_rng, seed, READER_STREAM), unique_ids=True,
                      **dict(options or {}))


def prepare_trace(
    trace: Iterable[TraceRequest] | Callable[[], Iterable[TraceRequest]] | str | os.PathLike[str],
    *,
    seed: int,
    transforms: TraceTransforms | None = None,
    trace_format: str | None = None,
    trace_options: Mapping[str, Any] | None = None,
) -> Iterator[TraceRequest]:
    """The requests a replay with these arguments sees: the file read, then transformed.

    ``trace`` is a file (see ``open_trace``), any stream of requests in arrival order, or a
    function that opens one (``reopening``; what ``transforms.repeat`` needs). A stream that is
    not a reader's is checked as a reader checks a file's rows (``checked_requests``: arrivals,
    token counts, unique ids), lazily.
    ``seed`` is the run's; ``transforms.seed``, when set, replaces it for the trace's streams.
    """
    return prepared_trace(trace, seed=seed, transforms=transforms, trace_format=trace_format,
                          trace_options=trace_options)[1]


def prepared_trace(
    trace: Iterable[TraceRequest] | Callable[[], Iterable[TraceRequest]] | str | os.PathLike[str],
    *,
    seed: int,
    transforms: TraceTransforms | None = None,
    trace_format: str | None = None,
    trace_options: Mapping[str, Any] | None = None,
) -> tuple[TraceReader | None, Iterator[TraceRequest]]:
    """`prepare_trace`'s requests, after the reader of the trace (None for a stream that is not
    one): what the format options left out of the rows read so far is the reader's (`rows_left_out`)."""
    transforms = transforms or NO_TRANSFORMS
    reader = trace if isinstance(trace, TraceReader) else None
    if isinstance(trace, (str, os.PathLike)):
        reader, trace = _file_source(trace, trace_format, transforms, seed, trace_options)
    elif trace_options:
        raise ValueError("trace_options apply to a trace file; this trace is already a stream of requests")
    if reader is None:  # built in memory: checked as a reader checks a file's rows (`checked_requests`)
        if isinstance(trace, Sequence):  # a list or tuple can be read again (what `repeat` needs)
            trace = partial(iter, trace)
        trace = partial(_checked_copy, trace) if callable(trace) else checked_requests(trace)
    if transforms == NO_TRANSFORMS:
        return reader, iter(trace() if callable(trace) else trace)
    return reader, transforms.apply(trace, seed)


def _checked_copy(open_copy: Callable[[], Iterable[TraceRequest]]) -> Iterator[TraceRequest]:
    """A copy of a stream that a function opens (what ``repeat`` reads), checked."""
    return checked_requests(open_copy())


def _file_source(path: str | os.PathLike[str], trace_format: str | None, transforms: TraceTransforms, seed: int,
                 options: Mapping[str, Any] | None) -> tuple[TraceReader, Any]:
    """(the file's reader, what the transforms read: the reader, or with ``repeat`` > 1 a function
    that opens the file again for each copy)."""
    reader = open_trace(path, trace_format, seed=transforms.trace_seed(seed), options=options)
    if transforms.repeat is not None and transforms.repeat > 1:
        return reader, reopening(reader, transforms.trace_seed(seed), options)
    return reader, reader


def reopening(reader: TraceReader, seed: int,
              options: Mapping[str, Any] | None = None) -> Callable[[], Iterable[TraceRequest]]:
    """The trace as a function that gives ``reader`` at the first call and opens its file again
    (same format, seed and options: the same requests) at each later one: what ``repeat`` reads."""
    first: list[TraceReader] = [reader]

    def open_copy() -> Iterable[TraceRequest]:
        return first.pop() if first else open_trace(reader.path, reader.format, seed=seed, options=options)

    return open_copy


def build_latency_models(session: RunSession) -> dict[str, LatencyModel]:
    """One latency model per deployed model, from the factories plugins registered; `ConfigError` naming the
    deployment for an unknown model, a setting it refuses, or a default ``tensor_parallel``, ``gpu`` or ``precision``
    (the factory's, none given) that is not the deployment's ``gpus_per_replica``, ``gpu`` or ``precision``
    (GPU-seconds, cost and memory plan count those). A model whose class is not a built-in one's is wrapped so
    that each iteration time it gives is checked (`sim.latency.checked`: a non-finite, negative or non-number time
    fails the run naming the model, the deployment and the value)."""
    from controlplane.hardware.deployment_fit import default_setting_mismatch
    from sim.latency.registry import check_settings

    factories = latency_factories(session.plugins)
    models: dict[str, LatencyModel] = {}
    for d in session.config.cluster.models:
        factory = factories.get(d.latency_model)
        if factory is None:
            raise ConfigError(
                f"cluster.models[{d.name}].latency_model: unknown latency model {d.latency_model!r}"
                f"{did_you_mean(d.latency_model, factories)}; "
                f"registered: {', '.join(sorted(factories)) or f'none ({_no_latency_models_why()})'}"
            )
        try:
            check_settings(d.latency_model, factory, d.latency)
            model = factory(**d.latency)
        except (TypeError, ValueError, LookupError) as exc:
            raise ConfigError(f"cluster.models[{d.name}].latency: {exc}") from None
        except OSError as exc:  # (`measured`: a profile file that is not there, or not readable)
            raise ConfigError(f"cluster.models[{d.name}].latency: {_unreadable_file(exc)}") from None
        if not isinstance(model, LatencyModel):  # (a plugin's factory; the run would fail at its first batch)
            raise ConfigError(f"cluster.models[{d.name}].latency_model: the factory registered as "
                              f"{d.latency_model!r} returned {type(model).__name__}, not a LatencyModel "
                              "(sim.latency.base.LatencyModel)")
        if (why := default_setting_mismatch(d, factory, d.latency_model)) is not None:
            raise ConfigError(f"cluster.models[{d.name}]: {why}")
        models[d.name] = checked(model, d.latency_model, d.name)  # (a plugin's: each time checked)
    return models


def _prepare(session: RunSession, available: Mapping[str, Any] | None) -> dict[str, LatencyModel]:
    """A run's set-up once its plugins are loaded: its latency models (`build_latency_models`; a measured profile's fit
    error stored beside its hash) and its memory plan checked at the start (`sim.run_checks.check_run_memory`)."""
    from controlplane.plugin_manager import discover_plugins
    from sim.latency.measured_box import with_fit_stats
    from sim.run_checks import check_run_memory

    session.latency_files = with_fit_stats(session.latency_files, models := build_latency_models(session))
    check_run_memory(session.config, session.plugins, available if available is not None else discover_plugins())
    return models


def _unreadable_file(exc: OSError) -> str:
    """A latency setting's file that could not be read, in words: which file, why, and where a
    relative path was looked for (the current directory, not the config file's: a `sim.yaml` naming
    `profile.json` replayed from another directory does not find it)."""
    name = exc.filename if exc.filename is not None else "?"
    text = f"cannot read {name}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError) and not os.path.isabs(str(name)):
        text += (f" (a relative path is read from the current directory, {os.getcwd()}, not the config file's "
                 "folder: run the command where the file is, or give an absolute path)")
    return text


def _no_latency_models_why() -> str:
    """Why no latency model is registered: the allow-list (`CONTROLPLANE_LOAD_PLUGINS`) leaving out the
    built-in ones, else presumably the config's ``plugins.enabled``."""
    from controlplane.plugin_manager import ALLOW_ENV

    allow = os.environ.get(ALLOW_ENV)
    if allow and "builtin-latency-models" not in {n.strip() for n in allow.split(",")}:
        return f"${ALLOW_ENV}={allow!r} leaves builtin-latency-models out"
    return "is builtin-latency-models enabled?"


def build_driver(session: RunSession, *, on_progress: Callable[[int, float], None] | None = None) -> SimDriver:
    """The SimPy driver of an open session: its latency models (those the session prepared, see
    `_run`, else built now), cold starts and seed."""
    config = session.config
    cold = {d.name: deployment_cold_start_s(d) for d in config.cluster.models}
    models = getattr(session, "prepared", None) or build_latency_models(session)
    session.core.set_iteration_estimator(iteration_estimator(models))  # planners size replicas from it
    return SimDriver(session.core, models, cold_start_s=cold, seed=config.seed,
                     on_progress=on_progress)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay returns. Unpacks as ``summary, session`` (what ``replay`` returned before)."""

    summary: dict[str, Any]  # the run summary (also stored with the run when recorded)
    session: RunSession  # the closed run: its core, plugins, run id
    driver: SimDriver  # the driver after the run: its counters
    trace_format: str | None  # the format the trace was read as (None for an unnamed stream)
    loop_s: float  # wall seconds of the event loop alone (set-up and the final flush excluded)

    @property
    def run_id(self) -> int | None:
        return self.session.run_id

    @property
    def num_events(self) -> int:
        """Events handed to the core (arrivals, batch ends, ticks, ...)."""
        return self.driver.num_events

    @property
    def num_timers(self) -> int:
        """SimPy timeouts scheduled."""
        return self.driver.num_timers

    def __iter__(self) -> Iterator[Any]:
        return iter((self.summary, self.session))


def replay(
    trace: Iterable[TraceRequest] | str | os.PathLike[str],
    config: RunConfig,
    *,
    transforms: TraceTransforms | None = None,
    trace_format: str | None = None,
    trace_options: Mapping[str, Any] | None = None,
    trace_name: str | None = None,
    record: bool = True,
    extra_plugins: Iterable[object] = (),
    on_progress: Callable[[int, float], None] | None = None,
    available: Mapping[str, Any] | None = None,
    writer: Any = None,
    warn_if_empty: bool = True,
) -> ReplayResult:
    """Run the simulation to the end; results are in the database when ``record``.

    ``trace``: a trace file, ``bundled:NAME`` or a stream of requests (see ``prepare_trace``; a ``TraceReader``
    names its file and format in the run row). ``transforms`` and their seed (the run's
    ``config.seed`` unless ``transforms.seed``) decide what is replayed, exactly as
    ``controlplane sim replay`` does. ``trace_options`` are the reader's format options
    (``{"qps": 2}`` for a Vidur trace). ``on_progress(requests_arrived, sim_s)`` is called
    every 256 arrivals, at the control ticks in the first second of each simulated minute (idle gaps too), and at
    every tick once the trace has ended (as the run drains); its ``trace_ended(requests_arrived, sim_s)`` method,
    where it has one, once when the last request has arrived. ``writer``: a writer process forked before the caller's
    imports (``controlplane.storage.early.EarlyWriter``, as ``controlplane sim replay`` starts one). A run that
    replays no request logs a warning (`sim.replay_args.warn_nothing_replayed`) unless ``warn_if_empty`` is false.
    """
    config = checked_config(config)  # (a config changed in code after it was made skipped its checks)
    trace = checked_trace_arguments(trace, trace_format, transforms)  # (a bundled trace's name made its path)
    transforms = transforms or NO_TRANSFORMS
    reader, requests = prepared_trace(trace, seed=config.seed, transforms=transforms, trace_format=trace_format,
                                      trace_options=trace_options)
    if isinstance(trace, (str, os.PathLike)):  # the file where it is (absolute: not the folder's it was named from)
        trace_name = trace_name if trace_name is not None else os.path.abspath(trace)
        trace_format = reader.format  # (the format as read)
    elif reader is not None:  # a reader: its file (absolute, as a file's), the format given else its own
        trace_name = trace_name if trace_name is not None else os.path.abspath(reader.path)
        trace_format = trace_format if trace_format is not None else reader.format
    started: list[Any] = []  # the session and the driver, as they are made
    try:
        requests = first_read(requests)  # (before the run opens: a trace's header error stores no failed run)
        result = _run(config, requests, trace_name, trace_format, record, extra_plugins, available, writer,
                      on_progress, started, trace_read(transforms, trace_options), reader)
        if warn_if_empty:  # (the command line says it naming its options)
            warn_nothing_replayed(result.summary, trace_name)
        return result
    except KeyboardInterrupt as exc:
        if isinstance(exc, ReplayInterrupted):
            raise
        session, driver = (started + [None, None])[:2]
        raise ReplayInterrupted(_started_run_id(session), driver.num_arrived if driver is not None else 0,
                                config.storage.url) from exc


def first_read(requests: Iterable[TraceRequest]) -> Iterator[TraceRequest]:
    """``requests``, its first request read now and given back first: what a replay does before its run
    opens, so that an error of the trace as a whole (a missing column, a format named for a file of the
    other kind, a canonical first arrival too far from 0, no data rows, a bad first row) stores no failed
    run; only a row found bad once the replay has started does."""
    it = iter(requests)
    for first in it:
        return chain((first,), it)
    return it


def _started_run_id(session: RunSession | None) -> int | None:
    """The run's id when its row was written (else None: it never started, or its start failed)."""
    if session is None:
        return None
    try:
        return session.run_id
    except Exception:  # noqa: BLE001 - a start that failed: no run to name
        return None


def latency_files(config: RunConfig) -> dict[str, dict[str, str]] | None:
    """The latency-model files a run's deployments read (a measured profile's ``latency.path``), by
    model, each with the SHA-256 of its content: stored with the run (``config["latency_files"]``)
    so a run says which frozen profile it was simulated on (what ``controlplane calibrate`` prints).
    None when no deployment reads one. A file that cannot be read is left to the model's own error."""
    out: dict[str, dict[str, str]] = {}
    for d in config.cluster.models:
        path = d.latency.get("path") if isinstance(d.latency, Mapping) else None
        if isinstance(path, (str, os.PathLike)):
            try:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError:
                continue
            out[d.name] = {"path": str(path), "sha256": digest}
    return out or None


def _run(config: RunConfig, requests: Iterable[TraceRequest], trace_name: str | None, trace_format: str | None,
         record: bool, extra_plugins: Iterable[object], available: Mapping[str, Any] | None, writer: Any,
         on_progress: Callable[[int, float], None] | None, started: list[Any],
         read: dict[str, Any] | None = None, reader: TraceReader | None = None) -> ReplayResult:
    """`replay`'s run: the session, the driver and the loop (``started`` gets the session and the
    driver as they are made, for `ReplayInterrupted`). The trace rows ``reader``'s format options
    left out go into the summary (`rows_left_out`): counted on the file's first read (once, when
    ``repeat`` plays it again)."""
    with RunSession(
        config,
        mode="sim",
        trace=trace_name,
        trace_format=trace_format,
        record=record,
        extra_plugins=extra_plugins,
        available=available,
        writer=writer,
        defer_run_id=True,  # a writer process inserts the run row while the driver is built
        trace_read=read,
        latency_files=latency_files(config),
        # The latency models are built, and the memory planned, before the run row: a config they refuse (an
        # unknown latency_model, a bad setting, a model that does not fit its GPUs) stores no failed run.
        prepare=lambda session: _prepare(session, available),
    ) as session:
        started.append(session)
        timings.mark("session_open")
        driver = build_driver(session, on_progress=on_progress)
        started.append(driver)
        for model, why in session.core.never_served().items():  # (the daemon says the same at its start)
            logging.getLogger(__name__).warning("model %r will never be served: %s; its requests are refused as "
                                                "unavailable (give it replicas, or enable an autoscaler)", model, why)
        session.started()  # the run row's id, before the first event (plugins may read it)
        timings.mark("loop_start")
        t0 = time.perf_counter()
        # (a trace failing mid-replay ends the run as a Ctrl-C does, closed as failed; past-context requests counted)
        stop, url = TraceStop(driver, context_limits(config, driver.latency)), config.storage.url if record else None
        with stop_on_ctrl_c(driver) as ctrl_c:  # (held through a stopped run's close: `sim.interrupts.CtrlC`)
            try:
                finished = ctrl_c.run(stop.stream(requests))
            except KeyboardInterrupt as exc:  # a second Ctrl-C: the summary of the requests recorded as in flight
                ctrl_c.stopping = True
                if (partial := getattr(exc, "summary", None)) is None:
                    raise
                summary = session.close({**partial, **rows_left_out(reader), "error": "KeyboardInterrupt: stopped "
                                         "at once (a second Ctrl-C)", **stopped_at(driver, session.clock.now_s)},
                                        status="interrupted")
                raise ReplayInterrupted(session.run_id, driver.num_arrived, url, summary) from exc
            loop_s = time.perf_counter() - t0
            stop.warn_past_context(config)
            if stop.error is not None:  # (the rows read before it stored, the run's summary counting them)
                stop.close_failed(session, finished, reader, url)
                raise stop.error
            if isinstance(finished, dict):
                finished = {**finished, **rows_left_out(reader), **stop.summary()}
            timings.mark("loop_end")
            interrupted = driver.stop_requested
            if interrupted and isinstance(finished, dict):
                finished = {**finished, **stopped_at(driver, session.clock.now_s)}
            summary = session.close(finished, status="interrupted" if interrupted else "finished")
        timings.mark("closed")
    if interrupted:
        raise ReplayInterrupted(session.run_id, driver.num_arrived, url, summary)
    return ReplayResult(summary, session, driver, trace_format, loop_s)
