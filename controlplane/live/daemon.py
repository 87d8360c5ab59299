"""The daemon: the live driver behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with ``stream: true``
server-sent events), ``GET /v1/models``, ``GET /healthz`` (the process answers), ``GET /readyz``
(a worker is ready and the daemon is not draining), ``GET /metrics`` (Prometheus), and admin
endpoints behind ``Authorization: Bearer $CONTROLPLANE_ADMIN_TOKEN`` (404 when no token is set):
``GET /admin/plugins``, ``GET /admin/workers``, ``POST /admin/reload``, ``POST /admin/drain``,
``POST /admin/resume``.

SIGTERM (or SIGINT, or ``POST /admin/drain``) drains: readiness goes false, new API requests get
503, requests in flight finish, then the server stops, the run is closed in SQL and the process
exits 0. A second SIGINT stops without waiting: the clients still waiting get their 503 at once,
as when a drain times out; a third forces the exit.

This module holds the process: `Daemon` (the driver, the drain and exit logic) and `serve`
(uvicorn). The HTTP side: the app (`daemon_app`), its routers (`daemon_api` for OpenAI,
`daemon_probes`, `daemon_admin`), what the routes depend on and how errors look (`daemon_deps`),
the OpenAI shapes (`daemon_openai`); the run config from file and flags is `daemon_config`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from controlplane.config import RunConfig
from controlplane.errors import ConfigError
from controlplane.live.api_keys import KeyRing
from controlplane.live.daemon_config import with_request_deadline
from controlplane.live.daemon_exposure import (
    exposure_warning,
    install_accept_error_log,
    open_files_warning,
    raise_open_file_limit,
)
from controlplane.live.daemon_logging import AccessLog, configure_logging
from controlplane.live.driver import LiveDriver
from controlplane.live.ignored_fields import IgnoredFields
from controlplane.live.pool import POOL_KINDS, make_pool
from controlplane.live.worker_messages import WorkerStartError
from controlplane.storage.errors import StorageError, mask_password

log = logging.getLogger("controlplane.daemon")

__all__ = ["ADMIN_TOKEN_ENV", "Daemon", "DaemonOptions", "admin_token_from_env", "listen", "serve"]

ADMIN_TOKEN_ENV = "CONTROLPLANE_ADMIN_TOKEN"
#: A hook call longer than this is logged (once per plugin and hook): hooks run on the event loop, which waits.
SLOW_HOOK_S = 0.1


@dataclass
class DaemonOptions:
    """How the daemon serves (the run's config says what it serves)."""

    host: str = "127.0.0.1"
    port: int = 8000
    pool: str = "process"
    admin_token: str | None = None
    config_path: Path | None = None  # re-read by POST /admin/reload
    overrides: dict[str, Any] = field(default_factory=dict)  # CLI overrides, applied again on reload
    # The command line's choices as `daemon_config` takes them (db, workers, preset, ...): a reload makes the
    # config as the start did, from the file read again (None: `overrides` applied to the file instead)
    config_flags: dict[str, Any] | None = None
    drain_timeout_s: float = 120.0  # longest wait for requests in flight when draining
    request_timeout_s: float | None = 600.0  # a request unanswered this long gets a 504
    default_max_tokens: int = 256  # chat requests without max_tokens
    cpu_threads: int | None = None  # torch threads per CPU worker (default: cores / workers)
    ray_address: str | None = None
    max_workers: int | None = None  # workers the pool may hold at once; a scale-up beyond is recorded as unplaced
    journal_dir: Path | None = None  # journal of accepted requests (None: $CONTROLPLANE_JOURNAL_DIR or state dir)
    log_level: str = "info"
    log_format: str = "text"  # or "json" (`controlplane.live.daemon_logging`)
    access_log: bool = False  # one line per HTTP request, with its x-request-id, and the lines about requests
    # Connections (`daemon_exposure`): beyond ``limit_concurrency`` open connections or requests, a new request is
    # answered 503 at once (uvicorn's; None: no limit); one idle between requests is closed after
    # ``keep_alive_timeout_s``; a POST /v1/ body not received within ``body_timeout_s`` of its headers gets 408.
    limit_concurrency: int | None = 1024
    keep_alive_timeout_s: float = 5.0
    body_timeout_s: float | None = 30.0

    def __post_init__(self) -> None:
        if self.pool not in POOL_KINDS:
            raise ConfigError(f"unknown pool {self.pool!r}; choose one of {', '.join(POOL_KINDS)}")


class Daemon:
    """The HTTP app, the live driver and the drain/exit logic of one daemon process."""

    def __init__(self, config: RunConfig, options: DaemonOptions | None = None, *, record: bool = True) -> None:
        self.options = options or DaemonOptions()
        config = with_request_deadline(config, self.options.request_timeout_s)  # queue-limit's max_finish_s
        self.config = config
        pool_options: dict[str, Any] = {}
        if self.options.max_workers is not None:
            pool_options["max_workers"] = self.options.max_workers
        if self.options.pool == "ray" and self.options.ray_address:
            pool_options["address"] = self.options.ray_address
        pool = make_pool(self.options.pool, cpu_threads=self.options.cpu_threads, **pool_options)
        pool.on_broken = self.pool_broken
        self.driver = LiveDriver(config, pool=pool, record=record, request_timeout_s=self.options.request_timeout_s,
                                 cpu_threads=self.options.cpu_threads)
        self.metrics = self.driver.metrics
        self.admin_token = self.options.admin_token or None
        self.keys = KeyRing(config.auth.api_keys)  # inference endpoints' API keys (none: open)
        self.ignored_fields = IgnoredFields()  # request fields accepted but unused: warned about once each
        self.server: Any = None  # the uvicorn server, when `serve` runs it
        self.api_in_flight = 0
        self.exiting = False
        self.drained_cleanly = True
        self._drain_task: asyncio.Task | None = None
        self.crashed_runs: list[dict[str, Any]] = []  # runs of dead daemons marked crashed at start
        self.journal: Any = None  # the run's journal of accepted requests (when recording)
        self.started = False  # `startup` done (by `serve` before it listens, else by the app's lifespan)
        self.startup_error: Exception | None = None  # why `serve` could not start the run
        self.close_error: StorageError | None = None  # the run's rows could not all be written at the close
        self.pool_error: str | None = None  # why the pool could host no worker any more (the Ray head is gone)
        from controlplane.live.daemon_app import (
            create_app,  # the app's routes depend on this module
        )

        self.app = create_app(self)

    # --- lifecycle ------------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.started:
            return
        from controlplane.hook_calls import time_hooks, warn_plugin_errors

        time_hooks(SLOW_HOOK_S)  # before the run's plugins are built: a slow hook stalls the event loop, warn of it
        warn_plugin_errors(True)  # and log each plugin and hook's first error (the log is where operators look)
        try:  # a pool that cannot host any worker (a Ray address Ray cannot use) stops the start, before serving
            self.driver.pool.open()
        except WorkerStartError as exc:
            flag = f" --ray-address {self.options.ray_address}" if self.options.ray_address else ""
            raise ConfigError(f"--pool {self.options.pool}{flag}: {exc}") from None
        await self.driver.start()
        self.started = True
        await asyncio.to_thread(self._claim_run_and_mark_crashed)
        from controlplane.live.daemon_probes import models_never_started

        for model, why in models_never_started(self.driver).items():
            log.warning("model %r will never be served: %s; give --workers N (or replicas in the config), or "
                        "enable an autoscaler that scales from zero", model, why)
        models = ", ".join(f"{d.name} x{d.replicas}" for d in self.config.cluster.models)
        log.info("run %s (mode live) recording to %s; starting %s on the %s pool", self.driver.run_id,
                 mask_password(self.config.storage.url) if self.driver.record else "nowhere", models, self.options.pool)

    def _claim_run_and_mark_crashed(self) -> None:
        """Record this process as the owner of its run, with its journal (the runs of dead processes
        were marked ``crashed`` when the run started: ``RunSession.crashed_runs``)."""
        session = self.driver.session
        engine = getattr(session, "engine", None)
        run_id = self.driver.run_id
        if engine is None or run_id is None:
            return
        from sqlalchemy.exc import SQLAlchemyError

        from controlplane.storage.crashed import claim_run, process_marker

        from controlplane.storage.journal import RequestJournal

        marker = process_marker()
        try:
            self.journal = RequestJournal.for_run(run_id, self.options.journal_dir)
            marker["journal"] = str(self.journal.path.resolve())
            self.driver.journal = self.journal
        except OSError as exc:  # serve anyway; a crash then cannot say which requests were lost
            log.warning("no journal of accepted requests (a crash could not list lost requests): %s", exc)
        try:
            claim_run(engine, run_id, marker)
        except (SQLAlchemyError, OSError) as exc:  # never stop serving for this bookkeeping
            log.warning("could not record this process as its run's owner: %s", exc)
        self.crashed_runs = list(getattr(session, "crashed_runs", []))

    async def shutdown(self) -> None:
        from controlplane.hook_calls import time_hooks, warn_plugin_errors

        time_hooks(None)  # plugin sets built later in this process (a test's replay) are not timed
        warn_plugin_errors(False)  # nor log their errors (a replay counts them in its summary)
        if not self.exiting:  # stopped without a drain (uvicorn's own exit): drain now
            self.exiting = True
            self.drained_cleanly = await self._wait_drained()
        status = "finished" if self.drained_cleanly else "interrupted"
        try:
            summary = await self.driver.close(status=status)
        except StorageError as exc:  # the database is gone: the rows are in the spill file it names
            self.close_error = exc
            log.error("run %s could not be closed in the database: %s", self.driver.run_id, exc)
            return  # the journal stays: the requests it lists are not in the database
        if self.journal is not None:  # the run is closed: its rows are in the database (or spilled)
            self.journal.close(remove=True)
        log.info("run %s closed (%s): %s", self.driver.run_id, status, closed_counts(summary or {}, self.driver.run_id))

    async def _wait_drained(self) -> bool:
        self.driver.begin_drain()
        deadline = time.monotonic() + self.options.drain_timeout_s
        while self.driver.num_pending or self.api_in_flight:
            if time.monotonic() > deadline:
                log.warning("drain timed out after %.0fs with %d requests pending", self.options.drain_timeout_s,
                            self.driver.num_pending)
                return False
            await asyncio.sleep(0.05)
        return True

    def request_exit(self, why: str) -> None:
        """Drain, then stop the server (the run is closed by the app's shutdown). Loop thread only."""
        if self.exiting:
            return
        self.exiting = True
        log.info("%s: draining %d pending requests, then exiting", why, self.driver.num_pending)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    def stop_now(self, why: str) -> None:
        """Stop without waiting for the drain (a second Ctrl+C): each client still waiting gets its
        503 now, as when the drain times out, and the server stops (the run is then ``interrupted``).
        Loop thread only."""
        self.drained_cleanly = False
        if self._drain_task is not None:
            self._drain_task.cancel()
        answered = self.driver.answer_pending()
        log.warning("%s: stopping now, without waiting for the drain; answered %d requests still in flight "
                    "with 503 unavailable", why, answered)
        if self.server is not None:
            self.server.should_exit = True

    def pool_broken(self, reason: str) -> None:
        """The pool can host no worker any more (`WorkerPool.on_broken`: the Ray head is gone): stop now,
        as `stop_now` does (each client still waiting gets its 503, the run is closed ``interrupted``),
        before Ray's client ends the process; the daemon then exits 1. Loop thread only."""
        self.pool_error = reason
        log.error("%s: closing the run and exiting", reason)
        self.exiting = True  # (no drain: no worker is left to finish the requests)
        self.driver.begin_drain()  # (not ready, new requests 503, until the server stops)
        self.stop_now(reason)

    async def _drain_then_exit(self) -> None:
        self.drained_cleanly = await self._wait_drained()
        if not self.drained_cleanly:  # each client still waiting gets its 503 now, while its handler runs
            answered = self.driver.answer_pending()
            log.warning("answered %d requests still in flight with 503 unavailable", answered)
        if self.server is not None:
            self.server.should_exit = True


def _server_class() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, but SIGTERM / SIGINT drain first and the process then exits 0."""

        daemon: Daemon
        on_started: Callable[[int | None, int], None] | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            loop = getattr(self, "_cp_loop", None)
            if self.daemon.exiting:
                if sig != signal.SIGINT:
                    return
                if loop is None or getattr(self, "_cp_stopping", False):  # a third Ctrl+C: cut everything off
                    self.daemon.drained_cleanly = False
                    self.force_exit = True
                    self.should_exit = True
                else:  # a second one: answer everyone now, then stop (the run is then `interrupted`)
                    self._cp_stopping = True
                    loop.call_soon_threadsafe(self.daemon.stop_now, "received SIGINT again")
                return
            if loop is None or not self.started:
                self.should_exit = True  # not serving yet: nothing to drain
                return
            name = signal.Signals(sig).name
            loop.call_soon_threadsafe(self.daemon.request_exit, f"received {name}")

        async def serve(self, sockets: Any = None) -> None:
            self._cp_loop = asyncio.get_running_loop()
            install_accept_error_log(self._cp_loop)  # out of open files: one line a minute, not a traceback each
            # The run first (models, database, workers), before uvicorn logs its first line: a start
            # that fails is one error line alone, not one after uvicorn's `Started server process`.
            with self.capture_signals():  # (Ctrl+C meanwhile: the run starts, then stops at once)
                try:
                    await self.daemon.startup()
                except Exception as exc:
                    self.daemon.startup_error = exc
                    return
            await super().serve(sockets)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            lifespan = getattr(self, "lifespan", None)
            done = getattr(lifespan, "shutdown_event", None)
            if self.force_exit and done is not None and not done.is_set():
                # A third Ctrl+C: the answers are not waited for, but the run is still closed (`Daemon.shutdown`).
                # uvicorn's forced exit skips the app's shutdown: its lifespan task was then cancelled at the exit,
                # an ERROR traceback in the log, the run closed only as that cancellation unwound.
                await lifespan.shutdown()

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            host, port = self.config.host, sockets[0].getsockname()[1] if sockets else self.config.port
            if self.on_started is not None and not self.should_exit:  # (the run is recorded now: say where)
                self.on_started(self.daemon.driver.run_id, port)
            log.info("serving on http://%s:%d (SIGTERM or Ctrl+C drains, then exits)",
                     f"[{host}]" if ":" in host else host, port)

    return DrainingServer


#: Once the drain is over (every client answered, the last ones with 503 when it timed out), how long uvicorn
#: waits for the answers to be written before it cancels their handlers (which answers them a plain-text 500).
#: It was `--drain-timeout` again: a timed-out drain waited twice its timeout, and then answered 500.
ANSWER_GRACE_S = 5.0


def listen(host: str, port: int) -> socket.socket:
    """The daemon's listening socket, bound before its run starts: a port in use is then one
    clear error, and no run is recorded and no worker started for nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)  # SO_REUSEADDR, as uvicorn binds
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(config: RunConfig, options: DaemonOptions,
          on_started: Callable[[int | None, int], None] | None = None) -> int:
    """Run the daemon until it is drained and stopped; returns the process exit code (1: the run's
    rows could not all be written, see the spill file the log names; or the pool broke, `Daemon.pool_broken`).
    ``on_started(run_id, port)`` is called once the run is recorded and the port serves (never, when the start fails).

    Raises what kept the run from starting (`ConfigError` for a port in use or a model that cannot
    be loaded, `StorageError` for a database that cannot be used...), before anything is served.
    """
    import uvicorn

    from controlplane.guardian_config import refuse_undeclared_guardians
    from controlplane.plugin_checks import check_hook_names
    from controlplane.plugin_manager import checked_plugin_names, discover_plugins, validated_settings

    plugins, available = config.plugins, discover_plugins()  # what the run's start would refuse of them, refused
    for name in checked_plugin_names(plugins.enabled, plugins.settings, available):  # before uvicorn's start line
        validated_settings(available[name], plugins.settings.get(name))  # (no plugin made: nothing started twice)
        check_hook_names(name, available[name].target)  # a hook's typo: before any (guardian) worker starts
    refuse_undeclared_guardians(config, available)  # a planner's misspelt guardian, its key named
    sock = listen(options.host, options.port)
    daemon = Daemon(config, options)
    if not logging.getLogger().handlers:  # (the command line configures it: `controlplane.cli.live`)
        configure_logging(options.log_level, options.log_format, access_log=options.access_log)
    for warning in (exposure_warning(options.host, config.auth.api_keys),
                    open_files_warning(raise_open_file_limit(), options.limit_concurrency)):
        if warning:
            log.warning("%s", warning)
    # uvicorn's lines go to the root logger's handler, in the daemon's format (no logging config of its own); the
    # access log is the daemon's (`AccessLog`: with the x-request-id, at INFO whatever the level), not uvicorn's
    uv_config = uvicorn.Config(
        AccessLog(daemon.app) if options.access_log else daemon.app, host=options.host, port=options.port,
        log_level=options.log_level, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=ANSWER_GRACE_S, limit_concurrency=options.limit_concurrency,
        timeout_keep_alive=options.keep_alive_timeout_s,
    )
    server = _server_class()(uv_config)
    server.daemon = daemon
    server.on_started = on_started
    daemon.server = server
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if daemon.startup_error is not None:
        raise daemon.startup_error
    if not server.started:
        log.error("the daemon did not start")
        return 1
    if daemon.pool_error is not None:
        log.error("the daemon stopped: %s", daemon.pool_error)
        return 1
    return 1 if daemon.close_error is not None else 0


def admin_token_from_env() -> str | None:
    return os.environ.get(ADMIN_TOKEN_ENV) or None


#: The statuses a run's requests end in, as its summary counts them (they add up to ``num_requests``).
STATUS_COUNTS = ("completed", "blocked", "rejected", "failed", "cancelled", "in_flight")


def closed_counts(summary: dict, run_id: int | None = None) -> str:
    """The close line's counts: ``25 requests: 13 completed, 11 blocked, 1 rejected`` (every status with any, so
    they add up; the line left blocked and cancelled requests out), then the plugin errors, if any
    (``; 547 plugin errors (controlplane runs show 2 lists them)``)."""
    parts = [f"{summary[f'num_{s}']} {s.replace('_', ' ')}" for s in STATUS_COUNTS if summary.get(f"num_{s}")]
    line = f"{summary.get('num_requests', 0)} requests" + (f": {', '.join(parts)}" if parts else "")
    errors = summary.get("num_plugin_errors")
    if errors:
        line += f"; {errors} plugin errors" + (f" (controlplane runs show {run_id} lists them)" if run_id else "")
    return line
