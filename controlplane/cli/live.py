"""`controlplane daemon`: serve models live through the control plane (OpenAI-compatible HTTP)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from controlplane.cli.common import err, user_errors
from controlplane.cli.worker_options import CpuThreadsOpt, ModelPathOpt, PrecisionOpt, PresetOpt

LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def _log_format(value: str) -> str:
    if value.lower() not in ("text", "json"):
        raise typer.BadParameter(f"{value!r} is not one of text, json")
    return value.lower()


app = typer.Typer(help="Serve models live through the control plane.", no_args_is_help=False)


@app.command("daemon")
def daemon(
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="Run config (YAML, TOML or JSON); re-read on POST /admin/reload."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.", envvar="CONTROLPLANE_DAEMON_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).",
                                      envvar="CONTROLPLANE_DAEMON_PORT")] = 8000,
    db: Annotated[
        Optional[str], typer.Option(help="Database URL (or a SQLite file's path) for the run (default: the "
                                         "config's storage.url).")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(min=0, help="Replicas of the model (default: one per GPU, else 1).")
    ] = None,
    preset: PresetOpt = None,
    model_path: ModelPathOpt = None,
    model_name: Annotated[
        Optional[str], typer.Option(help="Name the model is served as (default: its source).")
    ] = None,
    precision: PrecisionOpt = None,
    pool: Annotated[
        str, typer.Option(help="Where workers run: thread | process | ray.", envvar="CONTROLPLANE_DAEMON_POOL")
    ] = "process",
    ray_address: Annotated[
        Optional[str], typer.Option(help="Ray cluster to join (pool ray; default: start a local one).")
    ] = None,
    cpu_threads: CpuThreadsOpt = None,
    max_workers: Annotated[
        Optional[int], typer.Option(min=1, help="Workers the pool may hold at once (default: no limit; a GPU pool "
                                    "holds one per GPU); an autoscaler's scale-up beyond is recorded as unplaced.")
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="Longest wait (s) for requests in flight when draining.")
    ] = 120.0,
    request_timeout: Annotated[
        float, typer.Option(min=0, help="A request unanswered this long (s) gets HTTP 504; 0 disables.")
    ] = 600.0,
    journal_dir: Annotated[
        Optional[Path],
        typer.Option(help="Where the run's journal of accepted requests is kept until it closes (lists the "
                     "requests a crash lost); default: $CONTROLPLANE_JOURNAL_DIR or the user's state directory."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error.", callback=_log_level)] = "info",
    log_format: Annotated[str, typer.Option(help="text (TIME LEVEL LOGGER: MESSAGE) | json (one object a line).",
                                            callback=_log_format)] = "text",
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request (with its x-request-id) and each request "
                                             "that ends other than completed, whatever --log-level.")] = False,
    limit_concurrency: Annotated[int, typer.Option(min=0, help="Open connections or requests beyond which a new "
                                                   "request is answered 503 at once; 0: no limit.")] = 1024,
    keep_alive_timeout: Annotated[float, typer.Option(min=0, help="A connection idle this long (s) between requests "
                                                      "is closed (0: each is closed after its response, no "
                                                      "keep-alive; not 'no limit' as 0 is for the other two).")] = 5.0,
    body_timeout: Annotated[float, typer.Option(min=0, help="A request body not received this long (s) after its "
                                                "headers gets 408 and its connection is closed; 0: no limit.")] = 30.0,
) -> None:
    """Run the daemon: OpenAI-compatible API, health, readiness, metrics, admin; drains on SIGTERM.

    Admin endpoints need CONTROLPLANE_ADMIN_TOKEN in the environment (they are off without it).
    """
    from controlplane.cli.config_checks import check_database_folder
    from controlplane.extras import extra_needed
    from controlplane.storage.errors import mask_password

    # without the `live` extra: one line naming the install, exit 2 (not a traceback ending in "No module named")
    with user_errors(), extra_needed("controlplane daemon", "live", "torch and transformers"):
        from controlplane.live.daemon import DaemonOptions, admin_token_from_env, serve
        from controlplane.live.daemon_config import daemon_config
        from controlplane.live.daemon_logging import configure_logging

    configure_logging(log_level, log_format, access_log=access_log)
    with user_errors():
        flags = {"db": db, "workers": workers, "preset": preset, "model_path": model_path, "precision": precision,
                 "model_name": model_name}
        cfg, overrides = daemon_config(config, **flags)
        check_database_folder(cfg.storage.url)  # (a new SQLite file, not a new folder: a typo in --db's folder)
        options = DaemonOptions(
            host=host, port=port, pool=pool, admin_token=admin_token_from_env(), config_path=config,
            overrides=overrides, config_flags=flags, drain_timeout_s=drain_timeout,
            request_timeout_s=request_timeout or None,
            cpu_threads=cpu_threads, ray_address=ray_address, log_level=log_level.lower(), log_format=log_format,
            access_log=access_log, limit_concurrency=limit_concurrency or None,
            keep_alive_timeout_s=keep_alive_timeout, body_timeout_s=body_timeout or None,
            max_workers=max_workers,
            journal_dir=journal_dir,
        )
    models = ", ".join(f"{m.name} x{m.replicas}" for m in cfg.cluster.models)

    def started(run_id: int | None, port_served: int) -> None:  # (once the run is recorded: not before an error)
        said = (f"controlplane daemon: {models} on the {pool} pool, http://{host}:{port_served}, run {run_id} "
                f"recorded in {mask_password(cfg.storage.url)}")
        if log_format == "json":  # every line of the log one JSON object: this one too
            logging.getLogger("controlplane.daemon").info("%s", said)
        else:
            err.print(said, highlight=False, soft_wrap=True)

    # a port in use, a model or database that cannot be used, a module of the `live` extra: one line, exit 2
    with user_errors(cfg.storage.url), extra_needed("controlplane daemon", "live", "torch and transformers"):
        code = serve(cfg, options, on_started=started)
    raise typer.Exit(code)


if __name__ == "__main__":  # python -m controlplane.cli.live [options]: the daemon command alone
    typer.run(daemon)
