"""The run's own time, randomness and ids, and the read-only view policies get of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from controlplane.iterations import prefilled_by, progress_after, tokens_after

if TYPE_CHECKING:
    from controlplane.config import RunConfig
    from controlplane.types import Batch, Request, Worker


class Clock:
    """Run time in seconds, set by the driver (SimPy's ``env.now`` or a monotonic live clock).

    ``read``: in a live run, the driver's clock itself (the run time at the moment of the call, for
    what the core must time as it happens: a cache hit's reply); None in a simulation."""

    __slots__ = ("now_s", "read")

    def __init__(self, start_s: float = 0.0, read: Callable[[], float] | None = None) -> None:
        self.now_s = start_s
        self.read = read


@dataclass
class RunInfo:
    """Facts about the run that plugins may read (and the recorder stores)."""

    run_id: int | None
    mode: str  # "sim" | "live"
    seed: int
    name: str | None = None
    trace: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class IdSource:
    """Counters owned by one run, so two runs in a process never share ids."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def next(self, kind: str) -> int:
        n = self._next.get(kind, 0)
        self._next[kind] = n + 1
        return n


class PolicyContext:
    """What every hook receives: run time, the run's RNG, the cluster and the config.

    Read-only by convention: policies return decisions; only the core changes state.
    """

    __slots__ = ("_clock", "_rng", "_rng_seed", "ids", "config", "run", "workers", "metrics", "_prefix_peek", "_kv_now",
                 "_batch_now", "serves_by_priority")

    def __init__(
        self,
        *,
        clock: Clock,
        rng: np.random.Generator | None = None,
        config: RunConfig,
        run: RunInfo,
        workers: Mapping[str, Worker],
        metrics: Mapping[str, float],
        rng_seed: Any = None,
    ) -> None:
        """``rng``: the run's generator; or ``rng_seed``: it is ``numpy.random.default_rng(rng_seed)``,
        made when a policy first reads ``ctx.rng`` (the same draws; a run that draws nothing does
        not import ``numpy.random``: ~0.03 G instructions of a replay's start)."""
        if (rng is None) == (rng_seed is None):
            raise TypeError("PolicyContext takes rng or rng_seed, one of them")
        self._clock = clock
        self._rng = rng
        self._rng_seed = rng_seed
        self.ids = IdSource()
        self.config = config
        self.run = run
        self.workers = workers
        self.metrics = metrics  # the core's gauges: each tick's queues and arrival rate (0 before the first)
        self._prefix_peek = None  # the cp_prefix_peek caller, bound by the core's PolicyCalls
        self._kv_now = None  # the driver's count of KV blocks mid-batch (`kv_blocks_used`), where it has one
        self._batch_now = None  # the driver's iterations of a batch finished mid-batch (`batch_now`), where it has one
        #: The batcher the core asks first serves waiting requests by priority (it declares ``serves_by_priority =
        #: True``, as ``priority-continuous-batching``): a request waits only for those at its priority or above and
        #: the running ones (the routers' expected waits, `plugins.routing_wait`). Set by the core's `PolicyCalls`.
        self.serves_by_priority = False

    def bind_prefix_peek(self, caller) -> None:
        self._prefix_peek = caller

    def prefix_match(self, worker: Worker, request) -> int:
        """Prompt tokens of ``request`` that ``worker``'s prefix cache holds now (0 without one)."""
        peek = self._prefix_peek
        if peek is None:
            return 0
        return int(peek(self, worker, request) or 0)

    def bind_kv_now(self, count) -> None:
        """``count(worker)``: the KV blocks ``worker`` holds now, for a driver whose batches run several
        iterations between the core's counts (the simulator's fast mode)."""
        self._kv_now = count

    def kv_blocks_used(self, worker: Worker) -> int:
        """KV blocks ``worker``'s running requests hold now. ``worker.num_kv_blocks_used`` is the count at its last
        batch boundary; in the simulator's fast mode a batch runs many decode iterations, each adding tokens, and
        this counts the iterations finished by now, as the exact mode (one batch an iteration) does."""
        count = self._kv_now
        return worker.num_kv_blocks_used if count is None else count(worker)

    def bind_batch_now(self, batch_now) -> None:
        """``batch_now(worker)``: ``worker``'s running batch and what of it finished by now (`batch_now`), for a driver
        whose batches run several iterations between the core's updates (the simulator's fast mode)."""
        self._batch_now = batch_now

    def batch_now(self, worker: Worker) -> tuple[Batch, int, float, float | None] | None:
        """(batch, k, busy_s, first_end_s): ``worker``'s running batch, the k >= 1 iterations of it finished by now
        that the core has not applied yet (it applies a batch at its end), the busy seconds they took and when its
        prefill iteration ended (None: it has none). None where nothing is pending: a batch is one iteration (the
        exact mode, a live worker) or none of it finished yet. In the simulator's fast mode a batch runs many
        iterations; the exact mode (one batch an iteration) has applied those finished by now. Read what the
        accessors below derive from it rather than the batch itself."""
        batch_now = self._batch_now
        return None if batch_now is None else batch_now(worker)

    def batch_progress(self, worker: Worker) -> tuple[int, float]:
        """(tokens, seconds): what ``worker``'s running batch computed by now beyond its requests' progress (prompt
        tokens prefilled and output tokens generated, as `plugins.scorers.work_tokens` counts them down) and the
        busy seconds it took beyond ``worker.busy_s`` (`batch_now`); (0, 0.0) where nothing is pending."""
        now = self.batch_now(worker)
        if now is None:
            return 0, 0.0
        return tokens_after(now[0], now[1]), now[2]

    def request_progress(self, worker: Worker) -> dict[Request, tuple[int, int, float | None]]:
        """request -> (``output_tokens``, ``num_computed_tokens``, ``first_token_s``) as of now, for ``worker``'s
        running requests whose progress its running batch made and the core has not applied yet (`batch_now`);
        empty where nothing is pending: every running request's own fields are as of now. A policy that reads a
        running request's progress mid-batch reads it here first, so the simulator's fast and exact modes agree."""
        now = self.batch_now(worker)
        if now is None:
            return {}
        return progress_after(now[0], now[1], now[3])

    def prefilled_now(self, worker: Worker) -> list[Request]:
        """The requests whose prompt ``worker``'s running batch completed by now and the core has not applied yet
        (`batch_now`), in the order it will (their prefix blocks are stored then); [] where nothing is pending."""
        now = self.batch_now(worker)
        if now is None:
            return []
        return prefilled_by(now[0], now[1])

    @property
    def now_s(self) -> float:
        return self._clock.now_s

    @property
    def rng(self) -> np.random.Generator:
        """The run's seeded generator (policies draw from it, never from global randomness)."""
        rng = self._rng
        if rng is None:
            rng = self._rng = np.random.default_rng(self._rng_seed)
        return rng
