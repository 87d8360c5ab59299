"""Live guardians on the live worker pool: the driver's side of ``RunGuardian``.

Every declared guardian runs in workers of the same `WorkerPool` as the generation workers
(threads, processes or Ray actors, whichever the daemon runs), hosted by the same
`WorkerRuntime` and reached with the pool's one generic call, `WorkerPool.command`
(`GuardianCheck` in, `GuardianVerdict` out: verdict, score, reason and the worker's busy seconds).

* ``placement: own``: ``replicas`` guardian workers of its own (``guardian-NAME-I``), started
  with the driver from `GuardianWorkerSettings`.
* ``placement: shared``: the guardian loads into every generation worker of the pool (whatever
  its model) when the worker starts, before it is ready (`LoadGuardian`). A worker runs one
  command at a time, so a check runs between two of its iterations: it delays that worker's next
  iteration by its own time. ``replicas`` is not used.

Either way a guardian's checks wait in one queue of the driver's and a free worker that hosts it
takes the next, one check at a time (`controlplane.live.guardian_queue`): a check still unanswered
after the guardian's ``timeout_s`` answers ``timeout``; one still queued then never runs, one
running runs to its end (its worker stays in flight with it; its time counts in ``busy_s`` when it
ends, before the run closes) and its verdict is dropped, as in the simulator. A queued check whose request
left (cancelled, failed) never runs either: it answers ``cancelled`` when a worker would have taken it (the
summary's ``cancelled``), as the simulator skips it. A model that raises
answers ``error`` (the worker goes on); a worker that dies answers ``error`` for the check it ran,
is reported (log, the run summary's ``worker_failures``, a ``guardian_worker_failed`` decision row)
and, for a guardian worker of its own, started again up to `MAX_RESTARTS` times
(``guardian_worker_restarted``); while no worker hosts the guardian its checks (the queued ones
too) answer ``error`` at once. All of them then follow the guardian's ``on_error`` in the core. A
guardian a plan names that is not declared answers ``unavailable``. No check ever waits longer
than its timeout.

A clean end of the run (`LiveDriver.drain`, `LiveDriver.close` with status ``finished``) waits
for the checks still in flight (`settle`), so an async check's verdict, or its ``timeout``,
reaches the request's row instead of leaving it ``pending``.

What happens after a verdict that reaches an answered request (a late block) is in
`controlplane.live.guardian_verdicts` (the client's side) and `controlplane.verdict_after_reply`
(the row's, the simulator's too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.guardian_checks import add_answers_share, retracted
from controlplane.guardian_config import GuardiansConfig, GuardianSpec
from controlplane.hardware.cost import add_guardian_cost
from controlplane.live.guardian_models import GuardianWorkerSettings
from controlplane.live.guardian_queue import GuardianQueue, Host, NoHost, QueuedCheck, RequestLeft
from controlplane.live.guardian_verdicts import GuardianLedger, LateVerdicts
from controlplane.live.pool import WorkerPool
from controlplane.live.worker_messages import GuardianCheck, GuardianVerdict, LoadGuardian, WorkerLost, describe_error
from controlplane.types import Decision, RequestStatus

__all__ = ["CHECK_CANCELLED", "GUARDIAN_UNAVAILABLE", "LIVE_KINDS", "MAX_RESTARTS", "LiveGuardians"]

log = logging.getLogger(__name__)

#: The verdict fed back for checks by a guardian the config does not declare.
GUARDIAN_UNAVAILABLE = "unavailable"
#: The verdict fed back for a queued check whose request left before a worker took it (it never ran).
CHECK_CANCELLED = "cancelled"
#: How many times a guardian worker of its own is started again after it died.
MAX_RESTARTS = 3
LIVE_KINDS = ("rules", "classifier", "causal-lm")


@dataclass
class _Stats:
    checks: int = 0
    checks_input: int = 0  # of which prompts (the rest: answers)
    checks_output: int = 0
    timeouts: int = 0
    errors: int = 0
    cancelled: int = 0  # queued checks whose request left before a worker took them: never run
    busy_s: float = 0.0  # the workers' own time on checks (any device)
    checks_run: int = 0  # checks a worker ran to their end (timed out while running included): busy_s over these
    gpu_seconds: float = 0.0  # of which on a GPU
    worker_failures: int = 0
    restarts: int = 0


@dataclass
class _Guardian:
    spec: GuardianSpec
    hosts: dict[str, Host] = field(default_factory=dict)  # live workers that host it
    stats: _Stats = field(default_factory=_Stats)
    queue: GuardianQueue = field(default_factory=GuardianQueue)  # its checks no worker took yet
    trouble: str | None = None  # why no worker hosts it (the last failure or load error)
    seen: dict[str, Host] = field(default_factory=dict)  # every worker that hosted it
    clocks: dict[str, float] = field(default_factory=dict)  # its own workers on a GPU: held since
    held_gpu_s: float = 0.0  # GPU-seconds its own workers on a GPU held, from their start to their stop

    def add(self, wid: str, facts: dict[str, Any] | None = None) -> None:
        self.hosts[wid] = self.seen[wid] = Host(wid, facts=facts)


class LiveGuardians:
    """Declared guardians, their workers in the pool, and their stats (one per driver)."""

    def __init__(self, config: GuardiansConfig, pool: WorkerPool, *, live: dict[str, Any],
                 feed: Callable[[Any], None], now_s: Callable[[], float]) -> None:
        self.config = config
        self.pool = pool
        self.guardians = {s.name: _Guardian(s) for s in config.models}
        self.ledger = GuardianLedger()  # an observer plugin of the run: finished requests, late blocks
        self.late = LateVerdicts(self.ledger, live)
        self._feed = feed
        self._now_s = now_s
        self._owner: dict[str, tuple[str, int, int]] = {}  # own worker id -> (guardian, replica, restarts)
        self._tasks: set[asyncio.Task] = set()
        self._checking: set[asyncio.Task] = set()  # checks in flight (of `_tasks`)
        self.blocks_after_reply = 0  # answers served, then retracted by an async check's block
        self._closing = False
        self._warned = False
        self._session: Any = None
        self._expected = 1  # workers the pool expects (its CPU threads are shared among them)

    def __contains__(self, name: str) -> bool:
        return name in self.guardians

    @property
    def declared(self) -> bool:
        return bool(self.guardians)

    # --- workers ------------------------------------------------------------------------------

    async def start(self, generation_workers: int = 1) -> None:
        """Start the guardian workers of their own (``placement: own``); a guardian that cannot
        start fails the run with the error naming its key."""
        for g in self.guardians.values():
            if g.spec.kind not in LIVE_KINDS:
                raise ValueError(f"guardians.models[{g.spec.name}]: kind {g.spec.kind!r} runs only in the simulator; "
                                 "live guardians are rules, classifier or causal-lm")
        own = [(g, i) for g in self.guardians.values() if g.spec.placement == "own" for i in range(g.spec.replicas)]
        self._expected = generation_workers + len(own)
        results = await asyncio.gather(*(self._start_own(g, i, 0) for g, i in own), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise errors[0]

    async def _start_own(self, g: _Guardian, replica: int, restarts: int) -> None:
        wid = f"guardian-{g.spec.name}-{replica}" + (f"-r{restarts}" if restarts else "")
        self._owner[wid] = (g.spec.name, replica, restarts)
        asked_s = self._now_s()  # a worker holds its GPU from its start, as a generation replica
        try:
            facts = await self.pool.start(wid, GuardianWorkerSettings.of(g.spec), expected_workers=self._expected)
        except Exception as exc:
            self._owner.pop(wid, None)
            with contextlib.suppress(Exception):
                await self.pool.stop(wid)  # whatever the pool kept of it
            why = str(exc).removeprefix("ValueError: ")
            g.trouble = f"its worker {wid} did not start: {why}"
            raise ValueError(why if why.startswith("guardians.models[") else
                             f"guardians.models[{g.spec.name}]: {g.trouble}") from None
        if self._closing:
            await self.pool.stop(wid)
            return
        g.add(wid, facts)
        if str((facts or {}).get("device", "")).startswith("cuda"):
            g.clocks[wid] = asked_s
        log.info("guardian %s: worker %s ready on %s", g.spec.name, wid, facts.get("device"))
        self._dispatch(g)  # a worker started again takes the checks queued meanwhile

    def worker_failed(self, wid: str, reason: str) -> bool:
        """The pool reported a dead worker. True when it was a guardian's own (handled here: its
        checks answered ``error``, it is started again); for a generation worker, the guardians
        it hosted stop using it and the driver goes on."""
        owner = self._owner.pop(wid, None)
        if owner is None:
            self.unhost(wid, reason)
            return False
        name, replica, restarts = owner
        g = self.guardians[name]
        g.hosts.pop(wid, None)
        self._stop_clock(g, wid)
        g.stats.worker_failures += 1
        g.trouble = f"guardian worker {wid} failed: {reason}"
        self._lost_host(g)
        self._record("guardian_worker_failed", wid, reason, {"guardian": name, "restarts": restarts})
        self._spawn(self._replace(g, wid, replica, restarts))
        return True

    async def _replace(self, g: _Guardian, wid: str, replica: int, restarts: int) -> None:
        with contextlib.suppress(Exception):
            await self.pool.stop(wid)
        if self._closing:
            return
        if restarts >= MAX_RESTARTS:
            log.error("guardian %s: worker %s failed %d times; not started again (%s)", g.spec.name, wid,
                      restarts + 1, g.trouble)
            return
        log.warning("guardian %s: %s; starting it again", g.spec.name, g.trouble)
        try:
            await self._start_own(g, replica, restarts + 1)
        except ValueError as exc:
            log.error("guardian %s: could not start its worker again: %s", g.spec.name, exc)
            return
        g.stats.restarts += 1
        new = f"guardian-{g.spec.name}-{replica}-r{restarts + 1}"
        self._record("guardian_worker_restarted", new, f"in place of {wid}", {"guardian": g.spec.name, "replaces": wid})

    async def host(self, wid: str) -> None:
        """Load the shared guardians into a generation worker that just started (before it is ready)."""
        for g in self.guardians.values():
            if g.spec.placement != "shared" or self._closing:
                continue
            try:
                loaded = await self.pool.command(wid, LoadGuardian(g.spec))
            except Exception as exc:  # the worker died meanwhile: the pool reports it
                log.warning("guardian %s: could not load on %s: %s", g.spec.name, wid, exc)
                continue
            if loaded.error:
                g.trouble = f"could not load on {wid}: {loaded.error}"
                log.error("guardian %s: %s", g.spec.name, g.trouble)
                self._record("guardian_load_failed", wid, loaded.error, {"guardian": g.spec.name})
                continue
            g.add(wid)
            self._dispatch(g)

    def unhost(self, wid: str, reason: str = "stopped") -> None:
        """A generation worker stopped or died: shared guardians stop sending it checks."""
        for g in self.guardians.values():
            if g.spec.placement == "shared" and g.hosts.pop(wid, None) is not None:
                g.trouble = f"its worker {wid} left: {reason}"
                self._lost_host(g)

    def _lost_host(self, g: _Guardian) -> None:
        """A worker stopped hosting ``g``: with none left, its queued checks answer ``error`` now."""
        if not g.hosts:
            g.queue.fail_all(f"no worker hosts guardian {g.spec.name} ({g.trouble})")

    # --- checks -------------------------------------------------------------------------------

    def run(self, a: act.RunGuardian) -> None:
        """The driver's ``RunGuardian`` handler."""
        r = a.request
        if a.guardian in self.guardians:
            self._checking.add(self._spawn(self._check_and_feed(a, r.prompt if a.stage == "input" else r.output_text)))
            return
        if not self._warned:
            self._warned = True
            log.warning("guardian %r asked for, but guardians.models does not declare it: verdict %r",
                        a.guardian, GUARDIAN_UNAVAILABLE)
        asyncio.get_running_loop().call_soon(lambda: self._feed(ev.GuardianFinished(
            self._now_s(), r.request_id, GUARDIAN_UNAVAILABLE, a.guardian, None, "not declared in guardians.models",
            a.stage)))

    async def _check_and_feed(self, a: act.RunGuardian, text: str | None) -> None:
        verdict, score, reason = await self.check(a.guardian, text, a.stage, left=lambda: _left(a.request))
        r = a.request
        served_unblocked = not retracted(r)
        self._feed(ev.GuardianFinished(self._now_s(), r.request_id, verdict, a.guardian, score, reason, a.stage))
        if served_unblocked and retracted(r):  # the core decided at once: answered, now blocked
            self.blocks_after_reply += 1
        self.late.after_verdict(r)

    async def check(self, name: str, text: str | None, stage: str = "output",
                    left: Callable[[], str | None] | None = None) -> tuple[str, float | None, str]:
        """(verdict, score, reason) of guardian ``name`` on ``text`` (a prompt, stage ``input``, or an
        answer), from one of its workers; ``cancelled`` when ``left`` (how its request left the system, None while
        it is there) says it left before a worker took the check (`RequestLeft`)."""
        g = self.guardians[name]
        stats = g.stats
        stats.checks += 1
        if stage == "input":
            stats.checks_input += 1
        else:
            stats.checks_output += 1
        if text is None:
            stats.errors += 1
            return "error", None, "no text to check (the request was given as token ids)"
        if not g.hosts:
            stats.errors += 1
            return "error", None, f"no worker hosts guardian {name} ({g.trouble or 'none started'})"
        job = g.queue.add(text, left)
        self._dispatch(g)
        try:
            # Shielded: a check that times out while a worker runs it runs to its end (`_run_on`).
            v: GuardianVerdict = await asyncio.wait_for(asyncio.shield(job.answer), g.spec.timeout_s)
        except TimeoutError:
            stats.timeouts += 1
            g.queue.give_up(job, g.spec.timeout_s)  # still queued: it leaves the queue, never to run
            return "timeout", None, f"no verdict within {g.spec.timeout_s:g} s"
        except asyncio.CancelledError:
            g.queue.give_up(job, asyncio.get_running_loop().time() - job.asked_s)
            raise
        except RequestLeft as exc:
            stats.cancelled += 1
            return CHECK_CANCELLED, None, str(exc)
        except NoHost as exc:
            stats.errors += 1
            return "error", None, str(exc)
        except WorkerLost as exc:
            stats.errors += 1
            return "error", None, f"its worker {job.host.worker_id if job.host else '?'} was lost: {exc}"
        except Exception as exc:  # anything else a pool raises: this check answers "error"
            stats.errors += 1
            log.warning("guardian %s failed on %s: %s", name, job.host.worker_id if job.host else "?", exc)
            return "error", None, describe_error(exc)
        if v.verdict not in ("pass", "block"):
            stats.errors += 1
        return v.verdict, v.score, v.reason

    def _dispatch(self, g: _Guardian) -> None:
        """Give ``g``'s queued checks to its free workers, one each."""
        if self._closing:
            return
        while (taken := g.queue.next_for(g.hosts)) is not None:
            self._spawn(self._run_on(g, *taken))

    async def _run_on(self, g: _Guardian, job: QueuedCheck, host: Host) -> None:
        """Run one check on the worker that took it; its time counts whether or not its asker
        still waits (a timed-out check's verdict is dropped). Then the worker takes the next."""
        try:
            v = await self.pool.command(host.worker_id, GuardianCheck(g.spec.name, job.text))
        except asyncio.CancelledError:  # the run closes
            if not job.answer.done():
                job.answer.cancel()
            raise
        except Exception as exc:
            if not job.answer.done() and not job.abandoned:
                job.answer.set_exception(exc)
        else:
            self._count_busy(g, host, v)
            if not job.answer.done() and not job.abandoned:
                job.answer.set_result(v)
        finally:
            host.inflight = 0
            self._dispatch(g)

    @staticmethod
    def _count_busy(g: _Guardian, host: Host, v: GuardianVerdict) -> None:
        host.busy_s += v.busy_s
        g.stats.busy_s += v.busy_s
        g.stats.checks_run += 1
        if v.device.startswith("cuda"):
            g.stats.gpu_seconds += v.busy_s

    # --- the end --------------------------------------------------------------------------------

    @property
    def checks_in_flight(self) -> int:
        return len(self._checking)

    async def settle(self, timeout_s: float | None = None) -> bool:
        """Wait until no check is in flight (the checks their verdicts start too: a cascade's next
        tier); True when none is left. Each check ends within its guardian's ``timeout_s`` (then
        ``timeout``, fed to the core like any verdict), so this ends by itself; ``timeout_s`` bounds
        the whole wait, and a round in which no check ends within the longest guardian timeout
        (plus a second) gives up."""
        loop = asyncio.get_running_loop()
        end = None if timeout_s is None else loop.time() + timeout_s
        longest = max((g.spec.timeout_s for g in self.guardians.values()), default=0.0) + 1.0
        while self._checking:
            left = longest if end is None else end - loop.time()
            if left <= 0:
                return False
            done, _ = await asyncio.wait(set(self._checking), timeout=min(left, longest),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done and left > longest:
                log.error("%d guardian checks still running %.0f s after their timeout; not waited for",
                          len(self._checking), longest)
                return False
        return True

    def worker_listing(self, pool: WorkerPool) -> list[dict[str, Any]]:
        """``GET /admin/workers``: every guardian worker of its own (``role: guardian``), live or
        gone, with its guardian, checks, checks in flight (0 or 1: the one it runs, timed out or not),
        the guardian's checks queued for a free worker and busy seconds."""
        out = []
        for name, g in self.guardians.items():
            if g.spec.placement != "own":
                continue
            for wid, h in g.seen.items():
                alive = wid in g.hosts and pool.alive(wid)
                out.append({"worker_id": wid, "role": "guardian", "guardian": name, "kind": g.spec.kind,
                            "model": g.spec.model, "state": "ready" if alive else "stopped",
                            "checks": h.checks, "inflight": h.inflight, "queued": len(g.queue),
                            "busy_s": round(h.busy_s, 6),
                            "alive": alive, **pool.info(wid), "facts": h.facts})
        return out

    def hosted(self, wid: str) -> list[dict[str, Any]]:
        """The shared guardians a generation worker hosts (or hosted), with its checks and busy seconds."""
        return [{"guardian": name, "checks": h.checks, "inflight": h.inflight, "queued": len(g.queue),
                 "busy_s": round(h.busy_s, 6)}
                for name, g in self.guardians.items() if g.spec.placement == "shared"
                for h in (g.seen.get(wid),) if h is not None]

    def summary(self) -> dict[str, Any]:
        """Per guardian: its workers (with the checks each took), checks (and by stage), timeouts,
        errors, ``cancelled`` (queued checks whose request left before a worker took them), busy and GPU seconds, worker failures and restarts, ``checks_run`` (checks a worker
        ran to their end), ``mean_check_s`` (``busy_s`` over those: a worker's time per check, what
        the simulator's ``latency.base_s`` prices) and ``mean_wait_s`` (the time a check waited in
        the guardian's queue until a worker took it, or its whole ``timeout_s`` when none did, as
        the simulator's); plus the run's
        ``guardian_gpu_seconds``, ``guardian_busy_s`` and ``guardian_blocks_after_reply`` (as the
        simulator's)."""
        per = {}
        for name, g in self.guardians.items():
            s = g.stats
            per[name] = {"placement": g.spec.placement, "workers": {w: h.checks for w, h in g.seen.items()}, **vars(s),
                         "busy_s": round(s.busy_s, 6), "gpu_seconds": round(s.gpu_seconds, 6),
                         "held_gpu_seconds": round(g.held_gpu_s, 6),
                         "mean_check_s": round(s.busy_s / s.checks_run, 6) if s.checks_run else None,
                         "mean_wait_s": g.queue.mean_wait_s}
        return {"guardian_gpu_seconds": round(sum(g.stats.gpu_seconds for g in self.guardians.values()), 6),
                "guardian_busy_s": round(sum(g.stats.busy_s for g in self.guardians.values()), 6),
                "guardian_blocks_after_reply": self.blocks_after_reply, "guardians": per}

    def attach(self, session: Any) -> None:
        """The run's session (its core), for the decision rows of guardian workers' failures."""
        self._session = session

    def _record(self, action: str, wid: str, reason: str, payload: dict[str, Any]) -> None:
        """A decision row on the run's event bus (recorder, Prometheus), as the core's own."""
        core = self._session.core if self._session is not None else None
        if core is not None and not self._closing:
            core.calls.emit(Decision(self._now_s(), "core", "guardian-pool", action, wid, reason, payload))

    async def close(self) -> None:
        """Stop the guardian workers of their own (checks still running answer ``error``)."""
        self._closing = True
        for t in list(self._tasks):
            t.cancel()
        for wid in list(self._owner):
            self._owner.pop(wid, None)
            with contextlib.suppress(Exception):
                await self.pool.stop(wid)
        for g in self.guardians.values():
            g.hosts.clear()
            for wid in list(g.clocks):
                self._stop_clock(g, wid)

    def _stop_clock(self, g: _Guardian, wid: str) -> None:
        since = g.clocks.pop(wid, None)
        if since is not None:
            g.held_gpu_s += max(0.0, self._now_s() - since)

    def add_to(self, summary: dict[str, Any], cluster: Any) -> None:
        """Add the guardians' numbers and the price of the GPUs their own workers held (one each,
        on a CUDA device, at the guardian's ``gpu``, else the first served model's, priced by
        ``cluster.gpu_prices``) to a run's ``summary``. Shared guardians hold nothing of their
        own: their GPU time is the generation workers'."""
        summary.update(self.summary())
        core = getattr(self._session, "core", None)  # its blocks after the reply no check delivered (known verdicts)
        summary["guardian_blocks_after_reply"] += getattr(core, "known_blocks_after_reply", 0)
        add_answers_share(summary)
        held: dict[str, float] = {}
        for g in self.guardians.values():
            gpu = g.spec.gpu or (cluster.models[0].gpu if cluster.models else "a100-80gb")
            held[gpu] = held.get(gpu, 0.0) + g.held_gpu_s
        add_guardian_cost(summary, held, cluster.gpu_prices)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._checking.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("guardian task failed", exc_info=task.exception())


def _left(r: Any) -> str | None:
    """How request ``r`` left the system, its checks dropped by the core (cancelled, failed, rejected); None while
    it is there or once answered (an async check's verdict still goes to its row)."""
    status = r.status
    return status.value if status in _GONE else None


_GONE = (RequestStatus.CANCELLED, RequestStatus.FAILED, RequestStatus.REJECTED)
