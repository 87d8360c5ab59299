"""A request the daemon refuses before the core sees it, for a reason the core refuses it in a replay (``too_long``,
a model never served), is recorded as the simulator records it: a ``rejected`` row with its code, counted in the
metrics and the run's ``num_rejected``, its error carrying ``x-request-id`` (controlplane.live.core_refusals).
A protocol error (``invalid``) is no request: no row, no id."""

from __future__ import annotations

import pytest

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import wait_until_ready

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the named answers, /metrics, the run's summary, its id, its database)."""
    from fastapi.testclient import TestClient

    tmp = tmp_path_factory.mktemp("core-refusals")
    db = f"sqlite:///{tmp / 'run.db'}"
    cfg, _ = daemon_config(None, workers=1, db=db)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=60, journal_dir=tmp / "j"))
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        answers = {
            "max_tokens": client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 100000, "user": "acme",
                                                         "priority": 2}),
            "chat": client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}],
                                            "max_completion_tokens": 5000}),
            "prompt": client.post(COMPLETIONS, json={"prompt": [5] * 3000, "max_tokens": 2}),
            "one_of_several": client.post(COMPLETIONS, json={"prompt": [[1, 2], [3] * 2500], "max_tokens": 2}),
            # protocol errors: no request
            "malformed": client.post(COMPLETIONS, content=b'{"prompt": "hi",', headers={"content-type":
                                                                                      "application/json"}),
            "missing": client.post(CHAT, json={"max_tokens": 2}),
            "wrong_type": client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": "lots"}),
            "unsupported": client.post(COMPLETIONS, json={"prompt": "hi", "logprobs": 2}),
            "vocabulary": client.post(COMPLETIONS, json={"prompt": [99999], "max_tokens": 2}),
            "ok": client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 2}),
        }
        metrics = client.get("/metrics").text
        driver = daemon.driver
    return answers, metrics, driver.summary, driver.run_id, db


RECORDED = ("max_tokens", "chat", "prompt", "one_of_several")
UNRECORDED = ("malformed", "missing", "wrong_type", "unsupported", "vocabulary")


def test_a_refusal_the_core_makes_too_is_still_a_400_and_names_its_request(served):
    answers, _, _, _, _ = served
    for name in RECORDED:
        r = answers[name]
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_long", (name, r.text)
        assert r.headers["x-request-id"].startswith("req-"), name
    assert answers["max_tokens"].json()["error"]["param"] == "max_tokens"
    assert answers["chat"].json()["error"]["param"] == "max_completion_tokens"
    assert answers["prompt"].json()["error"]["param"] == "prompt"
    assert len({answers[n].headers["x-request-id"] for n in RECORDED}) == len(RECORDED)


def test_it_has_a_rejected_row_with_its_code_and_protocol_errors_have_none(served):
    from controlplane.testing import stored_rows

    answers, _, _, run_id, db = served
    rows = {r["request_id"]: r for r in stored_rows(db, run_id, "requests")}
    recorded = {name: rows[answers[name].headers["x-request-id"]] for name in RECORDED}
    assert {(r["status"], r["reason_code"]) for r in recorded.values()} == {("rejected", "too_long")}
    row = recorded["max_tokens"]
    assert (row["tenant"], row["priority"], row["max_output_tokens"], row["model"]) == ("acme", 2, 100000, "tiny-llama")
    assert recorded["prompt"]["prompt_tokens"] == 3000  # as the refusal counted it
    assert recorded["one_of_several"]["prompt_tokens"] == 2500  # one row for the HTTP request, none submitted
    assert rows[answers["ok"].headers["x-request-id"]]["status"] == "completed"
    assert len(rows) == len(RECORDED) + 1  # the protocol errors are no requests
    for name in UNRECORDED:
        r = answers[name]
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid", (name, r.text)
        assert "x-request-id" not in r.headers, name


def test_it_is_counted_in_the_metrics_and_the_run_s_summary(served):
    _, metrics, summary, _, _ = served
    line = 'controlplane_requests_total{model="tiny-llama",reason_code="too_long",status="rejected"} 4.0'
    assert line in metrics, [m for m in metrics.splitlines() if m.startswith("controlplane_requests_total")]
    assert (summary["num_rejected"], summary["num_completed"], summary["num_requests"]) == (4, 1, 5)


def test_a_model_never_served_is_recorded_as_unavailable(tmp_path):
    """``--workers 0`` with ``fixed-replicas``: the 503 the daemon answers at once is the core's refusal too."""
    from fastapi.testclient import TestClient

    from controlplane.testing import stored_rows

    db = f"sqlite:///{tmp_path / 'run.db'}"
    cfg, _ = daemon_config(None, workers=0, db=db)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=5,
                                       journal_dir=tmp_path / "journal"))
    with TestClient(daemon.app) as client:
        r = client.post(COMPLETIONS, json={"prompt": [1, 2, 3], "max_tokens": 2})
        run_id = daemon.driver.run_id
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert "--workers N" in r.json()["error"]["message"]  # the daemon's own words for the operator
    (row,) = stored_rows(db, run_id, "requests")
    assert (row["request_id"], row["status"], row["reason_code"]) == (r.headers["x-request-id"], "rejected",
                                                                       "unavailable")
    assert row["prompt_tokens"] == 3


def test_a_library_driver_s_core_refuses_what_the_worker_s_context_cannot_hold(tmp_path):
    """A deployment without ``max_model_len`` (the Python API's config): the core's length check is the length
    served, so a prompt over the context is a rejected row, and a prompt + ``max_tokens`` over it is refused
    rather than admitted and cut short at the context."""
    import asyncio

    from controlplane.live.driver import LiveDriver
    from controlplane.live.http_errors import InvalidRequest
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import make_config, stored_rows

    db = f"sqlite:///{tmp_path / 'live.db'}"
    cfg = make_config(storage={"url": db}, cluster={"models": [
        {"name": "alpha", "replicas": 1, "worker": {"preset": "tiny-llama", "max_seq_len": 64}}]})

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            with pytest.raises(InvalidRequest) as refused:
                await driver.submit([5] * 80, max_tokens=2, request_id="long-prompt")
            both = await driver.generate([5] * 40, max_tokens=40, ignore_eos=True)
        finally:
            await driver.close()
        return refused.value, both, driver.run_id

    error, both, run_id = asyncio.run(main())
    assert error.headers == {"x-request-id": "long-prompt"} and error.http_status == 400
    assert (both.status, both.http_status) == ("rejected", 400) and both.reason.startswith("too long: prompt 40")
    rows = {r["request_id"]: r for r in stored_rows(db, run_id, "requests")}
    assert {rid: (r["status"], r["reason_code"], r["prompt_tokens"]) for rid, r in rows.items()} == {
        "long-prompt": ("rejected", "too_long", 80), both.request_id: ("rejected", "too_long", 40)}


def test_a_max_tokens_over_the_context_is_recorded_with_its_prompt_s_real_length(tmp_path):
    """The row (and the core's reason, which states the prompt's length) said ``prompt 1`` for any prompt: the
    placeholder of a prompt not tokenized. The daemon now counts it as its model encodes it: a completion's
    longest prompt, a chat's rendered messages."""
    from fastapi.testclient import TestClient

    from controlplane.testing import stored_rows

    db = f"sqlite:///{tmp_path / 'run.db'}"
    cfg, _ = daemon_config(None, workers=1, db=db)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, journal_dir=tmp_path / "journal"))
    messages = [{"role": "user", "content": "hi there"}]
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        served = next(iter(daemon.driver.models.values()))
        expected = {
            client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 100000}): len(served.encode("hi")),
            client.post(COMPLETIONS, json={"prompt": ["a", "hello world", "b"], "max_tokens": 100000}):
                len(served.encode("hello world")),
            client.post(CHAT, json={"messages": messages, "max_tokens": 100000}):
                len(served.encode(served.render_chat(messages)[0], special_tokens=False)),
        }
        run_id = daemon.driver.run_id
    rows = {r["request_id"]: r for r in stored_rows(db, run_id, "requests")}
    for answer, tokens in expected.items():
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "too_long", answer.text
        row = rows[answer.headers["x-request-id"]]
        assert tokens > 1 and row["prompt_tokens"] == tokens
        assert row["reason"].startswith(f"too long: prompt {tokens} + max_tokens 100000 tokens > max_model_len ")


def test_the_journal_lists_a_recorded_refusal_as_accepted_and_answered(tmp_path):
    """A daemon killed after refusing requests it recorded (an unknown model, a max_tokens over the context): its
    crashed run said requests_recorded 25, requests_accepted 23, for these had a row and an x-request-id and were
    not in the journal. They are now, accepted and answered ``rejected`` (a crash before their rows: not lost)."""
    from fastapi.testclient import TestClient

    from controlplane.storage.journal import read_answered, read_journal

    cfg, _ = daemon_config(None, workers=1, db=f"sqlite:///{tmp_path / 'run.db'}")
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, journal_dir=tmp_path / "journal"))
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        sent = [client.post(COMPLETIONS, json={"model": "gpt-4", "prompt": "hi", "max_tokens": 2}),
                client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 2147483647}),
                client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 2})]
        ids = [r.headers["x-request-id"] for r in sent]
        path = daemon.journal.path
        accepted, answered = read_journal(path), read_answered(path)
    assert [r.status_code for r in sent] == [404, 400, 200]
    assert accepted == ids
    assert answered == dict(zip(ids, ["rejected", "rejected", "completed"]))
