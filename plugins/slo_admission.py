"""SLO-aware admission: refuse (or demote) a request early when its predicted TTFT already misses.

Plugins cannot reach the simulator's latency models (``plugins`` imports only ``controlplane``),
and live workers have none, so the prediction comes from **observed service rates**, the same
way in both modes. From every completed request the plugin learns, per model, an exponentially
weighted prefill rate (prompt tokens computed / (first token - scheduled), sampled as soon as
a running request has its first token) and a completion rate (requests finished per second per replica, over ``window_s``). For a new request it takes
the replica where it would start soonest and predicts

    TTFT = max(prefill tokens queued ahead + its own prompt) / prefill rate,
               requests waiting beyond the free batch slots / completion rate per replica)

(a free slot needs room in the batch, ``max_num_seqs``, and in the free KV blocks)

(the prefill work ahead, or the wait for a batch slot, whichever binds). If that exceeds
``margin`` x the target (``ttft_s``, default the run's ``slo.ttft_s``), the request is refused
with ``ReasonCode.ADMISSION_DENIED`` (HTTP 429) or, with ``on_miss: deprioritize``, admitted at
``demote_to`` priority so requests that can still make it go first. Until ``min_samples``
prefill rates were sampled nothing is refused (no rates yet); before any request completed the
slot wait is left out.

Cost: the prefill queued on a replica is the sum its queue keeps (`controlplane.waiting_queue`),
so an arrival costs the replicas and their running requests, not the queued ones (with ``on_miss:
deprioritize`` an overloaded replica's queue grows without bound).
"""

from __future__ import annotations

from collections import deque
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

    def _rates_of(self, model) -> _Rates:
        rates = self._rates.get(model)
        if rates is None:
            rates = self._rates[model] = _Rates()
        return rates

    def _sample_prefill(self, r) -> None:
        took = r.first_token_s - r.scheduled_s
        computed = r.prompt_tokens - r.cached_tokens
        if took > 0 and computed > 0:
            rates = self._rates_of(r.model)
            tps = computed / took
            a = self.settings.alpha
            rates.prefill_tps = tps if rates.prefill_tps is None else (1 - a) * rates.prefill_tps + a * tps
            rates.samples += 1

    def _harvest(self, workers) -> None:
        """Sample the prefill rate of running requests that have their first token (early signal:
        under overload nothing completes for a long time)."""
        for w in workers:
            for r in w.running:
                if r.first_token_s is not None and r.scheduled_s is not None and r.request_id not in self._sampled:
                    self._sampled.add(r.request_id)
                    self._sample_prefill(r)

    def predict_ttft_s(self, ctx, request) -> float | None:
        """Predicted TTFT on the replica where ``request`` would start soonest; None without rates."""
        workers = [w for w in ctx.workers.values() if w.model == request.model and w.accepts_requests]
        if not workers:
            return None
        self._harvest(workers)
        rates = self._rates.get(request.model)
        if rates is None or rates.samples < self.settings.min_samples or not rates.prefill_tps:
            return None
        now = ctx.now_s
        window = self.settings.window_s
        while rates.finishes and rates.finishes[0] < now - window:
            rates.finishes.popleft()
        span = min(window, max(now - rates.finishes[0], 1e-9)) if rates.finishes else window
        per_replica_rps = len(rates.finishes) / span / len(workers)
        best = None
        for w in workers:
            waiting = w.waiting  # (its prefill kept by the queue: an overloaded one is not walked)
            if type(waiting) is WaitingQueue:
                ahead = waiting.remaining_prefill_tokens
            else:
                ahead = sum(r.remaining_prefill_tokens for r in waiting)
            ahead += sum(r.remaining_prefill_tokens for r in w.running if not r.is_decoding)
            prefill_s = (ahead + request.prompt_tokens) / rates.prefill_tps
            slots = w.max_num_seqs - len(w.running)
            if w.has_kv_budget:  # free batch slots are bounded by free KV blocks too
                slots = min(slots, w.num_free_kv_blocks // max(1, w.blocks_for(request.prompt_tokens)))
            beyond = len(w.waiting) + 1 - max(0, slots)
            slot_s = 0.0
            if beyond > 0 and per_replica_rps > 0:  # no completion yet: no slot estimate
                slot_s = beyond / per_replica_rps
            t = max(prefill_s, slot_s)
            if best is None or t < best:
                best = t
        return best

    @hookimpl
    def cp_admit_request(self, ctx, request):
        target = self.settings.ttft_s if self.settings.ttft_s is not None else ctx.config.slo.ttft_s
        predicted = self.predict_ttft_s(ctx, request)
        if predicted is None or predicted <= self.settings.margin * target:
            return None  # can make it (or no rates yet): the next admission policy decides
        why = f"SLO: predicted TTFT {predicted:.3f} s > {self.settings.margin:g} x target {target} s"
        if self.settings.on_miss == "deprioritize":
            # demoted, and the next admission policy still decides: an admitting answer would end the chain, and
            # the queue limits listed after this plugin were never asked about the very requests of an overload
            request.priority = min(request.priority, self.settings.demote_to)
            return None
        return Admission(False, why, code=ReasonCode.ADMISSION_DENIED)

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
            self._sample_prefill(r)
