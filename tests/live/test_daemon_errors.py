"""The daemon's error bodies carry the request's code (in process, on a thread pool): OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with the `ReasonCode` value as ``code``."""

from __future__ import annotations


import time

import pytest

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import wait_until_ready

TOKEN = "errors-token"


@pytest.fixture(scope="module")
def http():
    from fastapi.testclient import TestClient

    cfg, _ = daemon_config(None, workers=1)
    cfg = cfg.model_copy(update={"plugins": cfg.plugins.model_copy(update={"settings": {
        **cfg.plugins.settings, "queue-limit": {"max_prompt_tokens": 40}}})})
    daemon = Daemon(cfg, DaemonOptions(pool="thread", admin_token=TOKEN, cpu_threads=1), record=False)
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        yield client


def error(r) -> dict:
    return r.json()["error"]


def test_unknown_models_are_404_with_their_code(http):
    for path, body in (("/v1/completions", {"prompt": "x"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        r = http.post(path, json={"model": "gpt-4", "max_tokens": 2, **body})
        assert r.status_code == 404
        assert error(r) | {"message": None} == {"message": None, "type": "not_found_error", "param": "model",
                                                 "code": "unknown_model"}
        assert "not served here" in error(r)["message"]


def test_bad_requests_are_400_with_their_code(http):
    over_context = http.post("/v1/completions", json={"prompt": [5] * 3000, "max_tokens": 2})
    assert over_context.status_code == 400 and error(over_context)["code"] == "too_long"
    assert error(over_context)["param"] == "prompt"
    unsupported = http.post("/v1/completions", json={"prompt": "x", "logprobs": 2})
    assert unsupported.status_code == 400 and error(unsupported) | {"message": None} == {
        "message": None, "type": "invalid_request_error", "param": "logprobs", "code": "invalid"}
    malformed = http.post("/v1/completions", json={"prompt": "x", "max_tokens": "lots"})
    assert malformed.status_code == 400 and error(malformed)["code"] == "invalid"
    assert error(malformed)["param"] == "max_tokens"


def test_a_rejection_by_a_plugin_carries_the_core_s_code(http):
    r = http.post("/v1/completions", json={"prompt": [5] * 41, "max_tokens": 2})  # queue-limit's max_prompt_tokens
    assert r.json()["error"]["message"].startswith("rejected: prompt too long")
    assert r.status_code == 400 and error(r)["code"] == "too_long"
    assert error(r)["param"] == "prompt"  # as when the model's own length check refuses it
    assert r.headers["x-request-id"].startswith("req-")  # recorded: its row can be found as an answer's can


def test_every_error_of_a_recorded_request_names_it_in_x_request_id():
    """429, 503, 504 and a refusal of one of n prompts: the id(s) ride on the error as on an answer."""
    from controlplane.live.daemon_deps import result_error
    from controlplane.live.results import LiveResult
    from controlplane.types import ReasonCode

    def failed(status, code, rid="req-7"):
        return LiveResult(rid, "m", status, "", None, "why", 1, 0, reason_code=code, retry_after_s=2.5)

    denied = result_error(failed("rejected", ReasonCode.ADMISSION_DENIED))
    assert denied.status == 429 and denied.headers == {"x-request-id": "req-7", "retry-after": "3"}
    assert result_error(failed("failed", ReasonCode.WORKER_FAILED)).response().headers["x-request-id"] == "req-7"
    timeout = result_error(failed("timeout", None)).response()
    assert timeout.status_code == 504 and timeout.headers["x-request-id"] == "req-7"
    done = LiveResult("req-6", "m", "completed", "a", "stop", None, 1, 1, worker_id="w0")
    too_long = failed("rejected", ReasonCode.TOO_LONG)
    both = result_error(too_long, results=[done, too_long])
    assert both.headers == {"x-request-id": "req-6,req-7"}


def test_every_error_of_a_recorded_request_carries_its_controlplane_object_as_an_answer_does(http):
    """docs/daemon.md said so, but the errors carried only ``x-request-id``: now the ``controlplane`` object
    (request id, worker, reason and code, retries, cache hit, guardian verdict) rides beside ``error``."""
    import json

    from controlplane.live.daemon_deps import result_error
    from controlplane.live.results import LiveResult
    from controlplane.types import ReasonCode

    def requests(r) -> list[dict]:
        assert r.headers["x-request-id"] == ",".join(x["request_id"] for x in r.json()["controlplane"]["requests"])
        return r.json()["controlplane"]["requests"]

    unknown = http.post("/v1/completions", json={"model": "gpt-4", "prompt": "x", "max_tokens": 2})
    (row,) = requests(unknown)
    assert (row["reason_code"], row["worker_id"], row["num_retries"]) == ("unknown_model", None, 0)
    assert row["reason"].startswith("unknown model")
    too_long = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                       "max_tokens": 10**6})
    assert too_long.status_code == 400 and requests(too_long)[0]["reason_code"] == "too_long"
    by_plugin = http.post("/v1/completions", json={"prompt": [5] * 41, "max_tokens": 2})  # queue-limit
    assert requests(by_plugin)[0]["reason"].startswith("prompt too long")
    protocol = http.post("/v1/completions", json={"prompt": "x", "logprobs": 2})
    assert protocol.status_code == 400 and "controlplane" not in protocol.json()

    done = LiveResult("req-6", "m", "completed", "a", "stop", None, 1, 1, worker_id="w0", cache_hit="exact")
    for status, code in (("rejected", ReasonCode.QUEUE_FULL), ("failed", ReasonCode.WORKER_FAILED),
                         ("timeout", ReasonCode.TIMEOUT)):
        bad = LiveResult("req-7", "m", status, "", None, "why", 1, 0, worker_id="w1", num_retries=2, reason_code=code)
        body = json.loads(result_error(bad, results=[done, bad]).response().body)
        assert body["controlplane"]["requests"] == [
            {"request_id": "req-6", "worker_id": "w0", "reason": None, "reason_code": None, "num_retries": 0,
             "cache_hit": "exact", "guardian_verdict": None},
            {"request_id": "req-7", "worker_id": "w1", "reason": "why", "reason_code": code.value, "num_retries": 2,
             "cache_hit": None, "guardian_verdict": None}]


def test_admin_needs_the_token_and_draining_is_503_unavailable(http):
    r = http.get("/admin/workers")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and error(r)["code"] is None
    admin = {"authorization": f"Bearer {TOKEN}"}
    assert http.get("/admin/workers", headers=admin).json()["pool"] == "thread"
    assert http.post("/admin/drain", json={"exit": False}, headers=admin).status_code == 202
    try:
        late = http.post("/v1/completions", json={"prompt": "late", "max_tokens": 2})
        assert late.status_code == 503 and late.headers["retry-after"] == "5"
        assert error(late)["code"] == "unavailable" and "draining" in error(late)["message"]
        assert http.get("/readyz").json()["reason"] == "draining"
    finally:
        assert http.post("/admin/resume", headers=admin).json() == {"draining": False}
    ok = http.post("/v1/completions", json={"prompt": "again", "max_tokens": 2, "ignore_eos": True})
    assert ok.status_code == 200 and ok.json()["controlplane"]["requests"][0]["reason_code"] is None


def test_a_json_body_sent_as_a_form_says_to_send_json(http):
    """``curl -d '{...}'`` without ``-H 'content-type: application/json'``: the error says so."""
    r = http.post("/v1/completions", content=b'{"prompt": "x", "max_tokens": 2}',
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and error(r)["code"] == "invalid"
    assert "Content-Type: application/json" in error(r)["message"]
    assert "application/x-www-form-urlencoded" in error(r)["message"]
    not_an_object = http.post("/v1/completions", json=[1, 2])
    assert error(not_an_object)["message"] == "the request body must be a JSON object"


@pytest.mark.parametrize("body", [b'{"exit": "false"}', b'{exit: false}', b'[false]', b'{"exit": 0}',
                                  b'{"exti": false}', b'{}',
                                  b'{"exit": false, "now": true}'])
def test_a_drain_body_that_is_not_a_boolean_exit_is_refused_and_nothing_drains(http, body):
    admin = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    r = http.post("/admin/drain", content=body, headers=admin)
    assert r.status_code == 400 and error(r)["code"] == "invalid", r.text
    assert http.get("/readyz").status_code == 200  # neither draining nor exiting


def test_a_reload_without_a_config_file_says_what_it_re_read(http):
    """(The module's last test on ``http``: the reload puts back the defaults' queue-limit settings.)"""
    r = http.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["reloaded"] and r.json()["config"] is None
    assert r.json()["note"].startswith("the daemon was started without --config: only the environment's")


def test_a_model_that_cannot_start_gets_503_at_once_and_the_probes_say_why(tmp_path, caplog):
    """A model directory with a config but no weights: the workers fail to start, again and again.
    ``/readyz`` and ``/healthz`` say why, and a request sent while no start is in progress gets 503
    at once with the start's error (not a 504 after ``--request-timeout``), recorded as rejected."""
    from fastapi.testclient import TestClient

    from controlplane.live.model_source import WorkerModelSettings, build_config
    from controlplane.testing import stored_rows

    model_dir = tmp_path / "weightless"
    build_config(WorkerModelSettings(preset="tiny-llama")).save_pretrained(model_dir)
    caplog.set_level("INFO", logger="controlplane.live.driver")
    db = f"sqlite:///{tmp_path / 'run.db'}"
    cfg, _ = daemon_config(None, workers=1, model_path=str(model_dir), db=db)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=60,
                                       journal_dir=tmp_path / "journal"))
    with TestClient(daemon.app) as client:
        deadline = time.monotonic() + 60
        while "cannot start" not in (reason := (ready := client.get("/readyz")).json()["reason"]):
            assert time.monotonic() < deadline, reason
            time.sleep(0.1)
        assert ready.status_code == 503
        assert reason.startswith("no worker is ready yet; model 'weightless' cannot start (no worker up or "
                                 "starting, the last start failed): OSError: ")  # said once
        assert "model.safetensors" in reason  # the loader's own words: no weights in the directory
        assert "model.safetensors" in client.get("/healthz").json()["cannot_start"]["weightless"]
        t0 = time.monotonic()
        r = client.post("/v1/completions", json={"model": "weightless", "prompt": "hi", "max_tokens": 2})
        took = time.monotonic() - t0
        run_id = daemon.driver.run_id
    assert r.status_code == 503 and took < 5, (r.status_code, took)  # the fixed-replicas backoff is 5 s and more
    assert error(r)["code"] == "unavailable" and r.headers["retry-after"]
    message = error(r)["message"]
    assert message.startswith("rejected: model 'weightless' has no worker up or starting; its last start failed: ")
    assert "model.safetensors" in message and "\n" not in message
    assert "could not start" not in message and "WorkerStartError" not in message, message  # said once
    (row,) = stored_rows(db, run_id, "requests")
    assert row["status"] == "rejected" and row["reason_code"] == "unavailable" and row["reason"] == message[10:]
    starts = [r.getMessage() for r in caplog.records if "starting: loading" in r.getMessage()]
    assert starts and starts[0].startswith("worker ") and model_dir.name in starts[0]  # progress while it loads


def test_no_worker_configured_and_fixed_replicas_is_a_warning_and_the_readyz_reason(tmp_path, caplog):
    """``--workers 0`` with the default autoscaler: nothing will ever serve, and the operator is told."""
    from fastapi.testclient import TestClient

    caplog.set_level("WARNING", logger="controlplane.daemon")
    cfg, _ = daemon_config(None, workers=0, db=f"sqlite:///{tmp_path / 'run.db'}")
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=5,
                                       journal_dir=tmp_path / "journal"))
    with TestClient(daemon.app) as client:
        ready = client.get("/readyz")
        # A request is answered at once (it used to wait for --request-timeout, then get 504).
        started = time.monotonic()
        r = client.post("/v1/completions", json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 2})
        waited_s = time.monotonic() - started
    assert r.status_code == 503 and waited_s < 3, (r.status_code, waited_s)
    assert error(r)["code"] == "unavailable" and error(r)["param"] == "model"
    assert error(r)["message"].startswith("model 'tiny-llama' is never served here: no worker is configured")
    assert "--workers N" in error(r)["message"]
    assert ready.status_code == 503
    assert ready.json()["reason"] == ("no worker is ready yet; model 'tiny-llama': no worker is configured (replicas: "
                                      "0, --workers 0) and the autoscaler fixed-replicas never starts one")
    warned = [r.getMessage() for r in caplog.records if "will never be served" in r.getMessage()]
    assert warned and "--workers N" in warned[0], caplog.text


def test_another_autoscaler_may_start_a_worker_so_nothing_is_said(tmp_path):
    from fastapi.testclient import TestClient

    config = tmp_path / "hpa.yaml"
    config.write_text("plugins:\n  enabled: [queue-limit, least-loaded, continuous-batching, hpa, static-memory]\n"
                      "  settings:\n    hpa: {min_replicas: 0}\n")
    cfg, _ = daemon_config(config, workers=0, db=f"sqlite:///{tmp_path / 'run.db'}")
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=5,
                                       journal_dir=tmp_path / "journal"))
    with TestClient(daemon.app) as client:
        ready = client.get("/readyz")
    # (no worker, and an autoscaler at zero on purpose that starts one for a request: scaled to zero, which reads ready, else a load
    # balancer following /readyz would never send the request that wakes it)
    assert ready.status_code == 200 and ready.json()["reason"].startswith("scaled to zero: a request starts a worker")


def test_the_context_is_the_smaller_of_max_model_len_and_the_worker_s_length(tmp_path):
    """``max_model_len: 512`` with ``worker.max_seq_len: 1024``: `/v1/models` says 512, and a
    ``max_tokens`` over it is the same 400 (``too_long``, naming ``max_tokens``) at any size."""
    from fastapi.testclient import TestClient

    path = tmp_path / "len.yaml"
    path.write_text("cluster:\n  models:\n    - name: chat\n      replicas: 1\n      max_model_len: 512\n"
                    "      worker: {preset: tiny-llama, max_seq_len: 1024}\n")
    cfg, _ = daemon_config(path)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1), record=False)
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        (listed,) = client.get("/v1/models").json()["data"]
        assert listed["max_model_len"] == 512
        for max_tokens in (512, 1023, 1024, 5000):
            r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": max_tokens})
            assert r.status_code == 400 and error(r)["code"] == "too_long", (max_tokens, r.text)
            assert error(r)["param"] == "max_tokens" and "512" in error(r)["message"]
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                          "max_completion_tokens": 600})
        assert error(chat)["param"] == "max_completion_tokens" and error(chat)["code"] == "too_long"
        long_prompt = client.post("/v1/completions", json={"prompt": [5] * 600, "max_tokens": 2})
        assert error(long_prompt)["param"] == "prompt" and "512" in error(long_prompt)["message"]


def test_a_prompt_and_max_tokens_over_the_context_together_name_the_input_as_openai_does(http):
    """Each fits, not both: refused as too long, naming the input (a chat's ``messages``) and both parts."""
    context = http.get("/v1/models").json()["data"][0]["max_model_len"]
    r = http.post("/v1/completions", json={"prompt": [5] * 30, "max_tokens": context - 10})
    assert r.status_code == 400 and error(r)["code"] == "too_long" and error(r)["param"] == "prompt"
    assert f"prompt 30 + max_tokens {context - 10}" in error(r)["message"], error(r)["message"]
    chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello " * 30}],
                                                   "max_tokens": context - 10})
    assert chat.status_code == 400 and error(chat)["code"] == "too_long" and error(chat)["param"] == "messages"
    alone = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi " * 3000}]})
    assert alone.status_code == 400 and error(alone)["param"] == "messages", error(alone)


def test_a_reload_sees_a_changed_model_list_and_says_it_needs_a_restart(tmp_path):
    """The daemon priced its CPU worker by overriding ``cluster.models``, and a reload applied the model list
    saved at the start over the file read again: a changed ``max_model_len`` read as no change at all."""
    from fastapi.testclient import TestClient

    path = tmp_path / "daemon.yaml"
    text = "cluster:\n  models:\n    - {name: tiny, replicas: 1, max_model_len: 512, worker: {preset: tiny-llama}}\n"
    path.write_text(text)
    flags = {"db": None, "workers": None, "preset": None, "model_path": None, "precision": None, "model_name": None}
    cfg, overrides = daemon_config(path, **flags)
    options = DaemonOptions(pool="thread", admin_token=TOKEN, cpu_threads=1, config_path=path, overrides=overrides,
                            config_flags=flags)
    with TestClient(Daemon(cfg, options, record=False).app) as client:
        wait_until_ready(client)
        admin = {"authorization": f"Bearer {TOKEN}"}
        assert client.post("/admin/reload", headers=admin).json()["needs_restart"] == []
        path.write_text(text.replace("512", "256"))
        assert client.post("/admin/reload", headers=admin).json()["needs_restart"] == ["cluster"]


def test_readyz_names_a_never_served_model_while_another_is_ready(tmp_path):
    """docs/daemon.md: `/readyz` names such a model in its `reason`; it said nothing while another model was up."""
    from fastapi.testclient import TestClient

    config = tmp_path / "two.yaml"
    config.write_text("plugins:\n  enabled: [queue-limit, least-loaded, continuous-batching, fixed-replicas]\n"
                      "cluster:\n  models:\n"
                      "    - {name: chat, replicas: 1, worker: {preset: tiny-llama}}\n"
                      "    - {name: code, replicas: 0, worker: {preset: tiny-llama}}\n")
    cfg, _ = daemon_config(config, db=f"sqlite:///{tmp_path / 'run.db'}")
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=5,
                                       journal_dir=tmp_path / "journal"))
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["reason"].startswith("model 'code': no worker is configured")


def test_usage_counts_each_prompt_once_with_n_choices(http):
    """OpenAI counts a prompt's tokens once however many choices it has: 2 prompts of 2 and 1 ids, n=2, read 6."""
    r = http.post("/v1/completions", json={"prompt": [[5, 6], [7]], "n": 2, "max_tokens": 2})
    assert r.status_code == 200 and len(r.json()["choices"]) == 4
    assert r.json()["usage"]["prompt_tokens"] == 3
