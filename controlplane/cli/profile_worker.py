"""The worker `controlplane profile` times, named as the daemon names it: ``--config FILE --model NAME`` takes a
deployment's ``worker`` section of a daemon (or run) config, so the profile is labelled with the model the
live run records (a ``worker.config`` model is ``<model_type>-custom``, a directory its name), and
`controlplane calibrate --profile` accepts it for that run's worker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.live.model_source import WorkerModelSettings

__all__ = ["config_worker", "with_options"]


def config_worker(config_path: Path, model: str | None) -> WorkerModelSettings:
    """Deployment ``model``'s worker settings in a daemon or run config file, as the daemon builds them
    (`daemon_config`: a file with no ``cluster.models`` serves the default tiny-llama); ``model`` may be left
    out of a config of one model. A ValueError names the models to choose from."""
    from controlplane.live.daemon_config import daemon_config
    from controlplane.live.served_model import worker_settings

    config, _ = daemon_config(config_path)
    names = [d.name for d in config.cluster.models]
    if model is None and len(names) > 1:
        raise ValueError(f"{config_path} serves {len(names)} models ({', '.join(names)}): choose one with --model")
    if model is not None and model not in names:
        raise ValueError(f"--model {model!r}: {config_path} serves {', '.join(names)}")
    return worker_settings(config, model if model is not None else names[0])


def with_options(settings: WorkerModelSettings, **options: Any) -> WorkerModelSettings:
    """``settings`` with the options given (None: not given) in place of its own, validated again."""
    from controlplane.live.model_source import WorkerModelSettings

    from pydantic import ValidationError

    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return settings
    try:
        return WorkerModelSettings(**{**settings.model_dump(exclude_unset=True), **given})
    except ValidationError as exc:  # (named by the option, not the field)
        raise ValueError("; ".join(f"--{str(e['loc'][0]).replace('_', '-') if e['loc'] else 'worker'}: "
                                   f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
