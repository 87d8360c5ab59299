"""How many iterations one batch may run while nothing changes, and what they did to its requests.

A driver that can run several iterations per batch (the simulator's fast mode) gets one step
instead of one core round trip per token: decode-only batches run until the first request
finishes, and a prefill whose prompts all complete in its first iteration goes on decoding
everything running (vLLM's "next steps"). Pure functions over the core's requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.decisions import BatchPlan
from controlplane.types import Batch, Request

__all__ = ["advance_batch", "plan_iterations", "tokens_after"]


def plan_iterations(
    plan: BatchPlan, prefill: tuple[tuple[Request, int], ...], running: Sequence[Request]
) -> tuple[int, tuple[Request, ...]]:
    """(iterations, requests decoded after the first) for a batch the policy allowed
    ``plan.max_iterations``; ``running`` is the worker's running set, the prefilled included."""
    if not prefill:
        iterations = plan.max_iterations if plan.decode else 1
        for r in plan.decode:
            left = r.max_output_tokens - r.output_tokens
            if left < iterations:
                iterations = left if left > 1 else 1
        return iterations, ()
    iterations = plan.max_iterations
    first = set(plan.decode)  # requests that get a token in the first iteration
    for r, n in prefill:
        if n != r.prompt_tokens + r.recompute_tokens - r.num_computed_tokens:
            return 1, ()  # a chunk of a longer prompt: the next iteration needs a new plan
        first.add(r)
    for r in running:  # tokens left after the first iteration
        left = r.max_output_tokens - r.output_tokens - (r in first)
        if left + 1 < iterations:
            iterations = left + 1 if left > 0 else 1
    return iterations, (tuple(running) if iterations > 1 else ())


def advance_batch(batch: Batch, num_iterations: int, first_end_s: float) -> tuple[list[Request], list[Request]]:
    """Apply ``num_iterations`` finished iterations of ``batch`` to its requests' progress.

    Returns (requests whose prompt is now fully in the KV cache, requests that generated their
    last token). A prefill's first token is stamped at ``first_end_s``.
    """
    k = num_iterations
    done: list[Request] = []
    prefilled: list[Request] = []
    if batch.prefill:
        for r, n in batch.prefill:
            r.num_computed_tokens += n
            if r.num_computed_tokens >= r.prompt_tokens + r.recompute_tokens:
                prefilled.append(r)
                r.output_tokens += 1  # the prefill iteration samples the next token
                if r.first_token_s is None:
                    r.first_token_s = first_end_s
                if r.output_tokens >= r.max_output_tokens:
                    done.append(r)
        for r in batch.decode:
            r.output_tokens += 1
            if r.output_tokens >= r.max_output_tokens:
                done.append(r)
        if k > 1:
            for r in batch.then_decode:
                r.output_tokens += k - 1
                if r.output_tokens >= r.max_output_tokens and r not in done:
                    done.append(r)
    else:
        for r in batch.decode:
            r.output_tokens += k
            if r.output_tokens >= r.max_output_tokens:
                done.append(r)
    return prefilled, done


def tokens_after(batch: Batch, num_iterations: int) -> int:
    """The tokens ``num_iterations`` (>= 1) finished iterations of ``batch`` computed, its own end excepted (nothing
    of it finished): prompt tokens prefilled, the first token of each prompt completed, decoded tokens; what
    `advance_batch` will take off its requests' remaining work (`plugins.scorers.work_tokens`). For a read mid-batch
    (`PolicyContext.batch_progress`): the requests' progress is applied at the batch's end."""
    if not batch.prefill:
        return num_iterations * len(batch.decode)
    tokens = len(batch.decode) + (num_iterations - 1) * len(batch.then_decode)
    for r, n in batch.prefill:
        tokens += n + (r.num_computed_tokens + n >= r.prompt_tokens + r.recompute_tokens)
    return tokens
