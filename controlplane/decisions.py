"""What policy hooks return. Each carries a `reason`, stored with the decision."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.types import ReasonCode, Request


@dataclass(slots=True)
class Admission:
    admit: bool
    reason: str = ""
    priority: int | None = None  # overrides the request's priority when set
    code: ReasonCode = ReasonCode.ADMISSION_DENIED  # why, for machines (a refusal's HTTP status)
    retry_after_s: float | None = None  # a refusal: when trying again can succeed (HTTP Retry-After)


@dataclass(slots=True)
class CacheHit:
    """A response served from a cache instead of a worker."""

    kind: str  # "exact" | "semantic"
    latency_s: float = 0.0  # run time the lookup and reply take
    response_text: str | None = None
    similarity: float | None = None
    reason: str = ""
    # Tokens of the cached answer (what the reply counts); None: the request's max_output_tokens.
    output_tokens: int | None = None


@dataclass(slots=True)
class RouteDecision:
    worker_id: str
    reason: str = ""
    scores: dict | None = None  # what chose it (per replica, per scorer); stored in the decision's payload


@dataclass(slots=True)
class BatchPlan:
    """The next batch for one worker; empty prefill and decode means "stay idle"."""

    prefill: tuple[tuple[Request, int], ...] = ()  # (waiting or partly prefilled request, tokens)
    decode: tuple[Request, ...] = ()
    preempt: tuple[Request, ...] = ()  # running requests to evict (recompute later)
    # Iterations to run while nothing changes. Decode-only: each decodes `decode`. With a
    # prefill that completes every prompt in it: iteration 1 is the prefill (+ `decode`),
    # iterations 2.. decode every running request, the prefilled ones included (vLLM's next
    # steps when nothing else is waiting). Drivers may stop earlier (the live one runs one).
    max_iterations: int = 1
    # Ask again after this delay. An empty plan: the worker idles until then (dynamic batching). A plan that
    # runs: the core asks again at its first iteration boundary at or after it, in the simulator's fast mode
    # too (a batch of several iterations stops there), as the exact mode asks at every boundary.
    wake_after_s: float | None = None
    # Waiting requests to refuse now (a queue timeout), each with its reason: rejected with
    # ReasonCode.QUEUE_TIMEOUT rather than served late.
    expire: tuple[tuple[Request, str], ...] = ()
    reason: str = ""


@dataclass(slots=True)
class ScaleDecision:
    model: str
    target_replicas: int
    reason: str = ""
    confidence: float | None = None  # the policy's confidence in it, 0-1 (stored with the decision)
    signals: dict[str, float] | None = None  # the inputs it decided on, by name (stored with the decision)
    # advisory (shadow) policies' would-be decisions beside this one, by policy name: recorded, never applied
    advisory: tuple[tuple[str, ScaleDecision], ...] = ()
    # a start held back (a restart backoff): the run time the policy will start a worker again; a request
    # refused meanwhile because the model cannot start gets it as its Retry-After
    next_start_s: float | None = None
    # the policy keeps the count between its own evaluations (a sync period, a hold after an action): not a new
    # recommendation, so `scaling-rules`' stabilisation window does not count it as a want
    holding: bool = False
    # the target a shared rule (`scaling-rules`' cooldown) held back, the count kept: recorded once per hold as a
    # ``scale_held`` decision, so "why did it not scale while the queue grew?" has a stored answer
    held_target: int | None = None


@dataclass(slots=True)
class MemoryPlan:
    """Limits for one worker, derived from its memory."""

    max_num_seqs: int
    max_batch_tokens: int
    num_kv_blocks: int
    kv_block_size: int = 16
    reason: str = ""


@dataclass(slots=True)
class GuardianPlan:
    """Whether and how guardian models check a request's prompt (stage "input") or its response
    ("output"). Several guardians run in parallel and their verdicts are combined by ``combine``;
    a cascade's ``then`` plan runs next when the combined score reaches ``then_above`` (or it blocked)."""

    check: bool
    guardian: str = ""
    mode: str = "sync"  # "sync": the reply (input: the generation) waits for the verdict; "async": it does not
    reason: str = ""
    extra: dict = field(default_factory=dict)  # "backoff": True records a skip as a back-off decision
    guardians: tuple[str, ...] = ()  # checked in parallel; empty: (guardian,)
    combine: str | None = None  # "any" | "majority" | "weighted"; None: the config's guardians.combine
    then: GuardianPlan | None = None  # the next tier of a cascade
    then_above: float = 0.5  # escalate to ``then`` when the combined score is at least this
    # A verdict known already (a verdict cache): {"verdict", "score", "guardian", "reason"}; nothing runs.
    cached: dict | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.guardians or ((self.guardian,) if self.guardian else ())
