"""The benchmarks' --help: every option has a text, and one that takes a value says its default."""

from __future__ import annotations

import argparse
import sys

import pytest

from tests.fixtures.benchmarks import ROOT


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser the script built."""


#: Every script of benchmarks/ with a command line (a ``main`` run under ``if __name__ == "__main__":``).
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                 if "def main(" in (text := p.read_text(encoding="utf-8")) and 'if __name__ == "__main__":' in text)


def _load(name: str):
    """``benchmarks/NAME.py`` as a module registered in ``sys.modules`` (a dataclass of a script needs it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_benchmark_help", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _parser_of(name: str, monkeypatch) -> tuple[argparse.ArgumentParser, object]:
    """The parser a script's ``main`` builds (not a pre-parser without --help, which it reads some options with
    first), and the script."""
    def grab(self, *args, **kwargs):
        raise _Parsed(self)

    real_known = argparse.ArgumentParser.parse_known_args

    def grab_known(self, *args, **kwargs):
        if not self.add_help:  # (a pre-parser: fidelity.py reads --quick first)
            return real_known(self, *args, **kwargs)
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", grab_known)
    bench = _load(name)
    with pytest.raises(_Parsed) as parsed:
        bench.main([])
    return parsed.value.args[0], bench


def test_every_script_is_checked():
    assert len(SCRIPTS) >= 20 and {"db_outage", "soak", "fidelity", "autoscaling_shapes"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_is_described_with_its_default(name, monkeypatch):
    """db_outage.py and soak.py had options without a word of help (and others without their default)."""
    ap, _ = _parser_of(name, monkeypatch)
    shown = ap._get_formatter()._get_help_string  # (the help as printed: fidelity.py's formatter adds defaults)
    undescribed = [a.option_strings[-1] for a in ap._actions
                   if a.option_strings and not isinstance(a, argparse._HelpAction)
                   and (not a.help or (a.nargs != 0 and "default" not in shown(a)
                                       and not a.help.startswith("refused")))]  # (refused: autoscaling_window_needs)
    assert undescribed == []
    ap.format_help()  # (a help text with a stray % would fail here)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_description_is_the_docstring_s_first_paragraph_whole(name, monkeypatch):
    """autoscaling_anatomy.py, autoscaling_peak_minute.py and autoscaling_shapes.py took their docstring's first
    line, which ends mid-sentence ('... what the')."""
    ap, bench = _parser_of(name, monkeypatch)
    assert " ".join((ap.description or "").split()) == " ".join(bench.__doc__.split("\n\n")[0].split())


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
