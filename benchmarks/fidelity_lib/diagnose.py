"""Request by request: why the simulator queues differently from the live worker on one slice.

    python benchmarks/fidelity_lib/diagnose.py --rate 20 --seconds 20 [--skip 664] [--profile P] [--out DIR]

Runs one slice live (a fresh worker, Poisson arrivals at ``--rate`` of the bundled trace's requests
from ``--skip`` on, lengths scaled as the protocol scales them), then simulates the same arrivals
on a profile refitted on the run's own iterations (the attribution's "scheduling" check: same
iteration times, so what differs is queueing and batching) and, with ``--profile``, on that
profile too. For each side it prints, per request, where the time went - queued (arrival to its
first batch), prefill (first batch to first token), decode (first token to the last) - as
percentiles; the batches each side ran (prefills, prompts per prefill, decode sizes, busy time);
the queue over time (waiting and running requests per second, live vs sim); and the requests with
the longest live E2E next to their simulated times; and per second, the CPU the driver process,
the worker process and everything else on the host used (`host_cpu`): a worker that got less CPU
than its iterations wanted was descheduled by other jobs. A diagnostic, never a prediction: the
refit is in-sample. ``--exact`` simulates one iteration per batch, so the simulated batches are the
iterations run (in the fast mode a batch's ``iterations`` is what it planned). ``--out`` keeps every
request's times, every batch and the live iterations as JSON (what `step_replay` reads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from controlplane.events import RequestFinished  # noqa: E402
from controlplane.hookspecs import hookimpl  # noqa: E402
from controlplane.types import Decision  # noqa: E402
from fidelity_lib.host_cpu import CpuSampler, backend_by_window, cpu_per_window  # noqa: E402

PHASES = ("queued", "prefill", "decode", "ttft", "e2e")


class Observed:
    """Observer plugin: every finished request (its core-side times) and every batch the core started."""

    name = "fidelity-diagnose"

    def __init__(self) -> None:
        self.requests: dict[str, Any] = {}
        self.batches: list[dict[str, Any]] = []
        self.clock: tuple[float, float] | None = None  # (perf_counter, run time) at the first batch seen

    def clear(self) -> None:
        self.requests.clear()
        self.batches.clear()
        self.clock = None

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is RequestFinished:
            r = event.request
            self.requests[r.request_id] = {"arrival": r.arrival_s, "scheduled": r.scheduled_s,
                                           "first": r.first_token_s, "finish": r.finish_s, "prompt": r.prompt_tokens,
                                           "output": r.output_tokens, "status": r.status.value}
        elif type(event) is Decision and event.action == "batch" and event.payload:
            if self.clock is None:
                self.clock = (time.perf_counter(), event.time_s)
            self.batches.append({"t": event.time_s, **event.payload})


def phases(r: dict[str, Any]) -> dict[str, float] | None:
    if r["status"] != "completed" or None in (r["scheduled"], r["first"], r["finish"]):
        return None
    return {"queued": r["scheduled"] - r["arrival"], "prefill": r["first"] - r["scheduled"],
            "decode": r["finish"] - r["first"], "ttft": r["first"] - r["arrival"], "e2e": r["finish"] - r["arrival"]}


def percentiles(reqs: dict[str, dict[str, Any]]) -> dict[str, dict[int, float]]:
    vals: dict[str, list[float]] = {k: [] for k in PHASES}
    for r in reqs.values():
        p = phases(r)
        if p:
            for k, v in p.items():
                vals[k].append(v)
    return {k: {q: float(np.percentile(v, q)) * 1e3 for q in (50, 90, 99)} for k, v in vals.items() if v}


def batch_summary(batches: list[dict[str, Any]]) -> dict[str, float]:
    pre = [b for b in batches if b["prefill"]]
    dec = [b for b in batches if not b["prefill"]]
    return {"batches": len(batches), "prefills": len(pre),
            "prompts_per_prefill": statistics.fmean(b["prefill"] for b in pre) if pre else 0.0,
            "prefill_tokens_mean": statistics.fmean(b["prefill_tokens"] for b in pre) if pre else 0.0,
            "mixed": sum(1 for b in pre if b["decode"]),
            "decode_batches": len(dec),
            # a simulated batch may run decode iterations after its prefill (``iterations`` > 1)
            "decode_iterations": sum(b["iterations"] - (1 if b["prefill"] else 0) for b in batches),
            "decode_size_mean": statistics.fmean(b["decode"] for b in dec) if dec else 0.0}


def occupancy(reqs: dict[str, dict[str, Any]], step_s: float, end_s: float) -> list[tuple[float, int, int]]:
    """(t, waiting, running) every ``step_s``: arrived and not yet in a batch; in a batch and not finished."""
    out = []
    for t in np.arange(0.0, end_s, step_s):
        w = sum(1 for r in reqs.values() if r["arrival"] <= t and (r["scheduled"] is None or r["scheduled"] > t))
        run = sum(1 for r in reqs.values() if r["scheduled"] is not None and r["scheduled"] <= t
                  and (r["finish"] is None or r["finish"] > t))
        out.append((float(t), w, run))
    return out


def rebased(reqs: dict[str, dict[str, Any]], t0: float) -> dict[str, dict[str, Any]]:
    keys = ("arrival", "scheduled", "first", "finish")
    return {k: {**r, **{f: (r[f] - t0 if r[f] is not None else None) for f in keys}} for k, r in reqs.items()}


def report(sides: dict[str, tuple[dict, list]], step_s: float, top: int) -> None:
    names = list(sides)
    print("\nper request, ms (p50 / p90 / p99):")
    pct = {n: percentiles(sides[n][0]) for n in names}
    for k in PHASES:
        print(f"  {k:8s} " + " | ".join(f"{n}: " + " / ".join(f"{pct[n][k][q]:7.1f}" for q in (50, 90, 99))
                                        for n in names))
    print("\nbatches:")
    for n in names:
        print(f"  {n:10s} " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in batch_summary(sides[n][1]).items()))
    end = max(r["finish"] or 0 for r in sides[names[0]][0].values())
    occ = {n: occupancy(sides[n][0], step_s, end) for n in names}
    print(f"\nqueue over time (every {step_s:g} s): waiting / running")
    for i in range(len(occ[names[0]])):
        print(f"  {occ[names[0]][i][0]:6.1f}s " + " | ".join(f"{n}: {occ[n][i][1]:4d} / {occ[n][i][2]:4d}"
                                                          for n in names))
    live = sides[names[0]][0]
    worst = sorted((k for k in live if phases(live[k])), key=lambda k: -phases(live[k])["e2e"])[:top]
    print(f"\nthe {top} longest live E2E (ms: queued / prefill / decode / e2e; arrival s):")
    for k in worst:
        row = []
        for n in names:
            p = phases(sides[n][0].get(k, {"status": "missing"})) if k in sides[n][0] else None
            row.append(f"{n}: " + ("-" if p is None else " / ".join(f"{p[f] * 1e3:6.0f}" for f in
                                                                    ("queued", "prefill", "decode", "e2e"))))
        print(f"  {k:>10s} at {live[k]['arrival']:6.2f}s p{live[k]['prompt']:<4d} o{live[k]['output']:<3d} "
              + " | ".join(row))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, required=True, help="Poisson arrival rate, requests/s")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of arrivals")
    ap.add_argument("--skip", type=int, default=664, help="trace requests (from --start-s) before the slice")
    ap.add_argument("--start-s", type=float, default=600.0)
    ap.add_argument("--arrivals", choices=("poisson", "trace"), default="poisson")
    ap.add_argument("--profile", type=Path, default=None, help="also simulate on this (frozen) profile")
    ap.add_argument("--grid", type=Path, default=None, help="a grid profile the refit also takes rows from")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pool", default="process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", action="store_true", help="simulate one iteration per batch (sim.exact)")
    ap.add_argument("--step-s", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None, help="directory for the per-request and per-batch JSON")
    a = ap.parse_args(argv)

    from controlplane.config import load_config
    from controlplane.hardware.profile_format import read_profile
    from fidelity_lib.replay import _vocab, observed_arrivals, replay_live, replay_sim, run_config
    from fidelity_lib.slices import Scaling, at_rate, count_for, poisson_at_rate, read_requests
    from sim.calibration import calibrate
    from sim.traces import bundled_trace_path

    raw = read_requests(bundled_trace_path(), "azure", start_s=a.start_s, count=a.skip + 20000, seed=a.seed)
    scaling = Scaling.fit(raw[:100], prompt_scale="auto", output_scale="auto", prompt_p50=64, output_p50=16,
                          max_prompt=256, max_output=48)
    part = scaling.apply(raw[a.skip:a.skip + count_for(a.rate, a.seconds)])
    reqs = poisson_at_rate(part, a.rate, a.seed + 1) if a.arrivals == "poisson" else at_rate(part, a.rate)
    worker = {"preset": "tiny-llama", "precision": "auto", "device": "cpu", "max_seq_len": max(512, 256 + 48 + 64),
              "seed": a.seed}  # as the protocol's defaults
    tmp = Path(tempfile.mkdtemp(prefix="cp-diagnose-"))
    db = f"sqlite:///{tmp}/diagnose.db"
    base = load_config(None)
    from controlplane.live.model_source import WorkerModelSettings

    settings = WorkerModelSettings(**worker)
    vocab = int(settings.config["vocab_size"]) if settings.config else _vocab(settings)
    live_obs = Observed()
    cpu = CpuSampler().start()
    try:
        live = replay_live(run_config(base, worker, db, name="diagnose live"), reqs, threads=a.threads, vocab=vocab,
                           seed=a.seed + 2, record=False, pool=a.pool, observers=(live_obs,))
    finally:
        cpu.stop()
    t0 = min(r["arrival"] for r in live_obs.requests.values())
    print(f"live: {len(reqs)} requests at {a.rate:g}/s over {reqs[-1].arrival_s:.1f} s, done in {live.wall_s:.1f} s, "
          f"{len(live.samples)} iterations; facts {live.facts}")
    grid = None
    if a.grid is not None:
        rows, meta = read_profile(a.grid)
        grid = (rows, meta)
    own = calibrate(live.samples, tmp / "own.json", grid=grid, run_ids=[live.run_id]).path
    arrivals = observed_arrivals(reqs, live)
    trace_id = {t.arrival_s: t.request_id for t in live.requests}  # the core's ids -> the trace's (the sim's)
    by_trace = {trace_id.get(r["arrival"], k): r for k, r in live_obs.requests.items()}
    sides = {"live": (rebased(by_trace, t0), [{**b, "t": b["t"] - t0} for b in live_obs.batches])}
    profiles = {"sim-own": own, **({"sim-prof": a.profile} if a.profile else {})}
    for name, prof in profiles.items():
        obs = Observed()
        cfg = run_config(base, worker, db, name=f"diagnose {name}", profile=prof)
        if a.exact:
            cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"exact": True})})
        replay_sim(cfg, arrivals, record=False, observers=(obs,))
        sides[name] = (obs.requests, obs.batches)
    report(sides, a.step_s, a.top)
    busy = backend_by_window(live.samples, t0, a.step_s)
    print("\nlive CPU, cores busy per second: driver process / worker process / everything else; worker backend busy")
    per = cpu.per_second(live_obs.clock, t0) if live_obs.clock else []
    for t, d, k, o in cpu_per_window(per, a.step_s):
        print(f"  {t:6.1f}s driver {d:4.2f}  worker {k:4.2f}  others {o:4.2f}  backend {busy.get(int(t // a.step_s), 0.0) / a.step_s:4.2f}")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "sides.json").write_text(json.dumps({n: {"requests": s[0], "batches": s[1]} for n, s in sides.items()}))
        (a.out / "live_iterations.json").write_text(json.dumps(
            [{"start": s.start_s - t0, "end": s.end_s - t0, **s.row} for s in live.samples]))
        print(f"wrote {a.out}/sides.json, live_iterations.json")


if __name__ == "__main__":
    main()
