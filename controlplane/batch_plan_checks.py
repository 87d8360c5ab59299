"""Whether the core can carry out a batching policy's `BatchPlan` for one worker.

A plan that names another worker's request, a request twice (an expiry of one it prefills
included), a prefill entry that is not a (request, whole number of tokens) pair, a prefill of no
tokens or of more than the prompt has left, a decode or a preemption of a request that is not
running on the worker, an expiry of one not waiting there, more sequences running than the
worker's ``max_num_seqs``, more KV blocks held than the worker's ``num_kv_blocks`` (`kv_blocks_needed`), or a
wake in the past would corrupt the worker's queues, stall it,
overrun its memory, or (a preemption of a waiting request, asked again and again) never end; a
``reason`` (the plan's, or an expiry's, which becomes its request's) that is not a string could
not be stored (the request's row was lost). :func:`plan_error` says what is wrong
(None when nothing is); the core then records it as the policy's error and asks the built-in
batching instead (`PolicyCalls.decide_instead`), so a faulty batching plugin is isolated like one
that raises. Checked for every plan, so the checks are plain attribute reads.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

from controlplane.decisions import BatchPlan
from controlplane.types import UNLIMITED_KV_BLOCKS, Request, RequestStatus, Worker

if TYPE_CHECKING:
    from controlplane.policy_calls import PolicyCalls

__all__ = ["iterations_in_kv", "kv_blocks_needed", "plan_error", "replacement_plan"]

_RUNNING, _WAITING = RequestStatus.RUNNING, RequestStatus.WAITING


def plan_error(plan: BatchPlan, w: Worker) -> str | None:
    """What makes ``plan`` impossible on worker ``w``, in words; None when the core can run it."""
    try:
        return _plan_error(plan, w)
    except (TypeError, AttributeError, ValueError) as exc:  # a field of the wrong type altogether (None, a number)
        return f"a malformed BatchPlan ({type(exc).__name__}: {exc})"


def _plan_error(plan: BatchPlan, w: Worker) -> str | None:
    wid = w.worker_id
    prefill, decode = plan.prefill, plan.decode
    for entry in prefill:
        if type(entry) is not tuple or len(entry) != 2 or not isinstance(entry[0], Request):
            return f"prefill entries must be (request, tokens) pairs, got {_shown(entry)}"
        r, n = entry
        if type(n) is not int and (isinstance(n, bool) or not isinstance(n, numbers.Integral)):
            return f"prefill of {r.request_id}: tokens must be a whole number, got {type(n).__name__} {n!r}"
        if r.worker_id != wid:
            return f"prefill of {r.request_id}, which is not on worker {wid}"
        if n <= 0 or n > r.prompt_tokens + r.recompute_tokens - r.num_computed_tokens:
            return (f"prefill of {n} tokens for {r.request_id}, which has "
                    f"{r.prompt_tokens + r.recompute_tokens - r.num_computed_tokens} left to prefill")
    for r in decode:
        if r.status is not _RUNNING or r.worker_id != wid:
            return f"decode of {r.request_id}, which is not running on worker {wid}"
    if decode or len(prefill) > 1:
        named = {r for r, _ in prefill}
        named.update(decode)
        if len(named) != len(prefill) + len(decode):
            return f"{_repeated([r for r, _ in prefill] + list(decode))} is in the plan twice"
    if plan.preempt:
        for r in plan.preempt:
            if r.status is not _RUNNING or r.worker_id != wid:
                return f"preempt of {r.request_id}, which is not running on worker {wid}"
        if decode:
            preempted = set(plan.preempt)
            for r in decode:
                if r in preempted:
                    return f"decode of {r.request_id}, which the plan preempts"
    for entry in plan.expire:
        if type(entry) is not tuple or len(entry) != 2 or not isinstance(entry[0], Request):
            return f"expire entries must be (request, reason) pairs, got {_shown(entry)}"
        r = entry[0]
        if not isinstance(entry[1], str):
            return f"expire of {r.request_id}: its reason must be a string, got {_shown(entry[1])}"
        if r.status is not _WAITING or r.worker_id != wid:
            return f"expire of {r.request_id}, which is not waiting on worker {wid}"
    if plan.expire and prefill:
        expired = {r for r, _ in plan.expire}
        for r, _ in prefill:
            if r in expired:
                return f"prefill of {r.request_id}, which the plan also expires"
    if prefill:
        joining = sum(1 for r, _ in prefill if r.status is not _RUNNING)
        running = len(w.running) - len(plan.preempt) + joining
        if joining and running > w.max_num_seqs:
            return (f"{running} sequences running after it ({joining} joining), more than the worker's max_num_seqs "
                    f"of {w.max_num_seqs}")
    if (prefill or decode) and w.num_kv_blocks < UNLIMITED_KV_BLOCKS:
        need = kv_blocks_needed(plan, w)
        if need > w.num_kv_blocks:
            return (f"its requests would hold {need} KV blocks, more than the worker's num_kv_blocks of "
                    f"{w.num_kv_blocks} (preempt running requests, or prefill less)")
    if type(plan.max_iterations) is not int or plan.max_iterations < 1:
        return f"max_iterations must be a whole number >= 1, got {plan.max_iterations!r}"
    wake = plan.wake_after_s
    if wake is not None and (isinstance(wake, bool) or not (wake >= 0 and math.isfinite(wake))):
        return f"wake_after_s must be a finite number >= 0, got {wake!r}"
    if not isinstance(plan.reason, str):
        return f"reason must be a string, got {_shown(plan.reason)}"
    return None


def kv_blocks_needed(plan: BatchPlan, w: Worker) -> int:
    """The KV blocks ``w``'s requests hold while ``plan``'s (first) iteration runs: every running request the plan
    does not preempt, decoded or not, its context (`Request.context_tokens`: what its decode needs, the token it
    decodes included, as the built-in batching counts it), and each prefilled request its context plus the tokens
    the plan prefills (a waiting one's whole prompt: what the built-in batching reserves for it). A prefix-cache hit
    found as the batch starts may lower it (shared blocks are not deduplicated)."""
    bs = w.kv_block_size
    adding = {r: n for r, n in plan.prefill}
    preempted = set(plan.preempt)
    used = 0
    for r in w.running:
        if r not in preempted:
            used += (r.num_computed_tokens + r.output_tokens - r.recompute_tokens + adding.pop(r, 0) + bs - 1) // bs
    for r, n in adding.items():  # waiting requests joining
        used += (r.num_computed_tokens + r.output_tokens - r.recompute_tokens + n + bs - 1) // bs
    return used


def iterations_in_kv(w: Worker, prefill: tuple[tuple[Request, int], ...], decode: tuple[Request, ...],
                     iterations: int) -> int:
    """Of a batch's ``iterations`` (> 1, its first checked by `plan_error`), how many run before its requests
    would hold more KV blocks than ``w`` has, so that a plugin's multi-iteration plan stops where its next
    iteration would not fit and the policy is asked again, as it is at every iteration of the exact mode (whose
    plan that does not fit is refused). Read as the batch starts, its prefills' requests running already and
    their progress not yet applied (`controlplane.iterations.plan_iterations`: a prefill of several iterations
    completes its prompts, then every running request decodes). Iteration ``j`` needs ``sum(ceil(context / block
    size))``, each context growing by one a decode, nondecreasing in ``j``: a binary search, O(n log iterations)."""
    if w.num_kv_blocks >= UNLIMITED_KV_BLOCKS:
        return iterations
    bs = w.kv_block_size
    fixed = 0
    growing: list[int] = []  # contexts at iteration 0 of the requests that get a token each iteration
    if prefill:  # iteration j >= 1 decodes every running request: its context after the first, then one a step
        adding = {r: n for r, n in prefill}
        first = set(decode)
        for r in w.running:
            c = r.num_computed_tokens + r.output_tokens - r.recompute_tokens
            n = adding.get(r)
            growing.append(c + n if n is not None else c + (r in first) - 1)  # (+1 sampled, -1: iteration 1)
    else:
        decoded = set(decode)
        for r in w.running:
            c = r.num_computed_tokens + r.output_tokens - r.recompute_tokens
            if r in decoded:
                growing.append(c)
            else:
                fixed += (c + bs - 1) // bs
    cap = w.num_kv_blocks

    def fits(j: int) -> bool:
        used = fixed
        for c in growing:
            used += (c + j + bs - 1) // bs
        return used <= cap

    lo, hi = 1, iterations  # iterations lo - 1 fit; the first that does not is in [lo, hi] (hi: none)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


def replacement_plan(calls: PolicyCalls, plan: BatchPlan, plugin: str | None, w: Worker) -> tuple[BatchPlan, str | None]:
    """The plan the core runs instead of ``plugin``'s unusable ``plan`` for ``w``: ``plugin``'s error is
    recorded and the built-in batching decides. A RuntimeError when the built-in batching made the plan,
    or makes an unusable one too: a defect of the project, not of a plugin."""
    error = plan_error(plan, w)
    answer = calls.decide_instead("cp_form_batch", plugin, f"an unusable BatchPlan for worker {w.worker_id}: {error}", w)
    if answer is None:
        raise RuntimeError(f"the built-in batching {plugin} made an unusable BatchPlan for worker {w.worker_id}: {error}")
    instead, by = answer
    if instead is None:
        return BatchPlan(), by
    again = plan_error(instead, w)
    if again is not None:
        raise RuntimeError(f"the built-in batching {by} made an unusable BatchPlan for worker {w.worker_id}: {again}")
    return instead, by


def _shown(value: object) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:57] + '...' if len(shown) > 60 else shown}"


def _repeated(requests: list[Request]) -> str:
    seen: set[str] = set()
    for r in requests:
        if r.request_id in seen:
            return r.request_id
        seen.add(r.request_id)
    return "a request"
