"""Plugin discovery's on-disk cache: the same plugins as a scan, and a new scan whenever what
``importlib.metadata`` would read changes (a distribution installed, changed or removed)."""

from __future__ import annotations

import importlib

import pytest

from controlplane import entry_point_cache
from controlplane.cache_dir import CACHE_ENV, PRUNE_AFTER_S
from controlplane.entry_point_cache import cache_file as _entry_point_cache_file
from controlplane.plugin_manager import _cached_scan, _scan_entry_points


def _rows(found):
    return [(i.name, i.entry_point, i.dist, i.version) for i in found.values()]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _distribution(folder, entry_points: str, version: str = "0.1"):
    info = folder / "fakeplug-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakeplug\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)
    importlib.invalidate_caches()


def test_the_cached_discovery_is_the_scan_in_the_same_order(cache):
    scanned = _scan_entry_points()
    first = _cached_scan()  # scans, writes the file
    assert _entry_point_cache_file().is_file()
    second = _cached_scan()  # reads it
    assert _rows(first) == _rows(second) == _rows(scanned) and "round-robin" in second
    assert second["round-robin"].target.__name__ == "RoundRobin"  # still loads what the entry point names


def test_a_distribution_installed_changed_or_removed_is_seen_at_once(cache, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = _cached_scan()  # the cache file of this sys.path, written before the install
    assert "fake-plugin" not in before and _entry_point_cache_file().is_file()
    _distribution(site, "[controlplane]\nfake-plugin = fakeplug:Fake\n")
    found = _cached_scan()
    assert ("fake-plugin", "fakeplug:Fake", "fakeplug", "0.1") in _rows(found)
    _distribution(site, "[controlplane]\nrenamed-plugin = fakeplug:Fake\n", version="0.2")
    found = _cached_scan()
    assert "fake-plugin" not in found and found["renamed-plugin"].version == "0.2"
    import shutil

    shutil.rmtree(site / "fakeplug-0.1.dist-info")
    importlib.invalidate_caches()
    assert _rows(_cached_scan()) == _rows(before)


def test_processes_with_different_paths_keep_their_own_cache_file_and_old_ones_go(cache, tmp_path, monkeypatch):
    import os
    import time

    _cached_scan()
    first = _entry_point_cache_file()
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    _cached_scan()
    second = _entry_point_cache_file()
    assert second != first and first.is_file() and second.is_file()
    old = time.time() - PRUNE_AFTER_S - 60
    os.utime(first, (old, old))  # not written for longer than PRUNE_AFTER_S
    monkeypatch.syspath_prepend(str(tmp_path / "third"))
    _cached_scan()  # writes a third file, and removes the stale one
    assert not first.exists() and second.is_file() and _entry_point_cache_file().is_file()


def test_a_broken_cache_file_is_scanned_again_and_off_writes_none(cache, tmp_path, monkeypatch):
    _cached_scan()
    path = _entry_point_cache_file()
    path.write_text("{not json")
    assert _rows(_cached_scan()) == _rows(_scan_entry_points())
    monkeypatch.setenv(CACHE_ENV, "off")
    assert entry_point_cache.cache_file() is None
    path.unlink()
    assert _rows(_cached_scan()) == _rows(_scan_entry_points())
    assert not any(cache.glob("entry-points-*"))


def test_the_cache_says_whether_a_pydantic_plugin_is_installed(cache, tmp_path, monkeypatch):
    # What `controlplane sim replay` reads before pydantic's first model (PYDANTIC_DISABLE_PLUGINS).
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert entry_point_cache.no_pydantic_plugins() is False  # no cache yet: cannot tell
    _cached_scan()
    assert entry_point_cache.no_pydantic_plugins() is True
    _distribution(site, "[pydantic]\nfake = fakeplug:plugin\n")
    assert entry_point_cache.no_pydantic_plugins() is False  # another signature: cannot tell
    _cached_scan()
    assert entry_point_cache.no_pydantic_plugins() is False  # one is installed
    import json

    path = _entry_point_cache_file()
    assert json.loads(path.read_text())["pydantic"] == [["fake", "fakeplug:plugin"]]


def test_a_file_without_pydantics_group_is_scanned_again_once(cache):
    import json

    _cached_scan()
    path = _entry_point_cache_file()
    saved = json.loads(path.read_text())
    del saved["pydantic"]  # as written before the group was kept
    path.write_text(json.dumps(saved))
    assert entry_point_cache.read(path, saved["signature"]) is None
    _cached_scan()
    assert json.loads(path.read_text())["pydantic"] == []


def test_a_kept_signature_is_used_once_and_only_for_the_same_path(cache, monkeypatch):
    calls = []
    real = entry_point_cache.hashlib.sha256
    monkeypatch.setattr(entry_point_cache.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    kept = entry_point_cache.keep_signature()
    assert len(calls) == 1
    assert entry_point_cache.signature() == kept and len(calls) == 1  # the kept one
    assert entry_point_cache.signature() == kept and len(calls) == 2  # computed again
    entry_point_cache.keep_signature()
    monkeypatch.syspath_prepend("/elsewhere")
    entry_point_cache.signature()
    assert len(calls) == 4  # sys.path changed: not the kept one


def test_two_distributions_declaring_one_name_stay_a_conflict_when_read_from_the_cache(cache, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    _distribution(site, "[controlplane]\nround-robin = fakeplug:RoundRobin\n")
    scanned = _cached_scan()  # scans and writes
    cached = _cached_scan()  # reads
    for found in (scanned, cached):
        assert sorted(found["round-robin"].dist.split(", ")) == ["controlplane", "fakeplug"]
        with pytest.raises(Exception, match="two installed plugins are named 'round-robin'"):
            found["round-robin"].target
        assert found["least-loaded"].target.__name__ == "LeastLoaded"
