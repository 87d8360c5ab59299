"""Each request's priority and output length to generate are stored (revision 0004) and exported: evaluating a priority policy needed
the export joined back to the trace."""

from __future__ import annotations

import dataclasses

from sqlalchemy import text

from controlplane.storage import iter_rows, make_engine, upgrade
from controlplane.testing import make_config, make_trace, replay_with


def test_a_replay_stores_and_exports_each_request_s_priority(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = [dataclasses.replace(t, priority=i % 3) for i, t in enumerate(make_trace(30, qps=4))]
    res = replay_with(trace=trace, config=make_config(storage={"url": url}), db_url=url)
    rows = {r["request_id"]: r["priority"] for r in iter_rows(make_engine(url), res.run_id, "requests")}
    assert rows == {t.request_id: t.priority for t in trace}


def test_rows_stored_before_the_revision_read_as_unknown_priority(db_url):
    """Upgrading a database of revision 0003 keeps its requests, their priority NULL."""
    engine = make_engine(db_url)
    upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO run (id, mode, status, config, plugins, started_at) "
                          "VALUES (1, 'sim', 'finished', '{}', '[]', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO request (run_id, request_id, status, arrival_s, prompt_tokens, output_tokens) "
                          "VALUES (1, 'old', 'completed', 0.0, 10, 2)"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT request_id, priority FROM request")).all() == [("old", None)]
    engine.dispose()


def test_each_row_says_how_many_tokens_it_was_to_generate(tmp_path):
    """A rejected or cut-off request's row said output_tokens 0 and nothing of the trace's output length."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = make_trace(20, qps=4)
    trace.append(dataclasses.replace(trace[-1], request_id="lost", model="nope", arrival_s=trace[-1].arrival_s + 0.1))
    res = replay_with(trace=trace, config=make_config(storage={"url": url}), db_url=url)
    rows = {r["request_id"]: r for r in iter_rows(make_engine(url), res.run_id, "requests")}
    assert rows["lost"]["status"] == "rejected" and rows["lost"]["output_tokens"] == 0
    assert {i: r["max_output_tokens"] for i, r in rows.items()} == {t.request_id: t.output_tokens for t in trace}
