"""What a `measured` profile says it was timed on, as a deployment's keys: its ``device`` as the deployment's
``gpu``, its ``tensor_parallel`` as ``gpus_per_replica``, its ``precision`` as ``precision`` and its ``model`` (a
``controlplane-profile/1`` file's metadata; `controlplane.hardware.deployment_fit` derives and checks them).

A profile's ``device`` is a GPU's name (``l40s``, ``a100-80gb``: a hand-made profile's) or, from ``controlplane
profile`` and ``controlplane calibrate``, a torch device: ``cpu`` is the catalogue's ``cpu``; ``cuda``/``cuda:N``
is the GPU its ``device_name`` (what CUDA reports: ``NVIDIA A100-SXM4-80GB``) names, where that is a GPU the
catalogue or the config knows, else nothing; ``unknown`` (a calibrated profile's without one) is nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from controlplane.hardware.profile_format import PROFILE_FORMAT

__all__ = ["TORCH_DEVICE_TYPES", "gpu_of_device_name", "profile_gpu", "profile_meta", "profile_tensor_parallel"]

#: Device types torch names (a profile's ``device`` from `controlplane profile`): not GPU names.
TORCH_DEVICE_TYPES = frozenset({"cuda", "mps", "xpu", "hip", "xla", "meta", "unknown"})

#: Known GPU types by a word of the name CUDA reports, most specific first (an A100's 40 GB model is not the
#: catalogue's 80 GB one).
_CUDA_NAMES = ((r"h200", "h200"), (r"h100", "h100-80gb"), (r"a100\b.*\b80\s?gb", "a100-80gb"), (r"a10g", "a10g"),
               (r"l4", "l4"))


def profile_meta(path: Any) -> dict[str, Any] | None:
    """A ``controlplane-profile/1`` file's metadata (its keys but ``rows``), read as the profile is (UTF-8, a
    byte-order mark allowed); None where ``path`` is no readable profile (the latency model's own error says why)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, TypeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        return None
    return {k: v for k, v in doc.items() if k != "rows"}


def gpu_of_device_name(name: str) -> str | None:
    """The GPU a CUDA device name (``NVIDIA L4``, ``NVIDIA H100 80GB HBM3``) is: a GPU of the config's own
    (``cluster.gpus``) named in it as a word, else a catalogue GPU; None where it names none of them."""
    from controlplane.hardware.specs import own_specs

    lowered = name.lower()
    for own in sorted(own_specs("gpu"), key=len, reverse=True):
        if re.search(rf"\b{re.escape(own.lower())}\b", lowered):
            return own
    return next((gpu for word, gpu in _CUDA_NAMES if re.search(rf"\b{word}\b", lowered)), None)


def profile_gpu(meta: dict[str, Any]) -> str | None:
    """The GPU a profile's rows were timed on (module docstring), None where it does not say one."""
    device = meta.get("device")
    if not isinstance(device, str) or not device.strip():
        return None
    kind = device.strip().split(":")[0].lower()
    if kind == "cpu":
        return "cpu"
    if kind in TORCH_DEVICE_TYPES:
        name = meta.get("device_name")
        return gpu_of_device_name(name) if kind == "cuda" and isinstance(name, str) else None
    return device.strip()


def profile_tensor_parallel(meta: dict[str, Any]) -> int | None:
    """The GPUs a profile's replica was timed on (its ``tensor_parallel``), None where it does not say (a whole
    number >= 1; anything else is not read as one)."""
    value = meta.get("tensor_parallel")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None
