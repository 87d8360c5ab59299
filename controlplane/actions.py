"""Actions: everything the core asks its driver to do. The driver carries them out and reports
back with events (`controlplane.events`).

Every driver dispatches through one table built by `dispatch_table`, which fails at the
driver's construction when an action type has no handler, not in the middle of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.types import Batch, Request


@dataclass(slots=True)
class StartBatch:
    """Run this batch on its worker; report `BatchFinished` (or `BatchFailed`)."""

    batch: Batch


@dataclass(slots=True)
class InterruptBatch:
    """Stop the worker's multi-iteration batch at its next iteration boundary."""

    worker_id: str


@dataclass(slots=True)
class StartWorker:
    """Start a replica of ``model``; report `WorkerReady` (or `WorkerFailed`)."""

    worker_id: str
    model: str


@dataclass(slots=True)
class StopWorker:
    """Stop the (idle, drained) replica; report `WorkerStopped`."""

    worker_id: str


@dataclass(slots=True)
class PreemptRequest:
    """Drop the request's KV cache on the worker: it left the running set and will be prefilled
    again later (prompt plus the tokens it already generated)."""

    worker_id: str
    request_id: str


@dataclass(slots=True)
class RunGuardian:
    """Check the request's response with ``guardian``; report `GuardianFinished` (sync and async)."""

    request: Request
    guardian: str
    mode: str
    stage: str = "output"  # "input": check the prompt (before generation); "output": the response


@dataclass(slots=True)
class FinishRequest:
    """Reply to the client: the request completed, was rejected, failed or was cancelled (see its
    status and ``reason_code``). Whatever the request held on its worker (KV) is released."""

    request: Request


@dataclass(slots=True)
class WakeWorker:
    """Send a `WorkerWake` event for this worker at `at_s` (a policy chose to wait)."""

    worker_id: str
    at_s: float


Action = (StartBatch | InterruptBatch | StartWorker | StopWorker | PreemptRequest | RunGuardian
          | FinishRequest | WakeWorker)
#: Every action type a driver must handle.
ACTION_TYPES: tuple[type, ...] = (StartBatch, InterruptBatch, StartWorker, StopWorker, PreemptRequest,
                                  RunGuardian, FinishRequest, WakeWorker)


def dispatch_table(handlers: Mapping[type, Callable[[Any], Any]], driver: str) -> dict[type, Callable[[Any], Any]]:
    """The driver's action table, checked to be exhaustive: one handler for every action type
    (`ACTION_TYPES`), nothing else. Raises `TypeError` naming what is missing or unknown."""
    missing = [t.__name__ for t in ACTION_TYPES if t not in handlers]
    unknown = [getattr(t, "__name__", repr(t)) for t in handlers if t not in ACTION_TYPES]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"no handler for {', '.join(missing)}")
        if unknown:
            parts.append(f"handlers for unknown action types {', '.join(unknown)}")
        raise TypeError(f"{driver}: {'; '.join(parts)}")
    return dict(handlers)
