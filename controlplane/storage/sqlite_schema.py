"""A new SQLite database's schema without Alembic: the migrated schema's DDL, kept as it is.

A first run in a folder made its SQLite file's schema with Alembic: its import and the four
migrations, 0.1-0.3 s the run's start waited for (the writer process does it, and the run
row's id comes after it). :data:`STATEMENTS` is what ``sqlite_master`` holds after
``controlplane.storage.db.upgrade`` of a new file, statement for statement and in its order;
:func:`create_if_new` runs them, with the ``alembic_version`` row, in one ``BEGIN IMMEDIATE``
transaction, so the file is the one Alembic makes (``tests/storage/test_sqlite_schema.py``
compares both files' ``sqlite_master``, pragmas and version row, and Alembic's autogenerate
finds nothing to migrate). A database that holds anything is left to Alembic. A new migration
makes that test fail with the statements to paste here (and :data:`REVISION` to move with
``SCHEMA_HEAD``); until then a new file is made by Alembic as before.
"""

from __future__ import annotations

from typing import Any, Final

#: The revision :data:`STATEMENTS` were read at: a new file is made from them only while this is
#: ``SCHEMA_HEAD`` (a migration added without pasting its statements here falls back to Alembic, and
#: ``tests/storage/test_sqlite_schema.py`` fails until they are pasted).
REVISION: Final = "0005"

#: ``sqlite_master.sql`` of a file upgraded to ``SCHEMA_HEAD``, by rowid (SQLite's own indexes omitted, and
#: ``sqlite_sequence``, which SQLite makes itself after the first ``AUTOINCREMENT`` table: ``run``).
STATEMENTS: Final[tuple[str, ...]] = (
    ('CREATE TABLE alembic_version (\n'
     '\tversion_num VARCHAR(32) NOT NULL, \n'
     '\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n'
     ')'),
    ('CREATE TABLE request (\n'
     '\tid INTEGER NOT NULL, \n'
     '\trun_id INTEGER NOT NULL, \n'
     '\trequest_id VARCHAR NOT NULL, \n'
     '\tmodel VARCHAR, \n'
     '\ttenant VARCHAR, \n'
     '\tworker_id VARCHAR, \n'
     '\tstatus VARCHAR NOT NULL, \n'
     '\treason TEXT, \n'
     '\tarrival_s FLOAT NOT NULL, \n'
     '\tscheduled_s FLOAT, \n'
     '\tfirst_token_s FLOAT, \n'
     '\tfinish_s FLOAT, \n'
     '\tprompt_tokens INTEGER NOT NULL, \n'
     '\toutput_tokens INTEGER NOT NULL, \n'
     '\tcached_tokens INTEGER DEFAULT 0 NOT NULL, \n'
     '\tcache_hit VARCHAR, \n'
     '\tnum_preemptions INTEGER DEFAULT 0 NOT NULL, \n'
     '\tguardian_verdict VARCHAR, \n'
     '\tttft_s FLOAT, \n'
     '\ttpot_s FLOAT, \n'
     '\te2e_s FLOAT, \n'
     '\tqueue_s FLOAT, reason_code VARCHAR, priority INTEGER, max_output_tokens INTEGER, \n'
     '\tCONSTRAINT pk_request PRIMARY KEY (id), \n'
     '\tCONSTRAINT fk_request_run_id_run FOREIGN KEY(run_id) REFERENCES run (id) ON DELETE CASCADE, \n'
     '\tCONSTRAINT uq_request_run_id_request_id UNIQUE (run_id, request_id)\n'
     ')'),
    ('CREATE TABLE decision (\n'
     '\tid INTEGER NOT NULL, \n'
     '\trun_id INTEGER NOT NULL, \n'
     '\ttime_s FLOAT NOT NULL, \n'
     '\tplugin VARCHAR NOT NULL, \n'
     '\thook VARCHAR NOT NULL, \n'
     '\tsubject VARCHAR, \n'
     '\taction VARCHAR, \n'
     '\tpayload JSON, \n'
     '\treason TEXT, \n'
     '\tis_error BOOLEAN DEFAULT 0 NOT NULL, \n'
     '\tCONSTRAINT pk_decision PRIMARY KEY (id), \n'
     '\tCONSTRAINT fk_decision_run_id_run FOREIGN KEY(run_id) REFERENCES run (id) ON DELETE CASCADE\n'
     ')'),
    'CREATE INDEX ix_decision_run_id_hook_time_s ON decision (run_id, hook, time_s)',
    ('CREATE TABLE metric_sample (\n'
     '\tid INTEGER NOT NULL, \n'
     '\trun_id INTEGER NOT NULL, \n'
     '\ttime_s FLOAT NOT NULL, \n'
     '\tname VARCHAR NOT NULL, \n'
     '\tvalue FLOAT NOT NULL, \n'
     '\tlabels JSON, \n'
     '\tCONSTRAINT pk_metric_sample PRIMARY KEY (id), \n'
     '\tCONSTRAINT fk_metric_sample_run_id_run FOREIGN KEY(run_id) REFERENCES run (id) ON DELETE CASCADE\n'
     ')'),
    'CREATE INDEX ix_metric_sample_run_id_name_time_s ON metric_sample (run_id, name, time_s)',
    ('CREATE TABLE worker_event (\n'
     '\tid INTEGER NOT NULL, \n'
     '\trun_id INTEGER NOT NULL, \n'
     '\ttime_s FLOAT NOT NULL, \n'
     '\tworker_id VARCHAR NOT NULL, \n'
     '\tkind VARCHAR NOT NULL, \n'
     '\tdetail JSON, \n'
     '\tCONSTRAINT pk_worker_event PRIMARY KEY (id), \n'
     '\tCONSTRAINT fk_worker_event_run_id_run FOREIGN KEY(run_id) REFERENCES run (id) ON DELETE CASCADE\n'
     ')'),
    'CREATE INDEX ix_worker_event_run_id_time_s ON worker_event (run_id, time_s)',
    ('CREATE TABLE iteration (\n'
     '\tid INTEGER NOT NULL, \n'
     '\trun_id INTEGER NOT NULL, \n'
     '\tworker_id VARCHAR NOT NULL, \n'
     '\tbatch_id BIGINT NOT NULL, \n'
     '\tstart_s FLOAT NOT NULL, \n'
     '\tend_s FLOAT NOT NULL, \n'
     '\tnum_prefill_tokens INTEGER NOT NULL, \n'
     '\tnum_prefill_seqs INTEGER NOT NULL, \n'
     '\tnum_decode_seqs INTEGER NOT NULL, \n'
     '\tsum_decode_context BIGINT NOT NULL, \n'
     '\tsum_prefill_context BIGINT NOT NULL, \n'
     '\titeration_s FLOAT NOT NULL, \n'
     '\tpadded_prefill_tokens BIGINT, \n'
     '\tpadded_decode_context BIGINT, \n'
     '\tCONSTRAINT pk_iteration PRIMARY KEY (id), \n'
     '\tCONSTRAINT fk_iteration_run_id_run FOREIGN KEY(run_id) REFERENCES run (id) ON DELETE CASCADE\n'
     ')'),
    'CREATE INDEX ix_iteration_run_id_end_s ON iteration (run_id, end_s)',
    ('CREATE TABLE writer_mark (\n'
     '\twriter VARCHAR NOT NULL, \n'
     '\tseq BIGINT NOT NULL, \n'
     '\tCONSTRAINT pk_writer_mark PRIMARY KEY (writer)\n'
     ')'),
    ('CREATE TABLE "run" (\n'
     '\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n'
     '\tname VARCHAR, \n'
     '\tmode VARCHAR NOT NULL, \n'
     '\tstatus VARCHAR NOT NULL, \n'
     '\ttrace VARCHAR, \n'
     '\ttrace_format VARCHAR, \n'
     '\tseed INTEGER, \n'
     '\tconfig JSON NOT NULL, \n'
     '\tplugins JSON NOT NULL, \n'
     '\tstarted_at DATETIME NOT NULL, \n'
     '\tfinished_at DATETIME, \n'
     '\twall_s FLOAT, \n'
     '\tsim_end_s FLOAT, \n'
     '\tsummary JSON, \n'
     '\tnotes TEXT, \n'
     '\tsweep_id INTEGER, \n'
     '\tsweep_key VARCHAR\n'
     ')'),
    'CREATE UNIQUE INDEX ix_run_sweep_id_sweep_key ON run (sweep_id, sweep_key)',
    ('CREATE TABLE "sweep" (\n'
     '\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n'
     '\tname VARCHAR, \n'
     '\tkind VARCHAR NOT NULL, \n'
     '\tstatus VARCHAR NOT NULL, \n'
     '\tspec JSON NOT NULL, \n'
     '\tspec_hash VARCHAR NOT NULL, \n'
     '\ttrace VARCHAR, \n'
     '\tnum_runs INTEGER, \n'
     '\tcreated_at DATETIME NOT NULL, \n'
     '\tfinished_at DATETIME, \n'
     '\tresult JSON\n'
     ')'),
    'CREATE INDEX ix_sweep_spec_hash ON sweep (spec_hash)',
)


#: What every SQLite connection runs first (``controlplane.storage.db``'s connect hook, and
#: ``controlplane.storage.sqlite_start`` before SQLAlchemy is imported).
PRAGMAS: Final = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")


def fill_if_empty(execute: Any, head: str) -> bool:
    """Inside a transaction begun with ``BEGIN IMMEDIATE``, make the schema at ``head`` if the
    database holds nothing yet; return whether it did. ``execute(sql[, parameters])`` is
    ``sqlite3.Connection.execute`` or SQLAlchemy's ``Connection.exec_driver_sql``."""
    if execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        return False
    for statement in STATEMENTS:
        execute(statement)
    execute("INSERT INTO alembic_version (version_num) VALUES (?)", (head,))
    return True


def create_if_new(engine: Any, head: str, begin_option: str) -> bool:
    """Make the schema at ``head`` in ``engine``'s SQLite database if it holds nothing yet (one
    transaction, begun with ``BEGIN IMMEDIATE`` through ``begin_option``: a second process
    starting on the same new file waits, then finds it made); return whether it did."""
    with engine.connect() as connection:
        connection.execution_options(**{begin_option: "BEGIN IMMEDIATE"})
        with connection.begin():
            return fill_if_empty(connection.exec_driver_sql, head)
