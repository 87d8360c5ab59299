"""The settings of the SLO-driven planner (`plugins.autoscaling_slo.SLOPlanner`), one field per knob with its
default and meaning; docs/configuration.md lists them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from controlplane import PluginSettings

__all__ = ["SLOPlannerSettings"]


class SLOPlannerSettings(PluginSettings):
    """`slo-planner`'s settings (`SLOPlanner.Settings`): the SLO targets and headroom, the forecast, the
    bursts and backlog, the holds, the steady-load rules, the request shape and cost, and the bounds."""

    ttft_s: float | None = Field(None, gt=0)  # TTFT target (None: the run's slo.ttft_s)
    tpot_s: float | None = Field(None, gt=0)  # TPOT target (None: the run's slo.tpot_s)
    ttft_headroom: float = Field(0.5, gt=0, le=1)  # plan a replica's expected TTFT at this share of the target
    tpot_headroom: float = Field(0.78, gt=0, le=1)  # plan its iteration time at this share of the TPOT target
    target_utilization: float = Field(0.9, gt=0, le=1)  # run replicas at this share of their capacity
    bucket_s: float = Field(30.0, gt=0)  # arrival-rate bucket of the forecast
    alpha: float = Field(0.5, gt=0, le=1)  # Holt level smoothing
    beta: float = Field(0.2, ge=0, le=1)  # Holt trend smoothing
    forecast_quantile: float = Field(0.9, gt=0, lt=1)  # upper bound: this quantile of forecast errors
    residual_buckets: int = Field(60, ge=3)  # forecast errors (buckets) the bound is taken over
    forecast_band: Literal["holt", "sqrt"] = "holt"  # how the bound widens with the steps ahead
    band_errors: Literal["absolute", "signed"] = "absolute"  # the bound's quantile of |error|, or of the signed
    # error (arrivals above the forecast; an over-forecast does not widen the upper bound)
    steady_capacity_from: Literal["mean_shape", "request_costs", "cost_ratio"] | None = "request_costs"  # on a steady
    # load (steady_cv), size a replica this way instead of capacity_from (None: capacity_from throughout): the
    # window's cost-equivalent prompt itself, once arrivals are steady enough for a window to be their mean
    first_band: Literal["point", "poisson"] = "poisson"  # the bound's error before 3 buckets' errors: the point
    # forecast itself (upper = 2 x point and more), or a Poisson count's at forecast_quantile
    horizon_s: float | None = Field(None, ge=0)  # how far ahead to plan (None: cold start + lead_s)
    lead_s: float = Field(10.0, ge=0)  # added to the cold start for the horizon
    peak_memory_s: float = Field(120.0, ge=0)  # also plan for the highest bucket rate this recent
    burst_windows_s: list[float] = Field(default_factory=lambda: [5.0, 10.0])  # arrival-curve windows ([]: off)
    burst_memory_s: float = Field(60.0, gt=0)  # ... over the arrivals of this recent past
    burst_bin_s: float = Field(1.0, gt=0)  # arrivals are counted in bins this long
    burst_model: Literal["rate", "slots"] = "rate"  # a burst served by a constant-rate server within the delay
    # ("rate"), or ("slots") by batch slots each held the capacity's T = concurrency / rate: a burst shorter than T
    # asks for what it adds to the slots the mean load holds (plugins/autoscaling_burst_slots.py)
    backlog_drain_s: float = Field(20.0, gt=0)  # extra replicas to clear the queue within this
    queue_age_share: float = Field(0.25, ge=0)  # a request queued this share of the TTFT slack: a replica more
    scale_down_delay_s: float = Field(300.0, ge=0)  # keep a count wanted within this (at most; recurrence_*)
    recurrence_margin: float | None = Field(1.0, gt=0)  # keep a count this x the longest gap after which it
    # was wanted again, when shorter than scale_down_delay_s (None: always the whole delay)
    recurrence_min_gaps: int = Field(1, ge=1)  # ... once this many such returns were seen
    recurrence_rearm: bool = True  # release a learned count between its episodes and start it again
    # recurrence_rearm_lead horizons before its soonest return, when it would be off longer than a cold start
    recurrence_rearm_lead: float = Field(2.0, ge=1)
    recurrence_min_gap_s: float | None = Field(None, ge=0)  # a return sooner is the same episode (None: the
    # horizon, cold start + lead_s)
    onset_hazard: float | None = Field(None, gt=0, le=1)  # the re-arm by a forecast of each count's return: once
    # onset_min_gaps gaps were seen, a count is released wherever the share of its past gaps longer than the time
    # since it was last wanted that ended within recurrence_rearm_lead horizons more is below this (None: off;
    # no effect without recurrence_rearm and recurrence_margin)
    onset_min_gaps: int = Field(3, ge=1)  # ... fewer gaps seen: the re-arm as without it
    onset_min_later: int = Field(1, ge=1)  # ... and where fewer of its gaps outlasted the time since the want,
    # keep it (the chance there would rest on too few gaps)
    onset_prior: float = Field(0.0, ge=0)  # ... its chance shrunk toward a memoryless one (exponential gaps of
    # the same mean) with this weight in gaps: few gaps are weak evidence of a pattern (0: the gaps alone)
    first_bucket_min_s: float | None = Field(5.0, gt=0)  # the rate now over at least this, until the first
    # bucket closes (None: half a bucket, as always after it)
    steady_cv: float | None = Field(0.25, ge=0)  # a steady load: the last steady_buckets' arrival counts
    # vary at most this much more than Poisson's (excess CV); then run the steady_quantile of the counts wanted
    # over steady_window_s instead of holding each one wanted (None: off)
    steady_buckets: int = Field(10, ge=3)
    steady_quantile: float = Field(0.95, gt=0, le=1)
    steady_window_s: float | None = Field(None, gt=0)  # None: scale_down_delay_s
    startup_release: Literal["off", "steady", "quantile"] = "off"  # the start-up's counts: "off" keeps every
    # count up to scale_down_delay_s after the last scale-up, start-up ones included; "steady": once the load is
    # called steady the wants' quantile may give up counts raised before it was (the steady mode's no-scale-down
    # rule counts only scale-ups made on a steady load); "quantile": that, and before the load can be called
    # steady (its first steady_buckets) the planner runs the steady_quantile of the wants so far, not every count
    # held for the delay
    steady_target_utilization: float | None = Field(None, gt=0, le=1)  # on a steady load, run replicas at this
    # share of their capacity instead of target_utilization (None: target_utilization throughout)
    hold_unit: Literal["replicas", "rate", "rate_window"] = "replicas"  # what a count the hold keeps stands for:
    # the replicas wanted; or the rate they were wanted for (count x one replica's planned rate then), served by
    # the replicas that rate needs at the capacity now ("rate") or at the mean capacity of the ticks of the last
    # scale_down_delay_s ("rate_window"), never more than the count (on a load not called steady)
    miss_budget: float | None = Field(None, gt=0, lt=1)  # the share of requests the SLO lets miss: while the run's
    # finished requests leave spare = this x finished - misses, the hold may give up floor(spare / (miss_budget_risk
    # x one replica's rate x the horizon)) replicas below the count it keeps (None: off; on a load not called steady)
    miss_budget_risk: float = Field(1.0, gt=0, le=1)  # ... the share of a released replica's rate over the horizon
    # charged to the budget (1: the worst case, every request it would have served while a replacement starts late)
    miss_budget_charge: Literal["fixed", "onsets"] = "fixed"  # "onsets": the share charged is what the run's own
    # onsets cost (misses arrived within an onset's horizon over the worst case of the replicas it was short), at
    # least miss_budget_risk; the worst case until miss_budget_min_onsets onsets have settled
    miss_budget_min_onsets: int = Field(3, ge=1)
    miss_budget_releases: Literal["over", "any", "gaps"] = "over"  # "over": the release gives up only counts whose
    # episode is over (none wanted within the horizon); "any": below any count the hold keeps (the 2026-12-05
    # round's); "gaps": as "over", and not counts whose soonest recorded gap ends within recurrence_rearm_lead
    # horizons and a cold start (such a count given up earlier is started again), as the re-arm's release
    miss_budget_reserve: float = Field(0.0, ge=0, lt=1)  # the share of the allowance never spent: spare =
    # (1 - this) x miss_budget x finished - misses
    miss_budget_backlog_renews: bool = True  # False: a tick whose want rose only through the backlog into the counts
    # the budget released does not renew their hold (the hold records the want without the queue, or the count the
    # release left); the replica is still started
    miss_budget_release_queued: bool = True  # False: while requests are queued the budget takes no replica that is up
    # down (those it released before stay released)
    steady_queue_at_once: bool = False  # on a steady load, backlog replicas still start at once (False: only
    # through the wants' quantile)
    backlog_outlives_cold_start: bool = True  # backlog replicas only if the queue outlasts a cold start
    work_unit: Literal["requests", "tokens"] = "requests"  # what the forecast and burst curve count:
    # requests, or prompt tokens (a heavy-tailed prompt weighs what it costs), sized per replica at the mean prompt
    queueing_credit: bool = False  # a rate averaged over L seconds needs only rate x L / (L + D) (D: the
    # queueing the TTFT target leaves), never less than the point forecast (False: plan the rates as seen)
    prefill_chunk_tokens: int | None = Field(None, ge=1)  # prefill per iteration (None: Sarathi's chunk, else
    # the deployment's max_batch_tokens)
    default_prompt_tokens: float = Field(1024.0, gt=0)  # request shape before any request finished
    default_output_tokens: float = Field(128.0, gt=0)
    shape_smoothing: float = Field(0.02, gt=0, le=1)  # EWMA weight of each finished request's shape
    shape_window_s: float | None = Field(None, gt=0)  # instead: the mean shape of the requests finished in
    # this many seconds (at least the last shape_min_requests): a ratio estimate a flood of finishes cannot swing
    shape_min_requests: int = Field(50, ge=1)
    shape_copies: Literal["each", "once"] = "each"  # "once": a finished request whose prompt and output tokens
    # equal those of one finished within shape_copies_window_s is left out of the shape estimate (the copies of a
    # replicated trace, --rate-scale > 1, carry no new information on the mean shape); "each": every finish counts
    shape_copies_window_s: float = Field(60.0, gt=0)
    arrival_prompt_smoothing: float | None = Field(None, gt=0, le=1)  # the shape's mean prompt as an EWMA of
    # the arriving requests' prompts with this weight (known at arrival: a burst of long prompts counts as it
    # arrives, and a burst's last finishers do not move it while nothing arrives) instead of the finished ones'
    # (None: the finished requests' shape_smoothing / shape_window_s mean); the output stays the finished ones'
    capacity_from: Literal["mean_shape", "request_costs", "cost_ratio"] = "cost_ratio"  # size a replica
    # for the mean prompt; or for the prompt whose prefill price (iteration_s) is the mean price of the prompts
    # that arrived in request_cost_window_s (at least shape_min_requests): each request charged what it costs
    # on average; or ("cost_ratio") for the mean prompt times that prompt over the window's mean prompt: the
    # shape estimate's level, the window's convexity
    request_cost_window_s: float = Field(300.0, gt=0)
    prefill_queue: Literal["off", "steady", "always"] = "off"  # a replica's capacity also keeps the mean wait of
    # its prefill queue (M/G/1 with Poisson arrivals; the prefills' price spread E[S²]/E[S]² from the arrivals of
    # prefill_queue_window_s) within the TTFT headroom: while the load is steady (steady_cv), or always
    prefill_queue_window_s: float | None = Field(900.0, gt=0)  # ... (None: request_cost_window_s)
    steady_rate: Literal["forecast", "window"] = "forecast"  # on a steady load, plan for the forecast band, the
    # rate now, the recent peak and the burst rate ("forecast"), or ("window") for the steady_buckets' mean
    # rate plus forecast_quantile's z standard errors of it: the arrivals are Poisson there, and the prefill
    # queue's wait (prefill_queue) already prices their randomness
    long_prefill_miss_budget: float | None = Field(None, ge=0, lt=1)  # a replica's capacity also keeps the
    # share of requests that miss TPOT decoding beside long prefills' chunks (each chunk priced at its context,
    # from the prompts of prefill_queue_window_s) within this (None: off; needs an iteration estimate that takes
    # the prefill context, see controlplane.scaling.IterationEstimate)
    initial_capacity_rps: float = Field(1.0, gt=0)  # without an iteration estimate: start here, then learn
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(64, ge=1)
    scale_to_zero: bool = False  # zero replicas after scale_to_zero_grace_s without any load (needs min_replicas 0)
    scale_to_zero_grace_s: float = Field(300.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self):
        if any(w <= 0 for w in self.burst_windows_s):
            raise ValueError(f"burst_windows_s must be positive seconds, got {self.burst_windows_s}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        if self.min_replicas == 0 and not self.scale_to_zero:
            raise ValueError("min_replicas 0 needs scale_to_zero: true")
        if self.scale_to_zero and self.min_replicas > 0:  # (it ran 0 replicas below its min_replicas: 3 -> 0)
            raise ValueError("scale_to_zero needs min_replicas: 0")
        return self
