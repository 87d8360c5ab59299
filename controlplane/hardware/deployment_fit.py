"""A deployment's hardware checked as its config loads: the latency model's ``tensor_parallel`` and the
replica's ``gpus_per_replica`` are one number, its ``gpu`` and ``precision`` the deployment's ``gpu`` and
``precision`` (by the catalogue: ``a100`` is ``a100-80gb``), its ``model`` the deployment's ``model_spec`` (one
catalogue model: not 70B timings with 7B memory), and a known model's weights fit the GPUs of a replica.
A latency setting given alone sets the deployment's key (which then follows it: a config dumped without the keys
it was not given, as a sweep builds its points, derives it again).

Each check that fails gives the message of a `ConfigError` naming the keys to change; a run of such a
deployment would otherwise be timed on one number of GPUs and billed on another, or plan no KV cache at all
(`plugins/memory.py`: a plan that raises leaves the cache unlimited).
"""

from __future__ import annotations

from typing import Any

from controlplane.hardware.memory_plan import known_model, planned_precision, weights_bytes_per_gpu
from controlplane.hardware.profile_hardware import profile_gpu, profile_meta, profile_tensor_parallel
from controlplane.hardware.specs import get_gpu, get_model, get_precision
from controlplane.hardware.unplanned import unused_load_bandwidth

__all__ = ["FIX_PROFILE_PRECISION", "FIX_TENSOR_PARALLEL", "PROFILE_FOLLOWED_SINCE", "check_deployment", "default_setting_mismatch",
           "default_tensor_parallel_mismatch", "known_setting", "latency_tensor_parallel", "model_mismatch", "profile_precision",
           "profile_followed_notes", "setting_mismatch", "tensor_parallel_mismatch", "weights_misfit"]

GiB = 2**30

#: How to make the two numbers agree, said by every mismatch.
FIX_TENSOR_PARALLEL = ("give the replica's GPU count once, as latency.tensor_parallel (gpus_per_replica follows it), "
                       "or the same number in both")


#: How to make the latency model's setting and the deployment's key agree, by the key.
FIX_SETTING = {
    "gpu": "give the GPU once, as latency.gpu (gpu follows it), or the same GPU in both",
    "precision": "give the precision once, as latency.precision (precision follows it), or the same in both",
}
#: How to make a `measured` profile's precision and the deployment's agree.
FIX_PROFILE_PRECISION = ("give a profile timed in {given} (controlplane profile --precision {given}, or controlplane "
                         "calibrate a run of a worker in {given}), or leave precision out (it follows the profile's)")
#: How to make a `measured` profile's device (its GPU) and tensor_parallel agree with the deployment's, by key.
FIX_PROFILE = {"precision": FIX_PROFILE_PRECISION,
               "gpu": "give a profile timed on {given}, or leave gpu out (it follows the profile's device)"}
FIX_PROFILE_GPUS = ("give a profile timed on {given} GPUs a replica, or leave gpus_per_replica out (it follows the "
                    "profile's tensor_parallel)")


def check_deployment(deployment: Any) -> Any:
    """``cluster.models[i]`` (a `ModelDeployment` being validated) with ``gpus_per_replica``, ``gpu`` and
    ``precision`` taken from ``latency.tensor_parallel``, ``latency.gpu`` and ``latency.precision`` when only those
    are given (left out of the deployment's fields set: a dump ``exclude_unset`` leaves them to follow the latency
    settings again); a pydantic error (the config's `ConfigError` names the deployment) where both are given and
    differ, or where the model does not fit its GPUs (`weights_misfit`)."""
    from pydantic_core import PydanticCustomError

    meta = _measured_profile(deployment)
    tp, whose = latency_tensor_parallel(deployment.latency), None
    if tp is None and meta is not None and (tp := profile_tensor_parallel(meta)) is not None:
        whose = f"the measured profile {deployment.latency.get('path')}'s tensor_parallel"
    if tp is not None and tp != deployment.gpus_per_replica:
        if "gpus_per_replica" in deployment.model_fields_set:
            raise PydanticCustomError("tensor_parallel", tensor_parallel_mismatch(
                tp, deployment.gpus_per_replica, whose or "latency.tensor_parallel", whose and FIX_PROFILE_GPUS))
        _derive(deployment, "gpus_per_replica", tp)
    given = deployment.model_fields_set
    for key in ("gpu", "precision"):
        setting, whose = _timed_setting(deployment, key, meta)
        timed = _catalogue(key, setting)
        if timed is None and whose is not None and setting is not None:
            if key == "precision" and key not in given:
                raise PydanticCustomError(f"unknown_{key}", unknown_profile_setting(key, setting, whose))
            if key == "gpu" and key not in given:
                _derive(deployment, key, setting)  # (a GPU of one's own the config neither describes nor prices)
            elif key == "gpu" and setting.lower() not in (deployment.gpu.lower(), _gpu_name(deployment.gpu).lower()):
                raise PydanticCustomError("gpu_mismatch", setting_mismatch(key, setting, deployment.gpu, whose,
                                                                           FIX_PROFILE[key]))
            continue
        if timed is None or _same(key, timed, getattr(deployment, key)):
            continue
        if key not in given:
            _derive(deployment, key, timed.name)
        elif key == "gpu" and whose is not None and timed.name == "cpu":
            continue  # (a profile timed on the CPU may stand for a GPU the config names: the project's own runs)
        elif not (key == "precision" and deployment.precision == "auto"):  # (the live worker's choice)
            raise PydanticCustomError(f"{key}_mismatch", setting_mismatch(
                key, setting, getattr(deployment, key), whose, None if whose is None else FIX_PROFILE[key]))
    if (why := model_mismatch(deployment)) is not None:
        raise PydanticCustomError("model_mismatch", why)
    if (why := unused_load_bandwidth(deployment)) is not None:
        raise PydanticCustomError("unused_load_bandwidth", why)
    if (why := weights_misfit(deployment)) is not None:
        raise PydanticCustomError("does_not_fit", why)
    return deployment


#: The release since which a deployment that leaves out ``gpu`` (``gpus_per_replica``) follows its measured profile's
#: ``device`` (``tensor_parallel``): the releases before it timed the replica on the profile and priced it as the
#: key's default.
PROFILE_FOLLOWED_SINCE = "2026-12-07"


def profile_followed_notes(deployment: Any, key: str) -> list[str]:
    """The note of each of ``deployment``'s ``gpu`` and ``gpus_per_replica`` that its config left out and that follows
    its measured profile's ``device`` (``tensor_parallel``) to another value than the key's default, which the
    releases before `PROFILE_FOLLOWED_SINCE` priced (and planned) the run on: its cost changed with the upgrade.
    ``key``: the deployment's (``cluster.models.0``). [] for a deployment that gives them, or another latency
    model."""
    meta = _measured_profile(deployment)
    if meta is None:
        return []
    latency, notes = deployment.latency, []
    for field, setting, what in (("gpu", "gpu", "device"), ("gpus_per_replica", "tensor_parallel", "tensor_parallel")):
        default = type(deployment).model_fields[field].default
        value = getattr(deployment, field)
        if field in deployment.model_fields_set or setting in latency or value == default:
            continue
        notes.append(f"{key}.{field} follows the measured profile's {what}: {value} (releases before "
                     f"{PROFILE_FOLLOWED_SINCE} billed the default {default})")
    return notes


def known_setting(field: str, value: Any) -> Any:
    """A deployment's ``precision`` or ``model_spec`` as given, when the catalogue (or the config's own
    ``cluster.model_specs``) knows it; precision ``auto`` is the live worker's own choice
    (`controlplane.live.model_source`). A pydantic error saying what is known, or how to describe a model of one's
    own (a ``model_spec`` given as its shape); anything but a string is left to the field's type."""
    from pydantic_core import PydanticCustomError

    if field == "model_spec" and isinstance(value, dict):
        raise PydanticCustomError("model_spec_shape", "model_spec names a model, got its shape: describe it under "
                                  "cluster.model_specs.NAME (num_layers, hidden_size, num_heads, num_kv_heads, "
                                  "intermediate_size, vocab_size, ...) and give model_spec: NAME")
    if not isinstance(value, str) or (field == "precision" and value == "auto"):
        return value
    try:
        (get_precision if field == "precision" else get_model)(value)
    except KeyError as exc:
        text = str(exc).replace("; known: ", "; known: auto, ") if field == "precision" else str(exc)
        raise PydanticCustomError("unknown_spec", text) from None
    return value


def model_mismatch(deployment: Any, timed: Any = None, whose: str = "latency.model") -> str | None:
    """Why a deployment's ``model_spec`` and the model its latency model times (``timed``: its ``latency.model``)
    are two models of the catalogue: the run was timed as one (70B iterations) while its memory plan and cold start
    sized the other (7B weights and KV cache). None where either is not given, or ``timed`` is not a name the
    catalogue knows (its latency model's own to judge), or both name one model (its aliases: ``llama2-70b`` is
    ``meta-llama/Llama-2-70b-hf``). ``whose``: where ``timed`` comes from."""
    if timed is None:
        timed = deployment.latency.get("model") if isinstance(deployment.latency, dict) else None
    if not deployment.model_spec or not isinstance(timed, str):
        return None
    try:
        timed_model, sized = get_model(timed), get_model(deployment.model_spec)
    except KeyError:
        return None
    if timed_model.name == sized.name:
        return None
    return (f"{whose} ({timed}) and model_spec ({deployment.model_spec}) disagree: the latency model times "
            f"{timed_model.name}'s iterations, while the memory plan and cold start size {sized.name}'s weights and KV "
            "cache; give the model once, as latency.model (model_spec follows it), or the same model in both")


def latency_tensor_parallel(latency: Any) -> int | None:
    """The ``tensor_parallel`` the latency settings give (a whole number >= 1), else None: not given, or a value
    the latency model itself refuses, naming its setting."""
    value = latency.get("tensor_parallel") if isinstance(latency, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _derive(deployment: Any, key: str, value: Any) -> None:
    """Set ``key`` from the latency settings, not marked as given (so it follows them in a dump ``exclude_unset``)."""
    setattr(deployment, key, value)
    deployment.model_fields_set.discard(key)


def _catalogue(key: str, name: Any) -> Any:
    """The catalogue's GPU or precision a latency setting names; None where it is not a name the catalogue knows
    (the latency model's own to judge: a profile's own GPU name, such as splitwise's ``h100-80gb-pcap``)."""
    if not isinstance(name, str):
        return None
    try:
        return (get_gpu if key == "gpu" else get_precision)(name)
    except KeyError:
        return None


def _same(key: str, timed: Any, value: Any) -> bool:
    """Whether the deployment's ``gpu`` / ``precision`` ``value`` is the catalogue's ``timed``: the same GPU (its
    aliases: ``a100`` is ``a100-80gb``), or the same precision (``bf16`` is ``fp16``: `_SAME_PRECISION`)."""
    mine = _catalogue(key, value)
    if mine is None:
        return False
    if key == "gpu":
        return mine.name == timed.name
    return _SAME_PRECISION.get(mine.name, mine.name) == _SAME_PRECISION.get(timed.name, timed.name)


#: Two names of one precision to the simulator: the same size and speed (``int8`` and ``fp8`` are one size too, but
#: two formats a profile is timed in).
_SAME_PRECISION = {"bf16": "fp16"}


def unknown_profile_setting(key: str, setting: str, whose: str) -> str:
    """The message of a `measured` profile timed in a ``precision`` the catalogue does not know, with the
    deployment's own not given: it would have planned and started the replica as ``fp16`` (the field's default),
    whatever the weights' size."""
    from controlplane.hardware.specs import PRECISIONS

    return (f"{whose} ({setting}) is not a {key} the catalogue knows ({', '.join(sorted(PRECISIONS))}): the memory "
            f"plan and cold start cannot size the weights in it; give the {key} whose size the weights have "
            f"(precision: int8 for 8-bit weights, nf4 for 4-bit ones)")


def setting_mismatch(key: str, timed: Any, given: Any, whose: str | None = None, fix: str | None = None) -> str:
    """The message of a latency model timing a replica on one ``gpu`` (or in one ``precision``) while the
    deployment's ``key`` prices and plans it on another. ``whose``: where ``timed`` comes from; ``fix``: how to
    make them agree (`FIX_SETTING`'s by default, with ``{given}`` for the deployment's value)."""
    whose = whose or f"latency.{key}"
    if key == "gpu":
        what = (f"the latency model times a replica on {timed} GPUs, while its GPU-hours are priced, and its memory "
                f"planned, as {given}")
    else:
        what = (f"the latency model times a replica's weights in {timed}, while its memory plan and cold start size "
                f"them in {given}")
    return f"{whose} ({timed}) and {key} ({given}) disagree: {what}; {(fix or FIX_SETTING[key]).format(given=given)}"


def _measured_profile(deployment: Any) -> dict[str, Any] | None:
    """The metadata of a `measured` deployment's profile (`profile_meta`), None for another latency model."""
    if deployment.latency_model != "measured" or not isinstance(deployment.latency, dict):
        return None
    return profile_meta(deployment.latency.get("path"))


def _timed_setting(deployment: Any, key: str, meta: dict[str, Any] | None) -> tuple[Any, str | None]:
    """The ``gpu`` or ``precision`` the deployment's latency model times a replica with, and where that comes from
    when not from ``latency.KEY`` (None): a `measured` profile's (``meta``: its metadata) is its file's ``device``
    (`profile_gpu`: ``cpu``, a GPU's name, a CUDA device's by its name) or ``precision`` (one profile per model,
    device, precision and compile mode; `profile_precision`)."""
    latency = deployment.latency if isinstance(deployment.latency, dict) else {}
    if key in latency or meta is None:
        return latency.get(key), None
    path = latency.get("path")
    if key == "gpu":
        return profile_gpu(meta), f"the measured profile {path}'s device"
    return _precision_of(meta), f"the measured profile {path}'s precision"


def _gpu_name(gpu: str) -> str:
    """The catalogue's (or the config's own) name of ``gpu``, else ``gpu``."""
    timed = _catalogue("gpu", gpu)
    return gpu if timed is None else timed.name


def _precision_of(meta: dict[str, Any]) -> str | None:
    """A profile's precision (``fp16`` where it says none, as the format's default)."""
    precision = meta.get("precision", "fp16")
    return precision if isinstance(precision, str) else None


def profile_precision(path: Any) -> str | None:
    """The precision a ``controlplane-profile/1`` file says it was timed in (``fp16`` where it says none, as the
    format's default); None where ``path`` is no readable profile (the latency model's own error says why)."""
    meta = profile_meta(path)
    return None if meta is None else _precision_of(meta)


def tensor_parallel_mismatch(tensor_parallel: int, gpus_per_replica: int, whose: str = "latency.tensor_parallel",
                             fix: str | None = None) -> str:
    """The message of a latency model timing a replica on ``tensor_parallel`` GPUs while ``gpus_per_replica`` bills
    and plans it on another number. ``whose``: where the first number comes from; ``fix``: how to make them agree
    (`FIX_TENSOR_PARALLEL`'s by default, with ``{given}`` for ``gpus_per_replica``)."""
    return (f"{whose} ({tensor_parallel}) and gpus_per_replica ({gpus_per_replica}) disagree: the latency model times "
            f"a replica on {tensor_parallel} GPU{'s' if tensor_parallel != 1 else ''}, while its GPU-seconds, cost and "
            f"memory plan count {gpus_per_replica}; {(fix or FIX_TENSOR_PARALLEL).format(given=gpus_per_replica)}")


def default_tensor_parallel_mismatch(deployment: Any, factory: Any, name: str) -> str | None:
    """Why ``deployment``'s latency model, built by ``factory`` (registered as ``name``) without a
    ``tensor_parallel`` setting, times a replica on another GPU count than ``gpus_per_replica``; None where they
    agree, the setting is given (`check_deployment` compares it), or the factory takes no ``tensor_parallel``."""
    if latency_tensor_parallel(deployment.latency) is not None:
        return None
    default = _default_tensor_parallel(factory)
    if default is None or default == deployment.gpus_per_replica:
        return None
    return tensor_parallel_mismatch(default, deployment.gpus_per_replica,
                                    f"the default tensor_parallel of latency model {name!r}")


def default_setting_mismatch(deployment: Any, factory: Any, name: str) -> str | None:
    """`default_tensor_parallel_mismatch`, and the same of the factory's default ``model`` against the deployment's
    ``model_spec`` (`model_mismatch`: 70B timings, 7B memory), and of its default ``gpu`` and ``precision`` (the
    setting not given) against the deployment's ``gpu`` and ``precision``: a replica timed on an A100 while billed
    as an H100. None where all agree, or the factory takes none of them (or a default the catalogue lacks)."""
    if (why := default_tensor_parallel_mismatch(deployment, factory, name)) is not None:
        return why
    if not (isinstance(deployment.latency, dict) and "model" in deployment.latency):  # (given: compared at load)
        default = _default_parameter(factory, "model", str)
        if default is not None and (why := model_mismatch(deployment, default, f"the default model of latency model "
                                                                                f"{name!r}")) is not None:
            return why
    for key in ("gpu", "precision"):
        if isinstance(deployment.latency, dict) and key in deployment.latency:
            continue  # (given: `check_deployment` compares it)
        default = _default_parameter(factory, key, str)
        timed = _catalogue(key, default)
        if timed is None or _same(key, timed, getattr(deployment, key)):
            continue
        if key == "precision" and deployment.precision == "auto":
            continue
        return setting_mismatch(key, default, getattr(deployment, key), f"the default {key} of latency model {name!r}")
    return None


def _default_tensor_parallel(factory: Any) -> int | None:
    """The default of a latency model factory's ``tensor_parallel`` parameter, None where it has none."""
    default = _default_parameter(factory, "tensor_parallel", int)
    return None if isinstance(default, bool) else default


def _default_parameter(factory: Any, key: str, kind: type) -> Any:
    """The default of a latency model factory's parameter ``key`` when it is a ``kind``, else None."""
    import inspect

    try:
        parameter = inspect.signature(factory).parameters.get(key)
    except (TypeError, ValueError):
        return None
    default = getattr(parameter, "default", None)
    return default if isinstance(default, kind) else None


def weights_misfit(deployment: Any) -> str | None:
    """Why a deployment's known model (``model_spec``, else ``latency.model``) cannot be placed on its replica's
    GPUs (``gpus_per_replica`` x ``gpu`` in ``precision``), or None: its weights alone (transformer blocks, as the
    memory plan counts them) need more than a GPU's memory, or ``gpus_per_replica`` does not divide its heads.
    Nothing is said of a model, GPU or precision the catalogue lacks (``auto``: the live worker's choice)."""
    try:
        model = known_model(deployment)
        gpu = get_gpu(deployment.gpu)
        precision = get_precision(planned_precision(deployment))
    except KeyError:
        return None
    if model is None:
        return None
    n = deployment.gpus_per_replica
    try:
        weights = weights_bytes_per_gpu(model, precision, n)
    except ValueError:
        divisors = [t for t in (1, 2, 4, 8, 16, 32) if not model.num_heads % t and not model.hidden_size % t]
        return (f"gpus_per_replica ({n}) does not divide {model.name}'s {model.num_heads} attention heads and hidden "
                f"size {model.hidden_size}, so its weights cannot be sharded over a replica's GPUs; give one of "
                f"{', '.join(map(str, divisors))}")
    if weights <= gpu.memory_bytes:
        return None
    return (f"{model.name} does not fit: its weights in {precision.name} take {weights / GiB:.1f} GiB per GPU over "
            f"{n} GPU{'s' if n != 1 else ''} (gpus_per_replica: {n}), more than one {gpu.name} holds "
            f"({gpu.memory_bytes / GiB:.1f} GiB; gpu: {deployment.gpu}); give more gpus_per_replica (the latency "
            "model's tensor_parallel with it), a GPU with more memory, or a lower precision (int8, nf4)")
