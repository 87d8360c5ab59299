"""Real device memory readings and KV-cache sizing arithmetic.

``device_memory`` is the only function that reads the device; everything else is pure arithmetic
on numbers, so admission and batch limits can be unit-tested and reused by the simulator.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import torch

from controlplane.hardware.kv import kv_bytes_per_token


@dataclass(frozen=True)
class DeviceMemory:
    """A snapshot of one device's memory, in bytes.

    On CUDA: allocated/reserved/peak are torch's caching-allocator counters and free/total come from
    the driver. On the CPU: total/free are host memory and allocated is this process's RSS
    (reserved = allocated; peak is the process's peak RSS where the OS reports it).
    """

    total_bytes: int
    allocated_bytes: int
    reserved_bytes: int
    free_bytes: int
    peak_allocated_bytes: int


def device_memory(device: torch.device | str = "cpu") -> DeviceMemory:
    """Read the memory state of ``device`` now."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{device} requested but CUDA is not available")
        free, total = torch.cuda.mem_get_info(device)
        stats = torch.cuda.memory_stats(device)
        return DeviceMemory(
            total_bytes=int(total),
            allocated_bytes=int(stats.get("allocated_bytes.all.current", 0)),
            reserved_bytes=int(stats.get("reserved_bytes.all.current", 0)),
            free_bytes=int(free),
            peak_allocated_bytes=int(stats.get("allocated_bytes.all.peak", 0)),
        )
    import psutil

    vm = psutil.virtual_memory()
    rss = psutil.Process().memory_info().rss
    return DeviceMemory(
        total_bytes=int(vm.total),
        allocated_bytes=int(rss),
        reserved_bytes=int(rss),
        free_bytes=int(vm.available),
        peak_allocated_bytes=max(int(rss), peak_rss_bytes()),
    )


def reset_peak(device: torch.device | str = "cpu") -> None:
    """Restart peak tracking: CUDA allocator peak, or the process's peak RSS on the CPU (Linux)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def release_cached_memory(device: torch.device | str = "cpu") -> None:
    """Free what Python and torch's caching allocator hold but no tensor uses (after unloading a model).

    On the CPU also asks glibc to hand freed heap back to the OS, so RSS readings reflect live data.
    """
    gc.collect()
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    else:
        _malloc_trim()


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _peak_rss() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0
    # ru_maxrss is KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# -- pure arithmetic -----------------------------------------------------------------------------
def suggest_batch_limits(
    free_bytes: int,
    model_config: Any,
    dtype_bytes: int,
    *,
    avg_seq_len: int,
    safety: float = 0.8,
    max_batch: int = 256,
) -> tuple[int, int]:
    """(max_batch_size, max_tokens) that fit ``safety`` x ``free_bytes`` of KV cache.

    ``max_tokens`` is the KV token budget; the batch size is that budget over the average
    sequence length, capped at ``max_batch``. Zero means not even one average sequence fits.
    """
    if not 0 < safety <= 1:
        raise ValueError("safety must be in (0, 1]")
    if avg_seq_len < 1:
        raise ValueError("avg_seq_len must be >= 1")
    per_token = kv_bytes_per_token(model_config, dtype_bytes)
    max_tokens = max(0, int(free_bytes * safety) // per_token)
    max_batch_size = min(max_batch, max_tokens // avg_seq_len)
    return max_batch_size, max_tokens


# -- process peak RSS (the CPU analogue of CUDA peak stats) --------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since start or the last ``reset_peak_rss`` (VmHWM), else ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _peak_rss()
