"""Profile files read while the process runs: an edited file is read again, not answered from memory."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from sim.latency import fit_cache
from sim.latency.splitwise import SplitwiseModel
from sim.latency.vidur_files import PROFILES_DIR, load_all_reduce_curve

NETWORK = PROFILES_DIR / "vidur" / "network" / "a100_pairwise_nvlink" / "all_reduce.csv"
SPLITWISE = PROFILES_DIR / "splitwise_sim" / "perf_model.csv"


def _triple(path, columns) -> None:
    """Every value of ``columns`` times 3, written back (as a user edits a profile)."""
    df = pd.read_csv(path)
    cols = [c for c in df.columns if c in columns]
    df[cols] = df[cols] * 3
    df.to_csv(path, index=False)


def test_an_edited_vidur_profile_is_read_again_in_the_same_process(tmp_path, monkeypatch):
    """The curves were cached in memory by path: an edit was ignored until the process ended."""
    monkeypatch.setenv(fit_cache.CACHE_ENV, str(tmp_path / "cache"))
    copy = tmp_path / "all_reduce.csv"
    shutil.copy(NETWORK, copy)
    n = np.arange(1, 5000, 37, dtype=float)
    before = load_all_reduce_curve(str(copy), 2, 8192, "linear")(n)
    assert np.array_equal(load_all_reduce_curve(str(copy), 2, 8192, "linear")(n), before)
    _triple(copy, {"time_stats.all_reduce.median"})
    assert np.allclose(load_all_reduce_curve(str(copy), 2, 8192, "linear")(n), 3 * before)


def test_an_edited_splitwise_profile_is_read_again_in_the_same_process(tmp_path):
    (tmp_path / "splitwise_sim").mkdir()
    copy = tmp_path / "splitwise_sim" / "perf_model.csv"
    shutil.copy(SPLITWISE, copy)
    before = SplitwiseModel("llama2-70b", "a100", 2, profiles_dir=tmp_path).prompt_s(4096)
    _triple(copy, {"prompt_time"})
    after = SplitwiseModel("llama2-70b", "a100", 2, profiles_dir=tmp_path).prompt_s(4096)
    assert after == pytest.approx(3 * before)
