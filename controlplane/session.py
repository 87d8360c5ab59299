"""One run's wiring, shared by the simulator and the daemon: plugins, core, clock, recorder."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from controlplane.config import FALLBACK_PLUGINS, RunConfig
from controlplane.context import Clock, RunInfo
from controlplane.core import ControlPlane
from controlplane.errors import ConfigError
from controlplane.plugin_manager import PluginInfo, PluginSet, build_plugin_set, discover_plugins, instantiate
from controlplane.recording import SqlRecorder

#: How often a live run's rows are written at the latest (a busy daemon fills a batch sooner).
LIVE_FLUSH_INTERVAL_S = 1.0


def fallback_plugins(available: Mapping[str, PluginInfo]) -> dict[str, object]:
    """The built-in plugin that decides each policy hook when every enabled plugin defers."""
    out: dict[str, object] = {}
    for hook, name in FALLBACK_PLUGINS.items():
        info = available.get(name)
        if info is not None:
            out[hook] = instantiate(info, None)
    return out


def latency_factories(plugins: PluginSet) -> dict[str, Any]:
    """Latency-model factories every plugin registered, by name. A name that is not a string, a
    factory that is not callable, or a name registered twice is a `ConfigError` naming the plugin(s)
    (and the entry point each was loaded from)."""
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    duplicate: tuple[str, str, str] | None = None
    current = ""

    def register(name: str, factory: Any) -> None:
        nonlocal duplicate
        if not isinstance(name, str) or not name:
            raise TypeError(f"a latency model's name must be a non-empty string, got {type(name).__name__} {name!r}")
        if not callable(factory):
            shown = repr(factory)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise TypeError(f"latency model {name!r}: the factory must be callable (a LatencyModel class or a "
                            f"function returning one), got {type(factory).__name__} {shown}")
        if name in found:
            duplicate = duplicate or (name, owners[name], current)
            return
        found[name] = factory
        owners[name] = current

    # Each implementation on its own (in pluggy's order), so a registration is known by its plugin.
    for impl in reversed(plugins.hook.cp_register_latency_models.get_hookimpls()):
        if impl.wrapper or impl.hookwrapper:
            continue  # nothing to wrap: each registration is a plain call
        current = impl.plugin_name
        impl.function(*[register for _ in impl.argnames])  # isolated: a raise is recorded by the monitor
    errors = plugins.monitor.take_errors()
    if errors:
        raise ConfigError(f"plugin {_origin(plugins, errors[0].plugin)} failed to register latency models: "
                          f"{errors[0].error}")
    if duplicate is not None:
        name, first, second = duplicate
        by = f"plugin {_origin(plugins, first)} and again by it" if first == second else \
            f"plugins {_origin(plugins, first)} and {_origin(plugins, second)}"
        raise ConfigError(f"latency model {name!r} is registered by {by}: a name must be registered once")
    return found


def _origin(plugins: PluginSet, name: str) -> str:
    """``'name'``, with the entry point it was loaded from when it has one."""
    for p in plugins.loaded:
        if p.info.name == name and p.info.entry_point:
            return f"{name!r} (entry point {p.info.entry_point})"
    return repr(name)


class RunSession:
    """Builds and owns one run. Use as a context manager; `close` records the outcome."""

    def __init__(
        self,
        config: RunConfig,
        *,
        mode: str,
        trace: str | None = None,
        trace_format: str | None = None,
        record: bool = True,
        extra_plugins: Iterable[object] = (),
        available: Mapping[str, PluginInfo] | None = None,
        clock: Clock | None = None,
        writer: Any = None,
        defer_run_id: bool = False,
        trace_read: Mapping[str, Any] | None = None,
        latency_files: Mapping[str, Any] | None = None,
        prepare: Callable[[RunSession], Any] | None = None,
    ) -> None:
        """``writer``: a :class:`controlplane.storage.early.EarlyWriter` forked before the run's
        imports (the CLI starts one); without it a sim run forks its own where it can. A writer
        this run cannot use (not a sim run, an in-memory database, ``record=False``) is discarded.

        ``defer_run_id``: where a writer process records the run, send it the run row and go on
        without waiting for the row's id (the writer may still be importing SQLAlchemy): the
        caller builds the rest of the run meanwhile and calls :meth:`started` before the run's
        first event (``ctx.run.run_id`` is None until then; :attr:`run_id` and :meth:`close`
        wait for it too). An error of the run's start (the database) is raised there.

        ``trace_read``: how the trace was read (its format ``options`` and the ``transforms``:
        window, speed-up, rate scale ...), stored with the run's config as ``config["trace_read"]``
        so that a stored run says which requests it replayed. ``latency_files``: the latency-model
        files the deployments read, with their SHA-256 (`sim.replay.latency_files`), stored as
        ``config["latency_files"]``: which frozen profile the run was simulated on.

        ``prepare``: called with this session once its plugins are loaded and before the run row
        is written (its result is :attr:`prepared`): set-up that reads the plugins and may refuse
        the config (the simulator's latency models), so that a refused config leaves no run row."""
        self.config = config
        self.mode = mode
        self.trace_read = dict(trace_read) if trace_read else None
        self.latency_files = dict(latency_files) if latency_files else None
        self.clock = clock or Clock()
        available = dict(available if available is not None else discover_plugins())
        self.engine = None
        self.recorder = None
        self.crashed_runs: list[dict[str, Any]] = []  # runs of dead processes this start marked crashed
        run_id = None
        extra = list(extra_plugins)
        if record:  # the config's plugins refused before the database is opened (or a new file left behind)
            _check_plugins(config, available)
            from controlplane.storage.early import (EarlyWriter, FrontRecorder, early_writer_usable,
                                                    recorder_settings)

            storage = config.storage
            if mode == "sim" and writer is None and early_writer_usable(storage.url):
                # A writer process (controlplane.storage.early), forked before this run's imports
                # when the CLI started it, else now: it opens the database and writes the rows;
                # this process only packs them.
                writer = EarlyWriter.fork()
            elif writer is not None and not (mode == "sim" and writer.can_write(storage.url)):
                writer.discard()
                writer = None
            if writer is not None:
                self.recorder = FrontRecorder(writer, storage.url, **recorder_settings(storage))
            else:
                self.recorder = self._inline_recorder(config, mode)
            extra.insert(0, SqlRecorder(self.recorder,
                                        record_iterations=storage.record_iterations))
        elif writer is not None:
            writer.discard()
        try:
            self.plugins = build_plugin_set(
                config.plugins.enabled, config.plugins.settings, extra=extra, available=available
            )
            self.prepared = prepare(self) if prepare is not None else None
            if self.recorder is not None:
                run_id = self._start_run(trace, trace_format, wait=not defer_run_id)
            if self.engine is not None and run_id is not None:  # (a writer process does this itself)
                from controlplane.storage.crashed import mark_crashed_quietly

                self.crashed_runs = mark_crashed_quietly(self.engine, exclude={run_id})
        except BaseException:
            if hasattr(self.recorder, "abandon"):
                self.recorder.abandon()  # the writer process ends: nothing was recorded
            raise
        self._run_pending = self.recorder is not None and run_id is None  # `started` reads the id
        self.run = RunInfo(run_id=run_id, mode=mode, seed=config.seed, name=config.name, trace=trace)
        self.core = ControlPlane(
            config=config, plugins=self.plugins, clock=self.clock, run=self.run, fallbacks=fallback_plugins(available),
            multi_iteration=mode == "sim" and not config.sim.exact,  # live workers run one iteration a batch
        )
        self._wall_start = time.perf_counter()
        self._closed = False

    def _inline_recorder(self, config: RunConfig, mode: str) -> Any:
        """A recorder in this process: live runs (its own thread writes, so the daemon's event
        loop never waits for the database), and simulator runs no writer process can serve (one
        CPU or none free at its start, an in-memory database, ``CONTROLPLANE_WRITER_PROCESS=0``), which
        flush inline."""
        from controlplane.storage import RunRecorder, ensure_schema, make_engine

        from sqlalchemy.exc import SQLAlchemyError

        from controlplane.storage.errors import StorageError

        storage = config.storage
        self.engine = make_engine(storage.url)
        try:
            ensure_schema(self.engine)
        except SQLAlchemyError as exc:  # as the writer process reports it: one error naming the database's failure
            raise StorageError(f"{type(exc).__name__}: {exc}") from exc
        return RunRecorder(
            self.engine,
            batch_size=storage.batch_size,
            max_pending_rows=storage.max_pending_rows,
            background=mode == "live",
            flush_interval_s=LIVE_FLUSH_INTERVAL_S if mode == "live" else None,
        )

    def _start_run(self, trace: str | None, trace_format: str | None, *, wait: bool = True) -> int | None:
        """Insert the run row; its id, or None where the row was sent to a writer process
        without waiting (``wait=False``: :meth:`started` reads the id)."""
        from controlplane.storage.owner import process_marker

        config = self.config
        start = self.recorder.start_run if wait or not hasattr(self.recorder, "begin_run") else self.recorder.begin_run
        return start(
            name=config.name,
            mode=self.mode,
            trace=trace,
            trace_format=trace_format,
            seed=config.seed,
            config={**stored_config(config), **({"trace_read": self.trace_read} if self.trace_read else {}),
                    **({"latency_files": self.latency_files} if self.latency_files else {}),
                    "process": process_marker()},  # (controlplane.storage.crashed)
            plugins=self.plugins.versions(),
            started_at=datetime.now(timezone.utc),
        )

    def started(self) -> int | None:
        """The run's id once its row is in: waits for the writer process's reply where the row
        was sent without waiting (``defer_run_id``), and raises the error that stopped the run's
        start (then the run is closed: nothing was recorded)."""
        if self._run_pending:
            self._run_pending = False
            try:
                self.run.run_id = self.recorder.run_started()
            except BaseException:
                self._closed = True
                self.recorder.abandon()
                raise
        return self.run.run_id

    @property
    def run_id(self) -> int | None:
        return self.started()

    def close(self, summary: dict[str, Any] | None, *, status: str = "finished") -> dict[str, Any] | None:
        """Flush everything and mark the run finished (or failed); adds run_id and wall_s. Where the
        database took none of it (the recorder's ``StorageError``: the rows spilled), the error
        raised carries the summary (``summary``) for the caller to print."""
        if self._closed:
            return summary
        self.started()  # (a start that failed raises here, and closes the run)
        self._closed = True
        wall_s = time.perf_counter() - self._wall_start
        if summary is not None:
            summary = {"run_id": self.run_id, **summary, "wall_s": round(wall_s, 3)}
        if self.recorder is not None:
            from controlplane.storage.errors import StorageError

            try:
                self.recorder.finish_run(
                    self.run_id,
                    status=status,
                    summary=summary,
                    finished_at=datetime.now(timezone.utc),
                    wall_s=wall_s,
                    sim_end_s=self.clock.now_s,
                )
            finally:
                try:
                    self.recorder.close()
                except StorageError as exc:  # the rows were spilled: the run's summary is whole all the same
                    exc.summary = summary
                    raise
                finally:
                    if self.engine is not None:
                        # Its pooled connections closed now, not whenever the collector frees
                        # them: a connection left open to a SQLite file is one a later run's
                        # writer process must not share (`EarlyWriter.can_write`).
                        self.engine.dispose()
        return summary

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self._closed:
            status = "interrupted" if exc_type is KeyboardInterrupt else "failed"
            self.close({"error": f"{exc_type.__name__}: {exc}"}, status=status)


def _check_plugins(config: RunConfig, available: Mapping[str, PluginInfo]) -> None:
    """The enabled plugins' names and settings, checked as `build_plugin_set` checks them (`ConfigError`)."""
    from controlplane.plugin_manager import checked_plugin_names, validated_settings

    for name in checked_plugin_names(config.plugins.enabled, config.plugins.settings, available):
        validated_settings(available[name], config.plugins.settings.get(name))


def stored_config(config: RunConfig) -> dict[str, Any]:
    """The config as the run row keeps it: the database URL without its password (anyone who can
    read the runs would otherwise read it)."""
    return without_password(config.model_dump(mode="json"))


def without_password(config: dict[str, Any]) -> dict[str, Any]:
    """A config's data with the passwords of its URLs masked: ``storage.url`` and each plugin
    setting named ``url`` or ``*_url`` (a Redis store's ``redis_url``); a copy where there is one."""
    from controlplane.storage.errors import mask_password

    storage = config.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("url"), str):
        config = {**config, "storage": {**storage, "url": mask_password(storage["url"])}}
    plugins = config.get("plugins")
    if isinstance(plugins, dict) and isinstance(plugins.get("settings"), dict):
        config = {**config, "plugins": {**plugins, "settings": _urls_masked(plugins["settings"], mask_password)}}
    return config


def _urls_masked(value: Any, mask: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: mask(v) if isinstance(v, str) and isinstance(k, str) and (k == "url" or k.endswith("_url"))
            else _urls_masked(v, mask) for k, v in value.items()}
