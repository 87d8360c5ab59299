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

__all__ = ["advance_batch", "plan_iterations", "prefilled_by", "progress_after", "tokens_after"]


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


def progress_after(batch: Batch, num_iterations: int, first_end_s: float | None
                   ) -> dict[Request, tuple[int, int, float | None]]:
    """What ``num_iterations`` (>= 1) finished iterations of ``batch`` made of its requests, without applying it:
    request -> (``output_tokens``, ``num_computed_tokens``, ``first_token_s``) as `advance_batch` leaves them, for the
    requests it changes (a prefill's first token stamped at ``first_end_s``). For a read mid-batch
    (`PolicyContext.request_progress`): the simulator's fast mode applies a batch at its end."""
    k = num_iterations
    out: dict[Request, tuple[int, int, float | None]] = {}
    if not batch.prefill:
        for r in batch.decode:
            out[r] = (r.output_tokens + k, r.num_computed_tokens, r.first_token_s)
        return out
    for r, n in batch.prefill:
        computed, made, first = r.num_computed_tokens + n, r.output_tokens, r.first_token_s
        if computed >= r.prompt_tokens + r.recompute_tokens:
            made += 1  # the prefill iteration samples the next token
            if first is None:
                first = first_end_s
        out[r] = (made, computed, first)
    for r in batch.decode:
        out[r] = (r.output_tokens + 1, r.num_computed_tokens, r.first_token_s)
    if k > 1:
        for r in batch.then_decode:
            made, computed, first = out.get(r) or (r.output_tokens, r.num_computed_tokens, r.first_token_s)
            out[r] = (made + k - 1, computed, first)
    return out


def prefilled_by(batch: Batch, num_iterations: int) -> list[Request]:
    """The requests whose prompt ``num_iterations`` finished iterations of ``batch`` completed, in the order
    `advance_batch` returns them (the order the core stores their prefix blocks); [] before its first ended."""
    if not num_iterations or not batch.prefill:
        return []
    return [r for r, n in batch.prefill if r.num_computed_tokens + n >= r.prompt_tokens + r.recompute_tokens]
