"""Live prefix reuse: the daemon on two CPU workers, a multi-tenant shared-prefix workload, TTFT by router.

    python benchmarks/live_prefix_reuse.py [--requests 64] [--tenants 6] [--system-tokens 1200] [--preset small-llama]

Starts the daemon (`controlplane daemon --config ...`, process pool, two workers with one CPU
thread each, random-weight model built from a preset: nothing is downloaded) three times and
sends the same requests, two clients in a closed loop over loopback HTTP, streaming, each
request a tenant's long system prompt (token ids) plus its own question:

* ``least-loaded``: least-loaded routing, workers keep no prefix KV (every prompt prefilled whole);
* ``least-loaded+reuse``: least-loaded routing, workers keep prefix KV (``prefix_cache_tokens``);
* ``weighted+reuse``: ``weighted-router`` (prefix-cache hit + load) over the ``prefix-cache``
  plugin fed with the live requests' block hashes, workers keep prefix KV.

TTFT is the client's: request sent to first streamed token. Ends with one JSON line: per
configuration ttft_p50_s, ttft_p90_s, e2e_p50_s, requests, prefix_hit_rate (the run's
``prefix_token_hit_ratio`` as the daemon's summary reports it) and the ratio
``ttft_p50_least_loaded_over_weighted``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
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

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 16

CONFIGS = {
    "least-loaded": ("least-loaded", False),
    "least-loaded+reuse": ("least-loaded", True),
    "weighted+reuse": ("weighted-router", True),
}


def workload(args) -> list[list[int]]:
    rng = random.Random(args.seed)
    systems = [[rng.randrange(4, 250) for _ in range(args.system_tokens)] for _ in range(args.tenants)]
    return [systems[rng.randrange(args.tenants)] + [rng.randrange(4, 250) for _ in range(args.question_tokens)]
            for _ in range(args.requests)]


def run_config(args, name: str, prompts: list[list[int]], tmp: Path) -> dict[str, Any]:
    from controlplane.config import DEFAULT_PLUGINS, load_config

    router, reuse = CONFIGS[name]
    cache_tokens = args.cache_tokens if reuse else 0
    worker = {"preset": args.preset, "precision": "fp32", "device": "cpu", "seed": 0,
              "max_seq_len": args.system_tokens + args.question_tokens + args.max_tokens + 8,
              "prefix_cache_tokens": cache_tokens, "prefix_block_tokens": BLOCK}
    enabled = list(dict.fromkeys([router, *(["prefix-cache"] if reuse else []), *DEFAULT_PLUGINS]))
    cfg = load_config(None, {
        "cluster": {"models": [{"name": "tiny", "replicas": 2, "worker": worker, "max_num_seqs": 8,
                                "precision": worker["precision"]}]},  # (its worker's: the two must agree)
        "plugins": {"enabled": enabled, "settings": {"prefix-cache": {"capacity_blocks": cache_tokens // BLOCK}}
                    if reuse else {}},
    })
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    log = tmp / f"{name}.log"
    with running_daemon(["--config", str(path), "--pool", "process", "--cpu-threads", "1",
                         "--db", f"sqlite:///{tmp / (name + '.db')}", "--log-level", "warning"],
                        cwd=ROOT, log_path=log, ready_timeout_s=300, stop_timeout_s=60) as (base, _):
        ttft, e2e, wall = asyncio.run(_load(base, prompts, args.max_tokens, args.clients))
        import httpx

        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    hits = _metric(metrics, "prefix")
    return {"ttft_p50_s": float(np.percentile(ttft, 50)), "ttft_p90_s": float(np.percentile(ttft, 90)),
            "e2e_p50_s": float(np.percentile(e2e, 50)), "requests": len(ttft), "wall_s": wall,
            "prefix_hits": hits}


def _metric(text: str, kind: str) -> float | None:
    """Requests served with a ``kind`` cache hit, from the daemon's Prometheus text (None if absent)."""
    total = None
    for line in text.splitlines():
        if line.startswith("controlplane_cache_hits_total") and f'kind="{kind}"' in line:
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


async def _load(base: str, prompts: list[list[int]], max_tokens: int, clients: int):
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    ttft: list[float] = []
    e2e: list[float] = []

    async def client(http) -> None:
        while not queue.empty():
            p = queue.get_nowait()
            body = {"prompt": p, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
            t0 = time.perf_counter()
            first = None
            async with http.stream("POST", f"{base}/v1/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line.startswith("data:") and first is None and '"text"' in line:
                        first = time.perf_counter() - t0
            e2e.append(time.perf_counter() - t0)
            ttft.append(first if first is not None else e2e[-1])

    async with httpx.AsyncClient(timeout=300) as http:
        warm = {"prompt": [5, 6, 7], "max_tokens": 1, "temperature": 0}
        await asyncio.gather(*(http.post(f"{base}/v1/completions", json=warm) for _ in range(2)))
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    return ttft, e2e, wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="requests sent per configuration (default 64)")
    ap.add_argument("--tenants", type=int, default=6, help="tenants, each with its own system prompt (default 6)")
    ap.add_argument("--system-tokens", type=int, default=1200,
                    help="tokens of each tenant's system prompt, the shared prefix (default 1200)")
    ap.add_argument("--question-tokens", type=int, default=24,
                    help="tokens of each request's own question after it (default 24)")
    ap.add_argument("--max-tokens", type=int, default=4, help="tokens generated per request (default 4)")
    ap.add_argument("--clients", type=int, default=2, help="concurrent clients in a closed loop (default 2)")
    ap.add_argument("--cache-tokens", type=int, default=4096,
                    help="prefix KV kept per worker in the +reuse configurations (tokens; default 4096)")
    ap.add_argument("--preset", default="small-llama",
                    help="the workers' model preset, random weights (default small-llama)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompts' token ids and tenants (default 0)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated configurations run (default: all, {', '.join(CONFIGS)})")
    args = ap.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        ap.error(f"--configs: unknown {', '.join(bad)}; valid: {', '.join(CONFIGS)}")
    prompts = workload(args)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cp-prefix-") as tmp:
        for n in names:
            Console(stderr=True).print(f"[dim]daemon with {n} ...[/dim]")
            results[n] = run_config(args, n, prompts, Path(tmp))
    t = Table(title=f"live prefix reuse: {args.requests} requests, {args.tenants} tenants x {args.system_tokens}-token "
                    f"system prompts, 2 CPU workers ({args.preset}), {args.clients} clients")
    for c in ("configuration", "TTFT p50 s", "TTFT p90 s", "E2E p50 s", "requests with a prefix hit", "wall s"):
        t.add_column(c, justify="left" if c == "configuration" else "right")
    for n, m in results.items():
        t.add_row(n, f"{m['ttft_p50_s']:.4f}", f"{m['ttft_p90_s']:.4f}", f"{m['e2e_p50_s']:.4f}",
                  "-" if m["prefix_hits"] is None else f"{m['prefix_hits']:.0f}", f"{m['wall_s']:.1f}")
    Console(width=160).print(t)
    if "least-loaded" in results and "weighted+reuse" in results:
        results["ttft_p50_least_loaded_over_weighted"] = (results["least-loaded"]["ttft_p50_s"]
                                                         / results["weighted+reuse"]["ttft_p50_s"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
