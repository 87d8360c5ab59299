"""What a database write that failed reports: the driver's error in one line."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import OperationalError

from controlplane.storage.retry import describe_error


def test_a_driver_error_is_described_without_sqlalchemys_wrapper():
    exc = OperationalError("INSERT INTO run ...", {}, sqlite3.OperationalError("attempt to write a readonly database"))
    assert describe_error(exc) == "OperationalError: attempt to write a readonly database"


def test_other_errors_keep_their_first_line():
    assert describe_error(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert describe_error(RuntimeError()) == "RuntimeError: RuntimeError()"
