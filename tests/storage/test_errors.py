"""A database driver's failure reaches the user as one line naming the database."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from controlplane.storage import make_engine
from controlplane.storage.db import describe_url
from controlplane.storage.errors import StorageError, database_error, mask_password


def _driver_error(url: str) -> DBAPIError:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" * 200)
    url = f"sqlite:///{path}"
    error = database_error(_driver_error(url), url)
    assert isinstance(error, StorageError)
    assert str(error) == f"{url}: DatabaseError: file is not a database"


def test_an_unreachable_server_is_one_line_with_the_password_hidden():
    url = "postgresql://nobody:secret@127.0.0.1:1/x"
    message = str(database_error(_driver_error(url), url))
    assert "\n" not in message and "Background on this error" not in message and "secret" not in message
    assert message.startswith("postgresql://nobody:***@127.0.0.1:1/x: OperationalError: ") and "127.0.0.1" in message


def test_a_password_in_the_query_string_is_hidden_too():
    url = "postgresql+psycopg://nobody@127.0.0.1:1/x?password=s3cret"
    message = str(database_error(_driver_error(url), url))
    assert "s3cret" not in message and message.startswith("postgresql+psycopg://nobody@127.0.0.1:1/x?password=***: ")
    engine = make_engine(url)
    assert "s3cret" not in describe_url(engine)
    engine.dispose()


def test_sqlite_that_cannot_open_its_file_says_where_to_look():
    message = str(database_error(sqlite3.OperationalError("unable to open database file")))
    assert message.startswith("OperationalError: unable to open database file (does its folder exist")


def test_sqlite_s_disk_io_error_names_a_full_disk():
    """A file on a full disk cannot even be read (SQLite makes its -shm file to): `disk I/O error`, nothing more."""
    message = str(database_error(sqlite3.OperationalError("disk I/O error")))
    assert message == ("OperationalError: disk I/O error (is its disk full? SQLite writes its -wal and -shm files "
                       "beside it, even to read)")


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql+psycopg://u:pw@h:5432/d", "postgresql+psycopg://u:***@h:5432/d"),
    ("sqlite:///runs.db", "sqlite:///runs.db"),
    ("postgresql://u:p/w@rd@h/d", "postgresql://u:***@h/d"),  # a password holding '/' and '@'
    ("sqlite:///data/a@b:c.db", "sqlite:///data/a@b:c.db"),  # an '@' in a path is no password
    ("postgresql://u@h/d?password=s3cret", "postgresql://u@h/d?password=***"),  # libpq's query parameter
    ("postgresql://u@h/d?sslmode=require&PASSWORD=s3&x=1", "postgresql://u@h/d?sslmode=require&PASSWORD=***&x=1"),
    ("postgresql://u:pw@h/d?password=s3", "postgresql://u:***@h/d?password=***"),
    ("postgresql://u@h/d?sslmode=require&sslpassword=k3y", "postgresql://u@h/d?sslmode=require&sslpassword=***"),
    # the password SQLAlchemy reads: an '@' in the query does not end the credentials
    ("postgresql://u:pw@h:5432/d?application_name=a@b", "postgresql://u:***@h:5432/d?application_name=a@b"),
    ("postgresql://user@dom:pw@h/d", "postgresql://user@dom:***@h/d"),
])
def test_mask_password(url, masked):
    assert mask_password(url) == masked


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres:p@ss@127.0.0.1:5499/x",
                                 "postgresql+psycopg://u:p@ss:wd@127.0.0.1:5499/x",
                                 "postgresql+psycopg://u:p@ss/x@127.0.0.1/x", "postgresql://u:p?x@ss@127.0.0.1/x"])
def test_an_unencoded_at_in_a_password_is_refused_saying_to_percent_encode_it(url):
    """The driver tried the host 'ss@127.0.0.1' (SQLAlchemy ends a password at its first '@'), and its
    error printed that piece of the password beside a URL masked otherwise."""
    with pytest.raises(ValueError) as raised:
        make_engine(url)
    message = str(raised.value)
    assert "ss" not in message.replace("password", "").replace("address", "") and "wd" not in message
    assert ":***@127.0.0.1" in message and "percent-encode it: @ as %40" in message
    make_engine(url.replace("@ss", "%40ss", 1)).dispose()  # (encoded: a URL like any)
