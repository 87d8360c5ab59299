"""Local devices: whether a torch device name exists on this machine, for settings that name one
(checked when a run starts, not at the device's first use)."""

from __future__ import annotations

__all__ = ["check_device"]


def check_device(device: str) -> str:
    """``device`` if torch can run there on this machine; else ValueError saying why (a CUDA
    device on a machine without one, an index past the last, a name torch does not know)."""
    if device == "cpu":
        return device
    try:
        import torch
    except ImportError as exc:
        raise ValueError(f"{device!r} needs torch, which is not installed; use cpu") from exc
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{device!r} is not a device torch knows ({exc}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{device!r}: no CUDA device is available on this machine; use cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device
