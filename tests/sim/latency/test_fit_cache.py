"""Fitted profile pieces cached on disk: same predictions, new entries when inputs change."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sim.latency import fit_cache
from sim.latency.vidur_files import PROFILES_DIR, load_all_reduce_curve

NETWORK = PROFILES_DIR / "vidur" / "network" / "a100_pairwise_nvlink" / "all_reduce.csv"


def _fresh(path, *args):
    """The uncached fit (bypassing both the in-process and the disk cache)."""
    return load_all_reduce_curve.__wrapped__.__wrapped__(str(path), *args)


def test_a_cached_fit_predicts_exactly_what_a_fresh_fit_does(tmp_path, monkeypatch):
    monkeypatch.setenv(fit_cache.CACHE_ENV, str(tmp_path / "cache"))
    cached = fit_cache.disk_cached(load_all_reduce_curve.__wrapped__.__wrapped__)
    first = cached(str(NETWORK), 2, 8192, "linear")  # fits and writes the entry
    entries = list((tmp_path / "cache").glob("load_all_reduce_curve-*.pkl"))
    assert len(entries) == 1
    again = cached(str(NETWORK), 2, 8192, "linear")  # read back
    n = np.arange(1, 5000, 37, dtype=float)
    assert np.array_equal(again(n), first(n)) and np.array_equal(again(n), _fresh(NETWORK, 2, 8192, "linear")(n))
    cached(str(NETWORK), 4, 8192, "linear")  # other arguments: another entry
    assert len(list((tmp_path / "cache").glob("*.pkl"))) == 2


def test_a_changed_profile_file_gets_a_new_entry_and_a_broken_entry_is_refitted(tmp_path, monkeypatch):
    monkeypatch.setenv(fit_cache.CACHE_ENV, str(tmp_path / "cache"))
    copy = tmp_path / "all_reduce.csv"
    shutil.copy(NETWORK, copy)
    cached = fit_cache.disk_cached(load_all_reduce_curve.__wrapped__.__wrapped__)
    cached(str(copy), 2, 8192, "linear")
    (entry,) = (tmp_path / "cache").glob("*.pkl")
    entry.write_bytes(b"not a pickle")
    n = np.arange(1, 100, dtype=float)
    assert np.array_equal(cached(str(copy), 2, 8192, "linear")(n), _fresh(copy, 2, 8192, "linear")(n))
    with copy.open("a") as f:  # the file changes: its digest, so the key, changes
        f.write("\n")
    cached(str(copy), 2, 8192, "linear")
    assert len(list((tmp_path / "cache").glob("*.pkl"))) == 2


@pytest.mark.parametrize("value", ["off", "0"])
def test_caching_can_be_turned_off(tmp_path, monkeypatch, value):
    monkeypatch.setenv(fit_cache.CACHE_ENV, value)
    assert fit_cache.cache_dir() is None
