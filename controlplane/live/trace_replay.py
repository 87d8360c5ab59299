"""A trace replayed against live workers: each request submitted to the control plane at its
arrival time (on the run's clock), as the simulator replays it, and the run stored with its
iterations so that ``controlplane calibrate`` and ``controlplane runs compare`` work on it. The
requests keep their trace ids, so a simulated replay of the same requests pairs with it request by
request (``runs compare`` resamples them paired).

Each prompt is exactly ``prompt_tokens`` token ids, as the simulator counts it: a request without a
prompt text gets ids drawn from the run's seed; one with a text gets the text's ids (as the model
encodes a text prompt) cut to that count or repeated up to it, the text staying the request's prompt
(what the caches key on). Each generates exactly ``output_tokens`` (end-of-sequence ignored) unless
it stops at one of its ``stop`` strings, so the worker does the work the trace describes (cap lengths
to what a model serves with the trace transforms' ``max_prompt_tokens`` / ``max_output_tokens``).
A request's ``params`` are submitted with it (`SUBMITTED_PARAMS`); any other param is not, and
`unsubmitted_params` counts those, for the command to say so before the run. A request the model
refuses (longer than its context, an invalid param, say) is reported with the reason, never dropped
silently.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controlplane.config import RunConfig
from controlplane.errors import ReplayInterrupted
from controlplane.generation_params import param_problem

if TYPE_CHECKING:
    from controlplane.sigterm import TermSeen

__all__ = ["SUBMITTED_PARAMS", "LiveReplayResult", "Rejected", "as_served", "prompt_ids", "replay_trace_live",
           "run_trace_live", "submit_params", "unsubmitted_params"]

#: The trace params (``TraceRequest.params``) a live replay submits with a request: `LiveDriver.submit`'s
#: generation options. End-of-sequence is always ignored (the trace's output length is generated), so an
#: ``ignore_eos`` true is what it does anyway and a false one is not honoured.
SUBMITTED_PARAMS = ("temperature", "top_p", "top_k", "seed", "stop")


@dataclass(frozen=True)
class Rejected:
    """A trace request the control plane refused at submission (it is not in the run's rows)."""

    request_id: str
    reason: str


@dataclass
class LiveReplayResult:
    summary: dict[str, Any]
    run_id: int | None
    submitted: int
    rejected: list[Rejected] = field(default_factory=list)
    late_s: float = 0.0  # the most any submission came after its arrival time (the replay's own lag)
    wall_s: float = 0.0
    #: the requests as served: arrivals as the live core stamped them (shifted so the first is at the trace's
    #: first arrival), the trace's ids and lengths; what ``controlplane sim replay`` replays alike
    served: list[Any] = field(default_factory=list)
    #: the trace params not submitted (see `unsubmitted_params`): name -> how many requests carried it
    unsubmitted_params: dict[str, int] = field(default_factory=dict)


def submit_params(params: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A trace request's ``params`` that a live replay submits (`SUBMITTED_PARAMS`) as `LiveDriver.submit`
    keywords. A null value is no value; a ``top_k`` of -1 is off (0), as vLLM's and the daemon's. A value of
    the wrong type raises `ValueError` naming it (`LiveDriver.submit` checks the ranges)."""
    kwargs: dict[str, Any] = {}
    for name, value in params:
        if value is None or name not in SUBMITTED_PARAMS:
            continue
        problem = param_problem(name, value)
        if problem is not None:
            raise ValueError(problem)
        kwargs[name] = 0 if name == "top_k" and value == -1 else value
    return kwargs


def _left_out(name: str, value: Any) -> bool:
    """A param a live replay does not submit: any not in `SUBMITTED_PARAMS`, and ``ignore_eos`` unless true."""
    return value is not None and name not in SUBMITTED_PARAMS and not (name == "ignore_eos" and value is True)


def unsubmitted_params(requests: Iterable[Any]) -> dict[str, int]:
    """The trace params a live replay of ``requests`` does not submit: name -> how many requests carry it."""
    counts: Counter[str] = Counter()
    for r in requests:
        counts.update(name for name, value in r.params if _left_out(name, value))
    return dict(sorted(counts.items()))


def prompt_ids(deployment: Any, text: str, n: int) -> list[int]:
    """A prompt text as ``n`` token ids: its ids as ``deployment`` encodes a text prompt, cut to ``n``, or
    followed by its ids again (without the special tokens the encoding adds) up to ``n``; [] for a text of
    no tokens."""
    ids = deployment.encode(text)
    if len(ids) >= n:
        return ids[:n]
    body = deployment.encode(text, special_tokens=False) or ids
    if not body:
        return []
    return (ids + body * (n // len(body) + 1))[:n]


async def replay_trace_live(driver: Any, requests: Iterable[Any], *, seed: int,
                            on_progress: Callable[[int, int, float], None] | None = None) -> LiveReplayResult:
    """Submit ``requests`` (``TraceRequest`` s in arrival order) to a started ``driver`` at their
    arrival times and wait for every answer. ``on_progress(finished, submitted, run_s)``."""
    rng = random.Random(seed)  # the prompts' token ids: the run's seed, never the global generator
    served_names = {m.name for m in driver.config.cluster.models}
    waiters: list[asyncio.Future[Any]] = []
    served: list[tuple[Any, float]] = []  # (trace request, the core's arrival)
    rejected: list[Rejected] = []
    unsubmitted: Counter[str] = Counter()
    finished = 0
    late = 0.0
    start = time.perf_counter()

    def done(_: Any) -> None:
        nonlocal finished
        finished += 1
        if on_progress is not None:
            on_progress(finished, len(waiters), time.perf_counter() - start)

    for r in requests:
        delay = start + r.arrival_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, -delay)
        model = r.model if r.model in served_names else None
        unsubmitted.update(unsubmitted_params([r]))
        try:
            params = submit_params(r.params)
            deployment = driver.model(model)
            n = max(1, r.prompt_tokens)  # (the simulator's count, the text's too: see `prompt_ids`)
            ids = prompt_ids(deployment, r.prompt, n) if r.prompt is not None else []
            ids = ids or [rng.randrange(4, deployment.vocab_size) for _ in range(n)]
            with deployment.encoded_as(r.prompt, ids) if r.prompt is not None else nullcontext():
                handle = await driver.submit(r.prompt if r.prompt is not None else ids, **params,
                                             max_tokens=max(1, r.output_tokens), model=model, ignore_eos=True,
                                             tenant=r.tenant, priority=r.priority, request_id=r.request_id)
        except Exception as exc:  # RequestError (too long for the model, ...): reported, not dropped
            rejected.append(Rejected(r.request_id, getattr(exc, "message", None) or str(exc)))
            continue
        served.append((r, handle.arrival_s))
        task = asyncio.ensure_future(handle.result())
        task.add_done_callback(done)
        waiters.append(task)
    await asyncio.gather(*waiters)
    return LiveReplayResult({}, driver.run_id, len(waiters), rejected, round(late, 3),
                            time.perf_counter() - start, as_served(served), dict(sorted(unsubmitted.items())))


def as_served(served: list[tuple[Any, float]]) -> list[Any]:
    """The served requests as a trace (see `LiveReplayResult.served`)."""
    from dataclasses import replace

    if not served:
        return []
    shift = served[0][0].arrival_s - min(s[1] for s in served)
    # The live prompts are drawn token ids that share no prefix: the trace's prefix hashes are not the run's.
    return [replace(r, arrival_s=max(0.0, arrival + shift), hash_ids=(), hash_block_tokens=None)
            for r, arrival in served]


def run_trace_live(cfg: RunConfig, requests: Iterable[Any], *, pool: str = "process", cpu_threads: int | None = None,
                   on_progress: Callable[[int, int, float], None] | None = None,
                   wait_ready_s: float = 600.0, trace_read: Mapping[str, Any] | None = None,
                   summary_extra: Mapping[str, Any] | None = None, trace: str | None = None,
                   trace_format: str | None = None, extra_plugins: Iterable[object] = (),
                   on_started: Callable[[int | None], None] | None = None) -> LiveReplayResult:
    """Start the control plane on live workers (``cfg``'s models and plugins, iterations recorded),
    replay ``requests`` on it, close the run and return what happened, its summary included.
    ``trace_read`` (how the trace was read: ``sim.replay.trace_read``) goes into the run's config,
    ``summary_extra`` (``sim.replay.rows_left_out``) into its summary, ``trace`` and ``trace_format``
    into its row, as a simulated replay's do. ``extra_plugins``: plugin objects asked before the
    configured ones, as `sim.replay.replay`'s. ``on_started(run_id)`` is called once the run is recorded
    and its workers are ready, before the first request (never, when the start fails), as the daemon's.

    The hooks run on this run's event loop, as the daemon's do: each call is timed, and one longer than
    the daemon's `SLOW_HOOK_S` is warned of (once per plugin and hook; `controlplane.hook_calls.time_hooks`)."""
    from controlplane.hook_calls import time_hooks
    from controlplane.live.daemon import SLOW_HOOK_S
    from controlplane.live.driver import LiveDriver
    from controlplane.sigterm import sigterm_as_ctrl_c, sigterm_cancels

    storage = cfg.storage.model_copy(update={"record_iterations": True})
    cfg = cfg.model_copy(update={"storage": storage})

    async def main(signalled: TermSeen) -> LiveReplayResult:
        driver = LiveDriver(cfg, pool=pool, cpu_threads=cpu_threads, record=True, trace_read=trace_read,
                            trace=trace, trace_format=trace_format, extra_plugins=extra_plugins)
        sigterm_cancels(asyncio.current_task(), signalled)  # (SIGTERM as asyncio's Ctrl-C)
        try:
            await driver.start(wait_ready_s=wait_ready_s)  # (interrupted while the workers load: the same)
            if on_started is not None:
                on_started(driver.run_id)
            result = await replay_trace_live(driver, requests, seed=cfg.seed, on_progress=on_progress)
        except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C or SIGTERM: asyncio.run cancels this task
            summary = await driver.close(status="interrupted",
                                         extra={**(summary_extra or {}), "interrupted_by": signalled.name})
            raise ReplayInterrupted(driver.run_id, (summary or {}).get("num_requests", 0), cfg.storage.url) from None
        except BaseException:
            await driver.close(status="failed", extra=summary_extra)
            raise
        result.summary = dict(await driver.close(extra=summary_extra) or {})
        return result

    time_hooks(SLOW_HOOK_S)  # before the run's plugins are built
    try:
        with sigterm_as_ctrl_c() as signalled:  # (SIGTERM ended the process at once, the run left running)
            return asyncio.run(main(signalled))
    finally:
        time_hooks(None)  # plugin sets built later in this process (a simulated replay) are not timed
