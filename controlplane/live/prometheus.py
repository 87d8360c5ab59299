"""Prometheus metrics: an observer plugin on the run's event bus, plus the daemon's HTTP counters.

Everything lives in the exporter's own ``CollectorRegistry``, so two runs (or two daemons in one
test process) never share a metric. Time series come from the same events the SQL recorder
stores: finished requests (counts by status and reason code, end-to-end and TPOT histograms of the
completed), the core's periodic metric samples (queue length, replicas, KV use, ...), decisions and
worker lifecycle events. The requests in flight are looked at at each scrape (`progress`) and at
their end: tokens are counted as they are generated, whatever the request's end (the stored rows'
``output_tokens`` add up to ``tokens_total{kind="generated"}``), a prompt's tokens and its TTFT once
it has its first token, its queue time once it left the queue. The daemon adds its HTTP counters,
streams by how they ended among them (a stream's status is 200 from its first byte, whatever follows).
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controlplane.request_latency import request_latencies
from controlplane.events import MetricSample, RequestArrived, RequestFinished, WorkerChanged
from controlplane.hookspecs import hookimpl
from controlplane.live.prometheus_totals import CacheTotals, RefusedRows
from controlplane.types import Decision

__all__ = ["CONTENT_TYPE_LATEST", "UNKNOWN_MODEL_LABEL", "WORKER_INFO_LABELS", "PrometheusExporter", "worker_info_labels"]

#: TTFT, end-to-end and queue times: up to 1200 s, above the daemon's default --request-timeout (600 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                   1200.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")
#: The ``model`` label of requests for a model no deployment serves (the stored row keeps the name asked for).
UNKNOWN_MODEL_LABEL = "(unknown)"


class PrometheusExporter:
    """`cp_on_event` observer that keeps Prometheus metrics for one run."""

    name = "prometheus-exporter"

    def __init__(self, namespace: str = "controlplane", registry: CollectorRegistry | None = None) -> None:
        self.namespace = namespace
        self.registry = registry if registry is not None else CollectorRegistry()
        ns, reg = namespace, self.registry
        self.requests_arrived = Counter(
            "requests_arrived", "Requests that arrived.", ["model"], namespace=ns, registry=reg
        )
        self.requests = Counter(
            "requests", "Requests that reached a final state, by status and reason code (empty for none: "
            "cancelled with timeout or client_gone tells a timeout from a client that went away).",
            ["model", "status", "reason_code"], namespace=ns, registry=reg,
        )
        self.ttft = Histogram(
            "request_ttft_seconds", "Time to first token, of every request that got one (whatever its end), "
            "observed once it has it.", ["model"], namespace=ns, registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.e2e = Histogram(
            "request_e2e_seconds", "Arrival to last token, of the completed requests.", ["model"], namespace=ns,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.queue = Histogram(
            "request_queue_seconds", "Arrival to first scheduled, of every request that left the queue (whatever "
            "its end), observed once it left.", ["model"], namespace=ns, registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.tpot = Histogram(
            "request_tpot_seconds", "Time per output token after the first, of the completed requests.",
            ["model"], namespace=ns, registry=reg,
            buckets=TPOT_BUCKETS,
        )
        self.tokens = Counter(
            "tokens", "Tokens by kind: generated (counted as they are generated, whatever the request's end: at "
            "each scrape for those in flight) and prompt (of the requests that got their first token).",
            ["model", "kind"], namespace=ns, registry=reg)
        self.cache_hits = Counter("cache_hits", "Requests served from a cache.", ["model", "kind"], namespace=ns,
                                  registry=reg)
        self.decisions = Counter(
            "decisions", "Policy decisions, by hook, plugin and action.", ["hook", "plugin", "action"], namespace=ns,
            registry=reg,
        )
        self.plugin_errors = Counter(
            "plugin_errors", "Plugin exceptions caught by the control plane.", ["plugin", "hook"], namespace=ns,
            registry=reg,
        )
        self.guardian_verdicts = Counter(
            "guardian_verdicts", "Guardian verdicts, by guardian, verdict and stage (input: prompts, output: answers).",
            ["guardian", "verdict", "stage"], namespace=ns, registry=reg,
        )
        self.batch_size = Histogram(
            "batch_size", "Requests per batch, by worker (a worker's series goes when it stops or fails).", ["worker"],
            namespace=ns, registry=reg, buckets=BATCH_BUCKETS,
        )
        self.worker_events = Counter("worker_events", "Worker lifecycle events.", ["kind"], namespace=ns, registry=reg)
        self.worker_info = Gauge(
            "worker_info", "1 for each live worker that is ready, labelled with how it serves its model (as vLLM's "
            "config info): the model it serves, its source (preset, directory or model type), device, precision, "
            "compiled (true/false) and compile_mode (empty when not compiled); its series goes when it stops or fails.",
            list(WORKER_INFO_LABELS), namespace=ns, registry=reg)
        self._worker_models: dict[str, str] = {}  # worker id -> the model it was started for (its "starting" event)
        self._info_labels: dict[str, tuple[str, ...]] = {}  # worker id -> its worker_info series' label values
        self.http_requests = Counter(
            "http_requests", "HTTP responses, by route and status code.", ["route", "code"], namespace=ns, registry=reg
        )
        self.http_streams = Counter(
            "http_streams", "Streamed responses, by how they ended (their HTTP status is 200 once started): done "
            "(the answer's end and [DONE]), error (an error event, then [DONE]), client_gone (the client left "
            "before [DONE]).", ["route", "end"], namespace=ns, registry=reg)
        self.http_in_flight = Gauge("http_in_flight", "HTTP requests being served.", namespace=ns, registry=reg)
        self.draining = Gauge("draining", "1 while the daemon drains.", namespace=ns, registry=reg)
        self.storage_rows_pending = Gauge(
            "storage_rows_pending", "Rows of the run not yet in the database (buffered, retrying or spilled): "
            "grows while the database is down.", namespace=ns, registry=reg)
        self.storage_spill_files = Gauge(
            "storage_spill_files", "Spill files of rows that waited too long for the database.", namespace=ns,
            registry=reg)
        # Read at each scrape (`controlplane.live.prometheus_totals`): the response caches' checked and false hits
        # and their stores' outages (carried across reloads), the rows the database refused
        self.caches = CacheTotals(ns)
        self.refused_rows = RefusedRows(ns)
        reg.register(self.caches)
        reg.register(self.refused_rows)
        self._samples: dict[str, Gauge] = {}
        #: The run's served models (`cp_run_started`): a request for another name (rejected, ``unknown_model``) is
        #: counted under `UNKNOWN_MODEL_LABEL`, not its own, so clients cannot make a time series per name they send.
        self._served: frozenset[str] | None = None
        #: request id -> what was counted of it so far, from its arrival to its end
        self._in_flight: dict[str, _Progress] = {}

    # --- the observer hook ----------------------------------------------------------------------

    @hookimpl
    def cp_run_started(self, ctx: Any) -> None:
        self._served = frozenset(d.name for d in ctx.config.cluster.models)

    def _model(self, name: str | None) -> str:
        """The ``model`` label of a request for ``name`` (empty for none; an empty name is no served one's)."""
        if name is None:
            return ""
        served = self._served
        return name if served is None or name in served else UNKNOWN_MODEL_LABEL

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is RequestFinished:
            self._finished(event.request)
        elif kind is Decision:
            self._decision(event)
        elif kind is MetricSample:
            self._sample(event)
        elif kind is RequestArrived:
            self.requests_arrived.labels(self._model(event.request.model)).inc()
            self._in_flight[event.request.request_id] = _Progress(event.request)
        elif kind is WorkerChanged:
            # A start no device or slot was free for is counted apart: "failed" reads as a crash.
            unplaced = event.kind == "failed" and (event.detail or {}).get("unplaced")
            self.worker_events.labels("unplaced" if unplaced else event.kind).inc()
            self._worker_info(event)
            if event.kind in ("stopped", "failed"):  # (worker ids are never reused: its series would stay for good)
                self.batch_size.remove(event.worker_id)

    def _worker_info(self, event: WorkerChanged) -> None:
        """``worker_info``'s series of a worker: set when it is ready (from the device facts it reported: a simulated
        worker reports none), removed when it stops or fails."""
        detail = event.detail or {}
        if event.kind == "starting" and isinstance(detail.get("model"), str):
            self._worker_models[event.worker_id] = detail["model"]
        elif event.kind == "ready" and "precision" in detail:
            labels = worker_info_labels(event.worker_id, self._worker_models.get(event.worker_id, ""), detail)
            self._info_labels[event.worker_id] = labels
            self.worker_info.labels(*labels).set(1)
        elif event.kind in ("stopped", "failed"):
            self._worker_models.pop(event.worker_id, None)
            if (labels := self._info_labels.pop(event.worker_id, None)) is not None:
                self.worker_info.remove(*labels)

    def _finished(self, r: Any) -> None:
        model = self._model(r.model)
        code = r.reason_code
        self.requests.labels(model, r.status.value, code.value if code is not None else "").inc()
        if r.cache_hit:
            self.cache_hits.labels(model, r.cache_hit).inc()
        seen = self._in_flight.pop(r.request_id, None)
        self._advance(seen if seen is not None and seen.request is r else _Progress(r), model)  # (or refused first)
        if r.status.value != "completed":
            return  # (an end-to-end time of a request given up on, refused or blocked is no answer's latency)
        _ttft, tpot, e2e, _queue = request_latencies(r)
        for histogram, value in ((self.tpot, tpot), (self.e2e, e2e)):
            if value is not None:
                histogram.labels(model).observe(max(0.0, value))

    def progress(self) -> None:
        """Count what the requests in flight did since the last look: their tokens generated, and the first
        token and the start of those that got there (`render` calls this: at each scrape)."""
        for seen in list(self._in_flight.values()):
            self._advance(seen, self._model(seen.request.model))

    def _advance(self, seen: _Progress, model: str) -> None:
        r = seen.request
        made = min(r.output_tokens, r.max_output_tokens)
        if made > seen.generated:
            self.tokens.labels(model, "generated").inc(made - seen.generated)
            seen.generated = made
        if not seen.first_token and r.first_token_s is not None:
            seen.first_token = True
            self.tokens.labels(model, "prompt").inc(r.prompt_tokens)
            self.ttft.labels(model).observe(max(0.0, r.first_token_s - r.arrival_s))
        if not seen.scheduled and r.scheduled_s is not None:
            seen.scheduled = True
            self.queue.labels(model).observe(max(0.0, r.scheduled_s - r.arrival_s))

    def _decision(self, d: Decision) -> None:
        if d.is_error:
            return  # counted by `watch_plugin_errors`: error decisions stop at MAX_RECORDED_ERRORS per plugin and hook
        self.decisions.labels(d.hook, d.plugin, d.action).inc()
        if d.action == "reload" and d.hook == "admin":
            self.caches.refresh()  # the plugins it replaced: their totals carried before they are gone
        if d.action == "guardian_verdict" and d.payload:
            p = d.payload
            self.guardian_verdicts.labels(str(p.get("guardian")), str(p.get("verdict")), str(p.get("stage"))).inc()
        if d.action == "batch" and d.payload:
            self.batch_size.labels(d.subject or "").observe(d.payload.get("prefill", 0) + d.payload.get("decode", 0))

    def _sample(self, m: MetricSample) -> None:
        gauge = self._samples.get(m.name)
        if gauge is None:
            labels = sorted((m.labels or {}).keys())
            gauge = self._samples[m.name] = Gauge(
                _NAME_RE.sub("_", m.name), f"Control-plane sample {m.name!r} (every metrics_interval_s).", labels,
                namespace=self.namespace, registry=self.registry,
            )
        if m.labels:
            gauge.labels(**m.labels).set(m.value)
        else:
            gauge.set(m.value)

    # --- the daemon's own counters ----------------------------------------------------------------

    def http_response(self, route: str, code: int) -> None:
        self.http_requests.labels(route, str(code)).inc()

    def stream_end(self, route: str, end: str) -> None:
        """A streamed response ended (``done``, ``error`` or ``client_gone``): its 200 alone cannot say."""
        self.http_streams.labels(route, end).inc()

    def watch_plugin_errors(self, monitor: Any) -> None:
        """Count every plugin error the run's `HookMonitor` records, as the run's summary counts them
        (`build_plugin_set` calls this for each plugin set it builds: the run's, and each reload's)."""
        monitor.listeners.append(self._plugin_error)

    def _plugin_error(self, plugin: str, hook: str) -> None:
        self.plugin_errors.labels(plugin, hook).inc()

    def watch_storage(self, recorder: Any) -> None:
        """Read the run recorder's backlog at each scrape (a database outage shows as rows pending)."""
        if hasattr(recorder, "pending") and hasattr(recorder, "spilled"):
            self.storage_rows_pending.set_function(lambda: recorder.pending)
            self.storage_spill_files.set_function(lambda: len(recorder.spilled))
        if hasattr(recorder, "refused"):
            self.refused_rows.count = lambda: recorder.refused.count

    def watch_caches(self, loaded: Any) -> None:
        """Read the response caches' verified hits at each scrape: ``loaded()`` gives the run's plugins
        now (`PluginSet.loaded`: a reload swaps them); those with ``cache_report()`` count. And their
        stores' outages: the stores down now, and the calls that found one unreachable. The totals of
        the instances a reload replaces are carried forward (`CacheTotals`)."""
        self.caches.watch(loaded)

    def render(self) -> bytes:
        """The text exposition format, for ``GET /metrics`` (on the run's event loop: the requests in flight
        are read as they are now)."""
        self.progress()
        return generate_latest(_WithoutCreated(self.registry))


#: The labels of ``worker_info``.
WORKER_INFO_LABELS = ("worker", "model", "source", "device", "precision", "compiled", "compile_mode")


def worker_info_labels(worker_id: str, model: str, facts: dict[str, Any]) -> tuple[str, ...]:
    """The label values of a ready worker's ``worker_info`` series, from the facts it reported (`device_facts`)."""
    compiled = bool(facts.get("compiled"))
    return (worker_id, model, str(facts.get("model") or ""), str(facts.get("device") or ""),
            str(facts.get("precision") or ""), "true" if compiled else "false",
            str(facts.get("compile_mode") or "") if compiled else "")


class _WithoutCreated:
    """``registry``'s metrics less the ``*_created`` sample of each counter and histogram (a gauge of its
    series' creation time per series: a fifth of the exposition, which nothing here reads)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Any:
        for family in self.registry.collect():
            created = f"{family.name}_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class _Progress:
    """What `PrometheusExporter` counted of a request so far."""

    __slots__ = ("first_token", "generated", "request", "scheduled")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.generated = 0
        self.first_token = self.scheduled = False
