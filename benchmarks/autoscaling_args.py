"""The command line of benchmarks/autoscaling.py (benchmarks/autoscaling_shapes.py passes the same options on)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_cli import OneLineParser, positive_int
from sim.traces import FORMATS, parse_rate_profile
from sim.traces.transforms import COPIES

#: --help's first line.
DESCRIPTION = "Autoscaling policies on a trace that needs several replicas, against static provisioning at the peak."

#: Where Mooncake's conversation trace is looked for unless --mooncake: where the project's developers keep it (a
#: folder beside the repository). It is not bundled.
MOONCAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "mooncake_fast25" / \
    "conversation_trace.jsonl"
#: Where a user gets it, and what to pass: said by --help and when a --suite setup skips it.
MOONCAKE_SOURCE = ("Mooncake's conversation_trace.jsonl is not in the repository: download FAST25-release/traces/"
                   "conversation_trace.jsonl from https://github.com/kvcache-ai/Mooncake (Apache-2.0) and give "
                   "--mooncake PATH")



def _rate_profile(text: str) -> tuple:
    """--rate-profile's points; a bad one is argparse's one-line error naming the option and the point."""
    try:
        return parse_rate_profile(text, "")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/autoscaling_shapes.py reads the same options)."""
    ap = OneLineParser(description=DESCRIPTION)
    add_trace_options(ap)
    add_run_options(ap)
    ap.add_argument("--start-replicas", type=positive_int, default=1,
                    help="replicas each autoscaler starts from, warm (default 1); static counts start with theirs")
    ap.add_argument("--max-replicas", type=positive_int, default=16,
                    help="each autoscaler's bound (min 1; one without min_replicas/max_replicas settings gets "
                    "them from the scaling-rules wrapper) and the most static replicas tried (default 16)")
    ap.add_argument("--warmup", type=float, default=300.0,
                    help="slo_after_warmup counts requests arriving this long after the first (default 300 s)")
    ap.add_argument("--static-from", type=positive_int, default=1,
                    help="first static replica count tried (default 1; the search goes up or down from it)")
    ap.add_argument("--no-static", action="store_true", help="skip the static provisioning search (default: search)")
    add_static_options(ap)
    ap.add_argument("--find-scale", type=int, default=None, metavar="N",
                    help="replay no policy: search the --rate-scale at which N static replicas just reach --target "
                    "(static replays only, from --rate-scale or 1), print it and the command to run next "
                    "(default: off)")
    ap.add_argument("--policies", help="comma-separated autoscalers (default: every installed one)")
    ap.add_argument("--set", action="append", default=[], metavar="POLICY.KEY=VALUE",
                    help="a policy setting, e.g. --set hpa.target=8 (repeatable; default: each policy's defaults)")
    ap.add_argument("--suite", action="store_true", help="replay every setup of SUITE (both real traces, "
                    "several rate scales); --trace, --format, --rate-scale, --ttft and --static-from come from it "
                    "(default: one trace)")
    ap.add_argument("--setups", help="with --suite: comma-separated setup names (default: all)")
    ap.add_argument("--mooncake", default=str(MOONCAKE),
                    help=f"the trace of --suite's Mooncake setups. {MOONCAKE_SOURCE} (default: "
                         "../shared/data/traces/mooncake_fast25/ beside the repository)")
    ap.add_argument("--progress", type=float, default=15.0, metavar="S",
                    help="print on stderr, every S wall seconds of a replay, which run it is and how far in simulated "
                    "time (default 15; 0: off)")
    ap.add_argument("--match", action="store_true",
                    help="also sweep each baseline of MATCH_SWEEPS toward more replicas and report, as '<name> matched', "
                    "its run with the fewest GPU-hours at or above the SLO planner's (default: off)")
    ap.add_argument("--clairvoyant", action="store_true",
                    help="also replay the clairvoyant bound: each window's fewest static replicas that met the SLO, "
                    "started a cold start ahead (benchmarks/autoscaling_clairvoyant.py; default: off)")
    ap.add_argument("--clairvoyant-window", type=float, default=60.0,
                    help="window of the clairvoyant bound in seconds (default 60)")
    return ap


def add_trace_options(ap: argparse.ArgumentParser, refused: str | None = None) -> None:
    """The trace and its transforms. ``refused``: what --limit and --rate-profile say they are refused for (a
    script that takes them only to refuse them, with --help saying so)."""
    ap.add_argument("--trace", help="trace file (default: the bundled Azure code trace)")
    ap.add_argument("--format", default=None, help=f"trace format: {' | '.join(FORMATS)} (default: detect; azure for "
                    "the bundled trace; azure reads the 2023 and 2024 Azure LLM releases)")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="a trace format option, repeatable (e.g. --opt failed=drop; docs/traces.md; default: none)")
    ap.add_argument("--speed-up", type=float, default=1.0, help="divide arrival times by this (default 1)")
    ap.add_argument("--limit", type=positive_int, default=None,
                    help=f"refused here: {refused}" if refused else "replay at most this many requests (default: all)")
    ap.add_argument("--rate-scale", type=float, default=None,
                    help="thin (<1) or replicate (>1) requests (default: 1, as recorded)")
    ap.add_argument("--rate-profile", type=_rate_profile, default=None, metavar="T:F,...",
                    help=f"refused here: {refused}" if refused else
                    "a rate factor that changes over time, as `controlplane sim replay --rate-profile` "
                    "(e.g. 0:1,1800:2); times --rate-scale when both (default: none)")
    ap.add_argument("--copies", choices=COPIES, default=None,
                    help="where --rate-scale > 1 puts a request's copies: clumped (default), in the gap after it; "
                    "shuffled, the same arrival times dealt the copies of each 64 consecutive requests in a "
                    "random order (one long prompt's copies no longer one burst); shifted, the n-th copies as one "
                    "more stream of the trace's own arrivals, moved within each 600-s window by an offset of its "
                    "own (the trace's bursts no longer add up; docs/traces.md)")
    ap.add_argument("--window-start", type=float, default=None,
                    help="keep requests arriving from this second (from the trace's first arrival; default: 0)")
    ap.add_argument("--window-end", type=float, default=None,
                    help="keep requests arriving before this second (default: the trace's end)")


def add_run_options(ap: argparse.ArgumentParser) -> None:
    """The run config every replay shares, and the SLO."""
    ap.add_argument("--config", help="base run config (default: the bundled sim/data/default_replay.yaml)")
    ap.add_argument("--cold-start", type=float, default=None,
                    help="seconds from scale-up to ready (default: the config's, else from the weights' size)")
    ap.add_argument("--target", type=float, default=0.99,
                    help="SLO attainment static_peak must reach, a share in (0, 1] (default 0.99)")
    ap.add_argument("--ttft", type=float, default=None, help="TTFT target (default: the config's slo.ttft_s)")
    ap.add_argument("--tpot", type=float, default=None, help="TPOT target (default: the config's slo.tpot_s)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the run's seed: the trace's random draws (thinning, copies, spread) and the replay's "
                    "(default 0)")
    ap.add_argument("--price", type=float, default=None,
                    help="price of one GPU-hour of the model's GPU (default: the config's cluster.gpu_prices)")


def add_static_options(ap: argparse.ArgumentParser) -> None:
    """How static counts are replayed, and where every run is recorded."""
    ap.add_argument("--no-early-stop", action="store_true",
                    help="replay every static count to its end (default: a count stops once its misses keep it "
                    "below --target, which is all the search needs of it; its row then shows <= the most it could reach)")
    ap.add_argument("--out", help="append every run as a JSON line to this file (default: none)")


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_args.py", "autoscaling.py [--help]"))
