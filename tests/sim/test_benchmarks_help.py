"""The benchmarks' --help: every option has a text, and one that takes a value says its default."""

from __future__ import annotations

import argparse

import pytest

from tests.fixtures.benchmarks import load_benchmark


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser the script built."""


def _parser_of(name: str, monkeypatch) -> argparse.ArgumentParser:
    def grab(self, *args, **kwargs):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", grab)
    bench = load_benchmark(name)
    with pytest.raises(_Parsed) as parsed:
        bench.main([])
    return parsed.value.args[0]


@pytest.mark.parametrize("name", ["autoscaling", "autoscaling_peak_minute", "autoscaling_anatomy", "prefix_hits",
                                  "million", "search", "replay_speed", "live_throughput", "batching_routing", "guardians",
                                  "live_prefix_reuse", "semantic_cache", "semantic_false_hits", "vs_vidur",
                                  "autoscaling_shapes"])
def test_every_option_is_described_with_its_default(name, monkeypatch):
    ap = _parser_of(name, monkeypatch)
    undescribed = [a.option_strings[-1] for a in ap._actions
                   if a.option_strings and not isinstance(a, argparse._HelpAction)
                   and (not a.help or (a.nargs != 0 and "default" not in a.help))]
    assert undescribed == []
    ap.format_help()  # (a help text with a stray % would fail here)


@pytest.mark.parametrize(("name", "command"), [
    ("autoscaling_find_scale", "autoscaling.py --find-scale N"), ("autoscaling_clairvoyant", "autoscaling.py --clairvoyant"),
    ("autoscaling_checks", "autoscaling.py"), ("autoscaling_early_stop", "autoscaling.py"),
    ("autoscaling_progress", "autoscaling.py"), ("autoscaling_args", "autoscaling.py"),
    ("autoscaling_policies", "autoscaling.py"), ("bench_cli", "autoscaling.py"), ("daemon_run", "live_throughput.py"),
])
def test_a_helper_module_run_as_a_script_names_the_command_to_run(name, command, tmp_path):
    """They did nothing, exit 0, even for --help (docs named two of them as if scripts)."""
    import subprocess
    import sys

    from tests.fixtures.benchmarks import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--help"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith(f"{name}.py: library module of benchmarks/") and \
        f"run: python benchmarks/{command}" in done.stderr
