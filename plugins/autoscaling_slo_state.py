"""The SLO planner's state of one model (`ModelState`): its forecaster, burst curve, request-shape averages,
request costs, capacity cache, holds and miss budget; and its iteration estimate's answers, remembered
(`RememberedEstimate`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .autoscaling_budget import MissBudget
from .autoscaling_chunks import LongPrefillTPOT
from .autoscaling_copies import RecentShapes
from .autoscaling_cost import RequestCosts
from .autoscaling_forecast import BurstCurve, Capacity, RateForecaster
from .autoscaling_hold import RateHold, RecurrenceHold, SteadyWant

__all__ = ["ModelState", "RememberedEstimate", "prices_arrivals"]


def prices_arrivals(s) -> bool:
    """Whether the planner prices arriving requests: some charge of its capacity uses request costs, or the
    prefill queue (`prefill_queue`) their spread."""
    return (s.capacity_from != "mean_shape" or s.steady_capacity_from not in (None, "mean_shape")
            or s.prefill_queue != "off" or s.long_prefill_miss_budget is not None)


class ModelState:
    """One model's forecaster, request-shape averages, capacity cache and scale-down hold."""

    def __init__(self, s) -> None:
        self.forecaster = RateForecaster(s.bucket_s, s.alpha, s.beta, s.forecast_quantile, s.residual_buckets,
                                         s.forecast_band, s.first_band, s.band_errors)
        self.bursts = BurstCurve(s.burst_bin_s, s.burst_memory_s, tuple(s.burst_windows_s)) \
            if s.burst_windows_s else None
        self.prompt: float | None = None
        self.arrived_prompt: float | None = None  # arrival_prompt_smoothing's EWMA of arriving prompts
        self.num_arrived = 0
        self.output: float | None = None
        self.num_seen = 0
        self.finished: deque[tuple[float, int, int]] = deque()  # (time, prompt, output) for shape_window_s
        self.finished_sums = [0.0, 0.0]
        self.shapes_seen = RecentShapes(s.shape_copies_window_s) if s.shape_copies == "once" else None
        self.costs = RequestCosts(s.request_cost_window_s, s.shape_min_requests,
                                  spread_window_s=s.prefill_queue_window_s) if prices_arrivals(s) else None
        self.capacity: Capacity | None = None
        self.capacity_key: tuple | None = None
        self.long_prefills: LongPrefillTPOT | None = None  # long_prefill_miss_budget's chunk prices, per shape
        self.long_prefills_key: tuple | None = None
        self.estimate = RememberedEstimate()  # the iteration estimate as `replica_capacity` asks it
        self.chunk_context: tuple | None = None  # (the estimate asked, whether it takes a prefill context)
        self.outputs: deque[int] = deque(maxlen=256)  # the last finished requests' outputs (long_prefill_miss_budget)
        self.learned_rate: float = s.initial_capacity_rps
        self.rate_learned = False  # whether observed load moved `learned_rate` from initial_capacity_rps yet
        self.idle_since: float | None = None
        self.started = False  # whether the replicas the run started with were recorded as wanted (the first tick)
        self.tick_work = 0.0  # prompt tokens arrived since the last tick (work_unit: tokens)
        self.hold = RecurrenceHold(s.scale_down_delay_s, s.recurrence_margin, s.recurrence_min_gaps,
                                   rearm_lead=s.recurrence_rearm_lead, onset_hazard=s.onset_hazard,
                                   onset_min_gaps=s.onset_min_gaps, onset_prior=s.onset_prior,
                                   onset_min_later=s.onset_min_later)
        self.steady = SteadyWant(s.steady_window_s if s.steady_window_s is not None else s.scale_down_delay_s,
                                 s.steady_quantile, s.scale_down_delay_s)
        self.rate_hold = RateHold(s.scale_down_delay_s, s.hold_unit) if s.hold_unit != "replicas" else None
        self.budget = MissBudget(s.miss_budget, s.miss_budget_risk, s.miss_budget_charge, s.miss_budget_min_onsets,
                                 s.miss_budget_reserve) if s.miss_budget is not None else None


class RememberedEstimate:
    """The bound iteration estimate (`controlplane.scaling.IterationEstimate`), each batch it is asked about
    answered once: `replica_capacity` walks some 35 batch sizes at two shapes each whenever the request shape
    moves a step, and about half of what it asks it asked before. The estimate is a batch's expected duration,
    a function of its arguments; another estimate bound (a new object) starts afresh, and at most ``limit``
    answers are kept (all forgotten when full: bounded by the shapes asked, not by the run's length)."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self.limit = limit
        self._estimate: Callable[..., float] | None = None
        self._answers: dict[tuple, float] = {}

    def bound(self, estimate: Callable[..., float]) -> Callable[..., float]:
        """``estimate`` remembered (the one bound now: another one forgets the answers of the last)."""
        if estimate is not self._estimate:
            self._estimate = estimate
            self._answers.clear()
        return self._ask

    def _ask(self, *args: int) -> float:
        answers = self._answers
        t = answers.get(args)
        if t is None:
            if len(answers) >= self.limit:
                answers.clear()
            t = answers[args] = self._estimate(*args)
        return t
