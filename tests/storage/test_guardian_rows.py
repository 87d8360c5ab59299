"""Guardian outcomes in SQL (SQLite and PostgreSQL): blocked requests with their verdict and reason in
the request table, each guardian's name, verdict and score in the decision rows."""

from __future__ import annotations

from controlplane.storage import make_engine
from controlplane.storage.queries import iter_rows
from controlplane.testing import make_trace, replay_with


def test_blocked_requests_and_guardian_scores_are_stored(db_url):
    guardians = {"models": [{"name": "judge", "quality": {"separation": 12.0, "noise": 0.5}},
                            {"name": "rules-like", "threshold": 1.0}]}
    res = replay_with(trace=make_trace(40, qps=4), db_url=db_url, sim={"guardian_block_rate": 0.5},
                      guardians=guardians,
                      plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync",
                                                                 "guardians": ["judge", "rules-like"]}}})
    engine = make_engine(db_url)
    try:
        requests = list(iter_rows(engine, res.run_id, "requests"))
        decisions = list(iter_rows(engine, res.run_id, "decisions"))
    finally:
        engine.dispose()
    blocked = [r for r in requests if r["status"] == "blocked"]
    assert 5 < len(blocked) < 35 and len(requests) == 40
    assert all(r["guardian_verdict"] == "block" and r["reason"].startswith("blocked by judge") for r in blocked)
    assert {r["guardian_verdict"] for r in requests if r["status"] == "completed"} == {"pass"}
    verdicts = [d for d in decisions if d["action"] == "guardian_verdict"]
    assert len(verdicts) == 80 and {d["payload"]["guardian"] for d in verdicts} == {"judge", "rules-like"}
    assert all(0.0 <= d["payload"]["score"] <= 1.0 for d in verdicts)
    outcomes = {d["subject"]: d["payload"] for d in decisions if d["action"] == "guardian_outcome"}
    assert {rid for rid, p in outcomes.items() if p["verdict"] == "block"} == {r["request_id"] for r in blocked}
    assert res.summary["num_blocked"] == len(blocked)
