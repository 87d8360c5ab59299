"""Per-run statistics: request outcomes collected as they finish, summarised at the end."""

from __future__ import annotations

from collections import Counter
from typing import Any

from controlplane.batch_costs import BatchCosts
from controlplane.config import SLOConfig
from controlplane.quantiles import SpilledValues
from controlplane.request_latency import Latencies, request_latencies
from controlplane.types import ReasonCode, Request, RequestStatus

PERCENTILES = (50, 90, 99)
# Enum members as module globals: `RequestStatus.X` goes through the enum's metaclass (~5x a global's read).
_COMPLETED, _REJECTED, _FAILED, _CANCELLED = (RequestStatus.COMPLETED, RequestStatus.REJECTED, RequestStatus.FAILED,
                                             RequestStatus.CANCELLED)
_UNKNOWN_MODEL = ReasonCode.UNKNOWN_MODEL
_FLUSH_EVERY = 4096  # finished requests whose latencies wait in plain lists before joining `values`
LATENCY_METRICS = ("ttft", "tpot", "e2e", "queue")
#: Distinct reasons (each up to its first ':') counted apart, at most; later new ones are counted as
#: `OTHER_REASONS`, so a policy that puts a number in every reason does not grow the run's memory.
MAX_REASONS = 100
OTHER_REASONS = "(other reasons)"
OTHER_MODELS = "(other models)"  # the same for `unknown_models`' names

__all__ = ["LATENCY_METRICS", "PERCENTILES", "RunStats", "request_latencies"]


def within_slo(ttft: float | None, tpot: float | None, e2e: float | None, slo: SLOConfig) -> bool:
    """A completed request's latencies (`request_latencies`) meet the SLO: the TTFT, TPOT and, when set, end-to-end
    targets (what ``slo_attainment`` counts). No inter-token gap (one output token) cannot miss a TPOT target."""
    return (ttft is not None and ttft <= slo.ttft_s and (tpot is None or tpot <= slo.tpot_s)
            and (slo.e2e_s is None or (e2e is not None and e2e <= slo.e2e_s)))


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most ``[start, end)`` spans that overlap at one time (one ending as another starts: not both)."""
    edges = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    most = alive = 0
    for _, step in edges:
        alive += step
        most = max(most, alive)
    return most


class RunStats:
    """Streaming collector: a few floats per finished request, nothing per token; past 2^18
    requests the older latencies wait in a temporary file (``controlplane.quantiles``), so a
    run's memory does not grow with its length."""

    def __init__(self) -> None:
        self.num_arrived = 0
        self.status_counts: Counter[str] = Counter()
        self.reject_reasons: Counter[str] = Counter()
        self.unknown_models: Counter[str] = Counter()  # requests rejected for a model no deployment serves, by model
        self.cache_hits: Counter[str] = Counter()
        self.cache_hit_tokens = 0  # prompt + output tokens of the requests a response cache served
        self.cache_hit_output_tokens = 0  # of which output
        self.values = {m: SpilledValues() for m in LATENCY_METRICS}
        # The newest latencies, in plain lists that `on_finished` appends to without a call of
        # its own per value; they join `values` _FLUSH_EVERY at a time and before a summary.
        self._ttft: list[float] = []
        self._tpot: list[float] = []
        self._e2e: list[float] = []
        self._queue: list[float] = []
        self._unflushed = 0  # requests whose latencies are in those lists
        self.slo_attained = 0  # completed requests within every SLO target
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.num_preemptions = 0
        self.num_scale_events = 0
        self.num_unplaced_scale_events = 0  # of which none of the replicas started could be placed: no change
        self.num_plugin_errors = 0
        self.gpu_seconds = 0.0
        self.gpu_seconds_by_gpu: Counter[str] = Counter()  # by GPU type (cost: controlplane.hardware.cost)
        # GPU-seconds the replicas spent executing batches (each worker's busy_s times its GPUs),
        # idle time left out; added when a replica stops or the run ends (`worker_lifecycle`).
        self.busy_gpu_seconds = 0.0
        # Per iteration, prefilled and decoded token: fitted to the batches that finish after the run's
        # first response-cache hit (None before it, so a run without hits pays nothing per batch).
        self.batch_costs: BatchCosts | None = None
        # The plugins' cache stores that can fail (Redis), by id, every one the run has had (a reload's replaced ones
        # too): their outages are the summary's `cache_store_outages` / `cache_store_down_s` (`controlplane.responses`).
        self.cache_stores: dict[int, Any] = {}
        self.replica_spans: list[tuple[float, float]] = []  # (alive since, until) of every replica that stopped
        self.first_arrival_s: float | None = None
        self.last_finish_s = 0.0

    def on_arrival(self, r: Request) -> None:
        self.num_arrived += 1
        if self.first_arrival_s is None:
            self.first_arrival_s = r.arrival_s

    def on_finished(self, r: Request, slo: SLOConfig, latencies: Latencies | None = None) -> None:
        """Count ``r``, which just reached its final status; ``latencies``: its
        ``request_latencies(r)`` when the caller has them (computed here otherwise)."""
        status = r.status
        self.status_counts[status._value_] += 1  # .value: two Python calls (enum's property)
        if status is _REJECTED or status is _FAILED or status is _CANCELLED:
            reasons = self.reject_reasons
            key = (r.reason or "unknown").split(":")[0]
            reasons[key if key in reasons or len(reasons) < MAX_REASONS else OTHER_REASONS] += 1
            if r.reason_code is _UNKNOWN_MODEL:
                models, name = self.unknown_models, str(r.model)
                models[name if name in models or len(models) < MAX_REASONS else OTHER_MODELS] += 1
            return
        if status is not _COMPLETED:
            return
        if r.cache_hit:
            self.cache_hits[r.cache_hit] += 1
            if r.cache_hit != "prefix":
                if self.batch_costs is None:
                    self.batch_costs = BatchCosts()
                self.cache_hit_tokens += r.prompt_tokens + r.output_tokens
                self.cache_hit_output_tokens += r.output_tokens
        self.prompt_tokens += r.prompt_tokens
        self.output_tokens += r.output_tokens
        ttft, tpot, e2e, queue = request_latencies(r) if latencies is None else latencies
        # Undefined latencies (a one-token output's TPOT) are left out of the percentiles.
        if ttft is not None:
            self._ttft.append(ttft)
        if tpot is not None:
            self._tpot.append(tpot)
        if e2e is not None:
            self._e2e.append(e2e)
        if queue is not None:
            self._queue.append(queue)
        self._unflushed += 1
        if self._unflushed >= _FLUSH_EVERY:
            self._flush()
        if within_slo(ttft, tpot, e2e, slo):
            self.slo_attained += 1
        if r.finish_s is not None and r.finish_s > self.last_finish_s:
            self.last_finish_s = r.finish_s

    def _flush(self) -> None:
        """Move the newest latencies into `values` (in order: the same values, the same sequence)."""
        self._unflushed = 0
        for m, recent in (("ttft", self._ttft), ("tpot", self._tpot), ("e2e", self._e2e), ("queue", self._queue)):
            if recent:
                self.values[m].extend(recent)
                recent.clear()

    def summary(self, end_s: float) -> dict[str, Any]:
        """The run's headline numbers; every value is deterministic for a seed (no wall time)."""
        self._flush()
        completed = self.status_counts["completed"]
        out: dict[str, Any] = {
            "num_requests": self.num_arrived,
            "num_completed": completed,
            "num_rejected": self.status_counts["rejected"],
            "num_failed": self.status_counts["failed"],
            "num_in_flight": self.status_counts["in_flight"],
            "num_cancelled": self.status_counts["cancelled"],
            "num_blocked": self.status_counts["blocked"],  # by a guardian: not served, not goodput
        }
        for m in LATENCY_METRICS:
            values = self.values[m]
            pcts = values.percentiles(PERCENTILES) if len(values) else [None] * len(PERCENTILES)
            for p, x in zip(PERCENTILES, pcts):
                out[f"{m}_p{p}_s"] = _round(x) if x is not None else None
            out[f"{m}_mean_s"] = _round(values.mean()) if len(values) else None
        start = self.first_arrival_s or 0.0
        span = max(self.last_finish_s, end_s) - start
        out["sim_span_s"] = _round(span)
        out["throughput_rps"] = _round(completed / span) if span > 0 else None
        out["output_tokens_per_s"] = _round(self.output_tokens / span) if span > 0 else None
        attained = self.slo_attained
        out["slo_attainment"] = _round(attained / self.num_arrived) if self.num_arrived else None
        out["goodput_rps"] = _round(attained / span) if span > 0 else None
        out["gpu_seconds"] = _round(self.gpu_seconds)
        out["gpu_seconds_by_gpu"] = {gpu: _round(v) for gpu, v in sorted(self.gpu_seconds_by_gpu.items())}
        out["peak_replicas"] = peak_overlap(self.replica_spans)  # most alive (starting, ready or draining) at once
        # response-cache hits (exact, semantic): served without a worker. A request that reused prefix KV blocks
        # was computed all the same; the prefix cache's own counts are its `prefix_*` keys.
        hits = sum(n for kind, n in self.cache_hits.items() if kind != "prefix")
        out["cache_hits"] = hits
        out["cache_hit_rate"] = _round(hits / self.num_arrived) if self.num_arrived else None
        out["gpu_busy_seconds"] = _round(self.busy_gpu_seconds)
        out["cache_gpu_seconds_saved"], out["cache_gpu_seconds_saved_upper"] = self._cache_saving()
        out["cache_store_outages"], out["cache_store_down_s"] = self._store_outages(end_s)
        out["num_preemptions"] = self.num_preemptions
        out["num_scale_events"] = self.num_scale_events - self.num_unplaced_scale_events  # the changes that took effect
        out["num_plugin_errors"] = self.num_plugin_errors
        out["reject_reasons"] = dict(sorted(self.reject_reasons.items()))
        if self.unknown_models:  # (the models asked for that none serves, with the requests refused: warned of)
            out["unknown_models"] = dict(sorted(self.unknown_models.items()))
        out["prompt_tokens"] = self.prompt_tokens
        out["output_tokens"] = self.output_tokens
        return out

    def _cache_saving(self) -> tuple[float | None, float | None]:
        """What computing the response-cache hits would have cost, in GPU-seconds, (batched,
        alone), from the costs fitted to this run's batches since its first hit (`controlplane.batch_costs`: ``a`` per
        iteration, ``b`` per prefilled token, ``c`` per decoded token). Batched: their prompt
        tokens at ``b`` and output tokens at ``c``, added to batches that ran anyway. Alone: one
        request at a time, each output token an iteration of its own, ``a`` more per output token.
        0.0 without hits; None when hits came but no iteration was fitted: nothing was computed, or every
        computed request's batches finished before the first hit (no cost was measured after it)."""
        output = self.cache_hit_output_tokens
        prompt = self.cache_hit_tokens - output
        computed = self.prompt_tokens + self.output_tokens - self.cache_hit_tokens
        if not self.cache_hit_tokens:
            return (0.0, 0.0) if computed > 0 else (None, None)
        costs = self.batch_costs.fit() if self.batch_costs is not None else None
        if computed <= 0 or costs is None:
            return None, None
        a, b, c = costs
        batched = b * prompt + c * output
        return _round(batched), _round(batched + a * output)


    def _store_outages(self, end_s: float) -> tuple[int | None, float | None]:
        """(outages of the plugins' cache stores, run seconds they spent down serving misses, an outage going on at
        the end counted until ``end_s``), summed over the stores; (None, None) when no store can fail (none, or
        in-process ones only)."""
        if not self.cache_stores:
            return None, None
        totals = [store.outage_totals(end_s) for store in self.cache_stores.values()]
        return sum(n for n, _ in totals), _round(sum(s for _, s in totals))


def _round(x: float) -> float:
    """Round to 9 significant digits so summaries compare equal across platforms' last bits."""
    return float(f"{x:.9g}")
