"""benchmarks/db_outage.py: its database on --admin-url's server, and what the daemon's log says of an outage."""

from __future__ import annotations

import importlib
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from controlplane.storage import make_engine
from controlplane.storage.outage_log import OutageLog
from controlplane.storage.retry import FlushFailure
from tests.fixtures.benchmarks import ROOT, never_called, refusal

sys.path.insert(0, str(ROOT / "benchmarks"))
bench = importlib.import_module("db_outage")  # (by name, as soak.py imports it: its dataclass needs a module)


def test_the_daemons_database_is_on_the_admin_urls_server(pg_admin: Engine, monkeypatch):
    # (the daemon's URL was built from $CONTROLPLANE_TEST_PG_URL's default, whatever --admin-url said)
    monkeypatch.setattr(bench, "ADMIN_URL", "postgresql+psycopg://nobody@127.0.0.1:1/elsewhere")
    given = pg_admin.url.set(drivername="postgresql")  # a bare postgresql:// URL, as a user types it
    admin = bench.admin_engine(given.render_as_string(hide_password=False))
    try:
        with bench.dedicated_database(admin, keep=False) as db_url:
            url = make_url(db_url)
            assert (url.host, url.port, url.username, url.password) == (given.host, given.port, given.username,
                                                                        given.password)
            engine = make_engine(db_url)
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT current_database()")).scalar() == url.database
            finally:
                engine.dispose()
        with admin.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = :n"),
                                {"n": url.database}).scalar() == 0
    finally:
        admin.dispose()


def _daemon_log(caplog, events) -> str:
    """What the recorder's `OutageLog` logs for ``events`` at WARNING and above, formatted as the daemon does."""
    now = [0.0]
    outage = OutageLog("postgresql+psycopg://postgres:***@127.0.0.1:5432/cp_outage_0123456789",
                       pending=lambda: 42, written={"request": 7}, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="controlplane.storage.recorder")
    error = "OperationalError: connection failed: connection to server at \"127.0.0.1\", port 5432 failed\nFATAL: x"
    for kind, at in events:
        now[0] = at
        if kind == "failed":
            outage.failed(error)
        elif kind == "spilled":
            outage.spilled(10, Path("controlplane-spill-1.jsonl"))
        elif kind == "refused":
            outage.gave_up(FlushFailure(datetime.now(timezone.utc), 3, 5, "IntegrityError: duplicate key", False))
        else:
            outage.ended()
    form = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return "\n".join(form.format(r) for r in caplog.records) + "\n"


def test_an_outage_the_daemon_logged_is_counted(caplog):
    # (counted "storage: flush to", which the recorder writes only for a write refused for its data:
    # "flush_failures_logged": 0 for an outage the log reported)
    log = _daemon_log(caplog, [("failed", 0.0), *(("failed", t / 10) for t in range(1, 100)), ("spilled", 12.0),
                               ("spilled", 13.0), ("failed", 61.0), ("failed", 70.0), ("failed", 181.0),
                               ("ended", 190.0), ("failed", 300.0), ("ended", 310.0), ("refused", 320.0)])
    assert "is unavailable (OperationalError" in log
    assert bench.storage_log_counts(log) == {"outages_logged": 2, "outage_reminders_logged": 2, "spills_logged": 1,
                                             "write_errors_logged": 1}
    assert bench.storage_log_counts("") == dict.fromkeys(bench.STORAGE_LOG, 0)


@pytest.mark.parametrize(("argv", "option"), [
    (["--rate", "0"], "--rate"),
    (["--outage-s", "-5"], "--outage-s"),
    (["--before-s", "x"], "--before-s"),
    (["--after-s", "inf"], "--after-s"),
    (["--workers", "0"], "--workers"),
    (["--max-pending-rows", "0"], "--max-pending-rows"),
    (["--pool", "fork"], "--pool"),
    (["--admin-url", "postgresql+psycopg://postgres@127.0.0.1:1/test"], "--admin-url"),  # (a traceback)
    (["--admin-url", "sqlite:///x.db"], "--admin-url"),
    (["--admin-url", "not a url"], "--admin-url"),
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "dedicated_database", never_called)
    monkeypatch.setattr(bench, "daemon", never_called)
    assert option in refusal(bench, argv, capsys)
