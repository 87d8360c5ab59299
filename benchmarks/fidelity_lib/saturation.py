"""What differs near saturation: the capacity sweep's runs, live against simulated, point by point.

For every sweep point (after the fact; nothing here feeds a prediction):

* **Batching and pace** on each side: iterations, iterations per second and output tokens per second
  over the run's span (first arrival to last finish), the mean sequences per iteration, the share of
  prefill iterations, prompts per prefill and sequences per decode-only iteration; live also the
  busy fraction and mean iteration time, and the requests not completed (dropped, failed, timed
  out). The simulated side is the same arrivals on the same profile in the simulator's exact mode
  (one iteration per batch, `BatchLog` counts its batch decisions); its SLO value is reported next
  to the fast mode's, which the prediction used.
* **Per-iteration price**: the profile the point was simulated on, asked for the live run's own
  iterations (`attribution.iteration_error_pct`, `iteration_error_by_shape`), and the live backend's
  time over the generic grid model's (the machine's pace on that run).
* **Latency model vs scheduling** at the sweep's highest points (`ATTRIBUTION_POINTS`): the same
  arrivals simulated on a profile refitted on the run's own iterations (in-sample, as
  `Protocol.attribute` does for the evaluated rounds). If the simulator with the live worker's own
  iteration times still crosses where the live worker did not, the miss is the scheduling's
  (batching, queueing); if it follows the live worker, the latency model's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from controlplane.hookspecs import hookimpl
from controlplane.live.iteration_samples import IterationSample, with_handoffs
from controlplane.types import Decision
from fidelity_lib.attribution import iteration_error_by_shape, iteration_error_pct, refit_profile
from fidelity_lib.metrics import stats

#: The sweep's highest points (by rate) whose error is split into latency model and scheduling.
ATTRIBUTION_POINTS = 3


class BatchLog:
    """Observer plugin for a simulated run: every batch the core started, as (time, prefills, decodes, iterations)
    (the core's ``cp_form_batch`` "batch" decisions; in exact mode one iteration each)."""

    name = "fidelity-batch-log"

    def __init__(self) -> None:
        self.batches: list[tuple[float, int, int, int]] = []

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is Decision and event.action == "batch" and event.payload:
            p = event.payload
            self.batches.append((event.time_s, int(p["prefill"]), int(p["decode"]), int(p.get("iterations", 1))))


def _span(times: Sequence[Any]) -> float:
    done = [t for t in times if t.status == "completed" and t.finish_s is not None]
    if not done:
        return math.nan
    return max(t.finish_s for t in done) - min(t.arrival_s for t in done)


def _r(x: float, nd: int = 2) -> float | None:
    return round(x, nd) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def batching_summary(shapes: Sequence[tuple[int, int]], times: Sequence[Any], sent: int) -> dict[str, Any]:
    """Per side: ``shapes`` are the iterations' (prompts prefilled, sequences decoding), ``times`` the requests'
    `replay.RequestTimes`; rates are over the run's span (first arrival to last finish of completed requests)."""
    span = _span(times)
    done = [t for t in times if t.status == "completed"]
    prefills = [p for p, _ in shapes if p]
    decodes = [d for p, d in shapes if not p]
    return {
        "iterations": len(shapes),
        "span_s": _r(span, 3),
        "iterations_per_s": _r(len(shapes) / span if span > 0 else math.nan),
        "output_tokens_per_s": _r(sum(t.output_tokens for t in done) / span if span > 0 else math.nan),
        "mean_batch_seqs": _r(_mean([p + d for p, d in shapes])),
        "prefill_iteration_pct": _r(100 * len(prefills) / len(shapes) if shapes else math.nan, 1),
        "mean_prefill_prompts": _r(_mean(prefills)),
        "mean_decode_seqs": _r(_mean(decodes)),
        "completed": len(done),
        "not_completed": sent - len(done),
        "statuses": dict(Counter(t.status for t in times if t.status != "completed")),
    }


def live_summary(samples: Sequence[IterationSample], times: Sequence[Any], sent: int) -> dict[str, Any]:
    """`batching_summary` of a live run, with its busy fraction (iterations' effective time over the span) and
    mean iteration time."""
    timed = with_handoffs(samples)
    out = batching_summary([(int(s.row["num_prefill_seqs"]), int(s.row["num_decode_seqs"])) for s in timed],
                           times, sent)
    span = _span(times)
    busy = sum(s.effective_s for s in timed)
    out["busy_pct"] = _r(100 * busy / span if span > 0 else math.nan, 1)
    out["mean_iteration_ms"] = _r(1e3 * busy / len(timed) if timed else math.nan)
    return out


def sim_summary(log: BatchLog, times: Sequence[Any], sent: int) -> dict[str, Any]:
    """`batching_summary` of a simulated run from its batch decisions (exact mode: one iteration a batch)."""
    shapes = [(p, d) for _, p, d, n in log.batches for _ in range(max(n, 1))]
    return batching_summary(shapes, times, sent)


def attribution_points(rates: Sequence[float], k: int = ATTRIBUTION_POINTS) -> list[int]:
    """Indices of the ``k`` highest rates (the sweep's points nearest and past saturation), in rate order."""
    order = sorted(range(len(rates)), key=lambda i: rates[i])
    return sorted(order[-k:], key=lambda i: rates[i]) if k > 0 else []


def _latency(times: Sequence[Any]) -> dict[str, float | None]:
    s = stats(times)
    return {"e2e_p50_ms": _r(1e3 * s["e2e"][50], 1), "e2e_p90_ms": _r(1e3 * s["e2e"][90], 1),
            "ttft_p50_ms": _r(1e3 * s["ttft"][50], 1)}


def analyse_sweep(proto: Any, sweep: Sequence[Any], slo: Any, k: int = ATTRIBUTION_POINTS) -> list[dict[str, Any]]:
    """Every sweep point's comparison (module doc). ``proto``: the running `protocol.Protocol` (its simulator,
    grid and temporary directory); ``sweep``: its `SweepPoint` list."""
    from fidelity_lib.replay import observed_arrivals
    from sim.calibration import grid_model, predict_row

    grid = grid_model(proto.grid_rows, proto.meta)
    deep = set(attribution_points([p.rate for p in sweep], k))
    out = []
    for i, p in enumerate(sweep):
        arrivals = observed_arrivals(p.arrivals, p.live)
        log = BatchLog()
        exact, _ = proto.sim(arrivals, p.profile, f"fidelity capacity {p.rate:.2f}/s (exact sim)", observers=(log,),
                             exact=True)
        live_v, sim_v = p.slo_values(slo)
        row: dict[str, Any] = {
            "rate": round(p.rate, 3), "added": p.added,
            "slo_live_ms": _r(1e3 * live_v, 1), "slo_sim_ms": _r(1e3 * sim_v, 1),
            "slo_sim_exact_ms": _r(1e3 * slo.value(exact, p.sent), 1),
            "live": {**live_summary(p.live.samples, p.live.requests, p.sent), **_latency(p.live.requests)},
            "sim": {**sim_summary(log, exact, p.sent), **_latency(p.sim)},
            "iteration_error_pct": _r(iteration_error_pct(p.profile, p.live.samples)) if p.live.samples else None,
            "iteration_error_by_shape": iteration_error_by_shape(p.profile, p.live.samples) if p.live.samples else {},
        }
        grid_s = sum(predict_row(grid, s.row) for s in p.live.samples)
        row["live_backend_over_grid"] = _r(sum(s.backend_s for s in p.live.samples) / grid_s if grid_s > 0 else math.nan, 3)
        if i in deep and p.live.samples:
            refit = refit_profile(p.live.samples, proto.tmp / f"refit-sweep-{i}.json", (proto.grid_rows, proto.meta),
                                  p.live.run_id)
            own, _ = proto.sim(arrivals, refit, f"fidelity capacity {p.rate:.2f}/s refit (sim)")
            own_v = slo.value(own, p.sent)
            row["own_iterations"] = {"slo_ms": _r(1e3 * own_v, 1), **_latency(own)}
            if math.isfinite(live_v) and live_v > 0:
                total = 100 * (sim_v / live_v - 1)
                sched = 100 * (own_v / live_v - 1)
                row.update({"slo_err_pct": _r(total), "slo_scheduling_pct": _r(sched),
                            "slo_latency_model_pct": _r(total - sched)})
        out.append(row)
    return out


def saturation_lines(points: Sequence[dict[str, Any]]) -> list[str]:
    """The console's lines: one per sweep point, live vs simulated."""
    lines = []
    for d in points:
        lv, sv = d["live"], d["sim"]
        own = d.get("own_iterations")
        lines.append(
            f"sweep {d['rate']:.2f}/s{' (added)' if d['added'] else ''}: SLO metric live {d['slo_live_ms']} ms, sim "
            f"{d['slo_sim_ms']} ms (exact mode {d['slo_sim_exact_ms']})"
            + (f", sim on the run's own iterations {own['slo_ms']} ms (latency model {d.get('slo_latency_model_pct')}%, "
               f"scheduling {d.get('slo_scheduling_pct')}%)" if own else "")
            + f"; iterations/s live {lv['iterations_per_s']} vs sim {sv['iterations_per_s']}, seqs per iteration "
            f"{lv['mean_batch_seqs']} vs {sv['mean_batch_seqs']}, prefill iterations {lv['prefill_iteration_pct']}% vs "
            f"{sv['prefill_iteration_pct']}% (prompts each {lv['mean_prefill_prompts']} vs {sv['mean_prefill_prompts']}), "
            f"decode seqs {lv['mean_decode_seqs']} vs {sv['mean_decode_seqs']}, tokens/s {lv['output_tokens_per_s']} vs "
            f"{sv['output_tokens_per_s']}, span {lv['span_s']} vs {sv['span_s']} s; live busy {lv['busy_pct']}%, "
            f"{lv['mean_iteration_ms']} ms per iteration, not completed {lv['not_completed']} {lv['statuses'] or ''}; "
            f"frozen profile per iteration {d['iteration_error_pct']}%, backend / grid {d['live_backend_over_grid']}")
    return lines
