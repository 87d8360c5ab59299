"""Routing: pick the replica for each request."""

from __future__ import annotations

from heapq import heapify, heappop, heappush, heapreplace
from typing import Literal

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import RouteDecision
from controlplane.events import RequestFinished, WorkerChanged
from controlplane.types import Decision, WorkerState
from controlplane.waiting_queue import WaitingQueue, request_tokens

from plugins.routing_wait import ReadinessGate, left_out_note
from plugins.scorers import ReplicaStats


_ORDER_BITS = 32  # a heap key is load << _ORDER_BITS | the replica's place in cluster order
_ORDER_MASK = (1 << _ORDER_BITS) - 1


class LoadIndex:
    """Each model's accepting replicas in a heap keyed by (queued + running requests, cluster
    order), so the least loaded is found without reading every replica's load.

    Kept from the run's events (``observe``), seeded from ``ctx.workers`` at the first question.
    A key may be stale: loads go up without an event (a request routed, a preempted one requeued),
    so the top key is checked against the replica's load and replaced until it is current.
    Every way a load goes down (a request completes, is cancelled, rejected or failed from a
    replica's queue or batch) ends with that request's `RequestFinished`, which pushes a current
    key, but one: an answer checked synchronously by a guardian leaves its replica at the batch's
    end and finishes with the verdict; its ``guardian_check`` decision makes every key again at
    the next question. Every replica thus has a key at or below its load, and a current top key
    is the least load, ties to the first in cluster order, as the scan finds it.

    Each replica's key is also remembered (``_key``): an entry that is not its replica's key any
    more (a newer one was pushed) is dropped when it comes to the top rather than made current
    again, so the heap does not fill with copies of the same replica.
    """

    def __init__(self) -> None:
        self._heaps: dict[str, list[int]] | None = None  # None: not seeded
        self._by_order: dict[int, object] = {}  # place in cluster order -> replica (accepting ones)
        self._order_of: dict[str, int] = {}  # worker id -> its place
        self._count: dict[str, int] = {}  # model -> replicas held
        self._key: dict[int, int] = {}  # place -> its replica's key (entries holding another value are stale copies)
        self._next = 0
        self._stale = False  # a load went down without an event naming its replica

    def _add(self, w) -> None:
        order = self._next
        self._next += 1
        if order > _ORDER_MASK:
            raise OverflowError("more than 2**32 replicas over one run")
        self._by_order[order] = w
        self._order_of[w.worker_id] = order
        self._count[w.model] = self._count.get(w.model, 0) + 1
        key = self._key[order] = (len(w.waiting) + len(w.running)) << _ORDER_BITS | order
        heappush(self._heaps.setdefault(w.model, []), key)

    def _seed(self, ctx) -> None:
        self._heaps = {}
        for w in ctx.workers.values():  # cluster order
            if w.state is WorkerState.READY or w.state is WorkerState.STARTING:
                self._add(w)

    def observe(self, ctx, event) -> None:
        if self._heaps is None:
            return  # seeded at the first question, from what the events changed
        t = type(event)
        if t is RequestFinished:
            order = self._order_of.get(event.request.worker_id)
            if order is not None:
                w = self._by_order[order]
                key = (len(w.waiting) + len(w.running)) << _ORDER_BITS | order
                if key != self._key[order]:  # an entry with this key is in the heap already otherwise
                    self._key[order] = key
                    heappush(self._heaps[w.model], key)
        elif t is Decision:
            if event.action == "guardian_check" and event.payload and event.payload.get("mode") == "sync":
                # a synchronously checked answer left its replica without a RequestFinished (that
                # comes with the verdict): which replica is not said, so every key is made again
                self._stale = True
        elif t is WorkerChanged:
            if event.kind == "starting":
                w = ctx.workers.get(event.worker_id)
                if w is not None and event.worker_id not in self._order_of:
                    self._add(w)
            elif event.kind != "ready":  # draining, failed, stopped: out of the running
                order = self._order_of.pop(event.worker_id, None)
                if order is not None:
                    w = self._by_order.pop(order)  # its keys are dropped when they come up
                    del self._key[order]
                    self._count[w.model] -= 1

    def size(self, ctx, model: str) -> int:
        """Replicas of ``model`` the index holds (seeds it on the first call)."""
        if self._heaps is None:
            self._seed(ctx)
        n = self._count.get(model, 0)
        heap = self._heaps.get(model)
        if self._stale:
            self._stale = False
            for m, h in self._heaps.items():
                self._rebuild(m, h)
        elif heap is not None and len(heap) > 4 * n + 64:  # stale keys pile up: start over from the loads
            self._rebuild(model, heap)
        return n

    def _rebuild(self, model: str, heap: list[int]) -> None:
        heap[:] = [(len(w.waiting) + len(w.running)) << _ORDER_BITS | o
                   for o, w in self._by_order.items() if w.model == model]
        for key in heap:
            self._key[key & _ORDER_MASK] = key
        heapify(heap)

    def least_loaded(self, model: str):
        """(replica, its load): the least loaded accepting replica of ``model``, ties to the first."""
        heap = self._heaps[model]
        by_order, keys = self._by_order, self._key
        while True:
            key = heap[0]
            order = key & _ORDER_MASK
            w = by_order.get(order)
            if w is None or key != keys[order]:
                heappop(heap)  # a replica no longer accepting, or a stale copy
                continue
            load = len(w.waiting) + len(w.running)
            if load == key >> _ORDER_BITS:
                return w, load
            key = keys[order] = load << _ORDER_BITS | order
            heapreplace(heap, key)


def assigned_tokens(w) -> int:
    """Prompt plus expected output tokens of every request queued or running on a replica, without
    progress: it changes only when a request is routed there or leaves it, so the simulator's fast
    mode (which settles a multi-iteration decode run at its end) and exact mode read the same. The
    queue's part is kept by the queue (`controlplane.waiting_queue`): an overloaded replica's queue
    is not walked at every arrival."""
    waiting = w.waiting
    total = waiting.tokens if type(waiting) is WaitingQueue else sum(map(request_tokens, waiting))
    for r in w.running:
        total += r.prompt_tokens + r.max_output_tokens
    return total


class LeastLoaded(Plugin):
    """Send each request to the replica with the fewest queued plus running requests, or with
    ``by: tokens`` the fewest prompt plus expected output tokens of those requests (a replica
    holding one 100k-token prompt is not "less loaded" than one with three short ones).

    A starting replica (cold start under way) wins only when its expected wait, the rest of its
    cold start plus its queued work, is below every ready replica's (`plugins.routing_wait`).
    """

    name = "least-loaded"
    #: Loads go down with a `RequestFinished`; replicas come and go with `WorkerChanged`; a
    #: synchronous guardian check's `Decision` leaves a replica without either.
    observes = (RequestFinished, WorkerChanged, Decision)

    class Settings(PluginSettings):
        by: Literal["requests", "tokens"] = "requests"  # what a replica's load counts

    #: From this many candidates on, the least loaded by requests comes from a `LoadIndex` (a heap
    #: kept from events) rather than a scan of every load; the same replica either way.
    INDEX_FROM = 16

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.stats = ReplicaStats(time_batches=False)  # it weighs no speed: the cold-start wait takes the pooled one
        self.gate = ReadinessGate()
        self.index = LoadIndex()
        self.by_tokens = self.settings.by == "tokens"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        n = len(workers)
        if not self.by_tokens and n >= self.INDEX_FROM and self.gate.all_ready(ctx, workers):
            model = workers[0].model
            if self.index.size(ctx, model) == n:  # it holds the candidates: no scan
                best, least = self.index.least_loaded(model)
                return RouteDecision(best.worker_id, f"least loaded ({least} queued+running)")
        pool, waits = self.gate.pool(ctx, workers, self.stats, request)
        note = ""
        if waits is not None:
            starting = [i for i in pool if self.gate.cold(ctx.now_s, workers[i])]
            if starting:  # every ready replica (if any) is more backed up than these
                i = min(starting, key=lambda j: (waits[j], workers[j].load, j))
                w = workers[i]
                why = ("below every ready replica's" if len(starting) < len(pool) else "no replica ready")
                return RouteDecision(w.worker_id, f"starting replica: expected wait {waits[i]:.1f} s "
                                                  f"(ready in {self.gate.time_to_ready_s(ctx, w):.1f} s), {why}")
            left_out = len(workers) - len(pool)
            note = left_out_note(left_out, self.gate.speed_known)
            workers = [workers[i] for i in pool]
        if self.by_tokens:
            keys = [(assigned_tokens(w), len(w.waiting) + len(w.running)) for w in workers]
            least = min(keys)
            best = workers[keys.index(least)]  # ties: fewer requests, then the first in cluster order
            return RouteDecision(best.worker_id,
                                 f"least loaded ({least[0]} tokens in {least[1]} queued+running){note}")
        loads = [len(w.waiting) + len(w.running) for w in workers]  # Worker.load, without a call per replica
        least = min(loads)
        best = workers[loads.index(least)]  # ties: the first in cluster order
        return RouteDecision(best.worker_id, f"least loaded ({least} queued+running){note}")

    @hookimpl
    def cp_on_event(self, ctx, event):
        t = type(event)
        if t is Decision:  # most events (every route and batch): only a guardian check's concerns the index
            if event.action == "guardian_check" and not self.by_tokens:
                self.index.observe(ctx, event)
            return
        self.stats.observe(event)
        if t is WorkerChanged:  # the only events the gate keeps anything from
            self.gate.observe(ctx, event)
        if not self.by_tokens:
            self.index.observe(ctx, event)


class RoundRobin(Plugin):
    """Cycle through each model's candidate replicas in order (Vidur's global scheduler): one cycle
    per model, so that with two models arriving in turn each model's replicas all get their share."""

    name = "round-robin"

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._next: dict[str, int] = {}  # model -> its next turn

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        model = workers[0].model
        turn = self._next.get(model, 0)
        self._next[model] = turn + 1
        w = workers[turn % len(workers)]
        return RouteDecision(w.worker_id, f"round robin: {model} replica {turn % len(workers) + 1} of {len(workers)}")
