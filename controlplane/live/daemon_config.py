"""The daemon's run config: a config file (YAML, TOML or JSON), the command line's choices and
the defaults merged into one `RunConfig`, plus the overrides to apply again on ``/admin/reload``.

Without a config file (or one with no ``cluster.models``) the daemon serves one model, by default
the random-weight ``tiny-llama`` preset, on one replica per GPU or one CPU worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controlplane.config import ModelDeployment, RunConfig, load_config, read_config_file
from controlplane.errors import ConfigError
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.placement import cuda_device_count

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PRESET", "FINISH_SHARE", "daemon_config", "default_workers", "device_gpu", "with_request_deadline"]

DEFAULT_PRESET = "tiny-llama"
#: The share of ``--request-timeout`` that `queue-limit`'s ``max_finish_s`` gets by default: a
#: request predicted to finish later is refused (429) at once; the rest is headroom for the
#: prediction's error (a batch grows slower as it fills).
FINISH_SHARE = 0.8


def default_workers() -> int:
    """One replica per GPU when CUDA is present, else one CPU worker."""
    return cuda_device_count() or 1


def daemon_config(
    config_path: str | Path | None = None,
    *,
    db: str | None = None,
    workers: int | None = None,
    preset: str | None = None,
    model_path: str | None = None,
    precision: str | None = None,
    model_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[RunConfig, dict[str, Any]]:
    """The run config for a daemon: the file, with command-line choices applied; also the overrides.
    ``extra`` adds top-level overrides of its own (``live-replay``'s seed and run name).

    Without a config file (or one with no ``cluster.models``) the daemon serves one model, by
    default the random-weight ``tiny-llama`` preset, on one replica per GPU or one CPU worker.
    """
    if preset and model_path:
        raise ConfigError("give --preset or --model-path, not both")
    if model_name is not None and not model_name.strip():
        raise ConfigError("--model-name is empty: give the name clients ask for, or leave it out (the model's source)")
    file_values = read_config_file(config_path) if config_path else {}
    overrides: dict[str, Any] = dict(extra or {})
    if db:
        overrides["storage"] = {"url": db}
    models = (file_values.get("cluster") or {}).get("models")
    flags = {"workers": workers, "preset": preset, "model_path": model_path, "precision": precision,
             "model_name": model_name}
    given = [k for k, v in flags.items() if v is not None]
    if models:
        if given and len(models) != 1:
            raise ConfigError(
                f"--{given[0].replace('_', '-')} applies to a one-model config; "
                f"{config_path} serves {len(models)} models"
            )
        deployments = [dict(m) for m in models]
    else:
        deployments = [{}]
    if not models or given:
        d = deployments[0]
        worker = dict(d.get("worker") or {})
        if preset or model_path:
            worker.pop("preset", None)
            worker.pop("path", None)
            worker.pop("config", None)
            worker["preset" if preset else "path"] = preset or model_path
        if not any(k in worker for k in ("preset", "path", "config")):
            worker["preset"] = DEFAULT_PRESET
        if precision:
            worker["precision"] = precision
            if "precision" in d:  # (the flag sets the model's precision: the file's deployment one too)
                d["precision"] = precision
        settings = _worker_settings(worker, "cluster.models.0.worker")
        d["worker"] = worker
        if model_name or "name" not in d:
            d["name"] = model_name or settings.source_name()
        if workers is not None or "replicas" not in d:
            d["replicas"] = workers if workers is not None else default_workers()
        d.setdefault("max_model_len", settings.max_seq_len)
    priced = False
    for d in deployments:  # costed as the device it runs on, unless the config names it
        worker = d.get("worker") or {}
        if "gpu" not in d and isinstance(worker, dict):
            device = worker.get("device", "auto")
            if (gpu := device_gpu(device if isinstance(device, str) else "auto")) is not None:
                d["gpu"], priced = gpu, True
    if not models or given or priced:  # the models alone: the file's other cluster keys stay the file's, so the
        overrides["cluster"] = {"models": deployments}  # environment (CONTROLPLANE_CLUSTER__...) still outranks them
    config = load_config(config_path, overrides)
    models = []
    for i, d in enumerate(config.cluster.models):  # the file's own models too, before anything starts
        where = f"cluster.models.{i}.worker"
        try:
            settings = _worker_settings(d.worker or {}, where)
            models.append(_as_its_worker_runs(_within_worker_context(d, settings.max_seq_len), settings, i))
        except ConfigError as exc:
            in_file = f" in {config_path}" if config_path else ""
            raise ConfigError(f"invalid configuration{in_file}:\n  {exc}") from None
    return config.model_copy(update={"cluster": config.cluster.model_copy(update={"models": models})}), overrides


def _within_worker_context(d: ModelDeployment, context: int) -> ModelDeployment:
    """The deployment with its ``max_model_len`` at most its worker's ``max_seq_len`` (and that when unset).

    The core refuses a request whose prompt + max_tokens exceeds ``max_model_len`` (400 too_long)
    before it is queued; a worker cannot go beyond its context, so a longer request let through
    would be cut short there and answered 200 with finish_reason ``length``. A larger
    ``max_model_len`` is lowered with a warning rather than refused: a sim config's figure (a
    real model's context) still runs the daemon on a small worker."""
    if d.max_model_len is not None and d.max_model_len <= context:
        return d
    if d.max_model_len is not None:
        log.warning("cluster.models[%s]: max_model_len %d is above the worker's max_seq_len %d: lowered to "
                    "%d (raise worker.max_seq_len to serve longer requests)", d.name, d.max_model_len,
                    context, context)
    return d.model_copy(update={"max_model_len": context})


def _as_its_worker_runs(d: ModelDeployment, settings: WorkerModelSettings, i: int) -> ModelDeployment:
    """The deployment with the ``precision`` its workers load the model in (``worker.precision``, ``auto`` when
    unset): what the run records, `runs compare` names and the memory plan sizes. A ``precision`` given in both
    places that differs is refused, naming both keys; one given for the deployment alone (a simulator config's
    figure) is replaced with the worker's, with a warning (the daemon's workers never read it)."""
    given = d.precision if "precision" in d.model_fields_set and d.precision != "auto" else None
    if given is None or given == settings.precision:
        return d if d.precision == settings.precision else d.model_copy(update={"precision": settings.precision})
    if "precision" in (d.worker or {}):
        raise ConfigError(
            f"cluster.models.{i}.precision ({given}) and cluster.models.{i}.worker.precision ({settings.precision}) "
            "disagree: the workers load the model in worker.precision, and the run records it as the deployment's; "
            "give it once, as worker.precision (precision follows it), or the same in both")
    from typing import get_args

    from controlplane.live.model_source import Precision

    if given not in get_args(Precision):  # (fp8: priced by the simulator, not loaded by a live worker)
        log.warning("cluster.models[%s]: precision %s is not what its workers run (worker.precision is not given: "
                    "auto, fp32 on the CPU, bf16 or fp16 on a GPU), and live workers do not load %s (they load %s): "
                    "the run records auto", d.name, given, given, ", ".join(get_args(Precision)[1:]))
    else:
        log.warning("cluster.models[%s]: precision %s is not what its workers run (worker.precision is not given: "
                    "auto, fp32 on the CPU, bf16 or fp16 on a GPU): the run records auto; set worker.precision: %s "
                    "to serve the model in %s", d.name, given, given, given)
    return d.model_copy(update={"precision": settings.precision})


def device_gpu(device: str) -> str | None:
    """The `cluster.models[].gpu` a worker on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) runs as, for
    its GPU-seconds and cost: ``cpu`` on the CPU (priced at `gpu_prices`' ``cpu``, not as an A100), a known
    GPU type from the CUDA device's name; None when it is not one of them (the config's default stays)."""
    count = cuda_device_count()
    if device == "cpu" or (device == "auto" and count == 0):
        return "cpu"
    if count == 0:
        return None  # (a CUDA device on a machine without one: the worker's start says so)
    import torch

    index = int(device.partition(":")[2] or 0)
    from controlplane.hardware.profile_hardware import gpu_of_device_name

    # (by whole words of the name CUDA reports, as a profile's device is read: "NVIDIA L40S" is not an L4)
    return gpu_of_device_name(torch.cuda.get_device_name(min(index, count - 1)))


def _worker_settings(worker: dict[str, Any], where: str) -> WorkerModelSettings:
    """A deployment's worker section, validated; errors name the key (``cluster.models.0.worker.preset``)."""
    try:
        settings = WorkerModelSettings(**worker)
    except ValidationError as exc:
        raise ConfigError("\n  ".join(
            f"{'.'.join([where, *(str(p) for p in e['loc']), *_config_key(e)])}: "
            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
    if settings.path is not None and not Path(settings.path).is_dir():
        raise ConfigError(f"{where}.path: model path {settings.path} is not a directory (models are never downloaded)")
    return settings


def _config_key(error: Any) -> list[str]:
    """The key of ``worker.config`` a validation error is about (`ModelConfigError.key`), if any."""
    key = getattr((error.get("ctx") or {}).get("error"), "key", None)
    return [key] if isinstance(key, str) else []


def with_request_deadline(config: RunConfig, request_timeout_s: float | None) -> RunConfig:
    """``config`` with `queue-limit`'s ``max_finish_s`` set to `FINISH_SHARE` of the request timeout,
    unless the config sets it (``null`` turns it off) or does not enable `queue-limit`: under overload
    the daemon then refuses the requests it cannot answer in time instead of letting every one of
    them time out (docs/daemon.md)."""
    if not request_timeout_s or "queue-limit" not in config.plugins.enabled:
        return config
    settings = dict(config.plugins.settings.get("queue-limit") or {})
    if "max_finish_s" in settings:
        return config
    settings["max_finish_s"] = round(FINISH_SHARE * request_timeout_s, 3)
    plugins = config.plugins.model_copy(update={"settings": {**config.plugins.settings, "queue-limit": settings}})
    return config.model_copy(update={"plugins": plugins})
