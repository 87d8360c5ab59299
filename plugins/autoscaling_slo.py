"""An SLO-driven predictive planner: forecast each model's arrivals over the cold-start horizon and
run the fewest replicas that keep TTFT and TPOT within the run's SLO at that load, and at the rate
the last seconds' bursts need (`BurstCurve`: every burst served within the TTFT left after prefill).
A count it no longer wants is kept for the scale-down delay, or for as long as the run has seen that
count come back after a gap, if shorter (`RecurrenceHold`).

Capacity per replica comes from the run's latency model (`ScalingContext.iteration_s`: the
simulator binds its latency models; see `replica_capacity`), for the mean prompt and output of
the requests the model has served, or (`capacity_from: request_costs`) charging each request the
prefill of the prompt whose price is the mean price of the prompts that arrived recently
(`RequestCosts`). Without an iteration estimate (live without a profile) the
planner learns the rate one replica sustains from what it observes: it raises the estimate when
replicas carried more within the SLO and lowers it when the window missed the SLO.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from controlplane import Plugin, hookimpl
from controlplane.decisions import ScaleDecision
from controlplane.events import RequestArrived, RequestFinished
from controlplane.scaling import takes_prefill_context
from controlplane.types import RequestStatus

from .autoscaling_budget import backlog_record, episode_count, gap_guard, meets_targets
from .autoscaling_burst_slots import slot_burst_rate
from .autoscaling_chunks import LongPrefillTPOT
from .autoscaling_forecast import Capacity, normal_abs_quantile, replica_capacity
from .autoscaling_slo_settings import SLOPlannerSettings
from .autoscaling_slo_state import ModelState, prices_arrivals


class SLOPlanner(Plugin):
    """Fewest replicas that keep TTFT and TPOT targets through the cold start, from a rate forecast."""

    name = "slo-planner"

    Settings = SLOPlannerSettings

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._models: dict[str, ModelState] = {}

    def _state(self, model: str) -> ModelState:
        st = self._models.get(model)
        if st is None:
            st = self._models[model] = ModelState(self.settings)
        return st

    @hookimpl
    def cp_on_event(self, ctx, event):
        kind = type(event)
        if kind is RequestArrived:
            tokens = self.settings.work_unit == "tokens"
            costs = prices_arrivals(self.settings)
            arrived = self.settings.arrival_prompt_smoothing
            if self.settings.burst_windows_s or tokens or costs or arrived:
                d = ctx.config.cluster.deployment(event.request.model)
                if d is not None:
                    st = self._state(d.name)
                    if arrived:  # a plain mean for the first ones, as the finished requests' EWMA
                        p, w = event.request.prompt_tokens, max(arrived, 1.0 / (st.num_arrived + 1))
                        st.num_arrived += 1
                        st.arrived_prompt = p if st.arrived_prompt is None else (1 - w) * st.arrived_prompt + w * p
                    if costs:
                        st.costs.add(event.time_s, event.request.prompt_tokens)
                    work = float(max(1, event.request.prompt_tokens)) if tokens else 1.0
                    st.tick_work += work
                    if st.bursts is not None:
                        st.bursts.add(event.time_s, work)
            return
        if kind is RequestFinished and self.settings.miss_budget is not None:  # the SLO's miss budget: every finish
            d = ctx.config.cluster.deployment(event.request.model)  # a request turned away may carry no model
            if d is not None:
                r = event.request
                self._state(d.name).budget.add(meets_targets(r, *self._targets(ctx)), r.arrival_s)
        if kind is not RequestFinished or event.request.status is not RequestStatus.COMPLETED:
            return
        r = event.request
        st = self._state(r.model)
        if st.shapes_seen is not None and st.shapes_seen.seen(event.time_s, r.prompt_tokens, r.output_tokens):
            return  # shape_copies "once": a copy of a recent finish tells nothing new about the mean shape
        w = max(self.settings.shape_smoothing, 1.0 / (st.num_seen + 1))  # a plain mean for the first ones
        st.num_seen += 1
        st.prompt = r.prompt_tokens if st.prompt is None else (1 - w) * st.prompt + w * r.prompt_tokens
        out = max(1, r.output_tokens)
        st.output = out if st.output is None else (1 - w) * st.output + w * out
        if self.settings.long_prefill_miss_budget is not None:
            st.outputs.append(out)
        if self.settings.shape_window_s is not None:  # the windowed ratio estimate replaces the EWMA
            t, fin, sums = event.time_s, st.finished, st.finished_sums
            fin.append((t, r.prompt_tokens, out))
            sums[0] += r.prompt_tokens
            sums[1] += out
            while len(fin) > self.settings.shape_min_requests and t - fin[0][0] > self.settings.shape_window_s:
                _, p0, o0 = fin.popleft()
                sums[0] -= p0
                sums[1] -= o0
            st.prompt, st.output = sums[0] / len(fin), sums[1] / len(fin)

    # --- the pieces of a decision ------------------------------------------------------------

    def _shape(self, st: ModelState, scaling) -> tuple[float, float]:
        if st.prompt is not None:
            if st.arrived_prompt is not None and self.settings.arrival_prompt_smoothing:
                return st.arrived_prompt, st.output
            return st.prompt, st.output
        waiting = [r for w in scaling.workers for r in (*w.waiting, *w.running)]
        if waiting:
            return (sum(r.prompt_tokens for r in waiting) / len(waiting),
                    sum(max(1, r.max_output_tokens) for r in waiting) / len(waiting))
        return self.settings.default_prompt_tokens, self.settings.default_output_tokens

    def _capacity(self, ctx, st: ModelState, scaling, prompt: float, output: float,
                  work: float | None = None, spread: float | None = None,
                  long_prompts: list[tuple[float, int]] | None = None,
                  outputs: tuple[int, ...] | None = None) -> Capacity | None:
        """Requests per second one replica sustains within the targets (None: no iteration estimate)."""
        if scaling.iteration_s is None:
            return None
        s = self.settings
        d = ctx.config.cluster.deployment(scaling.model)
        ttft, tpot = self._targets(ctx)
        chunk = self._prefill_chunk(ctx, d)
        kv = next((w.num_kv_blocks * w.kv_block_size for w in scaling.workers if w.has_kv_budget), None)
        key = (round(math.log(prompt) * 20), round(math.log(output) * 20), kv,  # ~5% shape steps
               None if work is None else round(math.log(max(1.0, work)) * 20),
               None if spread is None else round(math.log(spread) * 20),
               None if long_prompts is None else tuple(long_prompts), outputs)
        if st.capacity_key != key:
            tpot_miss = None
            if long_prompts is not None:  # the chunk prices of this shape (its decodes' context and output)
                shape = (key[0], key[1], chunk)
                if st.long_prefills_key != shape:
                    st.long_prefills = LongPrefillTPOT(scaling.iteration_s, chunk_tokens=chunk,
                                                       decode_context=int(prompt + output / 2), tpot_s=tpot)
                    st.long_prefills_key = shape
                lp = st.long_prefills
                lp.set_outputs(outputs)
                tpot_miss = functools.partial(lp.miss_share, prompts=long_prompts)
            st.capacity = replica_capacity(
                st.estimate.bound(scaling.iteration_s), prompt_tokens=prompt, output_tokens=output, tpot_s=tpot * s.tpot_headroom,
                ttft_s=ttft * s.ttft_headroom, max_num_seqs=d.max_num_seqs, kv_tokens=kv, chunk_tokens=chunk,
                prefill_tokens=work, price_moment_ratio=spread, tpot_miss=tpot_miss,
                tpot_miss_budget=s.long_prefill_miss_budget or 0.0)
            st.capacity_key = key
        return st.capacity

    @staticmethod
    def _output_quantiles(st: ModelState, output: float, bins: int = 16) -> tuple[int, ...]:
        """The recent outputs as ``bins`` equally likely values (the midpoints of equal-probability bins of the
        last 256 finished, on a ~5% grid); the mean shape's output until ``bins`` finished."""
        if len(st.outputs) < bins:
            return (max(1, round(output)),)
        q = np.quantile(np.asarray(st.outputs, dtype=float), (np.arange(bins) + 0.5) / bins)
        return tuple(max(1, round(math.exp(round(math.log(max(1.0, v)) * 20) / 20))) for v in q)

    @staticmethod
    def _chunk_context(st: ModelState, scaling) -> bool:
        """Whether the bound iteration estimate prices a chunk's prefill context (asked once per estimate)."""
        est = scaling.iteration_s
        if est is None:
            return False
        if st.chunk_context is None or st.chunk_context[0] is not est:
            st.chunk_context = (est, takes_prefill_context(est))
        return st.chunk_context[1]

    def _prefill_chunk(self, ctx, d) -> int:
        """Prefill tokens per iteration: the setting, else the run's Sarathi chunk (`continuous-batching`
        with `policy: sarathi`), else the deployment's `max_batch_tokens`."""
        if self.settings.prefill_chunk_tokens:
            return self.settings.prefill_chunk_tokens
        plugins = ctx.config.plugins
        batching = plugins.settings.get("continuous-batching") or {}
        if "continuous-batching" in plugins.enabled and batching.get("policy") == "sarathi":
            return int(batching.get("chunk_size", 512))
        return d.max_batch_tokens

    def _targets(self, ctx) -> tuple[float, float]:
        s = self.settings
        return s.ttft_s or ctx.config.slo.ttft_s, s.tpot_s or ctx.config.slo.tpot_s

    def _learn(self, ctx, st: ModelState, scaling) -> float:
        """Without a latency model: the rate per replica, raised to what replicas carried within the
        SLO, lowered below it when the window missed the SLO while they carried load. A tick without
        arrivals is no evidence: the window's old misses, seen again at each idle tick, lowered the rate
        by 5% a tick (live: 1.0 to the 0.05 floor in a minute of quiet, so the planner wanted its
        maximum for the next burst)."""
        ttft_t, tpot_t = self._targets(ctx)
        if scaling.num_ready and scaling.num_recent >= 10:
            carried = scaling.arrivals_per_s / scaling.num_ready
            ttft = scaling.latency_percentile("ttft", 90) or 0.0
            tpot = scaling.latency_percentile("tpot", 90) or 0.0
            rate = st.learned_rate
            if (ttft > ttft_t or tpot > tpot_t) and carried:
                st.learned_rate = max(0.05, min(st.learned_rate, 0.9 * carried))
            elif carried > st.learned_rate and scaling.num_queued <= scaling.num_ready:
                st.learned_rate = carried
            st.rate_learned = st.rate_learned or st.learned_rate != rate
        return st.learned_rate

    @staticmethod
    def _hold_note(what: str, count: int, ago: float, hold: float, learned: bool) -> str:
        why = "the longest gap before it was wanted again" if learned else "the scale-down delay"
        return f"{what} {count}: wanted {ago:.0f}s ago, kept {hold:.0f}s: {why}"

    def _release_note(self, st: ModelState, count: int, ago: float, idle_s: float | None, horizon: float,
                      cold: float, lead: float) -> str:
        """Why ``count``, last wanted ``ago`` seconds ago, is given up: scale-to-zero (``idle_s`` without load), its
        hold run out, the re-arm's release between its episodes, or else (within its hold) the miss budget."""
        s = self.settings
        if idle_s is not None:
            return f"released {count}: scale to zero, no load for {idle_s:.0f}s (grace {s.scale_to_zero_grace_s:g}s)"
        hold, learned = st.hold.hold_s(count)
        if ago > hold:
            return self._hold_note("released", count, ago, hold, learned)
        within = f"released {count}: wanted {ago:.0f}s ago, within its {hold:.0f}s hold"
        rearm = s.recurrence_rearm and s.recurrence_margin is not None
        if rearm and any(a < ago < b for a, b in st.hold.off_windows(count, horizon, cold)):
            gaps = st.hold.gaps[count]
            return within + (f" but its episode over: the re-arm starts it {lead:.0f}s before its soonest return "
                             f"({min(gaps):.0f}s after a want)" if st.hold.onset_hazard is None or len(gaps) <
                             st.hold.onset_min_gaps else " but its episode over: the onset forecast's release")
        return within

    def _onset_note(self, st: ModelState, signals: dict, count: int, ago: float, lead: float) -> str:
        """What the onset forecast (`onset_hazard`) saw for ``count`` wanted ``ago`` seconds ago, also
        stored as the ``onset_hazard`` signal; empty when it is off or has seen too few gaps."""
        s = self.settings
        seen = st.hold.hazard(count, ago, lead) if s.recurrence_rearm and s.recurrence_margin is not None else None
        if seen is None:  # off (the forecast refines the re-arm), or too few gaps
            return ""
        hazard, soon, later = seen
        signals["onset_hazard"] = round(hazard, 4)
        side = ">=" if hazard >= s.onset_hazard else "<"
        prior = f" with {s.onset_prior:g} memoryless gaps of their mean" if s.onset_prior else ""
        return (f", onset forecast: of its {len(st.hold.gaps[count])} gaps {later} outlasted {ago:.0f}s and {soon} "
                f"of those ended within {lead:.0f}s more ({hazard:.2f}{prior} {side} {s.onset_hazard:g})")

    # --- the decision ------------------------------------------------------------------------

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        s = self.settings
        now = scaling.now_s
        st = self._state(model)
        tick_s = ctx.config.control.tick_s
        tokens = s.work_unit == "tokens"
        st.forecaster.add(now, st.tick_work if tokens else scaling.arrivals_per_s * tick_s)
        st.tick_work = 0.0
        prompt, output = self._shape(st, scaling)
        unit = prompt if tokens else 1.0  # the forecast's and burst curve's work per request of the mean shape
        estimate_error = work = spread = long_prompts = outputs = None
        cv = st.forecaster.excess_cv(s.steady_buckets) if s.steady_cv is not None else None
        poisson = cv is not None and cv <= s.steady_cv  # the arrivals vary as Poisson's (the steady rule's test)
        charge = s.capacity_from  # a steady load may be charged its own way (steady_capacity_from)
        if s.steady_capacity_from is not None and poisson:
            charge = s.steady_capacity_from
        try:
            if st.costs is not None and scaling.iteration_s is not None and charge != "mean_shape":
                price = scaling.iteration_s  # the prompt of the mean prefill price
                work = st.costs.effective_prompt(now, lambda p: price(int(round(p)), 0, 0))
                if work is not None and charge == "cost_ratio":  # the window's Jensen gap on the shape
                    work = prompt * work / st.costs.mean_prompt()
            queue = s.prefill_queue == "always" or (s.prefill_queue == "steady" and poisson)
            if queue and st.costs is not None and scaling.iteration_s is not None:
                price = scaling.iteration_s
                if st.costs.mean_cost(now, lambda p: price(int(round(p)), 0, 0)) is not None:
                    spread = st.costs.price_moment_ratio()
            if s.long_prefill_miss_budget is not None and st.costs is not None and self._chunk_context(st, scaling):
                price = scaling.iteration_s
                if st.costs.mean_cost(now, lambda p: price(int(round(p)), 0, 0)) is not None:
                    long_prompts = st.costs.spread_prompts()
                    outputs = self._output_quantiles(st, output)
            capacity = self._capacity(ctx, st, scaling, prompt, output, work, spread, long_prompts, outputs)
        except Exception as exc:  # noqa: BLE001 - a latency model that cannot answer: learn instead
            capacity, estimate_error = None, f"{type(exc).__name__}: {exc}"
            st.capacity_key = None
        if capacity is not None:
            per_replica = capacity.rate_per_s if capacity.rate_per_s > 0 else 1.0 / max(
                1e-9, capacity.ttft_s + output * capacity.iteration_s)
        else:
            per_replica = self._learn(ctx, st, scaling)
        cold = scaling.cold_start_s or 0.0
        horizon = s.horizon_s if s.horizon_s is not None else cold + s.lead_s
        point, upper = (r / unit for r in st.forecaster.forecast(horizon))  # in requests of the mean shape
        now_rate = st.forecaster.partial_rate(now, s.first_bucket_min_s) / unit
        recent_peak = st.forecaster.recent_max(s.peak_memory_s) / unit
        ttft_t, _ = self._targets(ctx)
        prefill_s = capacity.ttft_s if capacity is not None and capacity.concurrency else 0.0
        delay = max(0.1 * ttft_t, ttft_t - prefill_s)  # the queueing the TTFT target leaves after the prefill
        burst_rate = burst_len = burst_n = 0.0
        hold_s = None  # burst_model "slots": how long a request holds a batch slot (Little's law at the capacity)
        if s.burst_model == "slots" and capacity is not None and capacity.rate_per_s > 0 and capacity.concurrency:
            hold_s = capacity.concurrency / capacity.rate_per_s
        if st.bursts is not None:  # what a burst of the memory needs: served within that delay
            if hold_s is not None:
                b = st.bursts
                burst_rate, burst_len, burst_n = slot_burst_rate(b.counts(now), b.bin_s, s.burst_memory_s, delay, hold_s,
                                                                 s.burst_windows_s)
            else:
                burst_rate, burst_len, burst_n = st.bursts.rate(now, delay)
            burst_rate, burst_n = burst_rate / unit, burst_n / unit
        upper_plan, now_plan, peak_plan = upper, now_rate, recent_peak
        if s.queueing_credit:  # each is a rate over a window: its arrivals may wait D (the burst rate's bound)
            bucket, now_len = st.forecaster.bucket_s, st.forecaster.partial_length(now)
            upper_plan = max(point, upper * bucket / (bucket + delay))
            now_plan = now_rate * now_len / (now_len + delay)
            peak_plan = recent_peak * bucket / (bucket + delay)
        plan_rate = max(upper_plan, now_plan, peak_plan, burst_rate)
        window_mean = window_rate = None
        if s.steady_rate == "window" and poisson:  # Poisson arrivals: their mean
            recent = list(st.forecaster.history)[-s.steady_buckets:]
            window_mean = sum(recent) / len(recent) / unit
            seconds = len(recent) * st.forecaster.bucket_s
            window_rate = window_mean + normal_abs_quantile(s.forecast_quantile) * math.sqrt(window_mean / seconds)
            plan_rate = window_rate
        utilization = s.target_utilization  # on a steady load possibly its own (steady_target_utilization)
        if poisson and s.steady_target_utilization is not None:
            utilization = s.steady_target_utilization
        serve = per_replica * utilization
        needed = math.ceil(plan_rate / serve - 1e-9) if serve > 0 else s.max_replicas
        backlog = scaling.num_queued
        # the queue adds its drain rate to the plan before rounding (a request or two waiting for the next
        # iteration is not a replica's worth of load), within what the TTFT target lets it wait
        drain_rate = backlog / max(s.backlog_drain_s, delay)
        extra = (math.ceil((plan_rate + drain_rate) / serve - 1e-9) - needed) if serve > 0 and backlog else 0
        drains = None  # seconds the replicas up now take to clear the queue, when that beats a cold start
        oldest = max((now - r.arrival_s for w in scaling.workers for r in w.waiting), default=0.0)
        if backlog and serve > 0 and oldest > s.queue_age_share * delay:  # the queue eats the TTFT: act now
            extra = max(extra, math.ceil(backlog / (serve * s.backlog_drain_s)))
        if extra and s.backlog_outlives_cold_start and serve > 0:
            # a replica started now is ready after the cold start: no use if the replicas up or starting now drain the
            # queue before (a starting one counted as up: a rule of thumb, a scale-up in flight gets none on top of it)
            spare = serve * scaling.num_current - plan_rate
            if spare > 0 and backlog / spare <= cold:
                extra, drains = 0, backlog / spare
        busy = scaling.num_queued + scaling.num_running + scaling.arrivals_per_s > 0
        if busy:
            st.idle_since = None
        elif st.idle_since is None:
            st.idle_since = now
        idle_long = (s.scale_to_zero and st.idle_since is not None
                     and now - st.idle_since >= s.scale_to_zero_grace_s)
        floor = s.min_replicas if not s.scale_to_zero else (0 if idle_long else max(1, s.min_replicas))
        wanted = min(s.max_replicas, max(floor, needed + extra, 1 if busy else 0))
        unqueued = min(s.max_replicas, max(floor, needed, 1 if busy else 0))  # the want without the backlog
        if idle_long:  # no load for the grace period: whatever the forecast's error band says
            wanted = floor
        current = scaling.num_current
        min_gap = s.recurrence_min_gap_s if s.recurrence_min_gap_s is not None else horizon
        if not st.started:  # the replicas the run starts with count as wanted now: kept for the hold, not drained
            st.started = True
            st.hold.add(now, current, min_gap)
        st.steady.add(now, wanted)
        steady = cv is not None and cv <= s.steady_cv and not idle_long
        # startup_release "quantile": until the load can be called steady, the wants' quantile as well
        early = s.startup_release == "quantile" and s.steady_cv is not None and cv is None and not idle_long
        target = wanted
        held = rearmed = None
        as_rate = (lambda k: st.rate_hold.count(k, serve)) if st.rate_hold is not None else (lambda k: k)
        release = due = 0  # miss_budget: replicas the budget's spare lets the hold give up below its count
        if st.budget is not None:
            st.budget.tick(now, wanted, current, per_replica, horizon)
        if st.budget is not None and not (steady or early or idle_long):
            release, mode, base = st.budget.releasable(per_replica, horizon), s.miss_budget_releases, as_rate
            floor, due = gap_guard(st.hold, now, horizon, cold) if mode == "gaps" else (0, 0)
            if release:  # "over"/"gaps": never below a count wanted within the horizon (its episode not over)
                floor = episode_count(st.hold.last, now, horizon) if mode == "over" else floor
                as_rate = (lambda f: lambda k: max(f(k) - release, min(f(k), floor)))(as_rate)
                if backlog and not s.miss_budget_release_queued:  # none up now released into a queue
                    as_rate = (lambda f: lambda k: max(f(k), min(base(k), current)))(as_rate)
        if st.rate_hold is not None:  # hold_unit: what each count the hold records was wanted for, in req/s
            st.rate_hold.add(now, target if steady or early else wanted, serve)
        if steady or early:  # the window's quantile of the wants; a queue eating the TTFT still adds at once
            target = max(st.steady.target(now, current, floor, steady_ups_only=s.startup_release != "off"),
                         wanted if extra and s.steady_queue_at_once else 0)
            st.hold.add(now, target, min_gap)  # leaving the steady mode, the hold keeps what it ran
        else:
            kept_k = st.hold.held(now)[0] if release and not s.miss_budget_backlog_renews else 0
            st.hold.add(now, backlog_record(wanted, unqueued, kept_k, as_rate(kept_k)) if kept_k else wanted, min_gap)
            if s.recurrence_rearm and s.recurrence_margin is not None and not idle_long:
                kept = st.hold.kept(now, horizon, cold)
                if kept[4] and as_rate(kept[0]) > wanted:  # a released count's soonest return is a horizon away
                    rearmed, target = kept[:2], as_rate(kept[0])  # start it
                elif wanted < current:
                    held = kept[:4]
                    target = max(wanted, min(current, as_rate(held[0])))
            elif wanted < current and not (idle_long and wanted == 0):  # down only to what the hold still keeps
                held = st.hold.held(now)
                target = max(wanted, min(current, as_rate(held[0])))
            if due:  # miss_budget_releases "gaps": a count given up is started again ahead of its known return
                target = max(target, base(due))
        free = s.steady_cv is None or steady or early or idle_long or target >= current  # else: a scale-up's lock
        locked = None if free else st.steady.locked(now, cv is not None)  # (too early to tell, or a steady mode's)
        target = current if locked is not None else target
        err = st.forecaster.relative_error()
        confidence = min(1.0, st.forecaster.num_buckets / 10) * (1.0 / (1.0 + err) if err is not None else 0.5)
        signals = {"arrivals_per_s": round(now_rate, 4), "forecast_per_s": round(point, 4),
                   "forecast_upper_per_s": round(upper, 4), "recent_peak_per_s": round(recent_peak, 4),
                   "burst_per_s": round(burst_rate, 4),
                   "capacity_per_replica_per_s": round(per_replica, 4), "horizon_s": round(horizon, 2),
                   "prompt_tokens": round(prompt, 1), "output_tokens": round(output, 1),
                   "queued": float(backlog), "needed": float(needed), "backlog_replicas": float(extra)}
        if cv is not None:
            signals["excess_cv"] = round(cv, 4)
        if steady or early:
            signals["steady_want"] = float(st.steady.want())
        if idle_long:  # the override that decided (want 0 whatever `needed`, the plan's count, says)
            signals["scale_to_zero_idle_s"] = round(now - st.idle_since, 1)
        if utilization != s.target_utilization:
            signals["utilization"] = utilization
        if work is not None:
            signals["prefill_work_tokens"] = round(work, 1)
        if spread is not None:
            signals["price_moment_ratio"] = round(spread, 3)
        if capacity is not None and capacity.wait_s:
            signals["prefill_wait_s"] = round(capacity.wait_s, 3)
        if capacity is not None and long_prompts is not None:
            signals["long_prefill_miss_share"] = round(capacity.miss_share, 5)
        if window_rate is not None:
            signals["steady_mean_per_s"] = round(window_mean, 4)
            signals["steady_rate_per_s"] = round(window_rate, 4)
        if capacity is not None:
            signals["batch"] = float(capacity.concurrency)
            signals["iteration_s"] = round(capacity.iteration_s, 5)
        for kind in ("ttft", "tpot"):
            p = scaling.latency_percentile(kind, 90)
            if p is not None:
                signals[f"{kind}_p90_s"] = round(p, 4)
        if capacity is not None:
            charged = "" if work is None else (
                f", each charged a {work:.0f}-token prompt's prefill: the mean price of {len(st.costs)} arrived"
                + (f" at the mean prompt {prompt:.0f}" if charge == "cost_ratio" else ""))
            basis = (f"(batch {capacity.concurrency}, iteration {capacity.iteration_s * 1e3:.0f} ms, "
                     f"limit {capacity.limit}{charged})")
        else:
            basis = ("(learned from observed load" if st.rate_learned else "(starting value, not yet learned") + (
                f"; the latency model failed: {estimate_error})" if estimate_error else ")")
        how = f"1 replica serves {per_replica:.2f}/s within TTFT/TPOT targets {basis}"
        if capacity is not None and spread is not None:
            how += (f"; prefill queue: prices' E[S²]/E[S]² {spread:.1f}, mean wait {capacity.wait_s:.1f}s"
                    if capacity.concurrency else f"; prefill queue: prices' E[S²]/E[S]² {spread:.1f}")
        if capacity is not None and long_prompts is not None:
            how += f"; TPOT misses beside long prefills {capacity.miss_share:.2%} (budget {s.long_prefill_miss_budget:.2%})"
        elif s.long_prefill_miss_budget is not None and capacity is not None:
            how += "; long prefills not priced: the iteration estimate takes no prefill context"
        counted = f" counting {scaling.num_starting} starting as up" if scaling.num_starting else ""
        steady_plan = "" if window_rate is None else (
            f"steady: {s.steady_buckets} buckets' mean {window_mean:.2f} + its error {window_rate - window_mean:.2f}; ")
        reason = (f"slo-planner: plan {plan_rate:.2f} req/s ({steady_plan}forecast {point:.2f}, upper {upper:.2f} over "
                  f"{horizon:.0f}s, now {now_rate:.2f}, peak {recent_peak:.2f}, burst {burst_n:.0f} in {burst_len:g}s "
                  f"{burst_rate:.2f}" + (f" into slots held {hold_s:.1f}s" if hold_s is not None else "")
                  + f"); {how} at "
                  f"{utilization:.0%}; backlog {backlog} -> +{extra}"
                  + (f" (cleared in {drains:.0f}s{counted}, before a {cold:.0f}s cold start)"
                     if drains is not None else "")
                  + f"; want {wanted}, {current} -> {target}"
                  + (f" (steady load: arrivals {cv:.2f} over Poisson; {s.steady_quantile:.0%} of the wants of "
                     f"{st.steady.window_s:.0f}s {st.steady.want()})" if steady else "")
                  + (f" (start-up: {s.steady_quantile:.0%} of the wants so far {st.steady.want()})" if early else ""))
        st.steady.scaled(now, current, target, steady=steady)
        notes = []
        lead = s.recurrence_rearm_lead * horizon
        if target < current and current in st.hold.last and not (steady or early):  # released: why it was given up
            ago = now - st.hold.last[current]
            idle = now - st.idle_since if idle_long else None
            notes.append(self._release_note(st, current, ago, idle, horizon, cold, lead)
                         + ("" if idle_long else self._onset_note(st, signals, current, ago, lead)))
        if locked is not None:  # no scale-down within the delay of a scale-up (`SteadyWant.locked`)
            notes.append(f"kept {current}: scaled up {now - locked:.0f}s ago{' on a steady load' * (cv is not None)}")
        elif held is not None and target > wanted:  # kept above what it wants: which count and for how long
            notes.append(self._hold_note("held", *held) + self._onset_note(st, signals, held[0], held[1], lead)
                         + (f", {target} serve its rate now"
                            if st.rate_hold is not None and target < min(current, held[0]) else ""))
        if rearmed is not None and target > wanted:  # a released count started again ahead of its return
            k, ago = rearmed
            onset = self._onset_note(st, signals, k, ago, lead)
            notes.append(f"ahead {k}: wanted {ago:.0f}s ago, released, and back" + (onset or (
                f" within a horizon of its soonest return ({min(st.hold.gaps[k]):.0f}s)")))
        if st.budget is not None:
            signals["miss_budget_spare"] = round(st.budget.spare, 2)
            if release and target < max(held[0] if held else 0, rearmed[0] if rearmed else 0):
                b = st.budget
                notes.append(f"miss budget: {b.spare:.1f} of {b.budget * b.finished:.1f} allowed misses spare, up to "
                             f"{release} below the hold at {b.per_replica(per_replica, horizon):.1f} each ({b.share:.2f} of the worst)")
            if due and target > max(wanted, current):  # miss_budget_releases "gaps": a given-up count's return is near
                notes.append(f"miss budget: {due} started again, its soonest known return within {lead:.0f}s")
        if notes:
            reason += f" ({'; '.join(notes)})"
        return ScaleDecision(model, target, reason, confidence=round(confidence, 3), signals=signals)
