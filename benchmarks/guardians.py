"""Guardians on a trace: what checking responses costs and what it catches, by strategy.

    python benchmarks/guardians.py                              # the bundled Azure code trace
    python benchmarks/guardians.py --trace conversation_trace.jsonl \
        --format mooncake --limit 3000 --replicas 16 --judge-replicas 8   # docs/guardians.md's Mooncake row

(Mooncake's conversation trace, Apache-2.0: kvcache-ai/Mooncake, FAST25-release/traces/.)

Replays the trace under six guardian strategies, all checking responses (stage "output") with
simulated guardian replicas that have their own queue and cost GPU-seconds (`sim.guardian_pool`):

* ``none``: no guardian;
* ``sync-all``: the judge checks every response, the reply waits;
* ``async-all``: the judge checks every response beside the reply (a block comes after it);
* ``uniform``: the judge checks a uniform ``--budget`` share, sync;
* ``risk``: the judge checks a ``--budget`` share picked by risk (tenants' block rates learnt
  online from verdicts, `plugins.guardian_risk`), sync;
* ``cascade``: a cheap screen checks everything, only responses it scores at or above a threshold
  go to the judge (`plugins.guardian_cascade`), sync. The threshold is tuned on held-out data
  (the same requests under ``--held-out-seeds`` (10) other seeds' tenants, prompts, labels and
  scores, pooled): the highest that keeps ``--keep`` (99%) of the judge's blocks there.

**Synthetic labels** (stated, since public traces have none): requests get synthetic tenants
(``--tenants``, the first ``--risky-tenants`` of them harmful at ``--risky-rate``, the others at
``--harmful-rate``) and synthetic prompt texts: ``--popular-share`` of requests reuse one of
``--popular`` prompts (with that prompt's own fixed prompt and answer lengths, as the same prompt at
temperature 0 is the same request; so the response and verdict caches act), the others are unique. A text is
harmful or not once (`sim.guardian_labels`). The judge is a near-perfect guardian (separation
12, noise 0.3); the screen's score is informative but noisy (separation ``--screen-separation``,
noise ``--screen-noise``). Neither sees the label, only its score of the text; the risk sampler
sees only tenants and verdicts.

Prints a table (TTFT/E2E p50/p99 of answered requests, guardian GPU-seconds, share of harmful
responses caught, share served before a verdict, blocked answers served from a cache; as wide as
the terminal, or 240 columns when stdout is a file or a pipe), then one
JSON line mapping each variant to ``e2e_p99_s``, ``ttft_p99_s``, ``guardian_gpu_s``,
``harmful_caught``, ``served_before_verdict``, ``blocked_served_from_cache``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from controlplane.config import load_config  # noqa: E402
from controlplane.events import RequestFinished  # noqa: E402
from controlplane.hookspecs import hookimpl  # noqa: E402
from controlplane.testing import EventLog  # noqa: E402
from controlplane.types import Decision, RequestStatus  # noqa: E402
from controlplane.verdict_after_reply import VerdictAfterReply  # noqa: E402
from sim.guardian_labels import LabelModel, fixed_uniform  # noqa: E402
from sim.replay import TraceTransforms, prepare_trace, replay  # noqa: E402
from sim.traces import FORMATS  # noqa: E402
from sim.traces.bundled import bundled_trace_path  # noqa: E402

from bench_cli import (  # noqa: E402
    check_trace, fraction, nonnegative_float, nonnegative_int, positive_float, positive_int, run_main, share,
    trace_errors)

VARIANTS = ("none", "sync-all", "async-all", "uniform", "risk", "cascade")
BASE_PLUGINS = ["queue-limit", "exact-cache", "least-loaded", "continuous-batching", "fixed-replicas",
                "static-memory", "builtin-latency-models"]
VERDICT_TTL_S = 3600.0
DECISIVE = ("pass", "block")


def guardians(args) -> list[dict]:
    """The judge (a Llama-Guard-class 8B model on its own A100s) and the cheap screen (a small
    classifier): latency per batch from their prefill speed, quality of their scores."""
    return [
        {"name": "judge", "kind": "simulated", "replicas": args.judge_replicas, "timeout_s": 10.0,
         "latency": {"base_s": 0.02, "per_token_s": 6e-5, "max_batch": 16},
         "quality": {"separation": 12.0, "noise": 0.3}},
        {"name": "screen", "kind": "simulated", "replicas": 1, "timeout_s": 10.0,
         "latency": {"base_s": 0.002, "per_token_s": 2e-6, "max_batch": 64},
         "quality": {"separation": args.screen_separation, "noise": args.screen_noise}},
    ]


def label_rates(args) -> tuple[float, dict[str, float]]:
    return args.harmful_rate, {f"t{i}": args.risky_rate for i in range(args.risky_tenants)}


def synthetic(trace, args) -> list:
    """Tenants and prompt texts for a trace without them (existing ones are kept)."""
    out = []
    for t in trace:
        u = fixed_uniform(args.seed, "tenant", t.request_id)
        pop = fixed_uniform(args.seed, "popular", t.request_id)
        if pop < args.popular_share and t.prompt is None:
            # The same prompt (at temperature 0) is the same request: same lengths, same answer.
            k = int(pop / args.popular_share * args.popular)
            out.append(dataclasses.replace(
                t, tenant=t.tenant or f"t{k % args.tenants}", prompt=f"popular prompt {k}",
                prompt_tokens=64 + int(fixed_uniform(args.seed, "prompt-len", k) * 2000),
                output_tokens=8 + int(fixed_uniform(args.seed, "output-len", k) * 400), hash_ids=()))
            continue
        out.append(dataclasses.replace(t, tenant=t.tenant or f"t{int(u * args.tenants)}",
                                       prompt=t.prompt or f"prompt of request {t.request_id}"))
    return out


def tune_threshold(raw, args) -> tuple[float, float, float]:
    """The cascade's threshold, tuned on held-out data: the same workload shape (these requests'
    arrivals and lengths) under ``args.held_out_seeds`` other seeds' tenants, prompts, labels and
    guardian scores, pooled, so nothing of the replayed run's labels or scores is seen. The
    highest screen score that keeps ``args.keep`` of the judge's blocks there. Returns
    (threshold, kept, share escalated)."""
    g = {s["name"]: s["quality"] for s in guardians(args)}
    screen, judge = [], []
    for k in range(args.held_out_seeds):
        held = argparse.Namespace(**{**vars(args), "seed": args.seed + 1000 + k})
        rate, tenants = label_rates(held)
        model = LabelModel(rate, tenants, seed=held.seed)
        for r in synthetic(raw, held):
            screen.append(model.score("screen", "output", r, g["screen"]["separation"], g["screen"]["noise"]))
            judge.append(model.score("judge", "output", r, g["judge"]["separation"], g["judge"]["noise"]) >= 0.5)
    screen_a, judge_a = np.array(screen, dtype=float), np.array(judge, dtype=bool)
    blocked = np.sort(screen_a[judge_a])
    t = float(blocked[int(np.floor((1 - args.keep) * len(blocked)))]) if len(blocked) else 0.5
    kept = float((screen_a[judge_a] >= t).mean()) if judge_a.any() else 1.0  # no block to keep: none missed
    return t, kept, float((screen_a >= t).mean()) if len(screen_a) else 0.0


def config(args, variant: str, threshold: float):
    rate, tenants = label_rates(args)
    judge = {"guardian": "judge", "verdict_ttl_s": VERDICT_TTL_S}
    plugin, settings = "sampled-guardian", {"rate": 0.0}
    if variant == "sync-all":
        settings = {**judge, "rate": 1.0, "mode": "sync"}
    elif variant == "async-all":
        settings = {**judge, "rate": 1.0, "mode": "async"}
    elif variant == "uniform":
        settings = {**judge, "rate": args.budget, "mode": "sync"}
    elif variant == "risk":
        plugin, settings = "risk-guardian", {**judge, "rate": args.budget, "mode": "sync"}
    elif variant == "cascade":
        plugin, settings = "cascade-guardian", {"screen": ["screen"], "judge": ["judge"], "escalate_above": threshold,
                                                "mode": "sync", "verdict_ttl_s": VERDICT_TTL_S}
    return load_config(None, {
        "seed": args.seed,
        "control": {"tick_s": 5.0, "metrics_interval_s": 60.0},
        "plugins": {"enabled": [*BASE_PLUGINS, plugin], "settings": {
            "continuous-batching": {"policy": "sarathi", "chunk_size": 512}, plugin: settings}},
        "cluster": {"models": [{
            "name": "default", "replicas": args.replicas, "latency_model": "vidur",
            "latency": {"model": "meta-llama/Meta-Llama-3-8B", "gpu": "a100", "tensor_parallel": 1,
                        "attention": "scaled"},
            "gpu": "a100-80gb", "gpus_per_replica": 1}]},
        "sim": {"guardian_block_rate": rate, "guardian_tenant_block_rates": tenants},
        "guardians": {"models": guardians(args)},
        "storage": {"record_batches": False},
    })


class Replies:
    """Each request's final state as it was when its reply went out (an async verdict comes later
    and changes the live object, not what the client got)."""

    name = "guardian-benchmark-replies"

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.log = EventLog()
        self.after_reply: dict[str, tuple[float, str]] = {}  # request id -> (when, verdict) of a verdict after it

    @hookimpl
    def cp_on_event(self, event):
        if type(event) is RequestFinished:
            r = event.request
            self.rows.append((r.request_id, r.status, r.guardian_verdict, r.cache_hit, r.prompt, r.finish_s, r))
        elif type(event) is Decision:
            self.log.events.append(event)
        elif type(event) is VerdictAfterReply and event.verdict in DECISIVE:
            self.after_reply.setdefault(event.request_id, (event.time_s, event.verdict))


def first_verdicts(rows, after_reply: dict[str, tuple[float, str]]) -> tuple[dict, dict]:
    """When each text first had a decisive verdict, and when it was first blocked: a sync verdict
    at its reply, an async one when it came (after the reply: under async-all no text has one
    when its own reply goes out, but a cached answer, stored once it passed, has)."""
    verdict_at, blocked_at = {}, {}
    for rid, status, verdict, _hit, prompt, finish, _ in rows:
        if verdict in DECISIVE:
            at, verdict = finish, verdict
        elif rid in after_reply:
            at, verdict = after_reply[rid]
        else:
            continue
        at = np.inf if at is None else at
        verdict_at[prompt] = min(verdict_at.get(prompt, np.inf), at)
        if verdict == "block" or status is RequestStatus.BLOCKED:
            blocked_at[prompt] = min(blocked_at.get(prompt, np.inf), at)
    return verdict_at, blocked_at


def measure(trace, cfg, labels: LabelModel) -> dict:
    rec = Replies()
    log = rec.log
    t0 = time.perf_counter()
    summary = replay(iter(trace), cfg, record=False, extra_plugins=[rec]).summary
    wall = time.perf_counter() - t0
    late_blocks = set()
    refused = 0
    for d in log.decisions:
        if d.action == "guardian_block_after_reply":
            late_blocks.add(d.subject)
        elif d.action == "cache_hit_refused":
            refused += 1
    rows = rec.rows
    verdict_at, blocked_at = first_verdicts(rows, rec.after_reply)
    answered = (RequestStatus.COMPLETED, RequestStatus.BLOCKED)
    harmful = [(rid, status) for rid, status, *_, r in rows if status in answered and labels.is_harmful(r)]
    caught_ids = {rid for rid, status in harmful if status is RequestStatus.BLOCKED or rid in late_blocks}
    caught = len(caught_ids)
    served = [row for row in rows if row[1] is RequestStatus.COMPLETED]
    before = 0
    served_from_cache_blocked = 0
    for rid, status, verdict, hit, prompt, finish, _ in served:
        if hit:  # a cached answer had a verdict if its text had one before this hit
            if blocked_at.get(prompt, np.inf) <= finish:
                served_from_cache_blocked += 1
            if verdict_at.get(prompt, np.inf) > finish:
                before += 1
        elif verdict not in DECISIVE:  # unchecked, pending (async), timed out
            before += 1
    return {
        "ttft_p50_s": summary["ttft_p50_s"], "ttft_p99_s": summary["ttft_p99_s"],
        "e2e_p50_s": summary["e2e_p50_s"], "e2e_p99_s": summary["e2e_p99_s"],
        "guardian_gpu_s": round(summary.get("guardian_gpu_seconds", 0.0), 3),
        "harmful_caught": round(caught / len(harmful), 4) if harmful else None,
        "served_before_verdict": round(before / len(served), 4) if served else None,
        "blocked_served_from_cache": served_from_cache_blocked,
        "_harmful": len(harmful), "_caught": caught, "_caught_ids": caught_ids, "_blocked": summary["num_blocked"],
        "_cache_hits": summary["cache_hits"], "_refused": refused, "_wall_s": wall,
        "_judge_checks": summary.get("guardians", {}).get("judge", {}).get("checks", 0),
        "_judge_wait_s": summary.get("guardians", {}).get("judge", {}).get("mean_wait_s"),
        "_requests": len(rows),
    }


def _share(value: float | None) -> str:
    """A share for the table; "-" where there was nothing to count (no harmful answer, none served)."""
    return "-" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--trace", type=Path, default=None, help="trace file (default: the bundled Azure code trace)")
    ap.add_argument("--format", default=None, choices=FORMATS, help="trace format (default: from the file)")
    ap.add_argument("--limit", type=positive_int, default=None, help="replay only the first N requests (default: all)")
    ap.add_argument("--speed-up", type=positive_float, default=1.0,
                    help="compress arrival times by this factor (default 1)")
    ap.add_argument("--replicas", type=positive_int, default=4, help="generation replicas (fixed; default 4)")
    ap.add_argument("--judge-replicas", type=positive_int, default=3, help="replicas of the judge guardian (default 3)")
    ap.add_argument("--budget", type=share, default=0.3,
                    help="share the uniform and risk samplers check, in (0, 1] (default 0.3)")
    ap.add_argument("--harmful-rate", type=fraction, default=0.02,
                    help="synthetic harmful share (ordinary tenants; default 0.02)")
    ap.add_argument("--risky-rate", type=fraction, default=0.25,
                    help="synthetic harmful share (risky tenants; default 0.25)")
    ap.add_argument("--tenants", type=positive_int, default=20, help="synthetic tenants (default 20)")
    ap.add_argument("--risky-tenants", type=nonnegative_int, default=2,
                    help="the first this many tenants are harmful at --risky-rate (default 2)")
    ap.add_argument("--popular", type=positive_int, default=200, help="distinct popular prompts (default 200)")
    ap.add_argument("--popular-share", type=fraction, default=0.15,
                    help="share of requests with a popular prompt (default 0.15)")
    ap.add_argument("--screen-separation", type=nonnegative_float, default=4.0,
                    help="how far the cheap screen's scores of harmful and harmless texts lie apart (default 4.0)")
    ap.add_argument("--screen-noise", type=nonnegative_float, default=1.2,
                    help="noise of the cheap screen's scores (default 1.2)")
    ap.add_argument("--keep", type=share, default=0.99,
                    help="share of the judge's blocks the cascade keeps on the held-out data (margin over 95%%; "
                         "default 0.99)")
    ap.add_argument("--held-out-seeds", type=positive_int, default=10,
                    help="held-out replicas of the workload (other seeds) the cascade is tuned on (default 10)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the trace's draws and the synthetic tenants, prompts and labels (default 0)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS,
                    help=f"guardian strategies replayed (default: all, {' '.join(VARIANTS)})")
    args = ap.parse_args(argv)
    path = check_trace(ap, args.trace, args.format) if args.trace is not None else bundled_trace_path()

    console = Console(stderr=True)
    with trace_errors(ap):
        raw = list(prepare_trace(path, seed=args.seed, trace_format=args.format,
                                 transforms=TraceTransforms(limit=args.limit, speed_up=args.speed_up)))
    if not raw:
        ap.error(f"--trace {path}: no request to replay")
    trace = synthetic(raw, args)
    tuned = "cascade" in args.variants  # (the held-out replays of the labels: only for the cascade)
    threshold, kept, escalated = tune_threshold(raw, args) if tuned else (0.5, None, None)
    rate, tenants = label_rates(args)
    labels = LabelModel(rate, tenants, seed=args.seed)
    harmful_share = np.mean([labels.is_harmful(t) for t in trace])
    console.print(f"[bold]{path.name}[/]: {len(trace):,} requests, {args.replicas} generation replicas; synthetic "
                  f"labels: {args.tenants} tenants, {args.risky_tenants} harmful at {args.risky_rate:.0%}, the rest "
                  f"at {args.harmful_rate:.0%} ({harmful_share:.2%} of this trace); {args.popular_share:.0%} of "
                  f"requests reuse {args.popular} popular prompts")
    if tuned:
        console.print(f"cheap screen: separation {args.screen_separation}, noise {args.screen_noise}; cascade "
                      f"threshold {threshold:.3f} tuned on held-out data (the same requests under seeds "
                      f"{args.seed + 1000}..{args.seed + 999 + args.held_out_seeds}'s tenants, prompts, labels and "
                      f"scores): it keeps {kept:.1%} of the judge's blocks there and escalates {escalated:.1%}")
    configs = {v: config(args, v, threshold) for v in args.variants}  # each checked before any replay
    results = {}
    with console.status("replaying") as status:
        for v in args.variants:
            status.update(f"replaying: {v}")
            results[v] = measure(trace, configs[v], labels)
            console.print(f"  {v}: {results[v]['_wall_s']:.1f} s")
    table = Table(title="guardian strategies (responses checked; latencies of answered requests)")
    for col in ("variant", "TTFT p50", "TTFT p99", "E2E p50", "E2E p99", "guardian GPU-s", "judge checks",
                "judge wait", "harmful caught", "served before verdict", "blocked", "cache hits",
                "hits refused", "blocked served from cache"):
        table.add_column(col, justify="right")
    for v, m in results.items():
        table.add_row(v, *(f"{m[k]:.3f}" if m[k] is not None else "-" for k in
                           ("ttft_p50_s", "ttft_p99_s", "e2e_p50_s", "e2e_p99_s")),
                      f"{m['guardian_gpu_s']:.1f}", f"{m['_judge_checks']:,}",
                      f"{m['_judge_wait_s']:.3f}" if m["_judge_wait_s"] is not None else "-",
                      f"{_share(m['harmful_caught'])} ({m['_caught']}/{m['_harmful']})",
                      _share(m["served_before_verdict"]), f"{m['_blocked']:,}", f"{m['_cache_hits']:,}",
                      f"{m['_refused']:,}", str(m["blocked_served_from_cache"]))
    Console(width=None if sys.stdout.isatty() else 240).print(table)  # a file or a pipe: one line a row
    if "none" in results and "async-all" in results:
        a, n = results["async-all"]["e2e_p99_s"], results["none"]["e2e_p99_s"]
        print(f"async-all E2E p99 vs none: {a / n - 1:+.2%} (target within 2%)")
    if "sync-all" in results and "cascade" in results:
        s, c = results["sync-all"], results["cascade"]
        both = len(c["_caught_ids"] & s["_caught_ids"]) / max(1, len(s["_caught_ids"]))
        print(f"cascade catches {both:.1%} of the harmful responses sync-all catches (target >= 95%), "
              f"with {c['guardian_gpu_s'] / max(1e-9, s['guardian_gpu_s']):.1%} of its guardian GPU-seconds "
              "(target <= 40%)")
    keys = ("e2e_p99_s", "ttft_p99_s", "guardian_gpu_s", "harmful_caught", "served_before_verdict",
            "blocked_served_from_cache")
    print(json.dumps({v: {k: m[k] for k in keys} for v, m in results.items()}))
    return 0


if __name__ == "__main__":
    run_main(main)
