"""The daemon's close line names every status its requests ended in, so the counts add up to the requests (it
named only completed, failed and rejected: 11 blocked of 25 were missing)."""

from __future__ import annotations

from controlplane.live.daemon import closed_counts


def test_the_close_line_counts_add_up_to_the_requests():
    summary = {"num_requests": 25, "num_completed": 13, "num_blocked": 11, "num_rejected": 1, "num_failed": 0,
               "num_cancelled": 0, "num_in_flight": 0, "num_preemptions": 4}
    assert closed_counts(summary) == "25 requests: 13 completed, 11 blocked, 1 rejected"
    assert closed_counts({"num_requests": 3, "num_in_flight": 2, "num_cancelled": 1}) == \
        "3 requests: 1 cancelled, 2 in flight"
    assert closed_counts({}) == "0 requests"


def test_the_close_line_counts_plugin_errors():
    summary = {"num_requests": 5, "num_completed": 5, "num_plugin_errors": 547}
    assert closed_counts(summary, 1) == \
        "5 requests: 5 completed; 547 plugin errors (controlplane runs show 1 lists them)"
    summary["num_plugin_errors"] = 0
    assert closed_counts(summary, 1) == "5 requests: 5 completed"


def test_the_daemon_logs_a_plugins_first_error_and_counts_them_at_the_close(caplog):
    """A router raising on every request: its first error is a warning in the daemon's log, later ones are not,
    and the close line counts them (the log said nothing of 547 errors). After the daemon, replays stay quiet."""
    import logging

    import openai
    from fastapi.testclient import TestClient

    from controlplane import hook_calls
    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config
    from tests.controlplane.test_hook_calls import Raising
    from tests.live.daemon_process import wait_until_ready

    cfg, _ = daemon_config(None, workers=1)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1), record=False)
    daemon.driver.extra_plugins.append(Raising(RuntimeError("chaos router exploded")))
    with caplog.at_level(logging.INFO), TestClient(daemon.app) as http:
        wait_until_ready(http)
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        for i in range(3):
            client.completions.create(model="tiny-llama", prompt=f"p{i}", max_tokens=2)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "'raising'" in r.getMessage()]
    assert len(warned) == 1 and "cp_route_request failed (RuntimeError: chaos router exploded)" in warned[0]
    closed = [r.getMessage() for r in caplog.records if " closed (" in r.getMessage()]
    assert closed and closed[-1].endswith("3 requests: 3 completed; 3 plugin errors")
    assert not hook_calls.HookMonitor().warn_first  # off again: a replay in this process logs none
