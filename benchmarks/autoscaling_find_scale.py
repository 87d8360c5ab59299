"""`benchmarks/autoscaling.py --find-scale N`: the rate scale at which static provisioning needs N replicas.

The issue's check replays traces "scaled to need 2-16 replicas", and a reviewer with a new trace does
not know which `--rate-scale` does that. Without this, each guess was a whole benchmark run (every
policy, then static counts from 1 up). This searches the scale with static replays at N replicas
only (all ready at the start, like `static_peak`): doubling or halving from `--rate-scale` (default 1)
until N replicas reach `--target` at one scale and miss it at the next, then halving that bracket
(geometrically) until its ends are within ``1 + 0.5 / N`` of each other, so that a capacity roughly
proportional to the count leaves N-1 replicas short at the scale found. A scale that misses stops as
soon as its misses keep it below the target (benchmarks/autoscaling_early_stop.py; `--no-early-stop`: whole
replays), its attainment then reading ``<=`` the most it could have reached. Every replay is printed on
stderr (and recorded with `--out`); the answer is one JSON line and the command to run next.
"""

from __future__ import annotations

import json
import math
import sys
from argparse import Namespace
from typing import Callable

#: Doublings or halvings tried before giving up: 2**12 = 4096 times the starting scale either way.
MAX_STEPS = 12


def short(scale: float) -> float:
    """A scale to 4 significant digits (as printed)."""
    return float(f"{scale:.4g}")


def find_scale(args: Namespace, run: Callable[..., dict], record: Callable[[Namespace, str, dict], None]) -> dict:
    """The largest rate scale found at which ``args.find_scale`` static replicas reach ``args.target``
    (``rate_scale``), the least at which they miss it (``above``), and each one's attainment."""
    n = args.find_scale
    tried: dict[float, float | str] = {}  # a stopped replay's: "<=" the most it could reach

    def meets(scale: float) -> bool:
        sub = Namespace(**{**vars(args), "rate_scale": scale})
        # a scale it misses needs no more than that answer: stopped once its misses keep it below the target
        row = run(sub, "fixed-replicas", n, stop_below=None if getattr(args, "no_early_stop", False) else args.target)
        stopped = row.get("stopped_early")
        tried[scale] = f"<={row['slo_attainment_at_most']}" if stopped else row["slo_attainment"]
        how = (f"stopped at simulated {row['stopped_at_sim_s']:.0f} s: {row['misses_when_stopped']:,} misses > "
               f"{row['misses_allowed']:,} allowed" if stopped else "")
        print(f"find-scale: static x{n} at --rate-scale {scale}: SLO {tried[scale]} "
              f"({row['num_requests']:,} requests, {row['wall_s']} s{'; ' + how if how else ''})",
              file=sys.stderr, flush=True)
        record(sub, f"static x{n}", row)
        return not stopped and row["slo_attainment"] >= args.target

    scale = float(args.rate_scale or 1.0)
    # every scale tried is one of 4 significant digits, so the scale printed and passed on is the one replayed
    lo = hi = None
    if meets(scale):
        lo = scale
        for _ in range(MAX_STEPS):
            scale = short(scale * 2)
            if not meets(scale):
                hi = scale
                break
            lo = scale
    else:
        hi = scale
        for _ in range(MAX_STEPS):
            scale = short(scale / 2)
            if meets(scale):
                lo = scale
                break
            hi = scale
    if lo is None or hi is None:
        side = "missed" if lo is None else "reached"
        raise SystemExit(f"--find-scale {n}: static x{n} {side} SLO attainment {args.target} at every rate scale "
                         f"tried ({min(tried):.4g}-{max(tried):.4g}); "
                         + ("the SLO may be one no count meets (a long prompt's prefill alone): loosen --ttft / "
                            "--tpot, or look at the trace's --window-start / --window-end"
                            if lo is None else "the trace holds too few requests to load them: widen its window"))
    while hi / lo > 1 + 0.5 / n:
        mid = short(math.sqrt(lo * hi))
        if not lo < mid < hi:
            break
        if meets(mid):
            lo = mid
        else:
            hi = mid
    return {"replicas": n, "rate_scale": lo, "slo_attainment": tried[lo], "above": hi,
            "above_slo_attainment": tried[hi], "target": args.target, "replays": len(tried)}


def next_command(argv: list[str], scale: float, n: int) -> str:
    """The command line as typed, ``--find-scale`` (and any ``--rate-scale`` / ``--static-from``) replaced by
    the scale found and ``--static-from N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--find-scale", "--rate-scale", "--static-from"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return " ".join(["python benchmarks/autoscaling.py", *out, "--rate-scale", f"{scale}", "--static-from", str(n)])


def report(args: Namespace, found: dict, argv: list[str]) -> None:
    """What was found, the command to run next, and the JSON line (last)."""
    n, scale = found["replicas"], found["rate_scale"]
    print(f"static x{n} reaches SLO attainment {args.target} up to --rate-scale {scale} "
          f"({found['slo_attainment']}) and misses it at {found['above']} ({found['above_slo_attainment']}); "
          f"{found['replays']} static replays. Next (its static search tries x{n - 1} too, so static_peak says "
          f"whether fewer suffice):\n  {next_command(argv, scale, n)}", flush=True)
    if scale >= 2:
        print(copies_note(scale, getattr(args, "copies", None)), flush=True)
    print(json.dumps({"find_scale": found}))


def copies_note(scale: float, copies: str | None) -> str:
    """What replication at ``scale`` >= 2 does to the trace, and what to try on it."""
    if copies == "shifted":
        return (f"note: at --rate-scale {scale} each request is emitted {int(scale)} or {int(scale) + 1} times, "
                "the n-th copies of all requests as one more stream of the trace's own arrivals, moved within each "
                "600-s window by an offset of its own (--copies shifted): as many times the users, whose bursts do "
                "not add up. "
                "benchmarks/autoscaling_window_needs.py with the same options says how much of static peak any "
                "autoscaler could save on it.")
    placed = ("its copies dealt over the slots of its block of 64 requests (--copies shuffled), with the same lengths"
              if copies == "shuffled" else
              "its copies arriving within the gap to the next request with the same lengths (--copies clumped, the "
              "default): bursts of copies, which set the replicas a TTFT target needs more than the rate does; "
              "--copies shuffled spreads each request's copies over its block (search again with it)")
    return (f"note: at --rate-scale {scale} each request is emitted {int(scale)} or {int(scale) + 1} times, {placed}. "
            "The trace's own bursts are replicated too (a second with 5 arrivals has 5 times the scale; --copies "
            "shifted moves each stream of copies on its own, so they do not add up), so on a sparse, bursty trace "
            "slo-planner's defaults over-provision (docs/autoscaling.md, Limits): try also --set "
            "slo-planner.shape_copies=once, and benchmarks/autoscaling_window_needs.py with the same options says how "
            "much of static peak any autoscaler could save on it.")


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_find_scale.py", "autoscaling.py --find-scale N [--trace PATH --format F ...]"))
