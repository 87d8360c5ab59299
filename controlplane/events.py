"""Events: what drivers feed into the core, and what the core reports to observers.

Every event carries `time_s`, the run time at which it happened (simulated or live).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.types import ReasonCode, Request

# --- inbound: driver -> core ---------------------------------------------------------------


@dataclass(slots=True)
class RequestArrived:
    time_s: float
    request: Request


@dataclass(slots=True)
class BatchFinished:
    """A worker finished `num_iterations` iterations of a batch."""

    time_s: float
    worker_id: str
    batch_id: int
    num_iterations: int = 1
    # Live workers decide when a request stops (EOS, stop strings): (request_id, reason).
    finished: tuple[tuple[str, str], ...] = ()
    # Live workers may report fewer generated tokens for some requests than the iteration count.
    busy_s: float | None = None  # time the worker spent executing; defaults to the batch span
    # End of the first iteration of a prefill batch that went on decoding (num_iterations > 1):
    # its first tokens are stamped then. None: the first iteration ended at time_s.
    first_end_s: float | None = None


@dataclass(slots=True)
class RequestCancelled:
    """The client no longer wants the request (disconnected, timed out). Waiting requests
    leave at once; one in a running batch leaves when that batch's iteration ends."""

    time_s: float
    request_id: str
    reason: str = "cancelled by the client"


@dataclass(slots=True)
class RequestFailed:
    """The driver cannot serve this one request (its worker could not compute it, or it was in the
    steps of too many failed workers). Like a cancellation it leaves at its batch's next boundary,
    but it is recorded as failed, with ``code``."""

    time_s: float
    request_id: str
    reason: str
    code: ReasonCode = ReasonCode.INVALID


@dataclass(slots=True)
class BatchFailed:
    """A batch could not run (worker crash, out of memory); its requests are retried."""

    time_s: float
    worker_id: str
    batch_id: int
    reason: str
    out_of_memory: bool = False


@dataclass(slots=True)
class WorkerReady:
    time_s: float
    worker_id: str
    memory: dict[str, Any] = field(default_factory=dict)  # device facts for the memory plan


@dataclass(slots=True)
class WorkerPlaced:
    """A worker the core started found a device or worker slot (a driver that places workers: the live
    pools; `WorkerLifecycle.confirms_placement`): its ``starting`` worker event and its GPU time begin now."""

    time_s: float
    worker_id: str


@dataclass(slots=True)
class WorkerFailed:
    time_s: float
    worker_id: str
    reason: str


@dataclass(slots=True)
class WorkerStopped:
    time_s: float
    worker_id: str


@dataclass(slots=True)
class GuardianFinished:
    time_s: float
    request_id: str
    verdict: str  # "pass" | "block" | "error" | "timeout" | "unavailable"
    guardian: str | None = None  # which guardian answered (None: the only one asked)
    score: float | None = None  # its score, 0-1 (higher: more likely harmful), when it gives one
    reason: str | None = None  # why, for people (the rule that matched, the judge's category)
    stage: str = "output"  # "input": the prompt was checked; "output": the response


@dataclass(slots=True)
class WorkerWake:
    """The wake-up a batching policy asked for (see `BatchPlan.wake_after_s`)."""

    time_s: float
    worker_id: str


@dataclass(slots=True)
class Tick:
    time_s: float


@dataclass(slots=True)
class IterationTimed:
    """A live worker's iteration, timed as the control plane saw it (for calibration).

    ``time_s`` is when the reply was back on the driver's loop; ``start_s`` when the core
    started the batch. ``row`` is the backend's profile row: the iteration's shape
    (``controlplane.hardware.profile_format.ROW_FIELDS``), its own ``iteration_s`` and the
    padded counts. The core passes it to observers unchanged; the SQL recorder stores it in the
    ``iteration`` table when ``storage.record_iterations`` is on.
    """

    time_s: float
    worker_id: str
    batch_id: int
    start_s: float
    row: dict[str, float]


#: Every event a driver may feed `ControlPlane.handle`; the core has a handler for each.
INBOUND_EVENTS: tuple[type, ...] = (
    RequestArrived, RequestCancelled, RequestFailed, BatchFinished, BatchFailed, WorkerPlaced, WorkerReady,
    WorkerFailed, WorkerStopped, GuardianFinished, WorkerWake, Tick, IterationTimed,
)

# --- outbound: core -> observers (cp_on_event) ---------------------------------------------


@dataclass(slots=True)
class RequestFinished:
    """A request reached its final state (completed, rejected or failed)."""

    time_s: float
    request: Request


@dataclass(slots=True)
class MetricSample:
    time_s: float
    name: str
    value: float
    labels: dict[str, str] | None = None


@dataclass(slots=True)
class WorkerChanged:
    """A worker's lifecycle step: starting, ready, draining, failed, stopped."""

    time_s: float
    worker_id: str
    kind: str
    detail: dict[str, Any] | None = None
