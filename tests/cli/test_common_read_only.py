"""A SQLite database opened read-only (``?mode=ro``) whose schema needs an upgrade: the reading commands say so
as they do of a PostgreSQL role that may only read (`open_stored_runs`), not "attempt to write a readonly
database"."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import current_revisions, make_engine, upgrade
from controlplane.storage.db import SCHEMA_HEAD

pytestmark = pytest.mark.usefixtures("wide_consoles")


def test_a_read_only_sqlite_url_on_an_old_schema_is_told_to_upgrade_it_where_it_can_be_written(tmp_path):
    path = tmp_path / "team.db"
    upgrade(str(path), "0003")
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    for command in (["runs", "list"], ["runs", "show", "1"]):
        result = CliRunner().invoke(app, [*command, "--db", url])
        assert result.exit_code == 2, (result.output, result.exception)
        assert " ".join(result.stderr.split()) == (
            f"error: database: {url}: its schema is at revision ['0003'], not {SCHEMA_HEAD}, and this connection may "
            "not upgrade it (OperationalError: attempt to write a readonly database: opened read-only, or this user "
            "may not write the file or its folder); upgrade it once where it can be written (`controlplane db upgrade "
            "--db FILE`, as a user who may write it)")
    engine = make_engine(path)
    assert current_revisions(engine) == {"0003"}
    engine.dispose()
