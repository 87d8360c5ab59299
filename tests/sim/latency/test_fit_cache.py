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
    entries = list((tmp_path / "cache" / "latency-fits").glob("load_all_reduce_curve-*.pkl"))
    assert len(entries) == 1
    again = cached(str(NETWORK), 2, 8192, "linear")  # read back
    n = np.arange(1, 5000, 37, dtype=float)
    assert np.array_equal(again(n), first(n)) and np.array_equal(again(n), _fresh(NETWORK, 2, 8192, "linear")(n))
    cached(str(NETWORK), 4, 8192, "linear")  # other arguments: another entry
    assert len(list((tmp_path / "cache" / "latency-fits").glob("*.pkl"))) == 2


def test_a_changed_profile_file_gets_a_new_entry_and_a_broken_entry_is_refitted(tmp_path, monkeypatch):
    monkeypatch.setenv(fit_cache.CACHE_ENV, str(tmp_path / "cache"))
    copy = tmp_path / "all_reduce.csv"
    shutil.copy(NETWORK, copy)
    cached = fit_cache.disk_cached(load_all_reduce_curve.__wrapped__.__wrapped__)
    cached(str(copy), 2, 8192, "linear")
    (entry,) = (tmp_path / "cache" / "latency-fits").glob("*.pkl")
    entry.write_bytes(b"not a pickle")
    n = np.arange(1, 100, dtype=float)
    assert np.array_equal(cached(str(copy), 2, 8192, "linear")(n), _fresh(copy, 2, 8192, "linear")(n))
    with copy.open("a") as f:  # the file changes: its digest, so the key, changes
        f.write("\n")
    cached(str(copy), 2, 8192, "linear")
    assert len(list((tmp_path / "cache" / "latency-fits").glob("*.pkl"))) == 2


def test_a_profile_file_is_hashed_once_and_again_when_it_changes_even_with_its_old_mtime(tmp_path, monkeypatch):
    import hashlib
    import json
    import os
    import time

    monkeypatch.setenv(fit_cache.CACHE_ENV, str(tmp_path / "cache"))
    copy = tmp_path / "all_reduce.csv"
    shutil.copy(NETWORK, copy)
    cached = fit_cache.disk_cached(load_all_reduce_curve.__wrapped__.__wrapped__)
    cached(str(copy), 2, 8192, "linear")
    memo = json.loads((tmp_path / "cache" / "latency-fits" / fit_cache._DIGESTS).read_text())
    assert memo == {fit_cache._stat_key(str(copy), os.stat(copy)): hashlib.sha256(copy.read_bytes()).hexdigest()}
    # Same size, mtime set back: only the ctime (and the content) tell; a new process sees a new key.
    before = os.stat(copy)
    time.sleep(0.01)
    data = bytearray(copy.read_bytes())
    data[-2:] = b"9\n" if data[-2:] != b"9\n" else b"8\n"
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(copy).st_size == before.st_size and os.stat(copy).st_mtime_ns == before.st_mtime_ns
    fit_cache._file_digest.cache_clear()
    fit_cache._digest_memo.cache_clear()
    cached(str(copy), 2, 8192, "linear")
    assert len(list((tmp_path / "cache" / "latency-fits").glob("*.pkl"))) == 2
    memo = json.loads((tmp_path / "cache" / "latency-fits" / fit_cache._DIGESTS).read_text())
    assert list(memo.values()) == [hashlib.sha256(bytes(data)).hexdigest()]  # the stale entry is dropped


@pytest.mark.parametrize("value", ["off", "0"])
def test_caching_can_be_turned_off(tmp_path, monkeypatch, value):
    monkeypatch.setenv(fit_cache.CACHE_ENV, value)
    assert fit_cache.cache_dir() is None


def test_the_vidur_tables_come_back_from_disk_equal_and_are_keyed_by_their_inputs(tmp_path, monkeypatch):
    from sim.latency import vidur_tables
    from sim.latency.vidur_profile import VidurProfileModel

    monkeypatch.setenv(fit_cache.CACHE_ENV, str(tmp_path / "cache"))
    vidur_tables.tables.cache_clear()
    first = VidurProfileModel("meta-llama/Llama-2-70b-hf", "a100", tensor_parallel=2, network="a100_pairwise_nvlink")
    (entry,) = (tmp_path / "cache" / "latency-fits").glob("vidur-tables-*.pkl")
    vidur_tables.tables.cache_clear()
    again = VidurProfileModel("meta-llama/Llama-2-70b-hf", "a100", tensor_parallel=2, network="a100_pairwise_nvlink")
    assert list((tmp_path / "cache" / "latency-fits").glob("vidur-tables-*.pkl")) == [entry]  # read, not written again
    assert [list(r) for r in again._prefill_rows] == [list(r) for r in first._prefill_rows]
    assert again._decode_rows == first._decode_rows and again._lin_list == first._lin_list
    calls = []
    fit_cache.cached_by_content("t", (1, 2.0), lambda: calls.append(1) or "x")
    assert fit_cache.cached_by_content("t", (1, 2.0), lambda: calls.append(1) or "y") == "x" and len(calls) == 1
    assert fit_cache.cached_by_content("t", (1, 2.5), lambda: calls.append(1) or "z") == "z" and len(calls) == 2
    monkeypatch.setenv(fit_cache.CACHE_ENV, "off")
    assert fit_cache.cached_by_content("t", (1, 2.0), lambda: "fresh") == "fresh"
    vidur_tables.tables.cache_clear()


@pytest.mark.parametrize("attention", ["profile", "scaled"])
def test_a_second_process_builds_the_model_from_the_cache_without_pandas(tmp_path, attention):
    import os
    import subprocess
    import sys

    model = "meta-llama/Llama-2-70b-hf" if attention == "profile" else "meta-llama/Meta-Llama-3-8B"
    tp = 2 if attention == "profile" else 1
    code = ("import sys\n"
            "from sim.latency.vidur_profile import VidurProfileModel\n"
            f"m = VidurProfileModel({model!r}, 'a100', {tp}, attention={attention!r})\n"
            "print('pandas' in sys.modules, 'scipy' in sys.modules, 'sklearn' in sys.modules)\n")
    env = {**os.environ, fit_cache.CACHE_ENV: str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                           timeout=600).stdout.split() for _ in range(2)]
    assert runs[0][0] == "True"  # the first fits from the CSVs
    assert runs[1] == ["False", "False", "False"]  # the second reads every piece from the cache
