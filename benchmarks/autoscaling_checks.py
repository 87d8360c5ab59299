"""Command-line checks of benchmarks/autoscaling.py made before any replay, so that a reviewer's slip is one
line naming what to do, not a traceback minutes in or a replay of something else than meant."""

from __future__ import annotations

import argparse

from sim.traces import detect_format


def format_mismatch(trace: str | None, fmt: str | None) -> str | None:
    """A note when --format names another format than the file's header or first object reads as: a
    Qwen-Bailian file read as `mooncake` takes its seconds for milliseconds and replays silently 1000x
    faster. A note, not an error: the format given is used."""
    if trace is None or fmt is None:
        return None
    try:
        detected = detect_format(trace)
    except (OSError, ValueError):
        return None
    if detected == fmt:
        return None
    return (f"note: --format {fmt}, but {trace} reads as '{detected}' (its header or first object); replaying it "
            f"as {fmt}. Leave --format out to use '{detected}'.")


def check_policies(ap: argparse.ArgumentParser, text: str, scalers: list[str]) -> None:
    """--policies names installed autoscalers: an empty list or an unknown name is a usage error naming the
    ones there are, before any replay (it was every policy, or a ConfigError traceback at the first replay)."""
    names = [n.strip() for n in text.split(",")]
    installed = {*scalers, "fixed-replicas", "scheduled-replicas"}
    if not all(names):
        ap.error(f"--policies names no policy in {text!r}; autoscalers: {', '.join(scalers)} "
                 "(leave --policies out for all of them; --find-scale N replays static counts only)")
    unknown = [n for n in names if n not in installed]
    if unknown:
        ap.error(f"--policies: unknown autoscaler(s) {', '.join(map(repr, unknown))}; installed: "
                 f"{', '.join(scalers)}")


def check_sets(ap: argparse.ArgumentParser, sets: dict[str, dict], scalers: list[str],
               runs: list[str] | None = None) -> None:
    """--set POLICY.KEY=VALUE names an installed autoscaler that the benchmark runs (``runs``: --policies and,
    with --match, its baselines; None: every autoscaler), and one of its settings with a valid value: a usage
    error before any replay (a misspelled policy, or one left out of --policies, was ignored, the run at its
    defaults; a bad key or value was a SettingsError traceback at that policy's first replay)."""
    from controlplane.errors import ConfigError
    from controlplane.plugin_manager import discover_plugins, validated_settings

    installed = discover_plugins()
    for policy, settings in sets.items():
        if policy not in scalers:
            ap.error(f"--set {policy}.{next(iter(settings))}: {policy!r} is not an autoscaler benchmarked here; "
                     f"installed: {', '.join(scalers)}")
        if runs is not None and policy not in runs:
            ap.error(f"--set {policy}.{next(iter(settings))}: {policy!r} is not among the policies run "
                     f"({', '.join(runs)}); add it to --policies or drop the --set")
        try:
            validated_settings(installed[policy], settings)
        except ConfigError as exc:
            ap.error(f"--set: {' '.join(str(exc).split())}")


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_checks.py", "autoscaling.py [--help]"))
