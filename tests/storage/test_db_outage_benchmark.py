"""benchmarks/db_outage.py: its database on --admin-url's server, and what the daemon's log says of an outage."""

from __future__ import annotations

import importlib
import sys

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from controlplane.storage import make_engine
from tests.fixtures.benchmarks import ROOT

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
