"""Our simulator next to Vidur on Vidur's own recorded runs: speed and per-request fidelity.

    python benchmarks/vs_vidur.py [--runs code_r1_n10000_qps0.8,...] [--repeats 5]
                                  [--tick-s 10] [--check-exact [N]] [--anchors DIR]

For each recorded Vidur run in ``--anchors`` (default ``../shared/anchors/vidur``) this
replays the run's exact ``workload.csv`` with the configuration read from its
``vidur_config.json``: the ``vidur`` latency model (Llama-2-70B, A100, TP2,
a100_pairwise_nvlink), ``replicas`` from the config, round-robin routing, the
``continuous-batching`` plugin in vLLM mode (batch cap 128, block 16, watermark 1%, 4,096
tokens per batch, preemption by restart) and KV blocks from the ``static-memory`` plugin's
memory plan (3,328 blocks per replica, not configured by hand).

Each run is timed in a fresh subprocess (so its peak RSS is its own), after one untimed
warm-up replay (imports and the latency model's tables: Vidur's figures are with a warm
predictor cache too). Timed: the library call ``sim.replay.replay`` on the streamed CSV, (a)
with SQL writes to a temporary SQLite file whose schema was created before the clock started
(requests, routing decisions and metric samples; per-batch decision rows off, as Vidur keeps
no per-batch rows either) and (b) without SQL. ``--repeats`` repetitions each; best and
median are shown, with CPU time, because this machine is shared (see the load average).

Fidelity is per request against ``vidur_request_metrics.csv``: TTFT (arrival to the end of
the prefill iteration), E2E, and TPOT in both definitions — ours, (finish - first token) /
(output tokens - 1), and Vidur's, (finish - first token) / num_decode_tokens, where Vidur
counts the prefill's token as a decode token and, after a restart, only the tokens still to
generate (see docs/simulator.md). ``--check-exact`` replays the first N requests of each
workload in both the fast (multi-iteration) and the exact (one core round trip per
iteration) modes and compares them.

Ends with one JSON line: speed_ratio (worst over runs of ours-with-SQL over Vidur's best
req/s, wall time), speed_ratio_no_sql, the same from CPU time (speed_ratio_cpu*: what the
replay costs when the machine is not shared), ttft/tpot/e2e p50 differences (largest absolute
over runs; tpot in Vidur's definition, tpot_p50_diff_pct_our_definition in ours).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlplane.events import RequestFinished  # noqa: E402
from controlplane.hookspecs import hookimpl  # noqa: E402
from controlplane.types import Decision  # noqa: E402

DEFAULT_ANCHORS = ROOT.parent / "shared" / "anchors" / "vidur"
RUNS = ("code_r1_n10000_qps0.8", "code_r4_n10000_qps3.2", "arxiv_r1_n10000_qps0.4", "arxiv_r4_n10000_qps1.6")
#: Vidur's recorded speed (anchors README, warm predictor cache): the faster repetition's wall
#: seconds and the peak RSS, on a 2-core machine with Python 3.11.
VIDUR_SPEED = {
    "code_r1_n10000_qps0.8": (16.2, 1.39e3),
    "code_r4_n10000_qps3.2": (16.2, 1.39e3),
    "arxiv_r1_n10000_qps0.4": (53.0, 1.76e3),
    "arxiv_r4_n10000_qps1.6": (50.4, 1.76e3),
}
PCTS = (50, 90, 99)
METRICS = ("ttft", "tpot_vidur", "tpot", "e2e")


# --- configuration ------------------------------------------------------------------------


def run_config(run_dir: Path, *, db_url: str = "sqlite://", tick_s: float = 10.0, exact: bool = False,
               record_batches: bool = False):
    """Our RunConfig for one Vidur run, read from its ``vidur_config.json``."""
    from controlplane.config import load_config

    vc = json.loads((run_dir / "vidur_config.json").read_text())
    cluster, rs = vc["cluster_config"], vc["cluster_config"]["replica_scheduler_config"]
    replica = cluster["replica_config"]
    if cluster["global_scheduler_config"]["name"] != "round_robin" or rs["name"] != "vllm":
        raise SystemExit(f"{run_dir}: only round_robin + vllm runs are mapped")
    device = replica["device"]
    deployment = {
        "name": "llama",
        "replicas": cluster["num_replicas"],
        "latency_model": "vidur",
        "latency": {"model": replica["model_name"], "gpu": device, "tensor_parallel": replica["tensor_parallel_size"],
                    "network": replica["network_device"]},
        "model_spec": replica["model_name"],
        "gpu": {"a100": "a100-80gb", "h100": "h100-80gb"}.get(device, device),
        "gpus_per_replica": replica["tensor_parallel_size"],
        "precision": "fp16",
        "max_num_seqs": rs["batch_size_cap"],
        "max_batch_tokens": rs["max_tokens_in_batch"],
        "kv_block_size": rs["block_size"],
    }
    if rs.get("num_blocks"):
        deployment["num_kv_blocks"] = rs["num_blocks"]
    return load_config(None, {
        "seed": vc.get("seed", 0),
        "storage": {"url": db_url, "record_batches": record_batches},
        "control": {"tick_s": tick_s},
        "sim": {"exact": exact},
        "plugins": {
            "enabled": ["round-robin", "continuous-batching", "fixed-replicas", "static-memory",
                        "builtin-latency-models"],
            "settings": {
                "continuous-batching": {"policy": "vllm", "watermark": rs["watermark_blocks_fraction"]},
                "static-memory": {"memory_fraction": 1.0 - replica["memory_margin_fraction"],
                                  "request_slot_tokens": vc["request_generator_config"]["max_tokens"]},
            },
        },
        "cluster": {"models": [deployment]},
    })


# --- one run, in its own process ---------------------------------------------------------


class _Finished:
    """Observer keeping each finished request's timings (fidelity and exact-check runs only)."""

    name = "bench-finished"

    def __init__(self) -> None:
        self.rows: dict[str, tuple] = {}
        self.batches = 0
        self.iterations = 0

    @hookimpl
    def cp_on_event(self, event):
        if type(event) is RequestFinished:
            r = event.request
            self.rows[r.request_id] = (r.arrival_s, r.first_token_s, r.finish_s, r.output_tokens,
                                       r.recompute_tokens, r.num_preemptions, r.status.value)
        elif type(event) is Decision and event.action == "batch":
            self.batches += 1
            self.iterations += event.payload["iterations"]


def _observer() -> _Finished:
    return _Finished()


def latencies(rows: dict[str, tuple]):
    """Per-request arrays (ids sorted numerically): ttft, tpot (ours), tpot (Vidur's), e2e, restarts."""
    import numpy as np

    ids = sorted(rows, key=int)
    a = np.array([rows[i][:6] for i in ids], dtype=np.float64)
    arrival, first, finish, out, recompute, pre = a.T
    gap = finish - first
    return ids, {
        "ttft": first - arrival,
        "tpot": np.where(out > 1, gap / np.maximum(out - 1, 1), 0.0),
        # Vidur: decode tokens = output tokens incl. the prefill's one; after a restart only
        # the tokens left to generate at the last restart (vidur/entities/request.py:restart).
        "tpot_vidur": gap / np.maximum(out - recompute, 1),
        "e2e": finish - arrival,
        "restarts": pre,
    }


def _pre_migrated_sqlite(path: Path) -> str:
    from controlplane.storage import ensure_schema, make_engine

    url = f"sqlite:///{path}"
    engine = make_engine(url)
    ensure_schema(engine)
    engine.dispose()
    return url


def worker(run: str, anchors: Path, repeats: int, tick_s: float, check_exact: int) -> dict:
    from sim.replay import TraceTransforms, replay

    run_dir = anchors / run
    workload = run_dir / "workload.csv"
    out: dict = {"run": run}
    with tempfile.TemporaryDirectory(prefix="vs_vidur_") as tmp:
        tmp = Path(tmp)
        # Warm-up (untimed): imports, plugin discovery, the latency model's fitted tables.
        replay(workload, run_config(run_dir, tick_s=tick_s), trace_format="canonical",
               transforms=TraceTransforms(limit=200), record=False)

        timings: dict[str, list[tuple[float, float]]] = {"sql": [], "no_sql": []}
        summaries = []
        for i in range(repeats):
            for mode in ("sql", "no_sql"):
                record = mode == "sql"
                url = _pre_migrated_sqlite(tmp / f"run{i}.db") if record else "sqlite://"
                cfg = run_config(run_dir, db_url=url, tick_s=tick_s)
                t0, c0 = time.perf_counter(), time.process_time()
                summary, session = replay(workload, cfg, trace_format="canonical", record=record)
                timings[mode].append((time.perf_counter() - t0, time.process_time() - c0))
                summaries.append({k: v for k, v in summary.items() if k not in ("run_id", "wall_s")})
                if record:
                    out["sql_rows"] = _count_rows(tmp / f"run{i}.db", session.run_id)
        out["deterministic"] = all(s == summaries[0] for s in summaries)
        out["timings"] = timings
        out["num_requests"] = summaries[0]["num_requests"]
        out["num_completed"] = summaries[0]["num_completed"]
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        # Fidelity: one more (untimed) replay with an observer keeping per-request timings.
        obs = _observer()
        summary, session = replay(workload, run_config(run_dir, tick_s=tick_s), trace_format="canonical",
                                  record=False, extra_plugins=[obs])
        out["memory_plan"] = _memory_reason(session)
        ids, ours = latencies(obs.rows)
        vidur = _vidur_metrics(run_dir, ids)
        out["fidelity"] = _compare(ours, vidur)
        out["restarts"] = {"ours": int(ours["restarts"].sum()), "vidur": int(vidur["restarts"].sum())}
        out["kv_blocks"] = session.core.workers[next(iter(session.core.workers))].num_kv_blocks

        if check_exact:
            out["exact_check"] = exact_check(run_dir, workload, check_exact, tick_s)
    return out


def _count_rows(db: Path, run_id: int) -> dict[str, int]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0]
                for t in ("request", "decision", "metric_sample")}
    finally:
        con.close()


def _memory_reason(session) -> str:
    plugin = session.plugins.get("static-memory")
    d = session.config.cluster.models[0]
    return plugin.kv_blocks(d)[1] if plugin is not None else ""


def _vidur_metrics(run_dir: Path, ids: list[str]) -> dict:
    import numpy as np
    import pandas as pd

    v = pd.read_csv(run_dir / "vidur_request_metrics.csv").set_index("request_id").loc[[int(i) for i in ids]]
    return {"ttft": v["ttft_s"].to_numpy(), "tpot_vidur": v["tpot_s"].to_numpy(), "e2e": v["e2e_s"].to_numpy(),
            "restarts": v["num_restarts"].to_numpy(dtype=np.int64)}


def _compare(ours: dict, vidur: dict) -> dict:
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    out = {}
    for m in METRICS:
        ref = vidur["tpot_vidur"] if m == "tpot" else vidur[m]
        a, b = ours[m], ref
        row = {}
        for p in PCTS:
            pa, pb = float(np.percentile(a, p)), float(np.percentile(b, p))
            row[f"p{p}"] = (pa, pb, 100.0 * (pa / pb - 1.0))
        row["pearson"] = float(pearsonr(a, b).statistic)
        row["spearman"] = float(spearmanr(a, b).statistic)
        out[m] = row
    return out


def exact_check(run_dir: Path, workload: Path, n: int, tick_s: float) -> dict:
    """Fast and exact modes on the first ``n`` requests: percentiles, per-request gaps, event counts."""
    import numpy as np

    from sim.replay import TraceTransforms, replay

    res = {}
    for mode in ("fast", "exact"):
        cfg = run_config(run_dir, tick_s=tick_s, exact=mode == "exact", record_batches=True)
        obs = _observer()
        result = replay(workload, cfg, trace_format="canonical", transforms=TraceTransforms(limit=n), record=False,
                        extra_plugins=[obs])
        summary = result.summary
        ids, lat = latencies(obs.rows)
        res[mode] = {"lat": lat, "ids": ids, "batches": obs.batches, "iterations": obs.iterations,
                     "simpy_events": result.num_timers, "core_events": result.num_events, "wall_s": result.loop_s,
                     "completed": summary["num_completed"], "preemptions": summary["num_preemptions"],
                     "tokens": float(np.mean([row[3] for row in obs.rows.values()]))}
    fast, exact = res["fast"], res["exact"]
    assert fast["ids"] == exact["ids"]
    out = {"n": n, "completed": (fast["completed"], exact["completed"]),
           "preemptions": (fast["preemptions"], exact["preemptions"])}
    for m in ("ttft", "tpot", "e2e"):
        out[m] = {f"p{p}": 100.0 * (float(np.percentile(fast["lat"][m], p)) / float(np.percentile(exact["lat"][m], p)) - 1)
                  for p in PCTS}
        out[m]["max_rel_per_request"] = float(np.max(np.abs(fast["lat"][m] - exact["lat"][m])
                                                     / np.maximum(np.abs(exact["lat"][m]), 1e-12)))
    for k in ("batches", "iterations", "simpy_events", "core_events", "wall_s"):
        out[k] = (fast[k], exact[k])
    out["output_tokens_per_request"] = fast["tokens"]
    return out


# --- the parent: spawn, tabulate, summarise -----------------------------------------------


def _load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def host_speed_us() -> float:
    """A yardstick of this machine's speed right now: best-of-5 µs of a pure-Python loop.

    About 34 µs on the idle 2-core box Vidur's figures come from the same class of; a shared
    host under load reads 50-75 µs, and every ratio here drops with it.
    """
    import timeit

    timer = timeit.Timer("sum(i * i for i in range(1000))")
    return min(timer.repeat(5, 2000)) / 2000 * 1e6


def _pct(x: float) -> str:
    return f"{x:+.2f}%"


def _table(r: dict, tick_s: float):
    from rich.table import Table

    run = r["run"]
    vidur_wall, vidur_rss = VIDUR_SPEED[run]
    n = r["num_requests"]
    vidur_rps = n / vidur_wall
    t = Table(title=f"{run}: ours vs Vidur ({n:,} requests, {r['kv_blocks']:,} KV blocks/replica from the memory plan)",
              caption=f"timed: sim.replay.replay on the streamed CSV; 'with SQL' writes {r['sql_rows']['request']:,} request, "
                      f"{r['sql_rows']['decision']:,} decision and {r['sql_rows']['metric_sample']:,} metric rows to a "
                      f"temporary SQLite file (schema made before timing); control loop every {tick_s:g} s; "
                      f"best / median of {len(r['timings']['sql'])}; Vidur: faster of its two recorded repetitions")
    for col in ("metric", "ours", "Vidur", "ours vs Vidur"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for mode, label in (("sql", "with SQL writes"), ("no_sql", "no SQL")):
        walls = [w for w, _ in r["timings"][mode]]
        cpus = [c for _, c in r["timings"][mode]]
        best, med = min(walls), statistics.median(walls)
        t.add_row(f"wall s, {label} (best / median)", f"{best:.2f} / {med:.2f}", f"{vidur_wall:.1f}", "")
        t.add_row(f"CPU s, {label} (best)", f"{min(cpus):.2f}", "", "")
        t.add_row(f"simulated requests / wall s, {label} (best / median)", f"{n / best:,.0f} / {n / med:,.0f}",
                  f"{vidur_rps:,.0f}", f"{n / best / vidur_rps:.1f}x / {n / med / vidur_rps:.1f}x")
    t.add_row("peak RSS MB (whole process)", f"{r['peak_rss_mb']:,.0f}", f"{vidur_rss:,.0f}", f"{r['peak_rss_mb'] / vidur_rss:.2f}x")
    names = {"ttft": "TTFT", "tpot_vidur": "TPOT, Vidur's definition", "tpot": "TPOT, ours vs Vidur's", "e2e": "E2E"}
    for m in METRICS:
        row = r["fidelity"][m]
        for p in PCTS:
            a, b, d = row[f"p{p}"]
            t.add_row(f"{names[m]} p{p} s", f"{a:.4f}", f"{b:.4f}", _pct(d))
        t.add_row(f"{names[m]} per request Pearson / Spearman", "", "", f"{row['pearson']:.4f} / {row['spearman']:.4f}")
    t.add_row("restarts (preemptions)", str(r["restarts"]["ours"]), str(r["restarts"]["vidur"]), "")
    return t


def _exact_table(results: list[dict]):
    from rich.table import Table

    rows = [r for r in results if r.get("exact_check")]
    t = Table(title="fast mode (multi-iteration decode steps) vs exact mode (one core round trip per iteration), "
                    "first requests of each workload: fast / exact - 1")
    t.add_column("metric")
    for r in rows:
        t.add_column(r["run"].split("_n")[0], justify="right")
    t.add_row("requests (completed fast / exact)",
              *(f"{x['n']:,} ({x['completed'][0]:,} / {x['completed'][1]:,})" for x in (r["exact_check"] for r in rows)))
    for m, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E")):
        for p in PCTS:
            t.add_row(f"{label} p{p}", *(f"{r['exact_check'][m][f'p{p}']:+.2e}%" for r in rows))
        t.add_row(f"{label} largest per-request gap", *(f"{r['exact_check'][m]['max_rel_per_request']:.1e}" for r in rows))
    t.add_row("preemptions fast / exact", *(f"{x[0]} / {x[1]}" for x in (r["exact_check"]["preemptions"] for r in rows)))
    t.add_row("output tokens per request", *(f"{r['exact_check']['output_tokens_per_request']:.0f}" for r in rows))
    for key, label in (("core_events", "core events per request"), ("simpy_events", "SimPy events per request"),
                       ("batches", "batches per request")):
        t.add_row(f"{label} fast / exact", *(
            f"{r['exact_check'][key][0] / r['exact_check']['n']:.2f} / {r['exact_check'][key][1] / r['exact_check']['n']:.1f}"
            for r in rows))
    t.add_row("wall s fast / exact", *(f"{x[0]:.2f} / {x[1]:.2f}" for x in (r["exact_check"]["wall_s"] for r in rows)))
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchors", type=Path, default=Path(os.environ.get("VIDUR_ANCHORS", DEFAULT_ANCHORS)))
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated run folders")
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions per mode (best and median shown: the machine may be shared)")
    ap.add_argument("--tick-s", type=float, default=10.0, help="control-loop period (metric samples), simulated s")
    ap.add_argument("--check-exact", type=int, nargs="?", const=1000, default=0, metavar="N",
                    help="also compare exact and fast modes on the first N requests (default 1000)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.anchors, args.repeats, args.tick_s, args.check_exact)))
        return

    from rich.console import Console

    console = Console()
    load_before = _load_avg()
    speed_before = host_speed_us()
    results = []
    for run in args.runs.split(","):
        cmd = [sys.executable, __file__, "--worker", run, "--anchors", str(args.anchors), "--repeats", str(args.repeats),
               "--tick-s", str(args.tick_s)]
        if args.check_exact:
            cmd += ["--check-exact", str(args.check_exact)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{run}: worker failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        console.print(_table(r, args.tick_s))
    if args.check_exact:
        console.print(_exact_table(results))
    speed_after = host_speed_us()
    console.print(f"load average before / after: {load_before} / {_load_avg()} on {os.cpu_count()} CPUs; "
                  f"host yardstick (sum of squares to 1,000, best of 5) {speed_before:.1f} / {speed_after:.1f} µs "
                  f"(~34 µs on this class of machine when idle)")

    def worst(values):
        return max(values, key=abs)

    ratios, ratios_no_sql, ratios_med, ratios_cpu, ratios_cpu_no_sql = [], [], [], [], []
    for r in results:
        vidur_rps = r["num_requests"] / VIDUR_SPEED[r["run"]][0]
        ratios.append(r["num_requests"] / min(w for w, _ in r["timings"]["sql"]) / vidur_rps)
        ratios_med.append(r["num_requests"] / statistics.median(w for w, _ in r["timings"]["sql"]) / vidur_rps)
        ratios_no_sql.append(r["num_requests"] / min(w for w, _ in r["timings"]["no_sql"]) / vidur_rps)
        # CPU seconds instead of wall: what the replay costs when the machine is not shared.
        ratios_cpu.append(r["num_requests"] / min(c for _, c in r["timings"]["sql"]) / vidur_rps)
        ratios_cpu_no_sql.append(r["num_requests"] / min(c for _, c in r["timings"]["no_sql"]) / vidur_rps)
    summary = {
        "speed_ratio": round(min(ratios), 2),
        "speed_ratio_median": round(min(ratios_med), 2),
        "speed_ratio_no_sql": round(min(ratios_no_sql), 2),
        "speed_ratio_cpu": round(min(ratios_cpu), 2),
        "speed_ratio_cpu_no_sql": round(min(ratios_cpu_no_sql), 2),
        "ttft_p50_diff_pct": round(worst([r["fidelity"]["ttft"]["p50"][2] for r in results]), 3),
        "tpot_p50_diff_pct": round(worst([r["fidelity"]["tpot_vidur"]["p50"][2] for r in results]), 3),
        "tpot_p50_diff_pct_our_definition": round(worst([r["fidelity"]["tpot"]["p50"][2] for r in results]), 3),
        "e2e_p50_diff_pct": round(worst([r["fidelity"]["e2e"]["p50"][2] for r in results]), 3),
        "ttft_p99_diff_pct": round(worst([r["fidelity"]["ttft"]["p99"][2] for r in results]), 3),
        "tpot_p99_diff_pct": round(worst([r["fidelity"]["tpot_vidur"]["p99"][2] for r in results]), 3),
        "e2e_p99_diff_pct": round(worst([r["fidelity"]["e2e"]["p99"][2] for r in results]), 3),
        "min_pearson_e2e": round(min(r["fidelity"]["e2e"]["pearson"] for r in results), 4),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
        "deterministic": all(r["deterministic"] for r in results),
        "runs": {r["run"]: {"speed_ratio": round(x, 2), "speed_ratio_no_sql": round(y, 2), "speed_ratio_cpu": round(c, 2),
                            "speed_ratio_cpu_no_sql": round(d, 2)}
                 for r, x, y, c, d in zip(results, ratios, ratios_no_sql, ratios_cpu, ratios_cpu_no_sql)},
        "sql": True,
        "tick_s": args.tick_s,
        "load_avg": _load_avg(),
        "host_yardstick_us": [round(speed_before, 1), round(speed_after, 1)],
    }
    if args.check_exact:
        summary["exact_vs_fast_max_pct"] = round(max(
            abs(r["exact_check"][m][f"p{p}"]) for r in results for m in ("ttft", "tpot", "e2e") for p in PCTS), 6)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
