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
