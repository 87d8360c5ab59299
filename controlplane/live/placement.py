"""Where a worker runs on this machine: one GPU of its own when CUDA is present, else the CPU
with a share of its cores."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from controlplane.live.worker_messages import WorkerStartError
from controlplane.worker_lifecycle import UNPLACEABLE

if TYPE_CHECKING:
    from controlplane.live.model_source import WorkerModelSettings

__all__ = ["GpuSlots", "NoFreeDevice", "WorkerSlots", "cuda_device_count", "default_cpu_threads"]


class NoFreeDevice(WorkerStartError):
    """A worker cannot be placed: every device (or worker slot) is taken. The core records the
    scale-up as unplaced (a ``scale_unplaced`` decision), and the autoscaler may ask again."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{UNPLACEABLE}: {detail}")


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - broken CUDA install
        return 0


def default_cpu_threads(num_workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


class GpuSlots:
    """Hands out one GPU per worker; workers that asked for the CPU get none."""

    def __init__(self, count: int | None = None) -> None:
        self.count = cuda_device_count() if count is None else count
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.physical = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
        self.owner: dict[int, str] = {}

    def wants_gpu(self, settings: WorkerModelSettings) -> bool:
        return self.count > 0 and settings.device in ("auto", "cuda")

    def take(self, worker_id: str) -> int:
        for i in range(self.count):
            if i not in self.owner:
                self.owner[i] = worker_id
                return i
        raise NoFreeDevice(f"no free GPU for {worker_id}: all {self.count} are in use (one replica per GPU)")

    def release(self, worker_id: str) -> None:
        for i, owner in list(self.owner.items()):
            if owner == worker_id:
                del self.owner[i]

    def visible_name(self, index: int) -> str:
        return self.physical[index] if self.physical and index < len(self.physical) else str(index)


class WorkerSlots:
    """At most ``limit`` workers at once in a pool (None: no limit): what a machine can hold."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"max_workers must be >= 1 or None, got {limit}")
        self.limit = limit

    def check(self, worker_id: str, running: int) -> None:
        if self.limit is not None and running >= self.limit:
            raise NoFreeDevice(f"no free slot for {worker_id}: all {self.limit} worker slots of this pool are in use")
