"""Live serving throughput: batching through the control plane, int8 vs fp32, and the daemon's overhead.

    python benchmarks/live_throughput.py [--preset medium-llama] [--layers 4] [--threads 1] [--device cpu]

(a) Batched serving against one-at-a-time generation (`CausalLMBackend.generate_one`, sequential)
    on the same random-weight model and requests: through the daemon over loopback HTTP (all
    requests sent at once; ``batched_over_sequential``) and through the in-process live driver
    (`LiveDriver`, default plugins: continuous batching; ``driver_batched_over_sequential``).
(b) int8 (torch dynamic quantization) against fp32 at batch 32 (`controlplane.live.quant_bench`:
    each variant loaded, warmed up, timed): generated tokens/s and the ratio.
(c) The daemon's overhead: the daemon (`python -m controlplane.cli.live`, OpenAI API) in its own
    process on loopback, driven by an HTTP load generator, against calling the backend directly:
    requests/s, and the latency it adds at p50/p99 for the same requests one at a time; the
    in-process driver alone splits that into control plane + driver vs HTTP. The three
    one-at-a-time rows send ``--daemon-requests`` requests each; the ``--concurrency`` row sends
    those prompts repeated whole until there are more than 4 per client (`concurrent_load`: 80
    at the defaults, 40 prompts twice for 16 clients), so its clients do not spend the run
    ramping up and down.

Random weights (built from a config; nothing is downloaded). Greedy decoding, EOS ignored, so
every request generates exactly its token budget on every path. Ends with one JSON line holding
``batched_over_sequential`` and ``int8_over_fp32_bs32`` (targets: >= 5 and >= 1.5) and the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # daemon_run
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from daemon_run import running_daemon  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 120)
ROOT = Path(__file__).resolve().parents[1]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(length)] for _ in range(n)]


def worker_dict(args: argparse.Namespace, precision: str = "fp32") -> dict[str, Any]:
    from controlplane.live.model_source import PRESETS

    source: dict[str, Any]
    if args.layers is not None:
        source = {"config": {**PRESETS[args.preset], "num_hidden_layers": args.layers}}
    else:
        source = {"preset": args.preset}
    return {**source, "precision": precision, "device": args.device,
            "max_seq_len": args.prompt_tokens + args.max_tokens + 8, "seed": args.seed}


# --- (a) batched through the control plane vs sequential ------------------------------------------


def sequential(args: argparse.Namespace, ps: list[list[int]]) -> dict[str, float]:
    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.sampling import StopCondition

    backend = CausalLMBackend.from_settings(WorkerModelSettings(**worker_dict(args)))
    stop = StopCondition(eos_token_ids=())
    backend.generate_one(ps[0], 2, stop=stop)  # warm-up
    times = []
    for p in ps:
        out = backend.generate_one(p, args.max_tokens, stop=stop)
        assert len(out.token_ids) == args.max_tokens
        times.append(out.duration_s)
    total = sum(times)
    return {"requests": len(ps), "wall_s": total, "rps": len(ps) / total,
            "tok_s": len(ps) * args.max_tokens / total, "latency_p50_s": statistics.median(times)}


def live_config(worker: dict[str, Any], *, max_num_seqs: int, db: str | None = None):
    """The run config of one deployment serving ``worker`` (defaults for everything else)."""
    from controlplane.config import load_config

    deployment = {"name": "bench", "replicas": 1, "worker": worker, "max_num_seqs": max_num_seqs,
                  "max_model_len": worker["max_seq_len"],
                  "precision": worker.get("precision", "auto")}  # (its worker's: a config file with both must agree)
    return load_config(None, {"cluster": {"models": [deployment]}, "storage": {"url": db or "sqlite://"}})


async def _batched(args: argparse.Namespace, ps: list[list[int]]) -> dict[str, float]:
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool_thread import LocalThreadPool

    cfg = live_config(worker_dict(args), max_num_seqs=max(len(ps), 1))
    async with LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=args.threads), record=False) as driver:
        await driver.wait_ready(600)
        await driver.generate(ps[0], max_tokens=2, ignore_eos=True)  # warm-up
        start = time.perf_counter()
        handles = [await driver.submit(p, max_tokens=args.max_tokens, ignore_eos=True) for p in ps]
        results = [await h.result() for h in handles]
        wall = time.perf_counter() - start
    assert all(r.ok and r.completion_tokens == args.max_tokens for r in results), [r.reason for r in results]
    return {"requests": len(ps), "wall_s": wall, "rps": len(ps) / wall, "tok_s": len(ps) * args.max_tokens / wall,
            "latency_p50_s": statistics.median(r.finish_s - r.arrival_s for r in results)}


def daemon_batched(args: argparse.Namespace, ps: list[list[int]], tmp: str) -> dict[str, float]:
    """(a) through the daemon: the same model and requests, all sent at once by as many HTTP clients."""
    cfg = live_config(worker_dict(args), max_num_seqs=max(len(ps), 1))
    path = Path(tmp) / "batched-config.json"
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    with daemon_process(args, f"sqlite:///{tmp}/batched.db", config=path) as base:
        wall, latencies = asyncio.run(_http_load(base, ps, args.max_tokens, len(ps)))
    return {"requests": len(latencies), "wall_s": wall, "rps": len(latencies) / wall,
            "tok_s": len(latencies) * args.max_tokens / wall, "latency_p50_s": statistics.median(latencies)}


# --- (b) int8 vs fp32 ----------------------------------------------------------------------------


def quant(args: argparse.Namespace) -> list[Any]:
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.quant_bench import run_quant_bench

    base = WorkerModelSettings(**worker_dict(args))
    return run_quant_bench(base, [args.quant_base, args.quant_low], [1, 32], args.prompt_tokens, args.max_tokens,
                           args.quant_repeats)


# --- (c) the daemon's overhead -------------------------------------------------------------------


@contextlib.contextmanager
def daemon_process(args: argparse.Namespace, db: str, config: Path | None = None):
    """The daemon in its own process on a free loopback port: ``args.daemon_preset`` on one worker,
    or the run config file ``config`` as it stands."""
    model = ["--config", str(config)] if config else ["--preset", args.daemon_preset, "--precision", "fp32",
                                                       "--workers", "1"]
    log_path = Path(tempfile.mkdtemp(prefix="cp-daemon-")) / "daemon.log"
    with running_daemon([*model, "--pool", args.daemon_pool, "--cpu-threads", str(args.threads), "--db", db,
                         "--log-level", "warning"], cwd=ROOT, log_path=log_path, ready_timeout_s=180,
                        stop_timeout_s=30) as (base, _):
        yield base


def _body(p: list[int], max_tokens: int) -> dict[str, Any]:
    return {"prompt": p, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


async def _http_load(base: str, ps: list[list[int]], max_tokens: int, concurrency: int) -> tuple[float, list[float]]:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for p in ps:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            p = queue.get_nowait()
            t = time.perf_counter()
            r = await http.post(f"{base}/v1/completions", json=_body(p, max_tokens))
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            assert r.json()["usage"]["completion_tokens"] == max_tokens

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await http.post(f"{base}/v1/completions", json=_body(ps[0], 2))  # warm-up, keep-alive
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return wall, latencies


def _stats(wall: float, latencies: list[float]) -> dict[str, float]:
    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50_s": pct(latencies, 50),
            "p99_s": pct(latencies, 99)}


#: The concurrent row sends more than this many requests per client.
PER_CLIENT = 4


def concurrent_repeats(prompts: int, concurrency: int) -> int:
    """How many times the concurrent row sends each prompt: the fewest whole repeats that make more
    than `PER_CLIENT` requests per client (40 prompts, 16 clients: 2, 80 requests; 20 prompts: 4,
    80; 100 prompts: 1, 100)."""
    return PER_CLIENT * concurrency // prompts + 1


def concurrent_load(ps: list[list[int]], concurrency: int) -> list[list[int]]:
    """The concurrent row's requests: the prompts ``ps`` repeated `concurrent_repeats` times."""
    return ps * concurrent_repeats(len(ps), concurrency)


def daemon_overhead(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.sampling import StopCondition

    n, m = args.daemon_requests, args.daemon_max_tokens
    settings = WorkerModelSettings(preset=args.daemon_preset, precision="fp32", device=args.device, seed=args.seed)
    import torch

    torch.set_num_threads(args.threads)
    backend = CausalLMBackend.from_settings(settings)
    ps = prompts(n, args.daemon_prompt_tokens, backend.vocab_size, args.seed + 7)
    stop = StopCondition(eos_token_ids=())
    backend.generate_one(ps[0], 2, stop=stop)
    direct = []
    start = time.perf_counter()
    for p in ps:
        t = time.perf_counter()
        backend.generate_one(p, m, stop=stop)
        direct.append(time.perf_counter() - t)
    out: dict[str, Any] = {"direct": _stats(time.perf_counter() - start, direct)}
    del backend

    async def in_process() -> tuple[float, list[float]]:
        from controlplane.live.driver import LiveDriver
        from controlplane.live.pool_thread import LocalThreadPool

        cfg = live_config({"preset": args.daemon_preset, "precision": "fp32", "device": args.device,
                           "seed": args.seed, "max_seq_len": 2048}, max_num_seqs=128)
        async with LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=args.threads), record=False) as driver:
            await driver.wait_ready(300)
            await driver.generate(ps[0], max_tokens=2, ignore_eos=True)
            lat = []
            start = time.perf_counter()
            for p in ps:
                t = time.perf_counter()
                r = await driver.generate(p, max_tokens=m, ignore_eos=True)
                lat.append(time.perf_counter() - t)
                assert r.completion_tokens == m
            return time.perf_counter() - start, lat

    out["driver_c1"] = _stats(*asyncio.run(in_process()))
    with daemon_process(args, f"sqlite:///{tmp}/daemon.db") as base:
        out["daemon_c1"] = _stats(*asyncio.run(_http_load(base, ps, m, 1)))
        many = concurrent_load(ps, args.concurrency)
        out[f"daemon_c{args.concurrency}"] = _stats(*asyncio.run(_http_load(base, many, m, args.concurrency)))
    out["added_p50_ms"] = (out["daemon_c1"]["p50_s"] - out["direct"]["p50_s"]) * 1e3
    out["added_p99_ms"] = (out["daemon_c1"]["p99_s"] - out["direct"]["p99_s"]) * 1e3
    out["driver_added_p50_ms"] = (out["driver_c1"]["p50_s"] - out["direct"]["p50_s"]) * 1e3
    return out


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="medium-llama", help="model for (a) and (b) (hidden 1024; default medium-llama)")
    ap.add_argument("--layers", type=int, default=4, help="override the preset's layer count (keeps the run short; default 4)")
    ap.add_argument("--device", default="cpu", help="torch device of every model: cpu, cuda, cuda:N (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 cores shared: 1 is steadier; default 1)")
    ap.add_argument("--requests", type=int, default=48, help="(a) requests served batched (default 48)")
    ap.add_argument("--sequential", type=int, default=3, help="(a) requests timed one at a time (default 3)")
    ap.add_argument("--prompt-tokens", type=int, default=16, help="(a), (b) prompt length in tokens (default 16)")
    ap.add_argument("--max-tokens", type=int, default=64,
                    help="(a), (b) tokens generated per request, EOS ignored (default 64)")
    ap.add_argument("--quant-repeats", type=int, default=2, help="(b) timed repeats of each precision (default 2)")
    ap.add_argument("--quant-base", default="fp32", help="(b) the reference precision (default fp32)")
    ap.add_argument("--quant-low", default="int8", help="(b) the quantized precision (int8 is CPU-only; nf4 on CUDA; default int8)")
    ap.add_argument("--daemon-preset", default="tiny-llama", help="(c) model: small, so the overhead shows (default tiny-llama)")
    ap.add_argument("--daemon-pool", default="process", help="(c) the daemon's worker pool: process | thread (default process)")
    ap.add_argument("--daemon-requests", type=int, default=40,
                    help="(c) requests each one-at-a-time row sends (backend, driver, daemon); the --concurrency "
                         f"row sends them repeated whole until more than {PER_CLIENT} per client (80 at the "
                         "defaults) (default 40)")
    ap.add_argument("--daemon-prompt-tokens", type=int, default=32, help="(c) prompt length in tokens (default 32)")
    ap.add_argument("--daemon-max-tokens", type=int, default=8, help="(c) tokens generated per request (default 8)")
    ap.add_argument("--concurrency", type=int, default=16,
                    help=f"(c) concurrent HTTP clients of the last row, which sends more than {PER_CLIENT} requests "
                         "per client (default 16)")
    ap.add_argument("--skip-daemon", action="store_true", help="skip (c), the daemon's overhead (default: run it)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompts (default 0)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()
    load = os.getloadavg()[0]
    vocab = 512
    model = f"{args.preset}" + (f" ({args.layers} layers)" if args.layers else "")
    console.print(f"[bold]live throughput[/] {model} on {args.device}, {args.threads} torch thread(s); "
                  f"load average {load:.2f} on {os.cpu_count()} cores", highlight=False)

    # (a)
    ps = prompts(args.requests, args.prompt_tokens, vocab, args.seed)
    seq = sequential(args, ps[: args.sequential])
    bat = asyncio.run(_batched(args, ps))
    driver_ratio = bat["rps"] / seq["rps"]
    paths = [("one at a time (generate_one)", seq), ("batched: control plane + live driver, in process", bat)]
    via_daemon = None
    if not args.skip_daemon:
        with tempfile.TemporaryDirectory() as tmp:
            via_daemon = daemon_batched(args, ps, tmp)
        paths.append((f"batched: the daemon over loopback HTTP, {len(ps)} clients ({args.daemon_pool} pool)",
                      via_daemon))
    ratio = (via_daemon or bat)["rps"] / seq["rps"]
    t = Table(title=f"(a) {args.requests} requests, {args.prompt_tokens} prompt + {args.max_tokens} output tokens, fp32",
              header_style="bold")
    for col in ("path", "requests", "wall", "requests/s", "tokens/s", "latency p50"):
        t.add_column(col, justify="left" if col == "path" else "right")
    for name, r in paths:
        t.add_row(name, str(r["requests"]), f"{r['wall_s']:.2f} s", f"{r['rps']:.2f}", f"{r['tok_s']:.1f}",
                  f"{r['latency_p50_s']:.2f} s")
    t.caption = (f"batched / sequential requests/s: {ratio:.2f}x through the daemon, " if via_daemon else
                 "batched / sequential requests/s: ") + f"{driver_ratio:.2f}x through the in-process driver"
    console.print(t)

    # (b)
    from controlplane.live.quant_bench import render_table

    rows = quant(args)
    console.print(render_table(rows, title=f"(b) {model}: {args.quant_base} vs {args.quant_low}"))
    by = {(r.variant, r.batch_size): r for r in rows if r.ok}
    fp32, int8 = by.get((args.quant_base, 32)), by.get((args.quant_low, 32))
    quant_ratio = int8.tokens_per_s / fp32.tokens_per_s if fp32 and int8 else float("nan")
    console.print(f"{args.quant_low} / {args.quant_base} at batch 32: {quant_ratio:.2f}x tokens/s", highlight=False)

    # (c)
    daemon: dict[str, Any] = {}
    if not args.skip_daemon:
        with tempfile.TemporaryDirectory() as tmp:
            daemon = daemon_overhead(args, tmp)
        t = Table(title=f"(c) daemon overhead: {args.daemon_preset}, {args.daemon_prompt_tokens} prompt + "
                        f"{args.daemon_max_tokens} output tokens, {args.daemon_pool} pool, loopback HTTP",
                  header_style="bold")
        for col in ("path", "requests", "requests/s", "latency p50", "latency p99"):
            t.add_column(col, justify="left" if col == "path" else "right")
        labels = {"direct": "backend directly (generate_one), one at a time",
                  "driver_c1": "in-process driver + control plane, one at a time",
                  "daemon_c1": "daemon over HTTP, one at a time",
                  f"daemon_c{args.concurrency}": f"daemon over HTTP, {args.concurrency} concurrent clients "
                                                 f"(the {args.daemon_requests} requests "
                                                 f"x{concurrent_repeats(args.daemon_requests, args.concurrency)})"}
        for key, label in labels.items():
            r = daemon[key]
            t.add_row(label, str(r["requests"]), f"{r['rps']:.1f}", f"{r['p50_s'] * 1e3:.1f} ms",
                      f"{r['p99_s'] * 1e3:.1f} ms")
        t.caption = (f"the daemon adds {daemon['added_p50_ms']:.1f} ms at p50, {daemon['added_p99_ms']:.1f} ms at p99 "
                     f"(the driver and control plane alone: {daemon['driver_added_p50_ms']:.1f} ms at p50)")
        console.print(t)

    result = {
        "batched_over_sequential": round(ratio, 3),  # through the daemon (HTTP), unless --skip-daemon
        "batched_path": "daemon" if via_daemon else "driver",
        "driver_batched_over_sequential": round(driver_ratio, 3),
        "daemon_batched_rps": round(via_daemon["rps"], 3) if via_daemon else None,
        "int8_over_fp32_bs32": round(quant_ratio, 3),  # --quant-low over --quant-base (default int8 / fp32)
        "quant_pair": f"{args.quant_low}/{args.quant_base}",
        "batched_rps": round(bat["rps"], 3),
        "sequential_rps": round(seq["rps"], 4),
        "fp32_tok_s_bs32": round(fp32.tokens_per_s, 1) if fp32 else None,
        "int8_tok_s_bs32": round(int8.tokens_per_s, 1) if int8 else None,
        "fp32_model_mb": round(fp32.model_mb, 1) if fp32 else None,
        "int8_model_mb": round(int8.model_mb, 1) if int8 else None,
        "model": model,
        "device": args.device,
        "threads": args.threads,
        "load_average": round(load, 2),
        "wall_s": round(time.perf_counter() - wall0, 1),
    }
    if daemon:
        c = f"daemon_c{args.concurrency}"
        result["daemon"] = {
            "pool": args.daemon_pool,
            "model": args.daemon_preset,
            "direct_rps": round(daemon["direct"]["rps"], 2),
            "daemon_c1_rps": round(daemon["daemon_c1"]["rps"], 2),
            f"{c}_rps": round(daemon[c]["rps"], 2),
            "driver_c1_rps": round(daemon["driver_c1"]["rps"], 2),
            "added_latency_p50_ms": round(daemon["added_p50_ms"], 2),
            "added_latency_p99_ms": round(daemon["added_p99_ms"], 2),
            "driver_added_latency_p50_ms": round(daemon["driver_added_p50_ms"], 2),
            "direct_p50_ms": round(daemon["direct"]["p50_s"] * 1e3, 2),
            "daemon_c1_p50_ms": round(daemon["daemon_c1"]["p50_s"] * 1e3, 2),
        }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
