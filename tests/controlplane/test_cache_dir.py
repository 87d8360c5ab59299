from __future__ import annotations

import os
import time

import pytest

from controlplane.cache_dir import CACHE_ENV, PRUNE_AFTER_S, cache_root, write_atomically


@pytest.mark.parametrize("value", ["off", "OFF", "0", "none"])
def test_the_caches_turn_off_with_one_variable(monkeypatch, value):
    monkeypatch.setenv(CACHE_ENV, value)
    assert cache_root() is None


def test_the_root_is_the_variable_or_the_users_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    import platformdirs

    assert str(cache_root()) == platformdirs.user_cache_dir("controlplane")


def test_a_write_replaces_the_file_whole_and_prunes_only_stale_files_of_its_kind(tmp_path):
    stale, fresh, other = tmp_path / "yaml-old.json", tmp_path / "yaml-new.json", tmp_path / "keep.pkl"
    for f in (stale, fresh, other):
        f.write_text("x")
    old = time.time() - PRUNE_AFTER_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_atomically(tmp_path / "yaml-a.json", b"{}", prune="yaml-*.json")
    assert (tmp_path / "yaml-a.json").read_bytes() == b"{}"
    assert not stale.exists() and fresh.exists() and other.exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    write_atomically(blocker / "sub" / "entry.json", b"{}")  # mkdir fails: no error
    assert blocker.read_text() == "not a folder"


def test_a_write_that_fails_half_way_leaves_no_temporary_file(tmp_path):
    entry = tmp_path / "entry.json"
    entry.mkdir()  # the temporary file is written, then cannot replace a folder
    (entry / "inside").write_text("x")
    write_atomically(entry, b"{}")  # no error
    assert entry.is_dir() and not list(tmp_path.glob("*.tmp"))
