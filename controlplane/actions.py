"""Actions: what the core asks its driver to do. The driver carries them out and reports back."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.types import Batch, Request


@dataclass(slots=True)
class StartBatch:
    batch: Batch


@dataclass(slots=True)
class InterruptBatch:
    """Stop the worker's multi-iteration batch at its next iteration boundary."""

    worker_id: str


@dataclass(slots=True)
class StartWorker:
    worker_id: str
    model: str


@dataclass(slots=True)
class StopWorker:
    worker_id: str


@dataclass(slots=True)
class RunGuardian:
    request: Request
    guardian: str
    mode: str


@dataclass(slots=True)
class FinishRequest:
    """Reply to the client: the request completed, was rejected or failed (see its status)."""

    request: Request




@dataclass(slots=True)
class WakeWorker:
    """Send a `WorkerWake` event for this worker at `at_s` (a policy chose to wait)."""

    worker_id: str
    at_s: float


Action = StartBatch | InterruptBatch | StartWorker | StopWorker | RunGuardian | FinishRequest | WakeWorker
