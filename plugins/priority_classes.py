"""Priority classes: per-class queue caps at admission and per-class queue timeouts.

A request belongs to the highest class whose ``min_priority`` its ``Request.priority`` reaches
(a larger number is more important; note that vLLM's ``priority`` is the other way round).
Each class may cap how many of its requests wait (on every replica of the model: one logical
queue per model) and how long one may wait before it is refused (``queue_timeout_s``, checked
whenever its replica plans a batch; the refusal is ``ReasonCode.QUEUE_TIMEOUT``, HTTP 429). A starting
replica plans no batch, so a request queued on one is refused only once the replica is ready.

The plugin orders nothing itself: pair it with a priority-aware batcher
(``priority-continuous-batching``, ``dynamic-batching``) so higher classes also go first.

Cost: a cap reads each replica's waiting requests counted by priority, which the queue keeps
(`controlplane.waiting_queue`), so an arrival costs the replicas times the distinct priorities
waiting, not the queued requests. The timeouts are checked as a replica plans a batch, from the head of its
queue: in arrival order (`WaitingQueue.inversions` is 0) the walk ends at the first request that has not waited
the shortest class timeout, so a plan costs the requests it refuses plus one; a queue out of arrival order
(re-routed and preempted requests) is walked whole.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import Admission, BatchPlan
from controlplane.types import ReasonCode
from controlplane.waiting_queue import WaitingQueue


class PriorityClass(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    min_priority: int = -1_000_000  # requests with priority >= this (and below the next class) belong
    max_queued: int | None = Field(None, ge=0)  # waiting requests of the class on the model's replicas
    queue_timeout_s: float | None = Field(None, gt=0)  # refuse a request that waited longer


def _default_classes() -> tuple[PriorityClass, ...]:
    return (PriorityClass(name="interactive", min_priority=1),
            PriorityClass(name="batch", min_priority=-1_000_000))


class PriorityClasses(Plugin):
    """Per-class queue caps (refused at admission) and queue timeouts (refused while waiting)."""

    name = "priority-classes"

    class Settings(PluginSettings):
        classes: tuple[PriorityClass, ...] = Field(default_factory=_default_classes)

        @field_validator("classes")
        @classmethod
        def _distinct(cls, v):
            if not v:
                raise ValueError("classes: give at least one class")
            names = [c.name for c in v]
            if len(set(names)) != len(names):
                raise ValueError(f"classes: duplicate class names in {names}")
            mins = [c.min_priority for c in v]
            if len(set(mins)) != len(mins):
                raise ValueError(f"classes: two classes share a min_priority ({mins})")
            return tuple(sorted(v, key=lambda c: -c.min_priority))  # most important first

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._classes = self.settings.classes
        timeouts = [c.queue_timeout_s for c in self._classes if c.queue_timeout_s is not None]
        self._any_timeout = bool(timeouts)
        self._min_timeout = min(timeouts, default=None)

    def class_of(self, priority: int) -> PriorityClass | None:
        """The class of a priority; None below every class (then no limit applies)."""
        for c in self._classes:
            if priority >= c.min_priority:
                return c
        return None

    @hookimpl
    def cp_admit_request(self, ctx, request):
        c = self.class_of(request.priority)
        if c is None or c.max_queued is None:
            return None  # no objection: the next admission policy decides
        queued = 0
        for w in ctx.workers.values():
            if w.model == request.model and w.is_alive:
                waiting = w.waiting  # (its requests counted by priority by the queue: not walked)
                if type(waiting) is WaitingQueue:
                    queued += sum(n for p, n in waiting.priorities.items() if self.class_of(p) is c)
                else:
                    queued += sum(1 for r in waiting if self.class_of(r.priority) is c)
        if queued >= c.max_queued:
            return Admission(False, f"queue full: class {c.name!r} has {queued} waiting >= its cap {c.max_queued}",
                             code=ReasonCode.QUEUE_FULL)
        return None

    @hookimpl(tryfirst=True)
    def cp_form_batch(self, ctx, worker):
        """Refuse the waiting requests past their class's timeout; otherwise let the batcher decide."""
        if not self._any_timeout or not worker.waiting:
            return None
        now = ctx.now_s
        q = worker.waiting
        # In arrival order (as a queue is but for preemptions and re-routed requests), the first request that has
        # not waited the shortest timeout ends the walk: none after it has either.
        stop = self._min_timeout if getattr(q, "inversions", 1) == 0 else None
        expired = []
        for r in q:
            if stop is not None and now - r.arrival_s <= stop:
                break
            c = self.class_of(r.priority)
            if c is None or c.queue_timeout_s is None or r.scheduled_s is not None:
                continue  # preempted requests were admitted to a batch once: they are not queued work
            waited = now - r.arrival_s
            if waited > c.queue_timeout_s:
                expired.append((r, f"queue timeout: class {c.name!r} waited {waited:.6f} s > {c.queue_timeout_s} s"))
        if not expired:
            return None
        return BatchPlan(expire=tuple(expired), reason=f"{len(expired)} past their class's queue timeout")
