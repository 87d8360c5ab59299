"""A PostgreSQL server restarted under load (a private server of this test's own, so the shared
one is never touched): the recorder's appends never wait, and every row is written exactly once."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.storage import RunRecorder, make_engine, upgrade

from .support import start_run
from .test_outage import AppendTimer, assert_every_row_once

pytestmark = pytest.mark.postgres


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: run them as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@pytest.fixture
def private_pg() -> Iterator[tuple[str, Path, Path]]:
    """A throw-away PostgreSQL server on a free port: ``(url, pg_ctl, data dir)``."""
    from tests.live.daemon_process import free_port

    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("runuser") is None and os.geteuid() == 0:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    # pytest's temporary directories are private to root: the server's home is a directory of its own
    home = Path(tempfile.mkdtemp(prefix="cp-pg-"))
    os.chmod(home, 0o755)
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    data = home / "data"
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    port = free_port()
    pg_ctl = bin_dir / "pg_ctl"
    opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_postgres([str(pg_ctl), "-D", str(data), "-o", opts, "-l", str(home / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", pg_ctl, data
    finally:
        subprocess.run(_as_postgres([str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("mode", ["fast", "immediate"])  # a clean restart, and one like a server crash
def test_a_restarted_server_loses_and_duplicates_no_row(private_pg, tmp_path: Path, mode: str) -> None:
    url, pg_ctl, data = private_pg
    engine = make_engine(url, connect_args={"connect_timeout": 2})
    upgrade(engine)
    rec = RunRecorder(engine, batch_size=200, max_retries=2, retry_backoff_s=0.25, flush_interval_s=0.1,
                      background=True, max_pending_rows=400, spill_dir=tmp_path / "spill")
    run_id = start_run(rec)
    with AppendTimer(rec) as producer:
        time.sleep(0.5)
        before = producer.count
        restarted = subprocess.run(_as_postgres([str(pg_ctl), "-D", str(data), "-m", mode, "-l",
                                                 str(data.parent / "log"), "-w", "restart"]),
                                   capture_output=True, text=True, timeout=60)
        assert restarted.returncode == 0, restarted.stderr
        time.sleep(1.0)
        during = list(producer.durations[before:])
    rec.close()
    engine.dispose()
    assert producer.count > before + 100, "rows were appended across the restart"
    assert max(during) < 0.2, f"an append waited {max(during) * 1000:.1f} ms for the restart"
    assert_every_row_once(url, run_id, producer.count)
