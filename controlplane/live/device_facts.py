"""What a started worker reports about its device and model (`WorkerReady.memory`): real memory
readings plus the KV bytes per token the memory plan sizes batches with, and how it runs the model (precision,
compiled or not, in which compile mode)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from controlplane.hardware.kv import kv_bytes_per_token

if TYPE_CHECKING:
    from controlplane.live.model_source import WorkerModelSettings

__all__ = ["device_facts"]


def device_facts(backend: Any, settings: WorkerModelSettings, threads: int | None) -> dict[str, Any]:
    """Real memory facts of the worker's device, plus what the model needs per token of KV cache."""
    import torch

    from controlplane.live.memory import device_memory

    dev = backend.device
    elem = torch.tensor([], dtype=backend.loaded.dtype).element_size()
    mem = device_memory(dev)
    facts: dict[str, Any] = {
        "device": str(dev),
        "model": settings.source_name(),
        "precision": backend.loaded.precision,
        "compiled": bool(backend.loaded.compiled),  # torch.compile, in compile_mode (a profile's labels: calibrate)
        "compile_mode": settings.compile_mode if backend.loaded.compiled else None,
        "model_bytes": int(backend.loaded.model_bytes),
        "kv_bytes_per_token": kv_bytes_per_token(backend.config, elem),
        "max_seq_len": int(backend.max_seq_len),
        "vocab_size": int(backend.vocab_size),
        "total_bytes": mem.total_bytes,
        "free_bytes": mem.free_bytes,
        "allocated_bytes": mem.allocated_bytes,
        "reserved_bytes": mem.reserved_bytes,
        "peak_allocated_bytes": mem.peak_allocated_bytes,
        "pid": os.getpid(),
    }
    if dev.type == "cuda":
        facts["device_name"] = torch.cuda.get_device_name(dev)
        facts["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    else:
        facts["device_name"] = "cpu"
        facts["torch_threads"] = int(threads or torch.get_num_threads())
    return facts
