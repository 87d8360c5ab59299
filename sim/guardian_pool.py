"""Simulated guardian replicas: checks that cost GPU-seconds and wait when guardians are saturated.

Each guardian declared in ``guardians.models`` gets ``replicas`` simulated replicas and one FIFO
queue. An idle replica takes up to ``latency.max_batch`` queued checks (the checks asked at one
instant are queued before it takes any, so they batch together) and runs them as one
batch of ``latency.base_s + latency.per_token_s * tokens`` seconds (tokens checked: the prompt
for an input check, prompt + answer for an output check), which costs that time times
``gpus_per_replica`` in GPU-seconds (busy). The replicas are held from the run's start to its
end, like a fixed fleet: ``held_by_gpu`` is what the run pays for them. A check still unanswered ``timeout_s`` after it was asked
answers ``timeout`` (a queued one leaves the queue). A guardian's ``mean_wait_s`` is the mean
time its checks waited in its queue: until a replica took them, or, for those that never ran,
until their timeout. A queued check whose request left the system meanwhile (cancelled, failed) is skipped
when a replica would take it: it never runs and answers ``cancelled`` (the summary's ``cancelled``), as live.
Verdicts come from `sim.guardian_labels`:
score at or above the guardian's ``threshold`` blocks. The summary counts each guardian's checks by
stage (``checks_input``, ``checks_output``) and the answers a verdict delivered here retracted
after their reply (``guardian_blocks_after_reply``: the core decides a verdict as it is delivered).

A run stopped at its ``--until`` (`cut_off`) leaves no answered request's check without a verdict:
each still waiting or running answers ``timeout`` at the cutoff, with the reason saying so, and goes
through the guardian's ``on_error`` as any timeout (so the request's row is not left ``pending`` in a
finished run); the summary counts them (``guardian_checks_cut_off``, and per guardian ``cut_off``).
Checks of requests still in the system at the cutoff stay with them (their rows are ``in_flight``).

A guardian whose ``latency`` sets neither ``base_s`` nor ``per_token_s`` is priced at the default
(20 ms a batch), which says nothing of what the real guardian takes (a causal-LM judge measured
0.39 s a check live): the run warns once (`UncalibratedLatencyWarning`, a ``warning:`` line of
``sim replay``) and its summary names them (``guardian_latency_uncalibrated``); docs/guardians.md
says how to set it from a live run's ``mean_check_s``.

A guardian a plan names but the config does not declare runs as the old fixed delay
(``sim.guardian_latency_s``, no capacity limit, no GPU cost) with a perfect verdict (the label),
when ``guardians.models`` declares none. When it declares some, an undeclared name is most likely a
misspelling: its checks answer ``unavailable`` at once, as live (`controlplane.live.guardian_pool`),
and the first one is warned about, whichever plugin's plan named it.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane import actions as act
from controlplane.config import RunConfig
from controlplane.guardian_checks import add_answers_share, retracted
from controlplane.guardian_config import GuardianSpec
from controlplane.hardware.cost import add_guardian_cost
from controlplane.types import RequestStatus
from sim.guardian_labels import LabelModel

_GONE = (RequestStatus.CANCELLED, RequestStatus.FAILED, RequestStatus.REJECTED)  # left: the core dropped its checks

__all__ = ["SimGuardianPool", "UncalibratedLatencyWarning"]


class UncalibratedLatencyWarning(UserWarning):
    """Declared guardians priced at the default latency. ``one_line``: the command line shows it as
    one ``warning:`` line (`controlplane.cli.shown_warnings`)."""

    one_line = True

#: deliver(request id, verdict, guardian, score, reason, stage)
Deliver = Callable[[str, str, str, "float | None", "str | None", str], None]


@dataclass(slots=True, eq=False)
class _Check:
    request: Any
    guardian: str
    stage: str
    asked_s: float
    tokens: int
    done: bool = False
    started: bool = False  # taken into a batch (its wait ended then)
    fixed: tuple | None = None  # an undeclared guardian's (verdict, score) after a fixed delay


class _Guardian:
    __slots__ = ("spec", "queue", "idle", "busy_s", "gpu_s", "num_checks", "num_timeouts", "wait_s", "num_batches",
                 "kick", "num_input", "num_cut_off", "num_cancelled")

    def __init__(self, spec: GuardianSpec) -> None:
        self.spec = spec
        self.queue: deque[_Check] = deque()
        self.idle = spec.replicas
        self.busy_s = self.gpu_s = self.wait_s = 0.0
        self.num_checks = self.num_timeouts = self.num_batches = self.num_input = self.num_cut_off = 0
        self.num_cancelled = 0  # queued checks whose request left before a replica took them: never run
        self.kick = False  # a dispatch is due at the end of this instant


#: The built-in response caches: they key answers on the prompt's text (and parameters), and on the tenant unless
#: their ``shared_across_tenants`` is true.
RESPONSE_CACHES = ("exact-cache", "semantic-cache", "trace-hit-model")


def caches_shared_across_tenants(config: RunConfig) -> list[str]:
    """The enabled response caches that serve one tenant's answers to another: those with
    ``shared_across_tenants: true``. By default each keeps a tenant's answers to that tenant (`tenant_scope`),
    so an answer that passed one tenant's checks never reaches another."""
    settings = config.plugins.settings
    return [n for n in config.plugins.enabled
            if n in RESPONSE_CACHES and (settings.get(n) or {}).get("shared_across_tenants") is True]


class SimGuardianPool:
    def __init__(self, config: RunConfig, *, seed: int, after: Callable[[float, Callable[[Any], None], Any], Any],
                 now: Callable[[], float], deliver: Deliver) -> None:
        self.labels = LabelModel(config.sim.guardian_block_rate, config.sim.guardian_tenant_block_rates, seed)
        caches = caches_shared_across_tenants(config) if config.sim.guardian_tenant_block_rates else []
        if caches:  # (by default a tenant is served only its own answers: nothing to warn of)
            logging.getLogger(__name__).warning(
                "sim.guardian_tenant_block_rates makes a prompt harmful for one tenant and not another, and %s "
                "shares answers across tenants (shared_across_tenants: true): an answer that passed one tenant's "
                "checks is served to another unchecked (see docs/guardians.md)", " and ".join(caches))
        self.default_latency_s = config.sim.guardian_latency_s
        self.guardians = {g.name: _Guardian(g) for g in config.guardians.models}
        default = [(i, g) for i, g in enumerate(config.guardians.models) if not g.latency_calibrated]
        self.uncalibrated = [g.name for _, g in default]
        if default:  # (keys as config errors name them: a command line's warning line reads [..] as markup)
            keys = ", ".join(f"guardians.models.{i}.latency ({g.name})" for i, g in default)
            warnings.warn(UncalibratedLatencyWarning(
                f"{keys}: the default, so the simulator prices each batch of checks at {default[0][1].latency.base_s:g} "
                "s, whatever the guardian really takes; set latency.base_s from a live run's "
                "guardians.NAME.mean_check_s (docs/guardians.md, Calibrating a guardian's latency)"), stacklevel=2)
        models = config.cluster.models
        self.default_gpu = models[0].gpu if models else "a100-80gb"  # for a guardian that names no `gpu`
        self.prices = config.cluster.gpu_prices
        self._after, self._now, self._send = after, now, deliver
        self.num_undeclared = 0
        self._warned_undeclared = False
        self.num_pending = 0  # checks asked and not answered yet (the run waits for them)
        self._open: dict[_Check, None] = {}  # those checks, in the order asked (`cut_off`)
        self.num_cut_off = 0  # checks the run's --until answered `timeout` (`cut_off`)
        self.num_blocks_after_reply = 0  # answers served, then retracted by an async check's block

    def _deliver(self, r: Any, verdict: str, guardian: str, score: float | None, reason: str | None,
                 stage: str) -> None:
        self.num_pending -= 1
        served_unblocked = not retracted(r)
        self._send(r.request_id, verdict, guardian, score, reason, stage)  # the core decides at once
        if served_unblocked and retracted(r):
            self.num_blocks_after_reply += 1

    def submit(self, a: act.RunGuardian) -> None:
        g = self.guardians.get(a.guardian)
        r = a.request
        self.num_pending += 1
        if g is None:
            self.num_undeclared += 1
            if self.guardians:  # others are declared: as live, never a made-up verdict for free
                self._unavailable(a)
                return
            harmful = self.labels.is_harmful(r)
            check = _Check(r, a.guardian, a.stage, self._now(), 0, fixed=("block" if harmful else "pass",
                                                                             1.0 if harmful else 0.0))
            self._open[check] = None
            self._after(self.default_latency_s, self._fixed_done, check)
            return
        tokens = r.prompt_tokens + (r.output_tokens if a.stage == "output" else 0)
        check = _Check(r, a.guardian, a.stage, self._now(), tokens)
        self._open[check] = None
        g.num_checks += 1
        g.num_input += a.stage == "input"
        g.queue.append(check)
        self._after(g.spec.timeout_s, self._timeout, check)
        if g.idle and not g.kick:  # dispatch once the instant's checks are all queued: they batch together
            g.kick = True
            self._after(0.0, self._kicked, g)

    def _unavailable(self, a: act.RunGuardian) -> None:
        """A check by a guardian ``guardians.models`` does not declare, while it declares others: ``unavailable``."""
        if not self._warned_undeclared:
            self._warned_undeclared = True
            logging.getLogger(__name__).warning(
                "guardian %r asked for by a plan, but guardians.models does not declare it (declared: %s): its "
                "checks answer 'unavailable', as live (see docs/guardians.md)", a.guardian, ", ".join(self.guardians))
        check = _Check(a.request, a.guardian, a.stage, self._now(), 0, fixed=("unavailable", None))
        self._open[check] = None
        self._after(0.0, self._fixed_done, check)

    def _kicked(self, timer: Any) -> None:
        g = timer._value
        g.kick = False
        self._dispatch(g)

    def _fixed_done(self, timer: Any) -> None:
        c: _Check = timer._value
        if c.done:
            return  # cut off at the run's end
        c.done = True
        del self._open[c]
        verdict, score = c.fixed
        reason = "not declared in guardians.models" if verdict == "unavailable" else \
            f"simulated label: {'harmful' if verdict == 'block' else 'benign'}"
        self._deliver(c.request, verdict, c.guardian, score, reason, c.stage)

    def _dispatch(self, g: _Guardian) -> None:
        lat = g.spec.latency
        while g.idle and g.queue:
            batch: list[_Check] = []
            while g.queue and len(batch) < lat.max_batch:
                c = g.queue.popleft()
                if c.done:
                    continue
                if c.request.status in _GONE:  # its request left (cancelled, failed): the check never runs
                    self._cancelled(g, c)
                    continue
                batch.append(c)
            if not batch:
                return
            now = self._now()
            seconds = lat.base_s + lat.per_token_s * sum(c.tokens for c in batch)
            g.idle -= 1
            g.busy_s += seconds
            g.gpu_s += seconds * g.spec.gpus_per_replica
            g.num_batches += 1
            for c in batch:
                c.started = True
                g.wait_s += now - c.asked_s
            self._after(seconds, self._batch_done, (g, batch))

    def _cancelled(self, g: _Guardian, c: _Check) -> None:
        """A queued check whose request left the system: it leaves the queue, never run (its wait counts until
        now), and answers ``cancelled`` (the core has dropped the request's checks: a decision row says it)."""
        c.done = True
        del self._open[c]
        g.num_cancelled += 1
        g.wait_s += self._now() - c.asked_s
        self._deliver(c.request, "cancelled", c.guardian, None,
                      f"not run: its request left ({c.request.status.value}) before a replica took it", c.stage)

    def _batch_done(self, timer: Any) -> None:
        g, batch = timer._value
        g.idle += 1
        spec = g.spec
        for c in batch:
            if c.done:
                continue  # timed out meanwhile: its verdict came too late
            c.done = True
            del self._open[c]
            score = self.labels.score(spec.name, c.stage, c.request, spec.quality.separation, spec.quality.noise)
            verdict = "block" if score >= spec.threshold else "pass"
            self._deliver(c.request, verdict, spec.name, round(score, 6),
                          f"score {score:.3f} {'>=' if verdict == 'block' else '<'} {spec.threshold}", c.stage)
        self._dispatch(g)

    def _timeout(self, timer: Any) -> None:
        c: _Check = timer._value
        if c.done:
            return
        c.done = True  # a queued check is skipped by the next dispatch; a running one's verdict is dropped
        del self._open[c]
        g = self.guardians[c.guardian]
        g.num_timeouts += 1
        if not c.started:  # it waited in the queue all along: its wait counts, until the timeout
            g.wait_s += g.spec.timeout_s
        self._deliver(c.request, "timeout", c.guardian, None,
                      f"no verdict within {g.spec.timeout_s:g} s", c.stage)

    def cut_off(self, until_s: float) -> int:
        """The run stopped at its ``--until`` (``until_s``): every check of an answered request still
        without a verdict (queued, running, or a fixed delay's) answers ``timeout`` now, its reason
        saying why, and goes through its guardian's ``on_error`` in the core as any timeout: no
        completed row is left ``pending`` in a finished run (a cascade's next tier, started by such a
        verdict, is cut off too). Checks of requests still in the system stay. Returns how many."""
        n = 0
        while due := [c for c in self._open if c.request.status is RequestStatus.COMPLETED]:
            for c in due:
                c.done = True  # a queued one is skipped, a running one's verdict dropped, a timer ignored
                del self._open[c]
                g = self.guardians.get(c.guardian)
                if g is not None:
                    g.num_cut_off += 1
                    if not c.started:  # it waited in the queue until the run's end
                        g.wait_s += self._now() - c.asked_s
                n += 1
                self._deliver(c.request, "timeout", c.guardian, None,
                              f"no verdict by the run's end (--until {until_s:g} s)", c.stage)
        self.num_cut_off += n
        return n

    def add_to(self, summary: dict[str, Any], known_blocks_after_reply: int = 0) -> None:
        """Add the guardians' numbers and cost to a run's ``summary`` (which has ``sim_end_s``); with
        no guardian declared, only the checks cut off at ``--until``, when there were some.
        ``known_blocks_after_reply``: the core's blocks after the reply that no check delivered (a
        known verdict), counted in ``guardian_blocks_after_reply`` with the pool's."""
        if not self.guardians:
            if self.num_cut_off:
                summary["guardian_checks_cut_off"] = self.num_cut_off
            return
        end = summary["sim_end_s"]
        summary.update(self.summary(end))
        summary["guardian_blocks_after_reply"] += known_blocks_after_reply
        add_answers_share(summary)
        add_guardian_cost(summary, self.held_by_gpu(end, self.default_gpu), self.prices)

    def held_by_gpu(self, end_s: float, default_gpu: str) -> dict[str, float]:
        """GPU-seconds the guardians' replicas held over a run that ended at ``end_s`` (they are
        up from its start to its end, idle or not), by GPU type (a guardian's ``gpu``, else
        ``default_gpu``): what they cost, as a served model's replicas cost what they hold."""
        held: dict[str, float] = {}
        for g in self.guardians.values():
            gpu = g.spec.gpu or default_gpu
            held[gpu] = held.get(gpu, 0.0) + self._held(g, end_s)
        return held

    @staticmethod
    def _held(g: _Guardian, end_s: float) -> float:
        return g.spec.replicas * g.spec.gpus_per_replica * max(0.0, end_s)

    def summary(self, end_s: float = 0.0) -> dict[str, Any]:
        """GPU-seconds and queueing per guardian, for the run's summary (``gpu_seconds``: busy,
        ``held_gpu_seconds``: its replicas over the run, to ``end_s``)."""
        per = {
            name: {"checks": g.num_checks, "checks_input": g.num_input, "checks_output": g.num_checks - g.num_input,
                   "batches": g.num_batches, "timeouts": g.num_timeouts, "cut_off": g.num_cut_off,
                   "cancelled": g.num_cancelled,
                   "gpu_seconds": round(g.gpu_s, 6), "held_gpu_seconds": round(self._held(g, end_s), 6),
                   "busy_s": round(g.busy_s, 6),
                   "mean_wait_s": round(g.wait_s / g.num_checks, 6) if g.num_checks else None}
            for name, g in self.guardians.items()
        }
        return {"guardian_gpu_seconds": round(sum(g.gpu_s for g in self.guardians.values()), 6),
                "guardian_busy_s": round(sum(g.busy_s for g in self.guardians.values()), 6),
                "guardian_blocks_after_reply": self.num_blocks_after_reply,
                "guardian_checks_cut_off": self.num_cut_off, "guardians": per,
                **({"guardian_latency_uncalibrated": self.uncalibrated} if self.uncalibrated else {})}
