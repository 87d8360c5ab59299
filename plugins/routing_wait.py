"""Expected wait on a replica, for the routers that weigh load: cold starts count as waiting.

A *starting* replica accepts requests (they wait in its queue until it is ready), and by queue
length it looks idle. Its expected wait is the rest of its cold start plus the work already
queued on it; a ready replica's is its queued work. ``ReadinessGate.pool`` keeps the ready
replicas, and a starting one only when every ready replica is more backed up than it (its
expected wait is strictly smaller than theirs); the routers then choose within that pool.

- Time until ready: the deployment's cold start (``cluster.models[].cold_start_s``, else from
  the weights' size, as the core starts replicas) after the replica's ``started_s``, less the
  time since; 0 once that has passed (a replica late to start is not known to be later still).
- Queued work: the replica's remaining prefill plus expected output tokens
  (`plugins.scorers.work_tokens`) over its measured speed, tokens per busy second
  (`plugins.scorers.ReplicaStats`); a replica not measured yet (a starting one) takes the pooled
  speed of the measured candidates. Before any request of the model has finished no speed is
  known, and a ready replica's queue counts as no wait: ready replicas win.

Everything comes from the run (``ctx.now_s``, the workers, the config), so simulation and live
route the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.hardware.memory_plan import DEFAULT_COLD_START_S, deployment_cold_start_s
from controlplane.types import Worker, WorkerState

from plugins.scorers import ReplicaStats, work_tokens

__all__ = ["ReadinessGate"]


class ReadinessGate:
    """Expected waits of candidate replicas, and the pool a router may choose from."""

    def __init__(self) -> None:
        self._cold_start: dict[str, float] | None = None

    def cold_start_s(self, ctx, model: str) -> float:
        if self._cold_start is None:
            self._cold_start = {d.name: deployment_cold_start_s(d) for d in ctx.config.cluster.models}
        # a model the config does not list (a hand-made worker): the default cold start
        return self._cold_start.get(model, DEFAULT_COLD_START_S)

    def time_to_ready_s(self, ctx, w: Worker) -> float:
        """Seconds until a starting replica is expected ready (0 for any other state)."""
        if w.state is not WorkerState.STARTING:
            return 0.0
        return max(0.0, w.started_s + self.cold_start_s(ctx, w.model) - ctx.now_s)

    @staticmethod
    def speeds(workers: Sequence[Worker], stats: ReplicaStats) -> list[float | None]:
        """Each replica's tokens per busy second; unmeasured ones the pooled speed (None: none known)."""
        own = [stats.speed(w) for w in workers]
        tokens = sum(stats.tokens.get(w.worker_id, 0.0) for w, s in zip(workers, own) if s)
        busy = sum(w.busy_s for w, s in zip(workers, own) if s)
        pooled = tokens / busy if busy > 0 else None
        return [s if s else pooled for s in own]

    def expected_waits(self, ctx, workers: Sequence[Worker], stats: ReplicaStats) -> list[float]:
        """Seconds until a request routed now could start on each replica: time to ready + queued work."""
        waits = []
        for w, speed in zip(workers, self.speeds(workers, stats)):
            work = work_tokens(w)
            queued = work / speed if speed else 0.0
            waits.append(self.time_to_ready_s(ctx, w) + queued)
        return waits

    def pool(self, ctx, workers: Sequence[Worker], stats: ReplicaStats) -> tuple[list[int], list[float] | None]:
        """Indices of the replicas to choose from, and the expected waits (None: all ready, not computed).

        All ready replicas; a starting one only when its expected wait is below every ready
        replica's; when none is ready, all of them.
        """
        if all(w.state is not WorkerState.STARTING for w in workers):
            return list(range(len(workers))), None
        waits = self.expected_waits(ctx, workers, stats)
        ready = [i for i, w in enumerate(workers) if w.state is not WorkerState.STARTING]
        if not ready:
            return list(range(len(workers))), waits
        best_ready = min(waits[i] for i in ready)
        starting = [i for i, w in enumerate(workers) if w.state is WorkerState.STARTING and waits[i] < best_ready]
        return sorted(ready + starting), waits
