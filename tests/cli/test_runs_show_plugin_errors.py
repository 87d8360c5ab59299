"""`controlplane runs show`: a plugin's errors are counted in full, not only the ones recorded as decisions."""

from __future__ import annotations

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.plugin_manager import MAX_RECORDED_ERRORS
from controlplane.storage import make_engine, plugin_errors
from controlplane.testing import make_trace, replay_with
from tests.controlplane.test_plugin_manager import ExplodingRouter  # (raises at every request it routes)


def test_errors_beyond_the_recorded_ones_are_counted_in_the_summary_and_shown(tmp_path):
    n = MAX_RECORDED_ERRORS + 30
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(ExplodingRouter(), trace=make_trace(n, qps=20), db_url=url)
    assert res.summary["num_plugin_errors"] == n and res.summary["num_completed"] == n
    assert res.summary["plugin_error_counts"] == {"exploding-router": {"cp_route_request": n}}
    run_id = res.summary["run_id"]
    # The decision rows stop at the first MAX_RECORDED_ERRORS of each plugin and hook ...
    assert [e["count"] for e in plugin_errors(make_engine(url), run_id)] == [MAX_RECORDED_ERRORS]
    # ... and runs show says how many there were, as the summary's "plugin errors" does.
    shown = CliRunner().invoke(app, ["runs", "show", str(run_id), "--db", url])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert f"{n} (the first {MAX_RECORDED_ERRORS} recorded)" in text
    assert "RuntimeError: cannot route" in text


def test_a_run_without_errors_has_an_empty_count():
    assert "plugin_error_counts" not in replay_with(trace=make_trace(5)).summary  # (a clean run: no key)
