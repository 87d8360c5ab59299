"""`python -m sim.traces TRACE [--format F] [--seed N] [--opt k=v ...] [TRANSFORMS]`: summarize a trace
and time the read.

A quick look at an unfamiliar trace (rows, span, rate, length percentiles) before simulating it.
With `controlplane sim replay`'s trace transforms (``--window-start 600 --window-end 660``,
``--prompt-scale 0.01``, ...) it summarizes what that replay would see: the transforms are applied
by `sim.replay.prepare_trace`. With or without transforms, the trace is read as the replay reads it,
with the replay's random streams of ``--seed``: a Mooncake or Bailian trace's arrivals, spread
inside its timestamp buckets, and a Vidur trace's synthetic arrivals are the replay's.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from controlplane.cli.replay_args import PARAMETERS

from . import parse_options
from .bundled import bundled_trace
from ._io import not_a_trace_file
from .copies import COPIES

#: `controlplane sim replay`'s options that set a trace transform, in its signature's order: read
#: here with that command's names and conversions (`controlplane.cli.replay_args.PARAMETERS`).
TRANSFORM_PARAMETERS = ("window_start", "window_end", "speed_up", "repeat", "rate_scale", "rate_profile", "copies",
                        "limit", "prompt_scale", "output_scale", "max_prompt_tokens", "max_output_tokens")
_TRANSFORM_OPTIONS = [(parameter, names[0], kind) for parameter, names, kind, _, _ in PARAMETERS
                      if parameter in TRANSFORM_PARAMETERS]
#: The least value of each transform option that has one (``--limit`` 1), as `controlplane sim replay` refuses less.
_LEAST = {parameter: (names[0], least) for parameter, names, _, _, least in PARAMETERS
          if parameter in TRANSFORM_PARAMETERS and least is not None}
#: How many of the bad rows ``on_error=skip`` skipped are shown, each with its error.
SKIPPED_SHOWN = 3
_METAVARS = {"rate_profile": "T:F,...", "copies": "|".join(COPIES)}
#: Each transform option's help, shortly (`controlplane sim replay --help` says each in full).
_HELP = {
    "window_start": "keep requests arriving at or after this second (default: from the first)",
    "window_end": "keep requests arriving before this second (default: to the last)",
    "speed_up": "divide arrival times by this factor (default: 1)",
    "repeat": "play the trace this many times back to back, after the window and speed-up (default: once)",
    "rate_scale": "thin (<1) or replicate (>1) requests to scale the rate (default: 1)",
    "rate_profile": "a rate factor over time: TIME_S:FACTOR points, linear between them (default: none)",
    "copies": "where --rate-scale / --rate-profile put a request's copies (default: clumped)",
    "limit": "at most this many requests (default: all)",
    "prompt_scale": "multiply each prompt's tokens by this, before --max-prompt-tokens (default: 1)",
    "output_scale": "multiply each output's tokens by this, before --max-output-tokens (default: 1)",
    "max_prompt_tokens": "cut longer prompts to this many tokens (default: no cap)",
    "max_output_tokens": "cut longer outputs to this many tokens (default: no cap)",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.traces", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="trace file, or 'bundled:NAME' (e.g. bundled:azure_code)")
    ap.add_argument("--format", default=None,
                    help="azure | mooncake | vidur | canonical | burstgpt | bailian (default: detect)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed for random options (mooncake and bailian spread, vidur arrivals) and the rate "
                         "change: the replay's random streams of this seed, as `controlplane sim replay --seed N` "
                         "draws them (default: 0)")
    ap.add_argument("--qps", type=float, default=None,
                    help="Vidur traces: arrival rate of the synthetic process (as `controlplane sim replay --qps`; "
                         "default: 1)")
    ap.add_argument("--arrival", default=None, metavar="poisson|gamma",
                    help="Vidur traces: the synthetic arrival process (as `controlplane sim replay --arrival`; "
                         "default: poisson)")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="format option; VALUE parsed as JSON when possible (e.g. qps=2.5, failed=drop, "
                         "model_column=true, 'models=[\"GPT-4\"]'), else kept as text")
    transforms_group = ap.add_argument_group(
        "trace transforms", "as `controlplane sim replay` takes and applies them (see its --help, docs/traces.md)")
    for parameter, option, kind in _TRANSFORM_OPTIONS:
        transforms_group.add_argument(option, dest=parameter, type=kind, default=None, help=_HELP[parameter],
                                      metavar=_METAVARS.get(parameter, kind.__name__.upper()))
    args = ap.parse_args(argv)
    given = {parameter: getattr(args, parameter) for parameter in TRANSFORM_PARAMETERS
             if getattr(args, parameter) is not None}
    importlib.import_module("sim.replay")  # before the clock starts: the read is timed, not the imports
    t0 = time.perf_counter()
    try:  # a missing file, an unknown name, format or option, a bad row, a bad transform: one line, exit 2
        _check_least(given)
        options = parse_options(args.opt)
        path = bundled_trace(args.trace)
        if (error := not_a_trace_file(path)) is not None:  # (missing, a folder, a pipe or a device: said so)
            raise error
        _vidur_options(path, args.format, args.qps, args.arrival, options)
        # (with no transform too: the replay's reader and random stream of the seed, so a Mooncake
        # trace's spread, a Vidur trace's arrivals are those `controlplane sim replay --seed N` replays)
        reader, requests = _transformed(path, args.format, args.seed, options, given)
        arrivals, prompts, outputs = [], [], []
        for r in requests:
            arrivals.append(r.arrival_s)
            prompts.append(r.prompt_tokens)
            outputs.append(r.output_tokens)
    except (OSError, ValueError) as exc:  # (OSError: a missing file, a folder, one not readable)
        ap.exit(2, f"error: {_named(exc)}\n")
    elapsed = time.perf_counter() - t0
    n = len(arrivals)
    print(f"{path}: format {reader.format}, {n:,} request{'' if n == 1 else 's'}, read in {elapsed:.3f} s "
          f"({n / elapsed:,.0f} rows/s)")
    if given:
        print(f"transforms applied as `controlplane sim replay --seed {args.seed}` applies them: "
              + " ".join(f"{option} {_shown(given[parameter])}" for parameter, option, _ in _TRANSFORM_OPTIONS
                         if parameter in given))
    if reader.dropped:
        print("left out by the options: " + ", ".join(f"{why} {count:,}" for why, count in reader.dropped.items()))
    if reader.skipped:  # (on_error=skip: never silent, as a replay's summary counts them too)
        print(f"bad rows skipped (on_error=skip): {reader.skipped:,}; the first {min(reader.skipped, SKIPPED_SHOWN)}:")
        for error in reader.errors[:SKIPPED_SHOWN]:
            print(f"  {error}")
    if n == 1:
        print(f"one request, arriving at {arrivals[0]:,.3f} s")
    elif n > 1 and arrivals[-1] == arrivals[0]:  # (no rate, no gap spread to give)
        print(f"span 0 s: all {n:,} requests arrive at {arrivals[0]:,.3f} s")
    elif n > 1:
        span = arrivals[-1] - arrivals[0]
        iat = np.diff(arrivals)
        cv = iat.std() / iat.mean() if iat.mean() > 0 else float("nan")
        # (the first arrival too: a replay runs from time 0, and idles until it)
        print(f"span {_seconds(span, 1)} s, mean rate {_rate((n - 1) / span)} req/s, IAT CV {cv:.2f}, first arrival "
              f"at {_seconds(arrivals[0], 3)} s{_longest_gap(iat, arrivals)}")
    for name, xs in (("prompt", prompts), ("output", outputs)):
        if xs:
            p50, p90, p99 = np.percentile(xs, [50, 90, 99])
            print(f"{name} tokens: p50 {p50:,.0f}, p90 {p90:,.0f}, p99 {p99:,.0f}, max {max(xs):,}")
    return 0


def _check_least(given: dict[str, Any]) -> None:
    """A transform option below its least value (``--limit 0``) is refused, as `controlplane sim replay` refuses it:
    the summary would be of a replay that command does not run."""
    for parameter, value in given.items():
        if parameter in _LEAST and value < _LEAST[parameter][1]:
            option, least = _LEAST[parameter]
            raise ValueError(f"{option} must be an integer >= {least}, got {value}")


def _vidur_options(path: str | Path, trace_format: str | None, qps: float | None, arrival: str | None,
                   options: dict[str, Any]) -> None:
    """--qps and --arrival into ``options``, checked as `controlplane sim replay` checks them: a Vidur trace's
    only (another format's timestamps give its arrivals), their values named by their options, and not beside
    ``--opt qps=...``."""
    given = {key: value for key, value in (("qps", qps), ("arrival", arrival)) if value is not None}
    if not given:
        return
    from controlplane.cli.sim import _check_arrival_options, _check_vidur_options

    _check_vidur_options(Path(path), trace_format)
    _check_arrival_options(qps, arrival)
    for key, value in given.items():
        if key in options:
            raise ValueError(f"--opt {key} and --{key} are both given: give one")
        options[key] = value


def _transformed(path: str | Path, trace_format: str | None, seed: int, options: dict[str, Any],
                 given: dict[str, Any]) -> tuple[Any, Any]:
    """(the trace's reader, its requests after the transforms ``given``), read as `controlplane sim
    replay --seed SEED` reads them: the same `TraceTransforms`, the same random streams."""
    from sim.replay import TraceTransforms, prepared_trace
    from sim.traces import parse_rate_profile

    keywords = dict(given)
    for parameter, field in (("window_start", "window_start_s"), ("window_end", "window_end_s")):
        if parameter in keywords:
            keywords[field] = keywords.pop(parameter)
    if "rate_profile" in keywords:
        keywords["rate_profile"] = parse_rate_profile(keywords["rate_profile"], "--rate-profile")
    reader, requests = prepared_trace(path, seed=seed, transforms=TraceTransforms(**keywords),
                                      trace_format=trace_format, trace_options=options)
    return reader, requests


def _seconds(value: float, digits: int) -> str:
    """Seconds as the summary shows them: ``3,436.5``, and ``1.7e+20`` for a number too long to read."""
    return f"{value:,.{digits}f}" if value < 1e15 else f"{value:.3g}"


def _rate(per_s: float) -> str:
    """A rate with its digits: ``3.667``, and ``0.000231`` for a slow trace (never ``0.000``)."""
    return f"{per_s:.3f}" if per_s >= 0.1 else f"{per_s:.3g}"


def _longest_gap(iat: np.ndarray, arrivals: list[float]) -> str:
    """', longest gap G s (H idle, up to the arrival at T s)' where the longest gap between two arrivals is an hour
    or more (a replay idles through it, ticking; one over a day is the reader's error, `sim.traces.gaps`)."""
    from .gaps import duration

    i = int(iat.argmax())
    gap = float(iat[i])
    if gap < 3600:
        return ""
    return (f", longest gap {_seconds(gap, 1)} s ({duration(gap)} idle, up to the arrival at "
            f"{_seconds(arrivals[i + 1], 3)} s)")


def _named(exc: Exception) -> str:
    """The error's line; a transform's bad argument named by the option that set it (``--speed-up
    must be ...``), as `controlplane sim replay` names it."""
    from sim.traces.transforms import TransformValueError

    if isinstance(exc, TransformValueError):
        from controlplane.cli.common import named_by_options

        return named_by_options(exc)
    return str(exc)


def _shown(value: object) -> str:
    """An option's value as a command line gives it: ``600``, not the ``600.0`` it became."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # (piped into `head`: the reader has what it wanted)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no second error at exit's flush)
        code = 0
    raise SystemExit(code)
