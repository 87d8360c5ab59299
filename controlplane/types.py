"""Domain types shared by the core, the drivers and every plugin.

The core owns and mutates `Request` and `Worker`; plugins receive them read-only (policies
return decisions, they never change state themselves). Units are in the names: `_s` is
seconds of run time (simulated or live), `_tokens` counts tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from controlplane.waiting_queue import WaitingQueue


class RequestStatus(str, Enum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    IN_FLIGHT = "in_flight"  # still unfinished when the run was cut off
    CANCELLED = "cancelled"  # the client went away or gave up (live: disconnect, timeout)
    BLOCKED = "blocked"  # a guardian blocked its prompt (never generated) or its response (withheld)


class WorkerState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"
    STOPPED = "stopped"


#: States of a replica that exists and holds (or will hold) its model: starting, ready, draining.
ALIVE_STATES = frozenset((WorkerState.STARTING, WorkerState.READY, WorkerState.DRAINING))
#: ``Worker.num_kv_blocks`` of a worker without a KV-cache budget (no memory plan limited it).
UNLIMITED_KV_BLOCKS = 1 << 30


class ReasonCode(str, Enum):
    """Why a request was rejected or failed, as a machine reads it (the reason text is for people).

    The daemon maps each code to an HTTP status (`controlplane.live.http_errors`); the ``request``
    table stores it beside the reason.
    """

    UNKNOWN_MODEL = "unknown_model"  # no deployment serves the model asked for
    TOO_LONG = "too_long"  # prompt + max output tokens exceed the model's length
    DOES_NOT_FIT = "does_not_fit"  # can never fit one worker's batch or KV budget
    INVALID = "invalid"  # the request cannot be served as asked (bad parameters)
    ADMISSION_DENIED = "admission_denied"  # an admission policy said no (overload, SLO)
    QUEUE_FULL = "queue_full"  # a bounded queue is full
    QUEUE_TIMEOUT = "queue_timeout"  # waited in a queue longer than its class allows
    RATE_LIMITED = "rate_limited"  # a tenant quota or token-rate limit
    BLOCKED = "blocked"  # a guardian blocked the prompt or the response
    WORKER_FAILED = "worker_failed"  # its workers failed more often than the retries allow
    STALLED = "stalled"  # a batching policy planned nothing while requests were running
    UNAVAILABLE = "unavailable"  # no capacity to serve it (draining, shut down, its model cannot start)
    TIMEOUT = "timeout"  # cancelled: no answer within the daemon's request timeout (its client had a 504)
    CLIENT_GONE = "client_gone"  # cancelled: its client went away (disconnected, or gave it up) before the end


@dataclass(slots=True, eq=False)
class Request:
    """One inference request and its progress; owned by the core."""

    request_id: str
    arrival_s: float
    prompt_tokens: int
    max_output_tokens: int  # tokens to generate (sim: from the trace; live: the max_tokens asked)
    model: str | None = None
    tenant: str | None = None
    priority: int = 0
    prompt: str | None = None
    hash_ids: tuple[int, ...] = ()  # prefix KV block hashes, if the trace has them
    hash_block_tokens: int | None = None
    params: tuple[tuple[str, Any], ...] = ()
    # --- progress, written by the core only ---
    status: RequestStatus = RequestStatus.WAITING
    worker_id: str | None = None
    scheduled_s: float | None = None  # first time it entered a batch
    first_token_s: float | None = None
    finish_s: float | None = None
    num_computed_tokens: int = 0  # tokens prefilled into the KV cache so far
    output_tokens: int = 0  # tokens generated so far
    recompute_tokens: int = 0  # generated tokens to prefill again after a preemption
    cached_tokens: int = 0  # prompt tokens served from a prefix cache
    cache_hit: str | None = None  # "exact" | "semantic" | "prefix"
    num_preemptions: int = 0
    num_retries: int = 0
    reason: str | None = None  # why it was rejected or failed
    reason_code: ReasonCode | None = None  # the same, as a code (rejected and failed requests)
    retry_after_s: float | None = None  # a rejection: when the policy says a retry can succeed
    guardian_verdict: str | None = None
    output_text: str | None = None  # live mode / cache hits: the response text
    # its reply waited for the answer's guardian plan (a planner may check answers before the reply:
    # `guardian_checks.holds_answers`), then went out whole at ``finish_s``: its TTFT is the reply's
    # (`request_latency.latencies`); ``first_token_s`` stays the generation's first token
    reply_held: bool = False

    @property
    def prefill_target_tokens(self) -> int:
        """Tokens to prefill before decoding: the prompt, plus lost output after a preemption."""
        return self.prompt_tokens + self.recompute_tokens

    @property
    def context_tokens(self) -> int:
        """Tokens this request holds in the KV cache now."""
        return self.num_computed_tokens + self.output_tokens - self.recompute_tokens

    @property
    def remaining_prefill_tokens(self) -> int:
        return self.prompt_tokens + self.recompute_tokens - self.num_computed_tokens

    @property
    def is_decoding(self) -> bool:
        return self.num_computed_tokens >= self.prompt_tokens + self.recompute_tokens

    @property
    def remaining_output_tokens(self) -> int:
        return self.max_output_tokens - self.output_tokens

    @property
    def is_finished(self) -> bool:
        return self.status in (RequestStatus.COMPLETED, RequestStatus.REJECTED, RequestStatus.FAILED,
                               RequestStatus.BLOCKED)


@dataclass(slots=True, eq=False)
class Worker:
    """One model replica (a GPU, a TP group or a CPU process) and its queues."""

    worker_id: str
    model: str
    state: WorkerState = WorkerState.STARTING
    started_s: float = 0.0
    ready_s: float | None = None
    # when a starting replica will be ready, where its driver says so (the simulator's initial replicas are warm:
    # ready as the run starts); None: its deployment's cold start after ``started_s``
    ready_by_s: float | None = None
    # --- limits, set by the memory plan when the worker becomes ready ---
    max_num_seqs: int = 128
    max_batch_tokens: int = 4096
    kv_block_size: int = 16
    num_kv_blocks: int = UNLIMITED_KV_BLOCKS
    # --- queues and load ---
    # a deque that keeps its requests' prompt plus expected output tokens (``waiting.tokens``)
    waiting: WaitingQueue = field(default_factory=WaitingQueue)
    running: list[Request] = field(default_factory=list)
    busy: bool = False  # a batch is executing on it now
    current_batch_id: int | None = None
    num_kv_blocks_used: int = 0
    num_completed: int = 0
    busy_s: float = 0.0  # accumulated time spent executing batches

    def __post_init__(self) -> None:
        if type(self.waiting) is not WaitingQueue:  # (a deque or a list given to the constructor)
            self.waiting = WaitingQueue(self.waiting)

    @property
    def accepts_requests(self) -> bool:
        """Routable: ready, or starting (requests wait in its queue until it is ready)."""
        return self.state in (WorkerState.READY, WorkerState.STARTING)

    @property
    def is_alive(self) -> bool:
        """Starting, ready or draining: the replica exists and holds its model."""
        return self.state in ALIVE_STATES

    @property
    def has_kv_budget(self) -> bool:
        """A memory plan limited its KV cache (else ``num_kv_blocks`` is `UNLIMITED_KV_BLOCKS`)."""
        return self.num_kv_blocks < UNLIMITED_KV_BLOCKS

    @property
    def num_free_kv_blocks(self) -> int:
        return self.num_kv_blocks - self.num_kv_blocks_used

    @property
    def load(self) -> int:
        """Requests queued or running on this worker."""
        return len(self.waiting) + len(self.running)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.kv_block_size)


@dataclass(slots=True)
class Batch:
    """What a worker executes next: prefill chunks and decode steps for running requests."""

    batch_id: int
    worker_id: str
    prefill: tuple[tuple[Request, int], ...]  # (request, prompt tokens to prefill now)
    decode: tuple[Request, ...]
    # A batch may run many iterations while membership is unchanged; the worker stops early
    # when the core interrupts it. Decode-only: every iteration decodes `decode`. With a
    # prefill: the first iteration is `prefill` + `decode`, the later ones decode `then_decode`
    # (the worker's running requests, the prefilled ones included).
    max_iterations: int = 1
    then_decode: tuple[Request, ...] = ()

    @property
    def num_prefill_tokens(self) -> int:
        return sum(n for _, n in self.prefill)

    @property
    def size(self) -> int:
        return len(self.prefill) + len(self.decode)


@dataclass(slots=True)
class Decision:
    """A policy's decision with its reason, as it goes to the event bus and the database."""

    time_s: float
    hook: str
    plugin: str
    action: str
    subject: str | None = None  # request or worker id
    reason: str | None = None
    payload: dict[str, Any] | None = None
    is_error: bool = False  # a plugin raised; the next implementation or the default decided
