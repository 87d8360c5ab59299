"""Our simulator next to Vidur on Vidur's own recorded runs, timed as a user meets it.

    python benchmarks/vs_vidur.py [--runs code_r1_n10000_qps0.8,...] [--repeats 3]
                                  [--check-exact [N]] [--anchors DIR]

**The recorded runs** (``--anchors DIR``, or ``VIDUR_ANCHORS``) are not in the repository and not a
public dataset: four runs of microsoft/vidur (MIT, commit 7d47513; Llama-2-70B on A100 TP2, vLLM
scheduler, round robin), each in a folder named as in ``--runs`` holding Vidur's resolved
``vidur_config.json``, the ``workload.csv`` it simulated (``request_id, arrival_s, prompt_tokens,
output_tokens``) and its per-request ``vidur_request_metrics.csv`` (``request_id, ttft_s, tpot_s,
e2e_s, scheduling_delay_s, preemption_s, num_restarts``). Without ``--anchors`` the script reads
``../shared/anchors/vidur`` beside the repository, where the project's developers keep them.

**Speed.** For each recorded Vidur run in ``--anchors`` this writes the run's configuration as a YAML file (``anchor_settings``: the ``vidur`` latency
model for Llama-2-70B on A100 TP2, the run's replicas, round-robin routing, the
``continuous-batching`` plugin in vLLM mode, KV blocks from the ``static-memory`` memory plan;
nothing else, so the control loop runs every second and every batch decision is stored, as
``controlplane sim replay`` does by default) and times the command a user types, as a whole
process from spawn to exit::

    controlplane sim replay workload.csv --format canonical --config run.yaml --json --no-progress

in a fresh working folder per run (the default database ``sqlite:///controlplane.db`` lands
there; the repetitions append to it as a user's runs would). ``--repeats`` repetitions of the
four runs, interleaved (rep 1 of each run, then rep 2, ...), every repetition reported. One
untimed ``--limit 200`` run first fills the disk cache of fitted latency-model pieces, as a
user's first run would (Vidur's figures are with a warm predictor cache too). The process
prints its phase stamps (``CONTROLPLANE_TIMINGS=1``, see ``controlplane/timings.py``), so each
repetition splits into: interpreter start and the CLI module's import (spawn to ``main``: the
writer process is forked then, before typer and pydantic are imported), set-up (imports, config,
plugin discovery, latency models, schema check, run row: ``main`` to ``loop_start``), the event
loop, the final write (last rows, run row), and exit (summary printed, interpreter torn down).
Set-up splits further into the command's imports and its config (``main`` to
``replay_imported``), the session (plugins, engine, schema, run row: to ``session_open``) and the
latency models (to ``loop_start``). ``startup_s`` is spawn to the
first event (``loop_start``).

Vidur's side is its whole-process wall time from the anchors README's "Side by side" table
(median of three, warm cache, 2026-12-03) scaled by the README's host yardstick: ``python3 -m
timeit "sum(i*i for i in range(1000))"`` read 29.5 us per loop then; this benchmark runs the
same command at its start and at its end and scales Vidur's walls by (mean of the two) / 29.5.
The README has no phase split of Vidur's time, so ``loop_ratio`` (Vidur's whole process over
our event loop alone) is an upper bound of the loop-against-loop ratio: Vidur's loop is
shorter than its whole process by its import, init and write phases, which are not recorded.

**Fidelity** (per request against ``vidur_request_metrics.csv``) comes from one more, untimed
in-process replay of the same config with an observer that keeps each request's timings
(the CLI's rows do not hold Vidur's TPOT definition's recompute count); its summary is checked
to be identical to the CLI's (less the run id, the wall time and the ``status`` the CLI adds).
TPOT in both definitions: ours, (finish - first token) / (output tokens - 1), and Vidur's,
(finish - first token) / num_decode_tokens, where Vidur counts the prefill's token as a decode
token and, after a restart, only the tokens still to generate (see docs/simulator.md).
``--check-exact`` replays the first N requests of each workload in both the fast
(multi-iteration) and the exact (one core round trip per iteration) modes and compares them
(with ``--no-fidelity`` too: its replays are its own).

The timed processes get this process's environment less ``PYTHONDONTWRITEBYTECODE`` (set in
some shells and CI: with it no bytecode is written, and every run would compile ~90 modules from
source, which a user's install does not), plus ``CONTROLPLANE_TIMINGS=1``.

The machine may be shared: every timing is printed beside the yardstick and the load average.
Ends with one JSON line: ``speed_ratio`` (worst over runs of Vidur's scaled wall over our
median whole-process wall), ``startup_s`` (median spawn-to-first-event), ``loop_ratio``,
per-run and per-repetition figures, phases, ttft/tpot/e2e p50 and p99 differences (largest
absolute over runs; tpot in Vidur's definition, ``tpot_p50_diff_pct_our_definition`` in ours),
``deterministic`` (every repetition's summary, and the fidelity replay's, the same; null when
nothing was compared: ``--repeats 1`` with ``--no-fidelity``) and, with ``--check-exact``,
``exact_vs_fast_max_pct``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Left out of the timed processes' environment: with PYTHONDONTWRITEBYTECODE set (as some shells
#: and CI set it) no ``.pyc`` is ever written, and every run compiles ~90 modules from source; a
#: user's install has its bytecode.
_UNTIMED_ENV = frozenset({"PYTHONDONTWRITEBYTECODE"})
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from controlplane.events import RequestFinished  # noqa: E402
from controlplane.hookspecs import hookimpl  # noqa: E402
from controlplane.timings import parse as parse_timings  # noqa: E402
from controlplane.types import Decision  # noqa: E402

from bench_cli import nonnegative_int, positive_int, run_main  # noqa: E402

#: Where the project's developers keep the recorded runs (a folder beside the repository); they are not bundled.
DEFAULT_ANCHORS = ROOT.parent / "shared" / "anchors" / "vidur"
#: What the recorded runs are and what to pass: said by --help and when the folder is missing.
ANCHORS_SOURCE = ("Vidur's recorded runs, not in the repository (nor public): a folder per run (code_r1_n10000_qps0.8, "
                  "...) with the vidur_config.json, workload.csv and vidur_request_metrics.csv of a run of "
                  "microsoft/vidur (see this script's docstring); give their folder with --anchors DIR or VIDUR_ANCHORS")
RUNS = ("code_r1_n10000_qps0.8", "code_r4_n10000_qps3.2", "arxiv_r1_n10000_qps0.4", "arxiv_r4_n10000_qps1.6")
#: Vidur's whole-process wall seconds from the anchors README's "Side by side" table (median of
#: three, warm predictor cache) and whether they were measured there (r4: scaled, not re-measured).
VIDUR_WALL = {
    "code_r1_n10000_qps0.8": (12.81, "measured side by side"),
    "code_r4_n10000_qps3.2": (12.8, "recorded 16.2 scaled by the code r1 factor (README; not re-measured)"),
    "arxiv_r1_n10000_qps0.4": (40.06, "measured side by side"),
    "arxiv_r4_n10000_qps1.6": (38.1, "recorded 50.4 scaled by the arxiv r1 factor (README; not re-measured)"),
}
#: The anchors README's host yardstick during the side-by-side runs, µs per loop.
YARDSTICK_REF_US = 29.5
PCTS = (50, 90, 99)
METRICS = ("ttft", "tpot_vidur", "tpot", "e2e")


# --- configuration ------------------------------------------------------------------------


def anchor_settings(run_dir: Path) -> dict:
    """The run config a user writes for one Vidur run (what ``--config`` gets as YAML): only what
    is needed to match Vidur's model, cluster and scheduler, read from its ``vidur_config.json``.
    Everything else (control loop every second, per-batch decision rows, storage) is default."""
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
    return {
        "seed": vc.get("seed", 0),
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
    }


def run_config(run_dir: Path, *, db_url: str = "sqlite://", tick_s: float | None = 10.0, exact: bool = False,
               record_batches: bool = False):
    """Our RunConfig for one Vidur run (``anchor_settings``), with a database, a control-loop
    period (``None``: the default, as the CLI runs it) and the exact mode set."""
    from controlplane.config import load_config

    settings = {**anchor_settings(run_dir), "storage": {"url": db_url, "record_batches": record_batches},
                "sim": {"exact": exact}}
    if tick_s is not None:
        settings["control"] = {"tick_s": tick_s}
    return load_config(None, settings)


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


def exact_check(run_dir: Path, workload: Path, n: int, tick_s: float | None = None) -> dict:
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


# --- the report ---------------------------------------------------------------------------


def _load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _pct(x: float) -> str:
    return f"{x:+.2f}%"


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


# --- the user's command, timed from outside -----------------------------------------------


def yardstick_us() -> float:
    """The anchors README's host yardstick: ``python3 -m timeit "sum(i*i for i in range(1000))"``,
    µs per loop (timeit's best of 5)."""
    python3 = shutil.which("python3") or sys.executable
    out = subprocess.run([python3, "-m", "timeit", "sum(i*i for i in range(1000))"], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"best of \d+: ([0-9.]+) (nsec|usec|msec|sec) per loop", out)
    if m is None:
        raise SystemExit(f"could not read the yardstick from: {out!r}")
    return float(m.group(1)) * {"nsec": 1e-3, "usec": 1.0, "msec": 1e3, "sec": 1e6}[m.group(2)]


def controlplane_exe() -> list[str]:
    """The ``controlplane`` command next to this interpreter (or ``python -m controlplane.cli``)."""
    exe = shutil.which("controlplane", path=str(Path(sys.executable).parent)) or shutil.which("controlplane")
    return [exe] if exe else [sys.executable, "-m", "controlplane.cli"]


def cli_command(workload: Path, config: Path, limit: int | None = None) -> list[str]:
    cmd = controlplane_exe()
    cmd += ["sim", "replay", str(workload), "--format", "canonical", "--config", str(config), "--json", "--no-progress"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


def time_cli(cmd: list[str], cwd: Path) -> dict:
    """One whole process: wall seconds spawn to exit, its own peak RSS (``wait4``), its phases
    (``CONTROLPLANE_TIMINGS``), its summary."""
    env = {k: v for k, v in os.environ.items() if k not in _UNTIMED_ENV}
    env["CONTROLPLANE_TIMINGS"] = "1"
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        t1 = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    stamps = parse_timings(stderr)
    if stamps is None:
        raise SystemExit(f"{' '.join(cmd)} printed no phase stamps on stderr:\n{stderr[-2000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    phases = {
        "start_and_imports": stamps["main"] - t0,
        "setup": stamps["loop_start"] - stamps["main"],
        "setup_imports": stamps["replay_imported"] - stamps["main"],
        "setup_session": stamps["session_open"] - stamps["replay_imported"],
        "setup_latency_models": stamps["loop_start"] - stamps["session_open"],
        "loop": stamps["loop_end"] - stamps["loop_start"],
        "write": stamps["closed"] - stamps["loop_end"],
        "exit": t1 - stamps["closed"],
    }
    return {"wall_s": t1 - t0, "startup_s": stamps["loop_start"] - t0, "loop_s": phases["loop"],
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024, "phases": {k: round(v, 4) for k, v in phases.items()}, "summary": summary}


#: Where a function's own time is counted in the profile by area (first match of its file).
AREAS = (
    ("imports", ("<frozen importlib", "importlib/", "marshal.loads", "builtins.compile", "__build_class__",
                 "_imp.", "posix.stat", "io.open_code", "builtins.exec")),
    ("SQL rows (recorder, row checks)", ("controlplane/storage/", "controlplane/recording.py")),
    ("SQL driver (sqlite3, SQLAlchemy)", ("sqlalchemy/", "sqlite3")),
    ("event bus and hook calls", ("controlplane/plugin_manager.py", "controlplane/policy_calls.py", "pluggy/")),
    ("control loop (ticks, scaling, samples)", ("controlplane/control_loop.py", "controlplane/scaling.py")),
    ("core (requests, batches, KV)", ("controlplane/",)),
    ("policies (plugins/)", ("/plugins/",)),
    ("sim driver", ("sim/driver.py",)),
    ("latency model", ("sim/latency/",)),
    ("trace reading", ("sim/traces/",)),
    ("SimPy", ("simpy/",)),
    ("numpy", ("numpy/",)),
)


def profile_cli(cmd: list[str], cwd: Path, top: int = 15) -> dict:
    """The command once under cProfile (``python -m cProfile -m controlplane.cli ...``): its own
    time by area and the ``top`` functions by own time. Profiling slows Python code several
    times over, unevenly: read the shares, not the seconds."""
    import pstats

    out = cwd / "replay.prof"
    args = cmd[cmd.index("sim"):]
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "controlplane.cli", *args], cwd=cwd,
                   check=True, capture_output=True)
    stats = pstats.Stats(str(out)).stats
    total = sum(v[2] for v in stats.values())
    areas: dict[str, float] = {}
    rows = []
    for (path, line, name), (_, ncalls, tottime, _, _) in stats.items():
        where = f"{path}:{name}"
        area = next((a for a, keys in AREAS if any(k in where for k in keys)),
                    "builtins and C calls" if path == "~" else "other Python")
        areas[area] = areas.get(area, 0.0) + tottime
        rows.append((tottime, ncalls, f"{path.split('/work/main/')[-1].split('site-packages/')[-1]}:{line}({name})"))
    rows.sort(reverse=True)
    return {
        "total_s": round(total, 3),
        "by_area_pct": {a: round(100 * t / total, 1) for a, t in sorted(areas.items(), key=lambda x: -x[1])},
        "top_functions": [{"function": f, "calls": n, "own_s": round(t, 3), "pct": round(100 * t / total, 1)}
                          for t, n, f in rows[:top]],
    }


def _profile_table(run: str, prof: dict):
    from rich.table import Table

    t = Table(title=f"{run}: where the time goes (one run under cProfile: shares of {prof['total_s']:.1f} profiled s)")
    t.add_column("area / function")
    t.add_column("share", justify="right")
    t.add_column("calls", justify="right")
    for area, pct in prof["by_area_pct"].items():
        t.add_row(area, f"{pct:.1f}%", "")
    t.add_section()
    for f in prof["top_functions"]:
        t.add_row(f["function"], f"{f['pct']:.1f}%", f"{f['calls']:,}")
    return t


def fidelity(run: str, anchors: Path, config: Path) -> dict:
    """The untimed in-process replay with an observer: per-request comparison with Vidur."""
    from controlplane.config import load_config
    from sim.replay import replay

    run_dir = anchors / run
    obs = _observer()
    cfg = load_config(config, {"storage": {"url": "sqlite://"}})
    result = replay(run_dir / "workload.csv", cfg, trace_format="canonical", record=False, extra_plugins=[obs])
    ids, ours = latencies(obs.rows)
    vidur = _vidur_metrics(run_dir, ids)
    out = {"summary": result.summary, "fidelity": _compare(ours, vidur), "memory_plan": _memory_reason(result.session),
           "restarts": {"ours": int(ours["restarts"].sum()), "vidur": int(vidur["restarts"].sum())},
           "kv_blocks": result.session.core.workers[next(iter(result.session.core.workers))].num_kv_blocks}
    return out


#: What differs between two replays of the same requests without their numbers differing: the run's id,
#: its wall time, and the ``status`` the CLI's ``--json`` adds (the library's ``result.summary`` has none).
_NOT_COMPARED = ("run_id", "wall_s", "status")


def _comparable(summary: dict) -> dict:
    """A summary as the CLI's ``--json`` writes it (JSON's types: lists, string keys), less ``_NOT_COMPARED``:
    the CLI's and the library's alike."""
    return {k: v for k, v in json.loads(json.dumps(summary)).items() if k not in _NOT_COMPARED}


def _speed_table(run: str, reps: list[dict], vidur_scaled: float, n: int):
    from rich.table import Table

    t = Table(title=f"{run}: `controlplane sim replay` whole process vs Vidur ({n:,} requests)")
    for col in ("rep", "whole s", "startup s", "python+cli", "imports", "session", "latency", "loop", "write",
                "exit", "peak RSS MB", "Vidur s (scaled)", "ratio"):
        t.add_column(col, justify="right")
    for i, r in enumerate(reps, 1):
        p = r["phases"]
        t.add_row(str(i), f"{r['wall_s']:.2f}", f"{r['startup_s']:.3f}", f"{p['start_and_imports']:.3f}",
                  f"{p['setup_imports']:.3f}", f"{p['setup_session']:.3f}", f"{p['setup_latency_models']:.3f}",
                  f"{p['loop']:.3f}", f"{p['write']:.3f}", f"{p['exit']:.3f}",
                  f"{r['peak_rss_mb']:,.0f}", f"{vidur_scaled:.2f}", f"{vidur_scaled / r['wall_s']:.1f}x")
    return t


def _fidelity_table(run: str, f: dict):
    from rich.table import Table

    t = Table(title=f"{run}: per-request fidelity against Vidur ({f['kv_blocks']:,} KV blocks/replica from the memory plan)")
    for col in ("metric", "ours", "Vidur", "ours vs Vidur"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    names = {"ttft": "TTFT", "tpot_vidur": "TPOT, Vidur's definition", "tpot": "TPOT, ours vs Vidur's", "e2e": "E2E"}
    for m in METRICS:
        row = f["fidelity"][m]
        for p in PCTS:
            a, b, d = row[f"p{p}"]
            t.add_row(f"{names[m]} p{p} s", f"{a:.4f}", f"{b:.4f}", _pct(d))
        t.add_row(f"{names[m]} per request Pearson / Spearman", "", "", f"{row['pearson']:.4f} / {row['spearman']:.4f}")
    t.add_row("restarts (preemptions)", str(f["restarts"]["ours"]), str(f["restarts"]["vidur"]), "")
    return t


def check_runs(ap: argparse.ArgumentParser, anchors: Path, runs_text: str, fidelity: bool) -> list[str]:
    """--runs as run folders of --anchors holding what this benchmark reads (and Vidur's wall time
    known for each): else ``ap.error`` saying which run or folder is missing and what there is."""
    if not anchors.is_dir():
        ap.error(f"--anchors {anchors}: no such folder" + (" (a file, not a folder)" if anchors.exists() else "")
                 + f"; {ANCHORS_SOURCE}")
    runs = [r.strip() for r in runs_text.split(",") if r.strip()]
    if not runs:
        ap.error(f"--runs: give at least one of {', '.join(RUNS)}")
    there = sorted(p.name for p in anchors.iterdir() if p.is_dir() and not p.name.startswith("."))
    for run in runs:
        if run not in VIDUR_WALL:
            ap.error(f"--runs: unknown run {run!r}; the runs with Vidur's wall time recorded: {', '.join(RUNS)}")
        if not (anchors / run).is_dir():
            ap.error(f"--runs: no run folder {run!r} in --anchors {anchors} (folders there: "
                     f"{', '.join(there) or 'none'})")
        need = ["vidur_config.json", "workload.csv", *(["vidur_request_metrics.csv"] if fidelity else [])]
        missing = [f for f in need if not (anchors / run / f).is_file()]
        if missing:
            ap.error(f"--runs: run folder {anchors / run} has no {', '.join(missing)}")
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchors", type=Path, default=Path(os.environ.get("VIDUR_ANCHORS", DEFAULT_ANCHORS)),
                    help=f"{ANCHORS_SOURCE} (default: ../shared/anchors/vidur beside the repository)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated run folders (default: all, {', '.join(RUNS)})")
    ap.add_argument("--repeats", type=positive_int, default=3,
                    help="whole-process repetitions per run (every one reported; default 3)")
    ap.add_argument("--small", type=nonnegative_int, default=1000,
                    help="also time the code r1 run cut to its first N requests (the start-up target; 0: skip; "
                         "default 1000)")
    ap.add_argument("--check-exact", type=nonnegative_int, nargs="?", const=1000, default=0, metavar="N",
                    help="also compare exact and fast modes on the first N requests "
                         "(default: off; N without a value: 1000)")
    ap.add_argument("--no-fidelity", action="store_true", help="skip the per-request comparison (speed only)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profiled run of each workload")
    args = ap.parse_args(argv)
    runs = check_runs(ap, args.anchors, args.runs, not args.no_fidelity)

    import yaml
    from rich.console import Console

    console = Console(width=max(Console().width, 140))
    load_before = _load_avg()
    yard_before = yardstick_us()
    console.print(f"host yardstick at start: {yard_before:.1f} µs (anchors: {YARDSTICK_REF_US} µs); "
                  f"load average {load_before} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="vs_vidur_") as tmp:
        tmp = Path(tmp)
        dirs, configs = {}, {}
        for run in runs:
            dirs[run] = tmp / run
            dirs[run].mkdir()
            configs[run] = dirs[run] / "run.yaml"
            configs[run].write_text(yaml.safe_dump(anchor_settings(args.anchors / run)))
        # Untimed: fills the disk cache of fitted latency-model pieces (a user's first run).
        warm = tmp / "warm"
        warm.mkdir()
        time_cli(cli_command(args.anchors / runs[0] / "workload.csv", configs[runs[0]], limit=200), warm)

        reps: dict[str, list[dict]] = {run: [] for run in runs}
        small: list[dict] = []
        for i in range(args.repeats):
            for run in runs:
                r = time_cli(cli_command(args.anchors / run / "workload.csv", configs[run]), dirs[run])
                reps[run].append(r)
                console.print(f"  rep {i + 1} {run}: {r['wall_s']:.2f} s whole ({r['cpu_s']:.2f} s CPU), "
                              f"{r['startup_s']:.3f} s to first event, "
                              f"loop {r['loop_s']:.2f} s (load {_load_avg()})")
            if args.small:
                r = time_cli(cli_command(args.anchors / runs[0] / "workload.csv", configs[runs[0]], limit=args.small),
                             warm)
                small.append(r)
        yard_after = yardstick_us()
        profiles = {} if args.no_profile else {
            run: profile_cli(cli_command(args.anchors / run / "workload.csv", configs[run]), dirs[run]) for run in runs}
        fid = {} if args.no_fidelity else {run: fidelity(run, args.anchors, configs[run]) for run in runs}
        # (its own replays: asked for, it runs with --no-fidelity too)
        exact = {run: exact_check(args.anchors / run, args.anchors / run / "workload.csv", args.check_exact)
                 for run in runs} if args.check_exact else {}

    scale = (yard_before + yard_after) / 2 / YARDSTICK_REF_US
    per_run = {}
    for run in runs:
        vidur_scaled = VIDUR_WALL[run][0] * scale
        n = reps[run][0]["summary"]["num_requests"]
        console.print(_speed_table(run, reps[run], vidur_scaled, n))
        if run in profiles:
            console.print(_profile_table(run, profiles[run]))
        if run in fid:
            console.print(_fidelity_table(run, fid[run]))
        walls = [r["wall_s"] for r in reps[run]]
        loops = [r["loop_s"] for r in reps[run]]
        summaries = [_comparable(r["summary"]) for r in reps[run]]
        per_run[run] = {
            "num_requests": n,
            "whole_s": [round(w, 3) for w in walls],
            "startup_s": [round(r["startup_s"], 3) for r in reps[run]],
            "loop_s": [round(x, 3) for x in loops],
            "cpu_s": [round(r["cpu_s"], 3) for r in reps[run]],
            "phases_median_s": {k: round(statistics.median(r["phases"][k] for r in reps[run]), 4)
                                for k in reps[run][0]["phases"]},
            "vidur_wall_s": VIDUR_WALL[run][0], "vidur_wall_basis": VIDUR_WALL[run][1],
            "vidur_wall_scaled_s": round(vidur_scaled, 2),
            "speed_ratio": round(vidur_scaled / statistics.median(walls), 2),
            "speed_ratio_per_rep": [round(vidur_scaled / w, 2) for w in walls],
            "loop_ratio": round(vidur_scaled / statistics.median(loops), 2),
            # Vidur's wall on the idle machine over our CPU seconds (not scaled): what the run costs
            # when it has a core to itself; CPU seconds inflate too on a crowded host (shared caches).
            "speed_ratio_cpu": round(VIDUR_WALL[run][0] / statistics.median(r["cpu_s"] for r in reps[run]), 2),
            # the repetitions' summaries and the fidelity replay's the same (None: one run, nothing compared)
            "deterministic": (all(s == summaries[0] for s in summaries)
                              and (run not in fid or _comparable(fid[run]["summary"]) == summaries[0]))
                             if len(summaries) > 1 or run in fid else None,
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in reps[run]), 1),
        }
        if run in profiles:
            per_run[run]["profile"] = profiles[run]
    if exact:
        console.print(_exact_table([{"run": run, "exact_check": exact[run]} for run in runs]))
    if small:
        console.print(f"code r1 cut to {args.small:,} requests, whole process: "
                      + ", ".join(f"{r['wall_s']:.2f} s (startup {r['startup_s']:.3f}, loop {r['loop_s']:.3f})"
                                  for r in small) + " (target 0.5 s)")
    console.print(f"host yardstick start / end: {yard_before:.1f} / {yard_after:.1f} µs (anchors {YARDSTICK_REF_US} µs: "
                  f"Vidur's walls x{scale:.3f}); load average before / after: {load_before} / {_load_avg()} "
                  f"on {os.cpu_count()} CPUs. The machine may be shared: read the timings beside these.")

    def worst(values):
        return max(values, key=abs)

    results = [fid[run] for run in runs if run in fid]
    summary = {
        "speed_ratio": min(v["speed_ratio"] for v in per_run.values()),
        "startup_s": round(statistics.median(s for v in per_run.values() for s in v["startup_s"]), 3),
        "loop_ratio": min(v["loop_ratio"] for v in per_run.values()),
        "speed_ratio_cpu": min(v["speed_ratio_cpu"] for v in per_run.values()),
        "loop_ratio_basis": "Vidur's whole-process wall over our event loop: an upper bound (Vidur's phases are "
                            "not in the anchors)",
    }
    if results:
        summary.update({
            "ttft_p50_diff_pct": round(worst([r["fidelity"]["ttft"]["p50"][2] for r in results]), 3),
            "tpot_p50_diff_pct": round(worst([r["fidelity"]["tpot_vidur"]["p50"][2] for r in results]), 3),
            "tpot_p50_diff_pct_our_definition": round(worst([r["fidelity"]["tpot"]["p50"][2] for r in results]), 3),
            "e2e_p50_diff_pct": round(worst([r["fidelity"]["e2e"]["p50"][2] for r in results]), 3),
            "ttft_p99_diff_pct": round(worst([r["fidelity"]["ttft"]["p99"][2] for r in results]), 3),
            "tpot_p99_diff_pct": round(worst([r["fidelity"]["tpot_vidur"]["p99"][2] for r in results]), 3),
            "e2e_p99_diff_pct": round(worst([r["fidelity"]["e2e"]["p99"][2] for r in results]), 3),
            "min_pearson_e2e": round(min(r["fidelity"]["e2e"]["pearson"] for r in results), 4),
        })
    summary.update({
        "deterministic": all(compared) if (compared := [v["deterministic"] for v in per_run.values()
                                                         if v["deterministic"] is not None]) else None,
        "peak_rss_mb": max(v["peak_rss_mb"] for v in per_run.values()),
        "small_run": {"requests": args.small, "whole_s": [round(r["wall_s"], 3) for r in small],
                      "cpu_s": [round(r["cpu_s"], 3) for r in small],
                      "startup_s": [round(r["startup_s"], 3) for r in small],
                      "phases_median_s": {k: round(statistics.median(r["phases"][k] for r in small), 4)
                                          for k in small[0]["phases"]} if small else {}},
        "runs": per_run,
        "repeats": args.repeats,
        "command": "controlplane sim replay workload.csv --format canonical --config run.yaml --json --no-progress",
        "host_yardstick_us": [round(yard_before, 1), round(yard_after, 1)],
        "yardstick_ref_us": YARDSTICK_REF_US,
        "load_avg": _load_avg(),
    })
    if exact:
        summary["exact_vs_fast_max_pct"] = round(max(
            abs(x[m][f"p{p}"]) for x in exact.values() for m in ("ttft", "tpot", "e2e") for p in PCTS), 6)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    run_main(main)
