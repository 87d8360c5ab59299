"""Paths of the source repository that README and docs give (``examples/cluster.yaml``,
``sim/data/default_replay.yaml``, the bundled trace's file) were "not found" without a word of why from another
folder or in an install from a wheel: the error says where the file is, or that it ships with the repository only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controlplane import shadowed_packages
from controlplane.checkout_paths import missing_path_note
from controlplane.config_files import read_config_file
from controlplane.errors import ConfigError
from sim.traces import bundled_trace_path
from sim.traces.bundled import bundled_default_config_path
from sim.traces._io import not_a_trace_file

ROOT = shadowed_packages.PACKAGES_ROOT
TRACE = "sim/data/azure_llm_2023/AzureLLMInferenceTrace_code.csv"


def test_a_config_under_examples_in_an_install_without_them_ships_with_the_repository_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shadowed_packages, "PACKAGES_ROOT", tmp_path / "site-packages")  # as a wheel installs
    with pytest.raises(ConfigError) as info:
        read_config_file("examples/cluster.yaml")
    assert str(info.value) == ("config file not found: examples/cluster.yaml (examples/ ships with controlplane's "
                               "source repository only, not with the installed package: run from a clone of the "
                               "repository, or give a file of your own)")
    assert "benchmarks/ ships with controlplane's source repository only" in str(not_a_trace_file("benchmarks/t.csv"))


def test_a_checkout_path_from_another_folder_names_the_installed_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        read_config_file("sim/data/default_replay.yaml")
    assert str(info.value) == ("config file not found: sim/data/default_replay.yaml (relative to the working folder; "
                               f"the installed package's copy is {bundled_default_config_path()})")
    assert str(not_a_trace_file(TRACE)) == (f"trace file not found: {TRACE} (relative to the working folder; the "
                                            f"installed package's copy is bundled:azure_code, {bundled_trace_path()})")
    if (ROOT / "examples" / "cluster.yaml").is_file():  # (an editable install: the checkout's copy)
        assert missing_path_note("examples/cluster.yaml") == (
            f" (relative to the working folder; the source repository's copy is {ROOT / 'examples' / 'cluster.yaml'})")


def test_other_missing_paths_say_nothing_more(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert missing_path_note("my/run.yaml") == missing_path_note(tmp_path / "examples/x.yaml") == ""
    assert missing_path_note("sim/data/nothing.yaml") == ""
    if (ROOT / "examples").is_dir():  # (the repository's folder is there: a typo of a name in it)
        assert missing_path_note("examples/no-such.yaml") == ""


def test_sim_replay_says_it_in_its_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", "--config",
                           "sim/data/default_replay.yaml", "--db", "x.db"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: config file not found: sim/data/default_replay.yaml (relative to the "
                                   "working folder; the installed package's copy is "
                                   f"{bundled_default_config_path()})")


def test_sim_replay_help_names_the_bundled_config_as_the_packages():
    proc = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert "Default: the bundled run config (sim/data/default_replay.yaml in the package;" in " ".join(
        proc.stdout.split())
