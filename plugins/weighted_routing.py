"""Routing by weighted scorers (llm-d's endpoint picker), power-of-two choices, prefix-only affinity.

``weighted-router`` scores every candidate replica with the scorers of ``plugins.scorers``
and sends the request to the highest weighted sum (ties: fewer queued + running requests,
then cluster order). A starting replica is a candidate only when its expected wait (the rest
of its cold start plus its queued work) is below every ready candidate's
(``plugins.routing_wait``). ``weights`` maps scorer names to weights; a scorer with weight 0 is not
computed. The route decision stores every replica's scores and total
(``RouteDecision.scores``: the ``scores`` of the decision's payload). Its reason says the winning
score, or that several replicas shared it and the least loaded of them was taken; while a replica
is starting, how many starting replicas were left out and whether the pick is one.

``power-of-two`` samples ``choices`` replicas with the run's RNG, from the candidates that
readiness leaves (as above), and picks the better of them by the same weighted sum (default:
queue depth and active requests), as in Mitzenmacher's two choices.

``prefix-only`` routes by the prefix-cache hit alone (ties: least loaded): the cache-affinity
routing that llm-d's benchmark shows overloading the replicas that hold hot prefixes.
"""

from __future__ import annotations

import logging

from pydantic import Field, field_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import RouteDecision

from plugins.routing_wait import ReadinessGate, left_out_note
from plugins.scorers import SCORERS, SPEED_SCORERS, ReplicaStats


def _default_weights() -> dict[str, float]:
    return {"prefix-cache-hit": 2.0, "queue-depth": 1.0, "kv-utilization": 1.0}


def _check_weights(v: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(v) - set(SCORERS))
    if unknown:
        raise ValueError(f"weights: unknown scorer(s) {', '.join(unknown)}; valid: {', '.join(SCORERS)}")
    negative = [k for k, x in v.items() if x < 0]
    if negative:
        raise ValueError(f"weights: negative weight for {', '.join(negative)}")
    if not any(x > 0 for x in v.values()):
        raise ValueError("weights: give at least one scorer a positive weight")
    return v


def prefix_peekers(enabled: list[str]) -> list[str]:
    """The enabled plugins that say what a replica's prefix cache holds (``cp_prefix_peek``: `prefix-cache`)."""
    from controlplane.plugin_manager import discover_plugins

    found = discover_plugins()
    return [n for n in enabled if n in found and callable(getattr(found[n].target, "cp_prefix_peek", None))]


class WeightedRouter(Plugin):
    """Send each request to the replica with the highest weighted sum of scorer scores."""

    name = "weighted-router"

    class Settings(PluginSettings):
        weights: dict[str, float] = Field(default_factory=_default_weights)
        record_scores: bool = True  # store every replica's scores in the route decision

        @field_validator("weights")
        @classmethod
        def _valid(cls, v):
            return _check_weights(v)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._scorers = [(n, SCORERS[n], w) for n, w in self.settings.weights.items() if w > 0]
        # replicas' speeds are measured (every batch timed) only for the scorers that read them
        self.stats = ReplicaStats(time_batches=any(n in SPEED_SCORERS for n, _, _ in self._scorers))
        self.gate = ReadinessGate()

    def candidates(self, ctx, workers):
        return list(workers)

    def score(self, ctx, request, workers) -> tuple[list[float], dict[str, list[float]]]:
        totals = [0.0] * len(workers)
        parts: dict[str, list[float]] = {}
        for name, fn, weight in self._scorers:
            values = fn(ctx, request, workers, self.stats)
            parts[name] = values
            for i, v in enumerate(values):
                totals[i] += weight * v
        return totals, parts

    #: What the router does when every replica's prefix-cache-hit is 0 and it weighs no other scorer: every total
    #: ties, and ties go to the fewest queued + running requests, then cluster order.
    only_prefix_hits = "it routes as least-loaded"

    @hookimpl
    def cp_run_started(self, ctx):
        """Warn when prefix-cache-hit is weighed but nothing keeps a prefix cache: every replica would score 0
        on it, all through the run, and the router would route without cache affinity unsaid."""
        weights = self.settings.weights
        weight = weights.get("prefix-cache-hit", 0.0)
        if weight > 0 and not prefix_peekers(list(ctx.config.plugins.enabled)):
            others = any(w > 0 for n, w in weights.items() if n != "prefix-cache-hit")
            logging.getLogger(__name__).warning(
                "%s weighs prefix-cache-hit (%g) but no enabled plugin keeps a prefix cache: every replica scores "
                "0 on it, so %s; add prefix-cache to plugins.enabled (with a trace that has hash_ids)",
                self.name, weight, "the other scorers alone decide" if others else self.only_prefix_hits)

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        keep, waits = self.gate.pool(ctx, workers, self.stats, request)  # a starting replica only if less backed up
        left_out = len(workers) - len(keep)
        eligible = [workers[i] for i in keep] if left_out else workers
        pool = self.candidates(ctx, eligible)
        totals, parts = self.score(ctx, request, pool)
        best = max(range(len(pool)), key=lambda i: (totals[i], -pool[i].load, -i))
        w = pool[best]
        self.stats.routed(request, w.worker_id)
        scores = None
        if self.settings.record_scores:
            scores = {p.worker_id: {**{n: round(v[i], 6) for n, v in parts.items()}, "total": round(totals[i], 6)}
                      for i, p in enumerate(pool)}
        why = self._reason(pool, best, totals, parts, len(eligible))
        if waits is not None:  # a replica is starting: say what it weighed, and whether the pick is one
            why += self._cold_start_note(ctx, workers, w, waits, left_out)
        return RouteDecision(w.worker_id, why, scores)

    def _of(self, scored: int, eligible: int) -> str:
        return f"of {scored}"

    def _reason(self, pool, best: int, totals, parts, eligible: int) -> str:
        """The weighted score that won, or, where several replicas share it, that the tie went to the least loaded."""
        top = totals[best]
        w = pool[best]
        of = self._of(len(pool), eligible)
        values = ", ".join(f"{n} {parts[n][best]:.2f}" for n in parts)
        tied = [p for p, t in zip(pool, totals) if t >= top]  # (none is above the best)
        if len(tied) == 1:
            return f"best weighted score {top:.3f} {of} ({values})"
        same = sum(p.load == w.load for p in tied)
        order = f", first of {same} in cluster order" if same > 1 else ""
        return f"tie of {len(tied)} at {top:.3f} {of} ({values}): least loaded ({w.load} queued+running{order})"

    def _cold_start_note(self, ctx, workers, w, waits, left_out: int) -> str:
        gate = self.gate
        note = ""
        if gate.cold(ctx.now_s, w):
            i = next(j for j, x in enumerate(workers) if x is w)
            none_ready = all(gate.cold(ctx.now_s, x) for x in workers)
            note += (f"; a starting replica: ready in {gate.time_to_ready_s(ctx, w):.1f} s, expected wait "
                     f"{waits[i]:.1f} s, " + ("no replica ready" if none_ready else "below every ready replica's"))
        if left_out:
            note += left_out_note(left_out, gate.speed_known)
        return note

    @hookimpl
    def cp_on_event(self, ctx, event):
        self.stats.observe(event, ctx)
        self.gate.observe(ctx, event)  # the gate keeps which replicas are starting: no scan per request


class PowerOfTwo(WeightedRouter):
    """Sample ``choices`` replicas at random (the run's RNG) and take the better by weighted score."""

    name = "power-of-two"

    class Settings(WeightedRouter.Settings):
        weights: dict[str, float] = Field(default_factory=lambda: {"queue-depth": 1.0, "active-requests": 1.0})
        choices: int = Field(2, ge=1)

    only_prefix_hits = "it routes to the least loaded of the replicas it samples"

    def candidates(self, ctx, workers):
        """``choices`` of ``workers`` (the ready replicas, and the starting ones less backed up than every ready
        one): a sample of two starting replicas no longer sends a request to wait out a cold start while a
        ready replica is free."""
        k = self.settings.choices
        if len(workers) <= k:
            return list(workers)
        picks = sorted(ctx.rng.choice(len(workers), size=k, replace=False).tolist())
        return [workers[i] for i in picks]

    def _of(self, scored: int, eligible: int) -> str:
        return f"of {scored}" if scored >= eligible else f"of {scored} sampled from {eligible}"


class PrefixOnly(WeightedRouter):
    """Route by the prefix-cache hit alone (least loaded among equal hits): cache affinity without load."""

    name = "prefix-only"

    class Settings(WeightedRouter.Settings):
        weights: dict[str, float] = Field(default_factory=lambda: {"prefix-cache-hit": 1.0})
