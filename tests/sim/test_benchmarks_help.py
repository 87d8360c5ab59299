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
                                  "million", "search", "replay_speed", "live_throughput"])
def test_every_option_is_described_with_its_default(name, monkeypatch):
    ap = _parser_of(name, monkeypatch)
    undescribed = [a.option_strings[-1] for a in ap._actions
                   if a.option_strings and not isinstance(a, argparse._HelpAction)
                   and (not a.help or (a.nargs != 0 and "default" not in a.help))]
    assert undescribed == []
    ap.format_help()  # (a help text with a stray % would fail here)
