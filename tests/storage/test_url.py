"""`database_url`: what `--db` and `storage.url` accept (a URL, or a SQLite file's path)."""

from __future__ import annotations

import os

import pytest

from controlplane.config import RunConfig
from controlplane.storage.url import database_url


@pytest.mark.parametrize("url", ["sqlite:///runs.db", "sqlite:////tmp/x.db", "sqlite://",
                                 "postgresql+psycopg://me@127.0.0.1:5432/test"])
def test_a_url_is_kept_as_given(url):
    assert database_url(url) == url


@pytest.mark.parametrize(("path", "url"), [("runs.db", "sqlite:///runs.db"), ("/tmp/x.db", "sqlite:////tmp/x.db"),
                                           ("out/runs.sqlite", "sqlite:///out/runs.sqlite"),
                                           ("  runs.db ", "sqlite:///runs.db")])
def test_a_path_is_a_sqlite_file(path, url):
    assert database_url(path) == url


def test_home_is_expanded():
    assert database_url("~/runs.db") == f"sqlite:///{os.path.expanduser('~')}/runs.db"


def test_a_scheme_without_slashes_is_left_for_the_parser_to_refuse():
    assert database_url("postgresql:/host/db") == "postgresql:/host/db"  # (a typo: not a file named so)


def test_the_config_takes_a_path_too():
    assert RunConfig.model_validate({"storage": {"url": "runs.db"}}).storage.url == "sqlite:///runs.db"
    assert RunConfig().storage.url == "sqlite:///controlplane.db"
