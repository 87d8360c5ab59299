"""How steady the live CPU worker's pace is at one fixed batch shape, and what steadies it.

    python benchmarks/fidelity_lib/steadiness.py [--variants base,gc-freeze,...] [--block-s 15] [--blocks 4]
    python benchmarks/fidelity_lib/steadiness.py --variants steady#1,steady#2,thp-glibc#1,thp-glibc#2 --block-s 8

A name ``VARIANT#K`` is another process of the same variant: several copies of one variant tell a pace that
belongs to the process (copies keep different paces block after block) from one that belongs to the time (every
process moves together from one pass to the next).

Each variant is a worker process of its own (spawned with the variant's environment: glibc malloc
tunables act only from a process's start), loading the same tiny model with one torch thread, as
the live worker does. The variants take turns in blocks (A B C .. then again, the order rotated
each pass), so whatever the host does over the minutes falls on all of them alike. In a block a
worker runs the same cycle over and over: 8 prompts of 64 tokens prefilled in one step, then 24
decode steps of those 8 sequences, then they leave. Every step is timed on the wall clock and on
the thread's own CPU clock (a step the OS descheduled has wall >> CPU), with its minor page faults
and the cyclic collector's time during it. Before each block the host yardstick
(``sum(i*i for i in range(1000))``, µs per loop, as the README's anchors) times the core's speed.

Per variant: the median decode step per block and their spread over the blocks ((max - min) /
mean: the minute-to-minute drift), the tail within a block (p99 / p50), CPU over wall, faults and
collector time per step, and the spread of the block medians divided by the yardstick.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

#: variant -> (environment at the process's start, what the process applies after the model loads)
VARIANTS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "base": ({}, ()),
    "gc-freeze": ({}, ("gc-freeze",)),
    "interop-1": ({}, ("interop-1",)),
    "malloc-fixed": ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"},
                     ()),
    "arena-1": ({"MALLOC_ARENA_MAX": "1"}, ()),
    "flush-denormal": ({}, ("flush-denormal",)),
    "affinity": ({}, ("affinity",)),
    "steady": ({}, ("steady",)),  # what the live worker applies (worker_runtime.steady_allocator)
    # transparent huge pages (the host's THP mode is "madvise"): glibc's heap advised huge (glibc >= 2.35), or
    # torch's own CPU allocations of 2 MiB and more (read when torch loads)
    "thp-glibc": ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, ("steady",)),
    "thp-torch": ({"C10_THP_MEM_ALLOC_ENABLE": "1", "THP_MEM_ALLOC_ENABLE": "1"}, ("steady",)),
}


def variant_of(name: str) -> str:
    """The variant a process name runs: ``steady#2`` is another copy of ``steady``."""
    return name.split("#", 1)[0]
PROMPTS, PROMPT_TOKENS, DECODES = 8, 64, 24


def _yardstick_us() -> float:
    loops = timeit.repeat("sum(i*i for i in range(1000))", repeat=5, number=200)
    return min(loops) / 200 * 1e6


def _steal_s() -> float:
    """CPU time the hypervisor took from this VM's CPUs so far (/proc/stat ``steal``), in CPU-seconds."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _anon_huge_kb() -> int | None:
    """This process's anonymous memory in transparent huge pages (kB), or None where the kernel does not say."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def by_pass(medians: dict[str, list[float]]) -> list[dict[str, float]]:
    """Per pass, the processes' block medians together: their mean (what the time did) and their spread (what
    the processes did differently at the same minute)."""
    out = []
    for k in range(min(map(len, medians.values()))):
        xs = [m[k] for m in medians.values()]
        mean = statistics.fmean(xs)
        out.append({"mean_ms": round(mean, 3), "between_processes_pct": round(100 * (max(xs) - min(xs)) / mean, 1)})
    return out


def _child(conn: Any, variant: str, threads: int) -> None:
    import gc
    import random
    import resource

    import torch

    steps = VARIANTS[variant_of(variant)][1]
    if "interop-1" in steps:
        torch.set_num_interop_threads(1)
    torch.set_num_threads(threads)
    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.sampling import StopCondition

    settings = WorkerModelSettings(preset="tiny-llama", device="cpu", precision="auto", max_seq_len=512)
    if "steady" in steps:
        from controlplane.live.worker_runtime import steady_allocator

        assert steady_allocator()
    b = CausalLMBackend.from_settings(settings)
    if "gc-freeze" in steps:
        gc.collect()
        gc.freeze()
    if "flush-denormal" in steps:
        torch.set_flush_denormal(True)
    if "affinity" in steps:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    gc_s = [0.0, 0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_s[1] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - gc_s[1]

    gc.callbacks.append(on_gc)
    rng = random.Random(0)
    stop = StopCondition(eos_token_ids=())
    n = 0

    def cycle(out: list[tuple]) -> None:
        nonlocal n
        ids = [f"r{n}-{i}" for i in range(PROMPTS)]
        n += 1
        for rid in ids:
            b.add_request(rid, [rng.randrange(4, b.vocab_size) for _ in range(PROMPT_TOKENS)], max_new_tokens=DECODES + 8,
                          stop=stop)
        for k in range(DECODES + 1):
            f0, g0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, gc_s[0]
            c0, w0 = time.thread_time(), time.perf_counter()
            b.step(ids, ()) if k == 0 else b.step((), ids)
            w1, c1 = time.perf_counter(), time.thread_time()
            out.append(("prefill" if k == 0 else "decode", w1 - w0, c1 - c0,
                        resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, gc_s[0] - g0))
        for rid in ids:
            b.remove(rid)

    cycle([])  # warm-up, not timed
    conn.send(("ready", _anon_huge_kb()))
    while (msg := conn.recv()) is not None:
        yard = _yardstick_us()
        out: list[tuple] = []
        t0, s0 = time.perf_counter(), _steal_s()
        end = t0 + msg
        while time.perf_counter() < end:
            cycle(out)
        conn.send((yard, out, (_steal_s() - s0) / (time.perf_counter() - t0)))


def _summary(blocks: list[tuple[float, list[tuple]]]) -> dict[str, Any]:
    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]

    dec = [[s for s in out if s[0] == "decode"] for _, out, _ in blocks]
    pre = [[s for s in out if s[0] == "prefill"] for _, out, _ in blocks]
    med = [statistics.median(s[1] for s in d) * 1e3 for d in dec]
    cpu = [statistics.median(s[2] for s in d) * 1e3 for d in dec]
    pmed = [statistics.median(s[1] for s in p) * 1e3 for p in pre]
    yard = [b[0] for b in blocks]
    norm = [m / y for m, y in zip(med, yard)]
    every = [s for d in dec for s in d]
    spread = lambda xs: 100 * (max(xs) - min(xs)) / statistics.fmean(xs)  # noqa: E731
    return {
        "decode_ms_by_block": [round(m, 3) for m in med],
        "decode_spread_pct": round(spread(med), 1),
        "decode_cpu_ms_by_block": [round(c, 3) for c in cpu],
        "decode_cpu_spread_pct": round(spread(cpu), 1),
        "prefill_ms_by_block": [round(m, 2) for m in pmed],
        "prefill_spread_pct": round(spread(pmed), 1),
        "yardstick_us_by_block": [round(y, 1) for y in yard],
        "decode_over_yardstick_spread_pct": round(spread(norm), 1),
        "decode_p99_over_p50": round(pct([s[1] for s in every], 99) / pct([s[1] for s in every], 50), 3),
        "cpu_over_wall": round(sum(s[2] for s in every) / sum(s[1] for s in every), 3),
        "faults_per_step": round(statistics.fmean(s[3] for d in dec + pre for s in d), 2),
        "gc_ms_per_1000_steps": round(1e6 * sum(s[4] for d in dec + pre for s in d) / max(1, sum(map(len, dec + pre))),
                                      2),
        "steps": sum(map(len, dec + pre)),
        "steal_cpus_by_block": [round(b[2], 3) for b in blocks],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--block-s", type=float, default=15.0)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    names = [v for v in a.variants.split(",") if v]
    unknown = [v for v in names if variant_of(v) not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    procs = {}
    for v in names:
        saved = dict(os.environ)
        os.environ.update({"OMP_NUM_THREADS": str(a.threads), **VARIANTS[variant_of(v)][0]})
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child, args=(child, v, a.threads), daemon=True)
        p.start()
        os.environ.clear()
        os.environ.update(saved)
        procs[v] = (p, parent)
    huge = {}
    for v, (_, conn) in procs.items():
        msg = conn.recv()
        if not (isinstance(msg, tuple) and msg[0] == "ready"):
            raise SystemExit(f"variant {v} did not start")
        huge[v] = msg[1]
    blocks: dict[str, list] = {v: [] for v in names}
    started = time.strftime("%H:%M:%S", time.gmtime())
    for k in range(a.blocks):
        order = names[k % len(names):] + names[:k % len(names)]
        for v in order:
            procs[v][1].send(a.block_s)
            blocks[v].append(procs[v][1].recv())
        print(f"pass {k + 1}/{a.blocks} done {time.strftime('%H:%M:%S', time.gmtime())} UTC, load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
    for p, conn in procs.values():
        conn.send(None)
        p.join(timeout=10)
    result = {"started_utc": started, "ended_utc": time.strftime("%H:%M:%S", time.gmtime()),
              "block_s": a.block_s, "blocks": a.blocks, "loadavg_end": os.getloadavg(),
              "variants": {v: {**_summary(blocks[v]), "anon_huge_kb": huge[v]} for v in names}}
    result["by_pass"] = by_pass({v: s["decode_ms_by_block"] for v, s in result["variants"].items()})
    for v, s in result["variants"].items():
        print(f"{v:15s} decode ms/block {s['decode_ms_by_block']} spread {s['decode_spread_pct']}% "
              f"(cpu {s['decode_cpu_spread_pct']}%, /yardstick {s['decode_over_yardstick_spread_pct']}%), "
              f"prefill spread {s['prefill_spread_pct']}%, p99/p50 {s['decode_p99_over_p50']}, cpu/wall "
              f"{s['cpu_over_wall']}, faults/step {s['faults_per_step']}, gc ms/1000 steps {s['gc_ms_per_1000_steps']}, "
              f"huge pages {s['anon_huge_kb']} kB")
    for k, p in enumerate(result["by_pass"]):
        print(f"pass {k + 1}: decode ms {p['mean_ms']} (mean over processes), {p['between_processes_pct']}% between them")
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
