"""The messages between the live driver and a worker, wherever the worker runs: what one
iteration must do (`StepCommand`), what it produced (`StepReply`), the guardian commands a pool
sends with `WorkerPool.command` (`LoadGuardian`, `GuardianCheck`, answered by `GuardianLoaded`
and `GuardianVerdict`), and the errors a pool raises.

All of them are plain, picklable values: they cross pipes to worker processes and go to Ray actors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.guardian_config import GuardianSpec
    from controlplane.live.sampling import SamplingParams, StopCondition

__all__ = [
    "AddSpec",
    "GuardianCheck",
    "GuardianLoaded",
    "GuardianVerdict",
    "LoadGuardian",
    "StepCommand",
    "StepOutOfMemory",
    "StepReply",
    "TokenOut",
    "WorkerLost",
    "WorkerStartError",
    "describe_error",
]


@dataclass(frozen=True, slots=True)
class AddSpec:
    """Register a request with the worker's backend before the step that prefills it."""

    request_id: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int  # the request's whole budget, ``generated`` included
    stop: StopCondition | None = None
    sampling: SamplingParams | None = None
    # Output already streamed to the client: set when a request is computed again after a
    # preemption or on another worker after a failure. It is prefilled with the prompt, and the
    # request's stream resumes exactly where the client's left off.
    generated: tuple[int, ...] = ()
    prefix_scope: str | None = None  # the tenant whose stored prompt prefixes it may reuse (None: shared)


@dataclass(frozen=True, slots=True)
class StepCommand:
    """One iteration on one worker: drop ``removes``, register ``adds``, then step."""

    batch_id: int
    prefill_ids: tuple[str, ...] = ()
    decode_ids: tuple[str, ...] = ()
    adds: tuple[AddSpec, ...] = ()
    removes: tuple[str, ...] = ()

    @property
    def has_work(self) -> bool:
        """Anything for the worker to do (a middle prefill chunk alone has nothing)."""
        return bool(self.prefill_ids or self.decode_ids or self.adds or self.removes)


@dataclass(frozen=True, slots=True)
class TokenOut:
    """What one request produced in one iteration."""

    request_id: str
    token_id: int
    text_delta: str
    finished: bool
    finish_reason: str | None  # "eos" | "stop" | "length" once finished; "error" when it failed
    # Why the request failed on this worker (it could not be added or sampled); the worker and
    # the batch's other requests went on. The driver fails the request with this reason.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StepReply:
    batch_id: int
    outputs: tuple[TokenOut, ...]
    duration_s: float  # the backend's measured iteration time
    # The backend's profile row: the iteration's shape (`controlplane.hardware.profile_format`
    # ROW_FIELDS), its ``iteration_s`` and the padded counts it really computed (PADDED_FIELDS).
    profile: dict[str, float | int] = field(default_factory=dict)

    @property
    def did_compute(self) -> bool:
        """The backend ran a forward: it prefilled or decoded something."""
        return bool(self.profile.get("num_prefill_tokens") or self.profile.get("num_decode_seqs"))


@dataclass(frozen=True, slots=True)
class LoadGuardian:
    """Load a guardian model into the worker, beside what it hosts already (``placement: shared``
    on a generation worker). Answered by `GuardianLoaded`."""

    spec: GuardianSpec


@dataclass(frozen=True, slots=True)
class GuardianLoaded:
    guardian: str
    device: str
    error: str | None = None  # why it could not load; the worker goes on without it


@dataclass(frozen=True, slots=True)
class GuardianCheck:
    """Check ``text`` with the guardian the worker hosts under that name. Answered by `GuardianVerdict`."""

    guardian: str
    text: str


@dataclass(frozen=True, slots=True)
class GuardianVerdict:
    guardian: str
    verdict: str  # "pass" | "block" | "error" (the model raised: the worker goes on)
    score: float | None
    reason: str
    busy_s: float  # the worker's own time on the check (its model's forward passes)
    device: str  # where it ran: "cpu", "cuda:0"...


class WorkerLost(RuntimeError):
    """The worker is gone (process or actor died, thread raised); its work is lost."""


class StepOutOfMemory(RuntimeError):
    """The iteration ran out of device memory; the worker is still usable."""


class WorkerStartError(RuntimeError):
    """The worker could not start (bad model source, precision unavailable, no free GPU...)."""


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``, for reasons recorded and shown to clients."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
