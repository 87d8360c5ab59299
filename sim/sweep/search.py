"""`search`: the cheapest configuration of a spec's space that meets an SLO attainment target.

Candidates are taken cheapest first by their estimated cost (their initial replicas held for
the trace's span), ``chunk`` at a time:

1. **Screen**: each candidate replays the first ``screen_fraction`` of the trace's requests,
   stopped as soon as it has missed the SLO on more requests than it may miss and still reach
   ``target - slack``.
2. **Rungs** (successive-halving style): the survivors replay ``eta`` times more of the trace,
   dropping those below ``target - slack`` (stopped early the same way), up to the full trace,
   where the target holds without slack.
3. **Cost bound**: once a candidate met the target on the full trace, candidates estimated
   above its cost are never replayed. For fixed replicas the estimate is at most the run's
   measured cost, so none of them could have been cheaper.
4. **Confirm**: the cheapest candidate meeting the target on the full trace, and the
   ``neighbours`` next-cheaper candidates it beat, replay the full trace once per seed in
   ``confirm_seeds``: seeds other than ``select_seed``, under which steps 1 to 3 ran, so the luck
   that chose a candidate does not vouch for it (`sim.sweep.search_seeds`). The winner must meet
   the target on every confirmation seed; a neighbour that does replaces it (the screen was wrong
   about it) and the confirmation repeats; a winner that fails on a seed gives way to the next
   cheapest (screening further chunks if need be). The winner's spread over those seeds and its
   margin over the target are reported, with a warning where the margin is within seed noise
   (`sim.sweep.search_margin`).

A candidate a run of which raises (on any stage or seed) is failed: rejected with its error, not
measured, never confirmed; the search's sweep is then stored ``failed``, as a sweep with failed runs.

Cost: money from the cost model, or GPU-hours (``controlplane.report.cost``), of the run on
the full trace; a candidate only seen on part of it is ranked by its partial cost scaled to the
full trace's time span, or, stopped early (on any rung), by its estimate.
"""

from __future__ import annotations

import contextlib

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.report.cost import cost_unit, estimated_cost, run_cost
from controlplane.report.pareto import pareto_front
from sim.interrupts import sigterm_stops
from sim.sweep.backends import Backend, check_ray_address, make_backend
from sim.sweep.interrupt import interrupt_deferred, interrupts_held_while_stopping
from sim.sweep.messages import said_once, say_repeats
from sim.sweep.run import read_traces, spec_trace_read, trace_id, transforms_of, with_rows_left_out
from sim.sweep.search_margin import confirm_spread, margin_warning
from sim.sweep.search_seeds import confirm_seeds as confirm_seeds_of
from sim.sweep.search_seeds import reused_seed_note, search_seeds, select_seed, unused_seeds_note
from sim.sweep.seeds import same_under_every_seed
from sim.sweep.spec import LoadedSpec, point_key
from sim.sweep.spec_prices import check_gpu_prices
from sim.sweep.spec_trace import check_no_trace_axes
from sim.sweep.store import create_or_resume, finish_sweep, store_outcome
from sim.sweep.worker import RunOutcome, RunTask

__all__ = ["Candidate", "SearchInterrupted", "SearchResult", "search", "search_seeds", "unused_seeds_note"]


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``interrupted_by``, `sim.interrupts.sigterm_stops`) during a search: with a
    database, its sweep ``sweep_id`` is stored ``interrupted`` with the ``stored`` full-trace runs finished so
    far (``sweep_id`` None: nothing stored). A search does not resume: running it again starts afresh."""

    def __init__(self, sweep_id: int | None, stored: int) -> None:
        super().__init__(sweep_id, stored)
        self.sweep_id, self.stored = sweep_id, stored


@dataclass
class Candidate:
    index: int
    overrides: dict[str, Any]
    config: dict[str, Any]  # at the search seed
    estimate: float  # initial replicas held for the trace's span
    stage: str = "none"  # the furthest stage it ran: screen, rung1.., full, confirmed
    fraction: float = 0.0
    attainment: float | None = None  # at that stage (an upper bound when stopped)
    stopped: bool = False
    cost: float | None = None  # measured (scaled to the full trace) when it ran to the end
    by_seed: dict[int, float] = field(default_factory=dict)  # confirmation: attainment per confirm seed
    cost_by_seed: dict[int, float] = field(default_factory=dict)
    summary_by_seed: dict[int, dict[str, Any]] = field(default_factory=dict)  # full replays: each seed's summary
    selection_attainment: float | None = None  # its full-trace replay under the selection seed
    error: str | None = None  # a run of it raised (a bad plugin setting, say): failed, rejected with it
    failed_run: dict[str, Any] | None = None  # that run's stage and seed

    @property
    def rank_cost(self) -> float:
        return self.cost if self.cost is not None else self.estimate

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"overrides": self.overrides, "cost": _r(self.rank_cost), "attainment": _r(self.attainment),
                               "stage": self.stage, "stopped": self.stopped}
        if self.cost is None:  # (its initial replicas held for the trace's span: no drain of a backlog after it)
            out["cost_lower_bound"] = True
        if self.selection_attainment is not None:
            out["selection_attainment"] = _r(self.selection_attainment)
        if self.by_seed:
            out["attainment_by_seed"] = {str(k): _r(v) for k, v in sorted(self.by_seed.items())}
            out["attainment"] = _r(min(self.by_seed.values()))
            out["attainment_mean"] = _r(sum(self.by_seed.values()) / len(self.by_seed))
        if self.error is not None:  # failed: not measured (by_seed: only the seeds that finished before)
            out.update(stage="failed", error=self.error, attainment=None)
            out.pop("attainment_mean", None)
        return out


def _r(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


@dataclass
class SearchResult:
    best: dict[str, Any] | None
    candidates: int
    runs: int
    wall_s: float
    rejected_cheaper: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    cost_unit: str
    target: float
    slo: dict[str, Any]
    stages: list[dict[str, Any]]
    sweep_id: int | None = None
    replayed: int = 0  # candidates replayed at least on the screen's prefix
    skipped_by_cost: int = 0  # estimated above the best's cost, so never replayed
    #: every confirmed candidate gave the same run under each seed (None: none confirmed over two seeds)
    seeds_change_nothing: bool | None = None
    #: the full-trace runs stored under ``sweep_id`` (None: not stored); 0 when every run was stopped early
    stored: int | None = None
    #: every candidate a run of which raised (any stage, any seed): overrides, stage, error; the sweep is then `failed`
    failed: list[dict[str, Any]] = field(default_factory=list)
    #: the seeds it replayed under (`sim.sweep.search_seeds`): ``select_seed``, then ``confirm_seeds``; not ``seeds``
    seeds: list[int] = field(default_factory=list)
    select_seed: int = 0  # the screen's, the rungs' and the full trace's
    confirm_seeds: list[int] = field(default_factory=list)
    #: the selection seed is among the confirmation's (a spec's confirm_seeds, or none): its luck vouches for the winner
    selection_seed_confirms: bool = False
    #: what weakens the answer, as said on stderr: a margin within seed noise, the selection seed confirming
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"best": self.best, "candidates": self.candidates, "runs": self.runs, "wall_s": round(self.wall_s, 2),
                "rejected_cheaper": self.rejected_cheaper, "pareto": self.pareto, "cost_unit": self.cost_unit,
                "target": self.target, "slo": self.slo, "stages": self.stages, "sweep_id": self.sweep_id,
                "replayed": self.replayed, "skipped_by_cost": self.skipped_by_cost,
                "seeds_change_nothing": self.seeds_change_nothing, "stored": self.stored, "failed": self.failed,
                "seeds": self.seeds, "select_seed": self.select_seed, "confirm_seeds": self.confirm_seeds,
                "selection_seed_confirms": self.selection_seed_confirms, "warnings": self.warnings}


class _Searcher:
    def __init__(self, loaded: LoadedSpec, backend: Backend, traces: dict[str, list], seed: int, target: float,
                 store: Callable[[RunOutcome], None] | None, on_progress: Callable[[str, int, int], None] | None,
                 trace_name: str, trace_format: str | None, left_out: dict[str, dict[str, Any]] | None = None,
                 confirm_seeds: list[int] | None = None) -> None:
        self.loaded = loaded
        self.confirm_seeds = confirm_seeds if confirm_seeds is not None else [seed]
        self.left_out = left_out or {}  # by trace id, the rows its read left out (`read_traces`)
        self.settings = loaded.spec.search
        self.backend = backend
        self.traces = traces
        self.seed = seed
        self.target = target
        self.store = store
        self.on_progress = on_progress
        self.trace_name = trace_name
        self.trace_format = trace_format
        self.n = len(traces[trace_id(seed)])
        full = traces[trace_id(seed)]
        self.span_s = (full[-1].arrival_s - full[0].arrival_s) if full else 0.0
        self.runs = 0
        self.said: Counter[str] = Counter()  # the runs' warnings: how many runs said each (`sim.sweep.messages`)
        self.stages: dict[str, dict[str, Any]] = {}
        #: the stored (full-trace) runs keep their rows only when the spec asks for them (`record: full`)
        self.record_full = (store is not None and "record" in loaded.spec.model_fields_set
                            and loaded.spec.record == "full")

    def _task(self, c: Candidate, seed: int, stage: str, limit: int | None, stop_below: float | None) -> RunTask:
        config = c.config if seed == self.seed else self.loaded.run_config(c.overrides, seed)
        config = {**config, "name": f"{self.loaded.name} #{c.index} seed {seed}"}  # (as a sweep's runs are named)
        key = f"{stage}:{point_key(c.overrides, seed)}"
        return RunTask(key=key, index=c.index, seed=seed, overrides=c.overrides, config=config,
                       trace_id=trace_id(seed), trace_name=self.trace_name, trace_format=self.trace_format,
                       record="full" if self.record_full and limit is None else "summary",
                       stop_below=stop_below, stage=stage, limit=limit,
                       trace_read=spec_trace_read(self.loaded))

    def _run(self, stage: str, tasks: list[RunTask]) -> list[RunOutcome]:
        out = []
        t0 = time.perf_counter()
        if self.on_progress is not None:
            self.on_progress(stage, 0, len(tasks))
        outcomes = said_once(self.backend.run(with_rows_left_out(tasks, self.left_out), self.traces), self.said)
        for i, outcome in enumerate(outcomes, 1):
            out.append(outcome)
            self.runs += 1
            if self.store is not None and (outcome.status == "failed"
                                           or outcome.status == "finished" and outcome.task.limit is None):
                self.store(outcome)  # (a failed run on any stage: its error shows in `runs report --sweep`)
            if self.on_progress is not None:
                self.on_progress(stage, i, len(tasks))
        row = self.stages.get(stage)
        if row is None:
            row = self.stages[stage] = {"stage": stage, "runs": 0, "stopped_early": 0, "wall_s": 0.0}
        row["runs"] += len(tasks)
        row["stopped_early"] += sum(o.status == "stopped" for o in out)
        row["wall_s"] = round(row["wall_s"] + time.perf_counter() - t0, 2)
        return out

    def _scaled_to_full_trace(self, cost: float | None, summary: dict[str, Any]) -> float | None:
        """A prefix's cost scaled by the share of the trace's time span it covered (not of its
        requests: on a bursty trace the first quarter of the requests may span most of the time)."""
        span = summary.get("sim_span_s")
        if cost is None or not span or not self.span_s:
            return None  # (ranked by its estimate)
        return cost * self.span_s / span

    def evaluate(self, stage: str, cands: list[Candidate], fraction: float, threshold: float) -> list[Candidate]:
        """Run ``cands`` on the first ``fraction`` of the trace; return those reaching ``threshold``."""
        limit = None if fraction >= 1 else max(1, math.ceil(fraction * self.n))
        by_index = {c.index: c for c in cands}
        tasks = [self._task(c, self.seed, stage, limit, threshold) for c in cands]
        passed = []
        for o in self._run(stage, tasks):
            c = by_index[o.task.index]
            c.stage, c.fraction = stage, fraction
            if o.status == "failed":  # not measured: rejected with its error, never a neighbour to confirm
                c.stage, c.error, c.attainment, c.cost = "failed", o.summary.get("error"), None, None
                c.failed_run = {"stage": stage, "seed": o.task.seed}
                continue
            c.stopped = o.status == "stopped"
            if c.stopped:
                c.attainment = o.summary["slo_attainment_max"]
                c.cost = None  # ranked by its estimate, not by a cost measured on an earlier rung's prefix
                continue
            c.attainment = o.summary.get("slo_attainment") or 0.0
            cost = run_cost(c.config, o.summary)
            c.cost = self._scaled_to_full_trace(cost, o.summary) if fraction < 1 else cost
            if fraction >= 1:  # a full replay at the selection seed: part of its confirmation only if that seed is
                c.selection_attainment = c.attainment
                c.summary_by_seed[self.seed] = o.summary
                if self.seed in self.confirm_seeds:  # (a spec's confirm_seeds naming it: `reused_seed_note`)
                    c.by_seed[self.seed] = c.attainment
                    if cost is not None:
                        c.cost_by_seed[self.seed] = cost
            if c.attainment >= threshold:
                passed.append(c)
        return passed

    def confirm(self, c: Candidate, seeds: list[int]) -> bool:
        """Full replays over ``seeds`` (no early stop: the attainment is reported); all must meet. A
        run that raises fails the candidate (stage ``failed``, its error kept): rejected, not measured."""
        tasks = [self._task(c, s, "confirm", None, None) for s in seeds if s not in c.by_seed]
        for o in self._run("confirm", tasks):
            if o.status == "failed":
                if c.error is None:
                    c.error, c.failed_run = o.summary.get("error"), {"stage": "confirm", "seed": o.task.seed}
                continue
            c.summary_by_seed[o.task.seed] = o.summary
            c.by_seed[o.task.seed] = o.summary.get("slo_attainment") or 0.0
            cost = run_cost(o.task.config, o.summary)
            if cost is not None:
                c.cost_by_seed[o.task.seed] = cost
        c.stopped = False
        if c.cost_by_seed:
            c.cost = sum(c.cost_by_seed.values()) / len(c.cost_by_seed)
        if c.error is not None:
            c.stage, c.attainment = "failed", None
            return False
        c.stage = "confirmed"
        c.attainment = min(c.by_seed.values())
        return c.attainment >= self.target


def _order(cands: list[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: (c.rank_cost, -(c.attainment or 0.0), c.index))


@sigterm_stops  # (SIGTERM stops it as Ctrl-C does)
def search(
    loaded: LoadedSpec,
    *,
    target: float = 0.99,
    backend: str | Backend = "auto",
    workers: int | None = None,
    ray_address: str | None = None,
    db_url: str | None = None,
    trace_path: str | None = None,
    trace_format: str | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SearchResult:
    """Find the cheapest candidate of ``loaded``'s space meeting ``target`` (see the module doc).

    The SLO is the spec's base config's ``slo`` (set it there or with ``--slo-ttft/--slo-tpot``).
    With ``db_url`` the runs that reached the end are stored under a new sweep (kind ``search``):
    their summaries, and their requests, decisions and metric samples when the spec sets ``record: full``.
    """
    t0 = time.perf_counter()
    check_gpu_prices(loaded, str(loaded.path or "sweep spec"))  # (before the trace is read)
    check_no_trace_axes(loaded, str(loaded.path or "sweep spec"))  # (one traffic: `trace.rate_scale` is a sweep's axis)
    seeds, seed, confirm_seeds = search_seeds(loaded), select_seed(loaded), confirm_seeds_of(loaded)
    path = trace_path or loaded.trace_path()
    fmt = trace_format if trace_format is not None else loaded.trace_format()
    traces, left_out = read_traces(loaded, seeds, transforms=transforms_of(loaded), trace_path=path,
                                   trace_format=fmt)
    points = loaded.spec.points()
    engine = sweep_id = None
    store = None
    stored: list[int] = []  # the ids of the full-trace runs stored so far
    failed_ids: list[int] = []  # the ids of the failed runs stored (any stage)
    if ray_address and backend in ("auto", "ray"):
        check_ray_address(ray_address)  # (no cluster there: refused before a sweep row is stored)
    if db_url is not None:
        from controlplane.storage import ensure_schema, make_engine

        engine = make_engine(db_url)
        ensure_schema(engine)
        sweep_id, _ = create_or_resume(engine, name=loaded.name, kind="search",
                                       spec=loaded.spec.model_dump(mode="json"), spec_hash=loaded.run_hash(path, fmt),
                                       trace=path, num_runs=None, fresh=True)

        def store_run(outcome: RunOutcome) -> None:
            with interrupt_deferred():  # (Ctrl-C takes effect once the run is written whole)
                (failed_ids if outcome.status == "failed" else stored).append(
                    store_outcome(engine, sweep_id, outcome))

        store = store_run

    back = backend if isinstance(backend, Backend) else make_backend(backend, workers=workers, ray_address=ray_address)
    status = "failed"
    stopping = contextlib.ExitStack()  # (once stopped before its end: the cleanup with a further Ctrl-C held)
    try:
        s = _Searcher(loaded, back, traces, seed, target, store, on_progress, path, fmt, left_out, confirm_seeds)
        cands = [Candidate(i, o, loaded.run_config(o, seed), 0.0) for i, o in enumerate(points)]
        for c in cands:
            c.estimate = estimated_cost(c.config, s.span_s)
        scan = _Scan(s, cands)
        best = _confirm(s, scan, cands, confirm_seeds)
        for c in scan.skipped():
            c.stage = "skipped"  # estimated above the best's cost: not replayed
        say_repeats(s.said)
        status = "finished"
    except BaseException as exc:  # the sweep row says how it ended (not left `running`); the error goes on
        stopping.enter_context(interrupts_held_while_stopping())
        if engine is not None:
            with contextlib.suppress(Exception):
                finish_sweep(engine, sweep_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                             {"error": f"{type(exc).__name__}: {exc}"}, num_runs=len(stored) + len(failed_ids))
            engine.dispose()
        if isinstance(exc, KeyboardInterrupt):
            raise SearchInterrupted(sweep_id, len(stored)) from exc
        raise
    finally:
        with stopping:
            if not isinstance(backend, Backend):  # (Ctrl-C, an error: runs in flight not waited for)
                back.close() if status == "finished" else back.abort()
    failed = [c for c in _order(cands) if c.error is not None]
    if failed:
        status = "failed"  # (as a sweep with failed runs: `runs sweeps --status failed`; the command exits 1)
    full = [c for c in cands if c.stage in ("full", "confirmed") and not c.stopped]  # (stopped: an upper bound)
    front = pareto_front([c.public() for c in full])
    best_public = _with_spread(best, target, traces) if best else None
    best_cost = best_public["cost"] if best_public else math.inf
    cheaper = [p for p in (c.public() for c in _order(cands) if c is not best) if p["cost"] < best_cost]
    slo = loaded.base_config.get("slo", {})
    result = SearchResult(
        best=best_public, candidates=len(cands), runs=s.runs, wall_s=time.perf_counter() - t0,
        rejected_cheaper=sorted(cheaper, key=lambda p: -p["cost"]), pareto=front, cost_unit=cost_unit(),
        target=target, slo={"ttft_s": slo.get("ttft_s"), "tpot_s": slo.get("tpot_s")},
        stages=list(s.stages.values()), sweep_id=sweep_id,
        replayed=sum(c.stage != "skipped" for c in cands), skipped_by_cost=sum(c.stage == "skipped" for c in cands),
        seeds_change_nothing=same_under_every_seed(list(c.summary_by_seed.values()) for c in cands
                                                   if c.stage == "confirmed"),
        stored=len(stored) if engine is not None else None, seeds=seeds, select_seed=seed,
        confirm_seeds=confirm_seeds, selection_seed_confirms=seed in confirm_seeds,
        warnings=[w for w in (margin_warning(best_public or {}, target), reused_seed_note(loaded)) if w],
        failed=[{"overrides": c.overrides, **(c.failed_run or {}), "error": c.error} for c in failed])
    if engine is not None:
        finish_sweep(engine, sweep_id, status, result.as_dict(), num_runs=len(stored) + len(failed_ids))
        engine.dispose()
    return result


def _with_spread(best: Candidate, target: float, traces: dict[str, list]) -> dict[str, Any]:
    """The winner's public entry with its spread over the confirmation seeds and its margin (`confirm_spread`)."""
    requests = sum(len(traces[trace_id(s)]) for s in best.by_seed) / len(best.by_seed)
    return {**best.public(), **confirm_spread(best.by_seed, target, requests)}


class _Scan:
    """Candidates in order of their estimated cost, screened and refined a chunk at a time.

    ``best(excluded)`` returns the cheapest candidate that met the target on the full trace,
    screening further chunks while the next candidate's estimate is within that candidate's
    cost: a candidate estimated above it cannot be cheaper (for fixed replicas the estimate, the
    initial replicas held for the trace's span, is at most the run's cost), so it is skipped.
    """

    def __init__(self, s: _Searcher, cands: list[Candidate]) -> None:
        self.s = s
        self.order = sorted(cands, key=lambda c: (c.estimate, c.index))
        self.pos = 0
        self.feasible: list[Candidate] = []
        st = s.settings
        self.fractions = []
        f = st.screen_fraction
        while f < 1:
            self.fractions.append(f)
            f *= st.eta
        self.fractions.append(1.0)

    def _refine(self, chunk: list[Candidate]) -> None:
        """Screen ``chunk``, then rungs of ``eta`` times more of the trace up to all of it."""
        alive = chunk
        st = self.s.settings
        for r, frac in enumerate(self.fractions):
            final = frac >= 1
            stage = "full" if final else ("screen" if r == 0 else f"rung{r}")
            alive = self.s.evaluate(stage, alive, frac, self.s.target if final else self.s.target - st.slack)
            if not alive:
                return
        self.feasible.extend(alive)

    def best(self, excluded: set[int]) -> Candidate | None:
        size = self.s.settings.chunk
        while True:
            pool = [c for c in self.feasible if c.index not in excluded]
            bound = min((c.rank_cost for c in pool), default=math.inf) if self.s.settings.cost_bound else math.inf
            chunk = []
            while self.pos < len(self.order) and len(chunk) < size and self.order[self.pos].estimate <= bound:
                chunk.append(self.order[self.pos])
                self.pos += 1
            if not chunk:
                return _order(pool)[0] if pool else None
            self._refine(chunk)

    def skipped(self) -> list[Candidate]:
        return self.order[self.pos:]


def _confirm(s: _Searcher, scan: _Scan, cands: list[Candidate], seeds: list[int]) -> Candidate | None:
    """Confirm the winner over the seeds, with its cheaper neighbours; a cheaper one that holds wins."""
    tried: set[int] = set()
    best = scan.best(tried)
    while best is not None:
        tried.add(best.index)
        ok = s.confirm(best, seeds)
        cost = best.rank_cost
        neighbours = [c for c in reversed(_order(cands)) if c.stage not in ("none", "failed") and c.rank_cost < cost
                      and c.index not in tried][: s.settings.neighbours]
        winner = None
        for c in sorted(neighbours, key=lambda c: c.rank_cost):
            tried.add(c.index)
            if s.confirm(c, seeds) and winner is None:
                winner = c  # the cheapest neighbour that holds over every seed
        if winner is not None:
            best = winner
            continue
        if ok:
            return best
        best = scan.best(tried)  # the winner failed on another seed: the next cheapest, screening on if need be
    return None
