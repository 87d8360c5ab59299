"""SLO-aware admission: refuse (or demote) a request early when its predicted TTFT already misses.

Plugins cannot reach the simulator's latency models (``plugins`` imports only ``controlplane``),
and live workers have none, so the prediction comes from **observed service rates**, the same
way in both modes. From every completed request the plugin learns, per model, an exponentially
weighted prefill rate (prompt tokens computed / (first token - scheduled), sampled as soon as
a running request has its first token) and a completion rate (requests finished per second per replica, over ``window_s``). For a new request it takes
the replica where it would start soonest and predicts

    TTFT = max(prefill tokens queued ahead + its own prompt) / prefill rate,
               requests waiting ahead beyond the free batch slots / completion rate per replica)

(a free slot needs room in the batch, ``max_num_seqs``, and in the free KV blocks)

(the prefill work ahead, or the wait for a batch slot, whichever binds). "Ahead" is every queued request under a
first-come batcher; under one that serves by priority (``ctx.serves_by_priority``: ``priority-continuous-batching``)
it is the queued requests at the request's priority or above, the ones it does not overtake (the running requests'
prefill counts either way). If the prediction exceeds ``margin`` x the target (``ttft_s``, default the run's
``slo.ttft_s``), the request is refused with ``ReasonCode.ADMISSION_DENIED`` (HTTP 429) or, with ``on_miss:
deprioritize``, admitted at ``demote_to`` priority so requests that can still make it go first. Until
``min_samples`` prefill rates were sampled nothing is refused (no rates yet); before any request completed the
slot wait is left out. The running requests' first tokens and prefill and the free KV blocks are read as of now
(``ctx.request_progress``, ``ctx.kv_blocks_used``): in the simulator's fast mode a batch of many iterations applies them
at its end, and read from the requests themselves the prediction differed from the exact mode's (2.013 s against
2.012 s on the bundled trace, and 126 requests' statuses differed); the two modes now agree.

A demotion is the core's ``prioritize`` decision of this plugin: its reason the prediction, its payload ``{"from":
the priority asked, "to": demote_to}``; the request's row stores the priority it was queued and served at (the
demoted one). To demote and still let the admission policies after it decide (a queue limit refuses the overload's
requests), ``on_miss: deprioritize`` answers as a hook wrapper (asked before every admission policy, whatever its
place in ``plugins.enabled``): the policies decide on the demoted priority, and a refusal keeps the priority asked.
(The wrapper is the instance's ``cp_admit_request``, set as it is made: a subclass changes `miss` or `_demoting`.)

Cost: the prefill queued on a replica is the sum its queue keeps (`controlplane.waiting_queue`; per priority,
``prefill_by_priority``), so an arrival costs the replicas, their running requests and the distinct priorities
waiting, not the queued requests (with ``on_miss: deprioritize`` an overloaded replica's queue grows without bound).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Literal

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import Admission
from controlplane.events import RequestFinished
from controlplane.types import ReasonCode, RequestStatus
from controlplane.waiting_queue import WaitingQueue


class _Rates:
    __slots__ = ("prefill_tps", "finishes", "samples")  # samples: prefill-rate samples taken

    def __init__(self) -> None:
        self.prefill_tps: float | None = None
        self.finishes: deque[float] = deque()
        self.samples = 0


class SloAdmission(Plugin):
    """Refuse or demote requests whose predicted TTFT (queue + observed service rates) misses the target."""

    name = "slo-admission"

    class Settings(PluginSettings):
        ttft_s: float | None = Field(None, gt=0)  # the target; None: the run's slo.ttft_s
        margin: float = Field(1.0, gt=0)  # refuse when predicted > margin x target
        on_miss: Literal["reject", "deprioritize"] = "reject"
        demote_to: int = -1  # priority given to a request predicted to miss (deprioritize)
        min_samples: int = Field(20, ge=1)  # prefill-rate samples before predictions are trusted
        alpha: float = Field(0.1, gt=0, le=1)  # weight of a new prefill-rate sample
        window_s: float = Field(30.0, gt=0)  # completions counted for the completion rate

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._rates: dict[str, _Rates] = {}
        self._sampled: set[str] = set()  # running requests whose prefill rate was sampled already
        if self.settings.on_miss == "deprioritize":  # a hook wrapper: demotes, and the policies after it decide

            def cp_admit_request(ctx, request):
                return (yield from self._demoting(ctx, request))

            self.cp_admit_request = hookimpl(wrapper=True)(cp_admit_request)

    def _rates_of(self, model) -> _Rates:
        rates = self._rates.get(model)
        if rates is None:
            rates = self._rates[model] = _Rates()
        return rates

    def _sample_prefill(self, r, first_token_s: float) -> None:
        took = first_token_s - r.scheduled_s
        computed = r.prompt_tokens - r.cached_tokens
        if took > 0 and computed > 0:
            rates = self._rates_of(r.model)
            tps = computed / took
            a = self.settings.alpha
            rates.prefill_tps = tps if rates.prefill_tps is None else (1 - a) * rates.prefill_tps + a * tps
            rates.samples += 1

    def _harvest(self, workers, progress) -> None:
        """Sample the prefill rate of running requests that have their first token (early signal:
        under overload nothing completes for a long time). ``progress``: each worker's
        ``ctx.request_progress``, the first tokens its running batch made by now and the core has not applied."""
        for w, now in zip(workers, progress):
            for r in w.running:
                first = r.first_token_s
                if first is None and now and (p := now.get(r)) is not None:
                    first = p[2]
                if first is not None and r.scheduled_s is not None and r.request_id not in self._sampled:
                    self._sampled.add(r.request_id)
                    self._sample_prefill(r, first)

    def predict_ttft_s(self, ctx, request) -> float | None:
        """Predicted TTFT on the replica where ``request`` would start soonest; None without rates."""
        workers = [w for w in ctx.workers.values() if w.model == request.model and w.accepts_requests]
        if not workers:
            return None
        # State as of now: in the simulator's fast mode a batch of many iterations applies its requests' progress
        # and KV use at its end, the exact mode every iteration (`ctx.request_progress`, `ctx.kv_blocks_used`).
        progress = [ctx.request_progress(w) for w in workers]
        self._harvest(workers, progress)
        rates = self._rates.get(request.model)
        if rates is None or rates.samples < self.settings.min_samples or not rates.prefill_tps:
            return None
        now = ctx.now_s
        window = self.settings.window_s
        while rates.finishes and rates.finishes[0] < now - window:
            rates.finishes.popleft()
        span = min(window, max(now - rates.finishes[0], 1e-9)) if rates.finishes else window
        per_replica_rps = len(rates.finishes) / span / len(workers)
        by_priority = getattr(ctx, "serves_by_priority", False)
        priority = request.priority
        best = None
        for w, now in zip(workers, progress):
            waiting = w.waiting  # (its prefill kept by the queue: an overloaded one is not walked)
            if not by_priority:
                queued = len(waiting)
                if type(waiting) is WaitingQueue:
                    ahead = waiting.remaining_prefill_tokens
                else:
                    ahead = sum(r.remaining_prefill_tokens for r in waiting)
            elif type(waiting) is WaitingQueue:  # it overtakes the lower priorities: their work is not ahead
                counts, prefill = waiting.priorities, waiting.prefill_by_priority
                queued = sum(n for p, n in counts.items() if p >= priority)
                ahead = sum(t for p, t in prefill.items() if p >= priority)
            else:
                before = [r for r in waiting if r.priority >= priority]
                queued, ahead = len(before), sum(r.remaining_prefill_tokens for r in before)
            if now:
                for r in w.running:
                    p = now.get(r)
                    ahead += max(0, r.prefill_target_tokens - (r.num_computed_tokens if p is None else p[1]))
            else:
                ahead += sum(r.remaining_prefill_tokens for r in w.running if not r.is_decoding)
            prefill_s = (ahead + request.prompt_tokens) / rates.prefill_tps
            slots = w.max_num_seqs - len(w.running)
            if w.has_kv_budget:  # free batch slots are bounded by free KV blocks too
                free = w.num_kv_blocks - ctx.kv_blocks_used(w)
                slots = min(slots, free // max(1, w.blocks_for(request.prompt_tokens)))
            beyond = queued + 1 - max(0, slots)
            slot_s = 0.0
            if beyond > 0 and per_replica_rps > 0:  # no completion yet: no slot estimate
                slot_s = beyond / per_replica_rps
            t = max(prefill_s, slot_s)
            if best is None or t < best:
                best = t
        return best

    def miss(self, ctx, request) -> str | None:
        """Why ``request`` is predicted to miss its TTFT target; None: it can make it (or no rates yet)."""
        target = self.settings.ttft_s if self.settings.ttft_s is not None else ctx.config.slo.ttft_s
        predicted = self.predict_ttft_s(ctx, request)
        if predicted is None or predicted <= self.settings.margin * target:
            return None
        return f"SLO: predicted TTFT {predicted:.3f} s > {self.settings.margin:g} x target {target} s"

    @hookimpl
    def cp_admit_request(self, ctx, request):
        """``on_miss: reject``: refuse a request predicted to miss (``deprioritize`` replaces this by `_demoting`)."""
        why = self.miss(ctx, request)
        if why is None:
            return None  # can make it (or no rates yet): the next admission policy decides
        return Admission(False, why, code=ReasonCode.ADMISSION_DENIED)

    def _demoting(self, ctx, request):
        """``on_miss: deprioritize`` (a hook wrapper, a generator): a request predicted to miss waits at ``demote_to``.
        The admission policies decide on the demoted priority (a queue limit still refuses: an admitting answer
        from this plugin would end the chain); admitted, the answer carries the priority, which the core applies
        and records (``prioritize``, ``{"from", "to"}``, this reason); refused, the request keeps the priority asked."""
        asked = request.priority
        why = self.miss(ctx, request)
        demoted = asked if why is None else min(asked, self.settings.demote_to)
        if demoted == asked:
            return (yield)
        request.priority = demoted
        try:
            answer = yield
        finally:
            request.priority = asked
        if answer is not None and not answer.admit:
            return answer
        why = f"{why}: demoted from priority {asked} to {demoted}"
        if answer is None:
            return Admission(True, why, priority=demoted)
        return replace(answer, reason=f"{answer.reason} | {why}" if answer.reason else why,
                       priority=demoted if answer.priority is None else min(answer.priority, demoted))

    @hookimpl
    def cp_on_event(self, ctx, event):
        if type(event) is not RequestFinished:
            return
        r = event.request
        sampled = r.request_id in self._sampled
        if sampled:
            self._sampled.discard(r.request_id)
        if r.status is not RequestStatus.COMPLETED or r.first_token_s is None or r.scheduled_s is None:
            return
        self._rates_of(r.model).finishes.append(r.finish_s if r.finish_s is not None else ctx.now_s)
        if not sampled:
            self._sample_prefill(r, r.first_token_s)
