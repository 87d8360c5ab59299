"""What `controlplane runs config RUN` says above a stored config this release would refuse or read otherwise.

`runs config` prints the config a run ran with, whatever this release makes of it: a run of an older release may
hold a config this one refuses (that release wrote every default into the stored config, ``gpu: a100-80gb``
beside a measured profile timed on an A10G, which this release refuses as two GPUs: it derives ``gpu`` from the
profile's device now), or reads otherwise. `stored_config_notes` checks the stored config as a replay of it
would, and gives the comment lines saying what this release does with it, why, and the fix: for a default an
older release wrote itself where this one follows the measured profile, leave the key out.

The check reads a measured profile by its path as stored (relative: from the folder the run was started in):
where it is not found from here, the comment says the profile's device and tensor_parallel went unchecked.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["FOLLOWS_PROFILE", "stored_config_notes"]

#: The deployment keys a measured profile sets where a config leaves them out, by what of the profile sets them,
#: since release 2026-12-07: older releases priced and planned the key's default (and wrote it into the stored
#: config), whatever the profile's device (or tensor_parallel).
FOLLOWS_PROFILE = {"gpu": "device", "gpus_per_replica": "tensor_parallel"}


def stored_config_notes(stored: dict[str, Any], run_id: int) -> tuple[dict[str, Any], list[str], str | None]:
    """The config to print for run ``run_id`` (its stored config ``stored``, without the facts the run added: this
    release's reading of it where it takes it, else ``stored`` as it is), the comment lines (each ``# ...``) to
    print at the top (none where this release takes the config as it ran), and the warning for stderr of a config
    this release refuses (a ``runs config 7 > run7.yaml`` shows no comment), else None."""
    from controlplane.config import load_config
    from controlplane.errors import ConfigError

    try:
        config = load_config(None, copy.deepcopy(stored))
    except ConfigError as exc:
        errors = _error_lines(exc)
        warning = (f"this release refuses run {run_id}'s config as stored (the comments at the top of the YAML say "
                   f"how to replay it): {errors[0] if errors else exc}")
        return stored, _refused_notes(stored, run_id, errors), warning
    return config.model_dump(mode="json"), _unread_profile_notes(stored), None


def _error_lines(exc: Exception) -> list[str]:
    """A `ConfigError`'s lines without its ``invalid configuration:`` head and the source suffix of a value given
    as an override (the stored config is handed to ``load_config`` as overrides, given by no one)."""
    lines = [line.strip() for line in str(exc).replace(" (given as an option or override)", "").splitlines()]
    return [line for line in lines if line and not line.startswith("invalid configuration")]


def _refused_notes(stored: dict[str, Any], run_id: int, errors: list[str]) -> list[str]:
    """The comment lines of a stored config this release refuses: why, and how to replay it (the fixes of the
    defaults an older release wrote, where leaving them out is what this release takes)."""
    notes = [f"# note: this release refuses this config as run {run_id} stored it, so a replay with it stops with:",
             *(f"#   {line}" for line in errors)]
    fixes = _older_release_defaults(stored)
    if fixes:
        notes.append("# to replay it with this release:")
        notes += [f"#   {fix}" for fix in fixes]
    else:
        notes.append("# change the keys it names to replay it with this release (the YAML below is as the run ran)")
    return notes


def _older_release_defaults(stored: dict[str, Any]) -> list[str]:
    """How to fix the defaults an older release wrote beside a measured profile (`FOLLOWS_PROFILE`), one line per
    key: where the config without them is one this release takes, and they then follow the profile to another
    value; [] where that does not make the config one this release takes."""
    from controlplane.config import ModelDeployment, load_config
    from controlplane.errors import ConfigError

    trimmed = copy.deepcopy(stored)
    left_out: list[tuple[int, str, Any]] = []
    for i, deployment in enumerate(((trimmed.get("cluster") or {}).get("models") or [])):
        if not isinstance(deployment, dict) or deployment.get("latency_model") != "measured":
            continue
        for key in FOLLOWS_PROFILE:
            if key in deployment and deployment[key] == ModelDeployment.model_fields[key].default:
                left_out.append((i, key, deployment.pop(key)))
    if not left_out:
        return []
    try:
        config = load_config(None, trimmed)
    except ConfigError:
        return []
    fixes = []
    for i, key, default in left_out:
        now = getattr(config.cluster.models[i], key)
        if now == default:
            continue
        billed = f"priced the run as {default}" if key == "gpu" else f"billed the run for {default} GPU a replica"
        fixes.append(f"leave {key} out of cluster.models.{i}: it follows the measured profile's {FOLLOWS_PROFILE[key]} "
                     f"({now}) now; older releases wrote the default {key} ({default}) themselves and {billed}, so "
                     "a replay without it costs otherwise")
    return fixes


def _unread_profile_notes(stored: dict[str, Any]) -> list[str]:
    """The comment line of each measured deployment with the default gpu or gpus_per_replica (which an older release
    wrote whatever its profile said) whose profile is not found from this folder: this release takes them from the
    profile, unchecked here."""
    from controlplane.config import ModelDeployment
    from controlplane.hardware.profile_hardware import profile_meta

    notes = []
    for i, deployment in enumerate(((stored.get("cluster") or {}).get("models") or [])):
        if not isinstance(deployment, dict) or deployment.get("latency_model") != "measured":
            continue
        path = (deployment.get("latency") or {}).get("path") if isinstance(deployment.get("latency"), dict) else None
        defaults = any(deployment.get(key) == ModelDeployment.model_fields[key].default for key in FOLLOWS_PROFILE)
        if path is not None and defaults and profile_meta(path) is None:
            notes.append(f"# note: cluster.models.{i}'s measured profile {path} is not found from this folder (a "
                         "relative path is read from the folder a run starts in), so whether this release takes its "
                         "gpu and gpus_per_replica as stored (they must be the profile's device and tensor_parallel) "
                         "is not checked here")
    return notes
