"""Live guardians on the live worker pool (`controlplane.live.guardian_pool`): guardian workers of
their own and guardians shared with the generation workers, in the thread and process pools (Ray
when it is installed), through the pool's generic ``command``; a guardian worker that dies is
reported, its checks answer ``error`` (then ``on_error``) and it is started again; verdicts after
the reply reach the request row and ``GET /v1/requests/{id}``; the live summary has each
guardian's busy and GPU seconds. Tiny random-weight guardian models are built from a config (no
downloads)."""

from __future__ import annotations

import asyncio
import logging
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.live.driver import LiveDriver
from controlplane.live.pool import make_pool
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.testing import make_config, stored_rows as rows
from tests.live.tiny_guardian_models import save_tiny_judge, tiny_llama_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

POOLS = ["thread", "process"]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("guardian-models")
    save_tiny_judge(root / "judge")
    cfg = tiny_llama_config()
    transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**cfg.to_dict(), num_labels=2)) \
        .save_pretrained(root / "classifier")
    return str(root / "judge")


def config(tmp_path: Path, guardians: list[dict[str, Any]], *, replicas: int = 1, **plan: Any):
    return make_config(
        storage={"url": f"sqlite:///{tmp_path / 'live.db'}"},
        cluster={"models": [{"name": "tiny", "replicas": replicas,
                             "worker": {"preset": "tiny-llama", "max_seq_len": 256}}]},
        plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync",
                                                   "guardians": [g["name"] for g in guardians], **plan}}},
        guardians={"models": guardians},
    )


def drive(cfg, pool, prompts, *, during=None, max_tokens=3):
    """Run ``prompts`` one after the other through a live driver on ``pool``; ``during(driver)``
    (a coroutine function) runs after them, before the driver closes."""

    async def main():
        driver = LiveDriver(cfg, pool=pool)
        await driver.start(wait_ready_s=180)
        try:
            workers = {w: driver.pool.info(w) for w in driver.pool.worker_ids()}
            results = [await driver.generate(p, max_tokens=max_tokens, ignore_eos=True) for p in prompts]
            extra = await during(driver) if during else None
        finally:
            summary = await driver.close()
        return driver, workers, results, summary, extra

    return asyncio.run(main())


def run_summary(url: str, run_id: int) -> dict[str, Any]:
    from controlplane.storage import make_engine
    from controlplane.storage.queries import get_run

    engine = make_engine(url)
    try:
        return get_run(engine, run_id)["summary"]
    finally:
        engine.dispose()


def verdicts(url: str, run_id: int) -> list[tuple[str, str, str]]:
    return [(d["subject"], d["payload"]["guardian"], d["payload"]["verdict"]) for d in rows(url, run_id, "decisions")
            if d["action"] == "guardian_verdict"]


@pytest.mark.parametrize("kind", POOLS)
def test_guardians_of_their_own_run_as_workers_of_the_pool(tmp_path, judge_dir, kind):
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["never said"], "replicas": 2},
                            {"name": "judge", "kind": "causal-lm", "model": judge_dir, "threshold": 1.0}])
    driver, workers, results, summary, _ = drive(cfg, make_pool(kind, cpu_threads=1),
                                                 ["hello there", "what is a cache", "one more"])
    assert set(workers) == {"tiny-0", "guardian-rules-0", "guardian-rules-1", "guardian-judge-0"}
    pids = {w: info["pid"] for w, info in workers.items()}
    if kind == "process":  # each guardian replica is a process of its own, like a generation worker
        assert len(set(pids.values())) == 4 and os.getpid() not in pids.values()
    assert all(r.ok and r.status == "completed" and r.guardian_verdict == "pass" for r in results)
    got = verdicts(cfg.storage.url, driver.run_id)
    assert sorted(g for _, g, _ in got) == ["judge"] * 3 + ["rules"] * 3
    assert {v for *_, v in got} == {"pass"}  # real verdicts, none "unavailable"
    judge, rules = summary["guardians"]["judge"], summary["guardians"]["rules"]
    assert judge["checks"] == rules["checks"] == 3 and judge["errors"] == judge["timeouts"] == 0
    assert judge["workers"] == {"guardian-judge-0": 3} and judge["placement"] == "own"
    assert sorted(rules["workers"]) == ["guardian-rules-0", "guardian-rules-1"]
    assert sorted(rules["workers"].values()) == [1, 2]  # the replicas took turns
    assert judge["busy_s"] > 0 and rules["busy_s"] > 0 and judge["busy_s"] > rules["busy_s"]  # a model, a regex
    assert judge["gpu_seconds"] == 0.0 and summary["guardian_gpu_seconds"] == 0.0  # all on the CPU
    assert judge["held_gpu_seconds"] == 0.0 and summary["guardian_cost_usd"] == 0.0  # CPU workers hold no GPU
    assert summary["total_cost_usd"] == summary["cost_usd"]
    assert summary["guardian_busy_s"] == pytest.approx(judge["busy_s"] + rules["busy_s"], abs=1e-5)
    stored = run_summary(cfg.storage.url, driver.run_id)  # the run's row keeps them
    assert stored["guardians"]["judge"]["busy_s"] == judge["busy_s"] and "guardian_gpu_seconds" in stored


@pytest.mark.parametrize("kind", POOLS)
def test_shared_guardians_load_into_the_generation_workers(tmp_path, judge_dir, kind):
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "placement": "shared"},
                            {"name": "judge", "kind": "causal-lm", "model": judge_dir, "threshold": 1.0,
                             "placement": "shared"}], replicas=2)

    async def concurrently(driver):  # several at once: the checks spread over both workers
        deadline = time.monotonic() + 180  # the start waited for one ready worker: wait for both
        while sum(w.state.value == "ready" for w in driver.core.workers.values()) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        hs = [await driver.submit(f"prompt number {i}", max_tokens=3, ignore_eos=True) for i in range(6)]
        return [await h.result() for h in hs]

    driver, workers, results, summary, more = drive(cfg, make_pool(kind, cpu_threads=1), ["hi"],
                                                    during=concurrently)
    assert set(workers) == {"tiny-0", "tiny-1"}  # no guardian worker of its own
    assert all(r.ok and r.guardian_verdict == "pass" for r in results + more)
    for name in ("rules", "judge"):
        g = summary["guardians"][name]
        assert g["placement"] == "shared" and sorted(g["workers"]) == ["tiny-0", "tiny-1"]
        assert g["checks"] == sum(g["workers"].values()) == 7 and g["errors"] == 0 and g["busy_s"] > 0
        assert min(g["workers"].values()) >= 1  # both generation workers checked
    assert {v for *_, v in verdicts(cfg.storage.url, driver.run_id)} == {"pass"}


def test_a_blocked_reply_and_the_guardian_workers_in_the_daemon_process_pool(tmp_path, judge_dir):
    """The issue's live check, through the daemon on the process pool: a tiny guardian model and
    a rule guardian check every response in worker processes; every verdict is recorded, none
    "unavailable"; a blocked reply has ``finish_reason: "content_filter"``."""
    import openai
    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config

    db = tmp_path / "daemon.db"
    path = tmp_path / "daemon.yaml"
    path.write_text(
        f"storage: {{url: 'sqlite:///{db}'}}\n"
        "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: sync, guardians: [rules, judge]}\n"
        "guardians:\n  models:\n    - {name: rules, kind: rules, blocklist: [never said]}\n"
        f"    - {{name: judge, kind: causal-lm, model: '{judge_dir}', threshold: 0.0}}\n")
    cfg, _ = daemon_config(path, workers=1)
    daemon = Daemon(cfg, DaemonOptions(pool="process", admin_token=None, cpu_threads=1))
    with TestClient(daemon.app) as http:
        deadline = time.monotonic() + 180
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pool = daemon.driver.pool
        assert pool.kind == "process" and {"guardian-rules-0", "guardian-judge-0"} <= set(pool.worker_ids())
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        r = client.completions.create(model="tiny-llama", prompt="hello", max_tokens=3,
                                      extra_body={"ignore_eos": True})
        c = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=3, extra_body={"ignore_eos": True})
        stream = list(client.completions.create(model="tiny-llama", prompt="a streamed one", max_tokens=3,
                                                stream=True, extra_body={"ignore_eos": True}))
        run_id = daemon.driver.run_id
    assert r.choices[0].finish_reason == "content_filter" and r.choices[0].text == ""
    assert c.choices[0].finish_reason == "content_filter" and c.choices[0].message.content == ""
    assert stream[-1].choices[0].finish_reason == "content_filter"
    ext = r.model_extra["controlplane"]["requests"][0]
    assert ext["guardian_verdict"] == "block" and ext["reason"].startswith("blocked by judge: P(unsafe) = ")
    got = verdicts(f"sqlite:///{db}", run_id)
    assert len(got) == 6 and {(g, v) for _, g, v in got} == {("rules", "pass"), ("judge", "block")}
    assert {q["status"] for q in rows(f"sqlite:///{db}", run_id, "requests")} == {"blocked"}
    summary = daemon.driver.summary
    assert summary["guardians"]["judge"]["checks"] == 3 and summary["guardians"]["judge"]["busy_s"] > 0


def test_a_judges_reason_names_no_guardian_so_a_block_names_it_once_by_its_declared_name(judge_dir):
    # JudgeGuardian's reason began "judge:": a causal-lm guardian named blockall was "blocked by
    # blockall: judge: P(unsafe) = ...", one named judge "blocked by judge: judge: ..."
    from controlplane.guardian_checks import combine
    from controlplane.guardian_config import GuardiansConfig
    from controlplane.live.guardian_models import load_guardian

    config = GuardiansConfig(models=[{"name": "blockall", "kind": "causal-lm", "model": judge_dir, "threshold": 0.0}])
    verdict, score, reason = load_guardian(config.models[0]).check("hello")
    assert verdict == "block" and reason == f"P(unsafe) = {score:.3f}"
    out = combine(config, None, {"blockall": (verdict, score, reason)})
    assert f"blocked by {out.guardian}: {out.reason}" == f"blocked by blockall: P(unsafe) = {score:.3f}"


def test_a_guardian_worker_that_dies_fails_its_checks_as_configured_and_comes_back(tmp_path, judge_dir):
    cfg = config(tmp_path, [{"name": "judge", "kind": "causal-lm", "model": judge_dir, "threshold": 1.0,
                             "on_error": "closed", "timeout_s": 30}])

    async def kill_and_recover(driver):
        driver.pool.kill("guardian-judge-0")
        lost = await driver.generate("checked while its guardian is down", max_tokens=3, ignore_eos=True)
        judge = driver.guardians.guardians["judge"]
        deadline = time.monotonic() + 120
        while "guardian-judge-0-r1" not in judge.hosts:  # started again (the dead one may still be listed
            # for a moment, until the pool's report of its death reaches the loop)
            assert time.monotonic() < deadline, judge.trouble
            await asyncio.sleep(0.1)
        back = await driver.generate("checked after it came back", max_tokens=3, ignore_eos=True)
        return lost, back, sorted(judge.hosts), driver.core.workers["tiny-0"].state.value

    driver, _, (before,), summary, (lost, back, hosts, gen_state) = drive(
        cfg, make_pool("process", cpu_threads=1), ["checked before"], during=kill_and_recover)
    assert before.status == "completed" and before.guardian_verdict == "pass"
    # on_error: closed: the check that could not run blocks the answer, with the reason
    assert lost.status == "blocked" and lost.finish_reason == "content_filter" and lost.guardian_verdict == "block"
    assert "guardian-judge-0" in lost.reason
    assert back.status == "completed" and back.guardian_verdict == "pass", back.reason
    assert hosts == ["guardian-judge-0-r1"] and gen_state == "ready"  # the generation worker was untouched
    judge = summary["guardians"]["judge"]
    assert judge["worker_failures"] == 1 and judge["restarts"] == 1 and judge["errors"] == 1
    # the check after the kill reached the dead worker, or found it already reported: both answer error
    assert judge["workers"]["guardian-judge-0-r1"] == 1 and judge["workers"]["guardian-judge-0"] in (1, 2)
    got = verdicts(cfg.storage.url, driver.run_id)
    assert [v for _, _, v in got] == ["pass", "error", "pass"]
    workers = [(d["action"], d["subject"]) for d in rows(cfg.storage.url, driver.run_id, "decisions")
               if d["plugin"] == "guardian-pool"]
    assert workers == [("guardian_worker_failed", "guardian-judge-0"),
                       ("guardian_worker_restarted", "guardian-judge-0-r1")]


def test_a_guardian_that_raises_answers_error_and_its_worker_goes_on(tmp_path, monkeypatch):
    from controlplane.live.guardian_models import RuleGuardian

    def broken(self, text):
        raise RuntimeError("the model broke on this text")

    monkeypatch.setattr(RuleGuardian, "score", broken)  # every check raises inside the (thread) worker
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules"}])
    _, _, results, summary, _ = drive(cfg, LocalThreadPool(cpu_threads=1), ["one", "two"])
    assert all(r.status == "completed" and r.guardian_verdict == "error" for r in results)  # on_error: open
    rules = summary["guardians"]["rules"]
    assert rules["errors"] == 2 and rules["worker_failures"] == 0 and rules["workers"] == {"guardian-rules-0": 2}


def test_a_classifier_whose_block_label_is_not_a_label_stops_the_start_naming_its_key(tmp_path, judge_dir):
    # It started, then every check raised "the model has 2 labels": with on_error closed, every request blocked.
    bad = {"name": "broken", "kind": "classifier", "model": str(Path(judge_dir).parent / "classifier"),
           "block_label": 7, "on_error": "closed"}
    cfg = config(tmp_path, [bad])

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1), record=False)
        with pytest.raises(ValueError, match=r"^guardians.models\[broken\].block_label: 7 is not a label of "
                                             r"'.*classifier', which has 2 \(0 to 1\)"):
            await driver.start()
        assert driver.pool.worker_ids() == []

    asyncio.run(main())


def test_guardian_workers_take_no_generation_slot(tmp_path):
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "replicas": 2}])
    _, workers, (r,), _, _ = drive(cfg, LocalThreadPool(cpu_threads=1, max_workers=1), ["hello"])
    assert set(workers) == {"tiny-0", "guardian-rules-0", "guardian-rules-1"} and r.guardian_verdict == "pass"


def test_a_guardian_that_cannot_load_stops_the_start_naming_its_key(tmp_path, caplog):
    cfg = config(tmp_path, [{"name": "judge", "kind": "causal-lm", "model": str(tmp_path / "missing")}])

    async def main():
        driver = LiveDriver(cfg, pool=make_pool("process", cpu_threads=1), record=False)
        with pytest.raises(ValueError, match=r"guardians.models\[judge\].model: cannot load"):
            await driver.start()
        assert driver.pool.worker_ids() == []

    with caplog.at_level(logging.INFO, logger="controlplane"):
        asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and not any("Traceback" in m for m in errors)  # one line each; the traceback at debug only


def test_async_verdicts_after_the_reply_reach_the_request_row(tmp_path, judge_dir):
    cfg = config(tmp_path, [{"name": "judge", "kind": "causal-lm", "model": judge_dir, "threshold": 1.0}],
                 mode="async")

    async def wait_checked(driver):
        judge = driver.guardians.guardians["judge"]
        while judge.stats.checks < 2 or any(h.inflight for h in judge.hosts.values()):
            await asyncio.sleep(0.05)

    driver, _, results, _, _ = drive(cfg, LocalThreadPool(cpu_threads=1), ["first", "second"], during=wait_checked)
    assert [r.guardian_verdict for r in results] == ["pending", "pending"]  # the replies left first
    requests = rows(cfg.storage.url, driver.run_id, "requests")
    assert [q["guardian_verdict"] for q in requests] == ["pass", "pass"]  # then the verdicts came
    assert all(q["status"] == "completed" for q in requests)


def _daemon(tmp_path: Path, yaml_text: str, admin_token: str | None = None):
    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config

    path = tmp_path / "daemon.yaml"
    path.write_text(f"storage: {{url: 'sqlite:///{tmp_path / 'daemon.db'}'}}\n" + yaml_text)
    cfg, _ = daemon_config(path, workers=1)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", admin_token=admin_token, cpu_threads=1))
    http = TestClient(daemon.app)
    http.__enter__()
    deadline = time.monotonic() + 120
    while http.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return daemon, http


def test_a_block_after_the_reply_is_retracted_on_the_row_and_the_api(tmp_path, judge_dir):
    daemon, http = _daemon(tmp_path, (
        "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: async, guardian: judge}\n"
        "guardians:\n  models:\n"
        f"    - {{name: judge, kind: causal-lm, model: '{judge_dir}', threshold: 0.0}}\n"))
    try:
        reply = http.post("/v1/completions", json={"model": "tiny-llama", "prompt": "hello", "max_tokens": 3,
                                                   "ignore_eos": True}).json()
        assert reply["choices"][0]["finish_reason"] == "length"  # the answer went out
        (ext,) = reply["controlplane"]["requests"]
        assert ext["guardian_verdict"] == "pending"
        rid = ext["request_id"]
        deadline = time.monotonic() + 60
        while (state := http.get(f"/v1/requests/{rid}").json())["guardian_verdict"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state["status"] == "completed" and state["retracted"] is True
        g = state["guardian"]
        assert g["verdict"] == "block" and g["guardian"] == "judge" and g["after_reply"] is True
        assert g["stage"] == "output" and "P(unsafe)" in g["reason"] and 0.0 < g["score"] < 1.0
        missing = http.get("/v1/requests/req-999999")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        run_id = daemon.driver.run_id
    finally:
        http.__exit__(None, None, None)
    (row,) = rows(f"sqlite:///{tmp_path / 'daemon.db'}", run_id, "requests")
    assert row["status"] == "completed" and row["guardian_verdict"] == "block"
    assert row["reason"].startswith("retracted: blocked after the reply by judge: P(unsafe)")


def hold(pool: LocalThreadPool, wid: str) -> threading.Event:
    """Keep a thread-pool worker busy (as a slow model would) until the event is set: the checks
    sent to it meanwhile wait in its queue."""
    release = threading.Event()
    pool._workers[wid].executor.submit(release.wait, 120)
    return release


def release_once_generating(driver: LiveDriver, release: threading.Event, tokens: int = 3) -> None:
    """Set ``release`` once a request of ``driver`` has generated ``tokens`` tokens (a watcher thread)."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while not release.is_set() and time.monotonic() < deadline:
            try:
                if any(len(lr.generated) >= tokens for lr in list(driver._live.values())):
                    release.set()
            except RuntimeError:  # the dict changed while copied: look again
                pass
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()


def test_an_async_block_ends_an_open_stream_and_stops_the_generation(tmp_path):
    daemon, http = _daemon(tmp_path, (
        "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: async, stages: [input], guardian: rules}\n"
        "guardians:\n  models:\n    - {name: rules, kind: rules, blocklist: [forbidden]}\n"))
    release = hold(daemon.driver.pool, "guardian-rules-0")  # the verdict comes once the generation has begun
    release_once_generating(daemon.driver, release)
    try:
        body = {"model": "tiny-llama", "prompt": "a forbidden prompt", "max_tokens": 200, "ignore_eos": True,
                "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
        rid = resp.headers["x-request-id"]
        deadline = time.monotonic() + 60
        while (state := http.get(f"/v1/requests/{rid}").json())["status"] in ("waiting", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        run_id = daemon.driver.run_id
    finally:
        release.set()
        http.__exit__(None, None, None)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert state["status"] == "blocked" and state["guardian_verdict"] == "block"
    assert state["finish_reason"] == "content_filter" and state["reason_code"] == "blocked"
    (row,) = rows(f"sqlite:///{tmp_path / 'daemon.db'}", run_id, "requests")
    assert row["status"] == "blocked" and row["reason"] == "blocked by rules: blocklisted phrase 'forbidden'"
    # the reply carries the row's code (it said null: the driver dropped it to answer content_filter)
    (ext,) = chunks[-1]["controlplane"]["requests"]
    assert ext["reason_code"] == row["reason_code"] == "blocked"
    assert 3 <= row["output_tokens"] < 100  # its generation stopped when the block came, far from 200
    # Text the stream had sent before the block stays sent (how much depends on when the stream
    # pump ran); never more than the request generated.
    streamed = "".join(c["choices"][0]["text"] or "" for c in chunks)
    assert len(chunks) - 1 <= row["output_tokens"] and (len(chunks) == 1 or streamed)


def test_an_async_block_of_a_waiting_prompt_takes_it_off_its_worker_unstarted(tmp_path):
    cfg = make_config(
        storage={"url": f"sqlite:///{tmp_path / 'live.db'}"},
        cluster={"models": [{"name": "tiny", "replicas": 1, "max_num_seqs": 1,
                             "worker": {"preset": "tiny-llama", "max_seq_len": 256}}]},
        plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "async", "stages": ["input"],
                                                   "guardian": "rules"}}},
        guardians={"models": [{"name": "rules", "kind": "rules", "blocklist": ["forbidden"]}]},
    )

    async def main():
        async with LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1)) as driver:
            await driver.wait_ready(120)
            first = await driver.submit("a long answer", max_tokens=150, ignore_eos=True)
            blocked = await driver.generate("a forbidden prompt", max_tokens=150, ignore_eos=True)  # waits behind it
            running = not first.done
            return driver, await first.result(), blocked, running

    driver, first, blocked, running = asyncio.run(main())
    assert running  # it was blocked while it waited for the one worker slot
    assert first.status == "completed" and first.completion_tokens == 150
    assert blocked.status == "blocked" and blocked.http_status == 400 and blocked.completion_tokens == 0
    assert blocked.reason == "blocked by rules: blocklisted phrase 'forbidden'"
    row = {q["request_id"]: q for q in rows(cfg.storage.url, driver.run_id, "requests")}[blocked.request_id]
    assert row["status"] == "blocked" and row["reason_code"] == "blocked" and row["output_tokens"] == 0
    assert row["scheduled_s"] is None  # never started on the worker


def test_a_clean_close_waits_for_async_checks_in_flight(tmp_path):
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["never said"]}], mode="async")

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        release = hold(driver.pool, "guardian-rules-0")
        try:
            reply = await driver.generate("hello", max_tokens=2, ignore_eos=True)
            closing = asyncio.create_task(driver.close())  # as the daemon's shutdown does
            await asyncio.sleep(1.0)
            waited = not closing.done()
        finally:
            release.set()  # the check runs now, during the close
        return driver, reply, waited, await closing

    driver, reply, waited, summary = asyncio.run(main())
    assert reply.status == "completed" and reply.guardian_verdict == "pending"  # the reply left first
    assert waited and summary["guardians"]["rules"]["checks"] == 1
    (row,) = rows(cfg.storage.url, driver.run_id, "requests")
    assert row["status"] == "completed" and row["guardian_verdict"] == "pass"  # not left "pending"
    assert [(g, v) for _, g, v in verdicts(cfg.storage.url, driver.run_id)] == [("rules", "pass")]


def test_a_drain_waits_for_an_async_check_until_its_timeout(tmp_path):
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["forbidden"], "timeout_s": 1.0,
                             "on_error": "closed"}], mode="async")

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        release = hold(driver.pool, "guardian-rules-0")  # its answer check never gets a verdict in time
        try:
            reply = await driver.generate("hello", max_tokens=2, ignore_eos=True)
            t0 = time.monotonic()
            drained = await driver.drain(timeout_s=30)
            waited_s = time.monotonic() - t0
        finally:
            release.set()
            summary = await driver.close()
        return driver, reply, drained, waited_s, summary

    driver, reply, drained, waited_s, summary = asyncio.run(main())
    assert reply.status == "completed" and reply.guardian_verdict == "pending"
    assert drained and 0.5 < waited_s < 10  # up to the check's 1 s timeout, not the drain's 30 s
    assert summary["guardians"]["rules"]["timeouts"] == 1
    (row,) = rows(cfg.storage.url, driver.run_id, "requests")
    # on_error: closed: the timeout blocks the answer, after its reply
    assert row["status"] == "completed" and row["guardian_verdict"] == "block"
    assert row["reason"] == ("retracted: blocked after the reply by rules: timeout, no verdict within 1 s "
                             "(on_error: closed)")


def test_guardians_on_ray_workers(tmp_path, judge_dir):
    pytest.importorskip("ray")
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["never said"]},
                            {"name": "judge", "kind": "causal-lm", "model": judge_dir, "threshold": 1.0,
                             "placement": "shared"}])
    pool = make_pool("ray", cpu_threads=1, init_kwargs={"num_cpus": 4})
    _, workers, results, summary, _ = drive(cfg, pool, ["hello", "there"])
    assert set(workers) == {"tiny-0", "guardian-rules-0"} and all(w.get("ray") for w in workers.values())
    assert all(r.guardian_verdict == "pass" for r in results)
    assert summary["guardians"]["judge"]["workers"] == {"tiny-0": 2} and summary["guardians"]["rules"]["checks"] == 2


def test_a_shared_guardian_that_does_not_load_is_recorded_and_fails_its_checks_as_configured(tmp_path):
    bad = {"name": "judge", "kind": "causal-lm", "model": str(tmp_path / "missing"), "placement": "shared",
           "on_error": "closed"}
    cfg = config(tmp_path, [bad])
    driver, _, (r,), summary, _ = drive(cfg, LocalThreadPool(cpu_threads=1), ["hello"])
    assert r.status == "blocked" and r.finish_reason == "content_filter"  # on_error: closed
    assert "no worker hosts guardian judge" in r.reason and "guardians.models[judge].model: cannot load" in r.reason
    (row,) = [d for d in rows(cfg.storage.url, driver.run_id, "decisions") if d["plugin"] == "guardian-pool"]
    assert row["action"] == "guardian_load_failed" and row["subject"] == "tiny-0"
    assert summary["guardians"]["judge"]["workers"] == {} and summary["guardians"]["judge"]["errors"] == 1


def test_a_tenant_sees_only_its_own_requests(tmp_path):
    from controlplane.live.api_keys import hash_key

    daemon, http = _daemon(tmp_path, (
        f"auth:\n  api_keys:\n    - {{sha256: '{hash_key('key-a')}', tenant: team-a}}\n"
        f"    - {{sha256: '{hash_key('key-b')}', tenant: team-b}}\n"
        "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: async, guardian: rules}\n"
        "guardians:\n  models:\n    - {name: rules, kind: rules, blocklist: [never said]}\n"))
    try:
        a, b = ({"authorization": f"Bearer key-{t}"} for t in "ab")
        reply = http.post("/v1/completions", headers=a, json={"model": "tiny-llama", "prompt": "hello",
                                                               "max_tokens": 2, "ignore_eos": True}).json()
        rid = reply["controlplane"]["requests"][0]["request_id"]
        deadline = time.monotonic() + 60
        while (state := http.get(f"/v1/requests/{rid}", headers=a).json())["guardian_verdict"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state["status"] == "completed" and state["guardian"]["verdict"] == "pass"
        assert state["retracted"] is False
        assert http.get(f"/v1/requests/{rid}", headers=b).status_code == 404  # another tenant's
        assert http.get(f"/v1/requests/{rid}").status_code == 401
    finally:
        http.__exit__(None, None, None)


def test_admin_workers_lists_the_guardian_workers(tmp_path, judge_dir):
    daemon, http = _daemon(tmp_path, (
        "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: sync, guardians: [judge, rules]}\n"
        "guardians:\n  models:\n"
        f"    - {{name: judge, kind: causal-lm, model: '{judge_dir}', threshold: 1.0, replicas: 2}}\n"
        "    - {name: rules, kind: rules, blocklist: [never said], placement: shared}\n"), admin_token="secret")
    try:
        for prompt in ("one", "two", "three"):
            reply = http.post("/v1/completions", json={"model": "tiny-llama", "prompt": prompt, "max_tokens": 2,
                                                       "ignore_eos": True})
            assert reply.status_code == 200
        listing = http.get("/admin/workers", headers={"authorization": "Bearer secret"}).json()
    finally:
        http.__exit__(None, None, None)
    workers = {w["worker_id"]: w for w in listing["workers"]}
    assert set(workers) == {"tiny-llama-0", "guardian-judge-0", "guardian-judge-1"}
    gen = workers["tiny-llama-0"]
    assert gen["role"] == "generation" and gen["state"] == "ready" and gen["num_completed"] == 3
    (shared,) = gen["guardians"]  # the shared guardian it hosts, with its checks
    assert shared["guardian"] == "rules" and shared["checks"] == 3 and shared["busy_s"] >= 0
    judges = [workers[f"guardian-judge-{i}"] for i in range(2)]
    for w in judges:
        assert w["role"] == "guardian" and w["guardian"] == "judge" and w["kind"] == "causal-lm"
        assert w["state"] == "ready" and w["alive"] and w["inflight"] == 0 and w["pid"] == os.getpid()
        assert w["facts"]["device"] == "cpu" and w["busy_s"] > 0
    assert sorted(w["checks"] for w in judges) == [1, 2]  # the replicas took turns


def test_a_guardian_worker_on_a_gpu_is_priced_for_the_time_it_was_held(tmp_path):
    # No CUDA device here: the pool is real, the clock and the facts a GPU worker reports are given.
    from controlplane.config import load_config
    from controlplane.live.guardian_pool import LiveGuardians

    cfg = load_config(None, {"guardians": {"models": [{"name": "judge", "kind": "rules", "gpu": "h100-80gb"}]}})
    now = [10.0]
    guardians = LiveGuardians(cfg.guardians, make_pool("thread", cpu_threads=1), live={}, feed=lambda e: None,
                              now_s=lambda: now[0])
    g = guardians.guardians["judge"]
    g.add("guardian-judge-0", {"device": "cuda:0"})
    g.clocks["guardian-judge-0"] = 10.0  # as `_start_own` sets it for a worker that reports a CUDA device
    now[0] = 3610.0
    guardians._stop_clock(g, "guardian-judge-0")
    summary = {"cost_usd": 1.0}
    guardians.add_to(summary, cfg.cluster)
    assert summary["guardians"]["judge"]["held_gpu_seconds"] == 3600.0
    assert summary["guardian_gpu_hours"] == 1.0 and summary["guardian_cost_usd"] == 4.0
    assert summary["total_cost_usd"] == 5.0


def test_guardian_workers_of_their_own_leave_the_run_clock_running(tmp_path):
    # Their workers start before the run clock: a read of it then must not pin the clock at the
    # host's uptime (every row's arrival, first token and finish the same instant).
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules"}])
    driver = LiveDriver(cfg, pool="thread")
    assert driver.now_s() == 0.0  # not started: the run has not begun
    driver, _, results, _, _ = drive(cfg, LocalThreadPool(cpu_threads=1), ["hello", "again"])
    assert [r.guardian_verdict for r in results] == ["pass", "pass"]
    first, second = rows(cfg.storage.url, driver.run_id, "requests")
    for q in (first, second):
        assert q["arrival_s"] < q["first_token_s"] < q["finish_s"]
    assert first["finish_s"] <= second["arrival_s"] < time.monotonic() - driver._t0 + 1e-6


class _SeenPool(LocalThreadPool):
    """The thread pool, noting the busy seconds of every verdict its workers return."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.busy: list[float] = []

    async def command(self, worker_id: str, cmd: Any) -> Any:
        out = await super().command(worker_id, cmd)
        if type(out).__name__ == "GuardianVerdict":
            self.busy.append(out.busy_s)
        return out


def test_a_timed_out_check_counts_its_workers_time_when_it_ends(tmp_path, judge_dir):
    # busy_s counted nothing for a check that timed out, though its worker still ran it to the end
    # (`fast_to` with timeout_s 0.05: 8 checks, 8 timeouts, busy_s 0.0); the simulator counts that work
    cfg = config(tmp_path, [{"name": "judge", "kind": "causal-lm", "model": judge_dir, "timeout_s": 1e-6}])
    pool = _SeenPool(cpu_threads=1)

    async def during(driver):
        g = driver.guardians.guardians["judge"]
        g.spec = g.spec.model_copy(update={"timeout_s": 120.0})
        # the worker runs one command at a time, in order: this check ends after the timed-out one did
        return await driver.guardians.check("judge", "a later check"), dict(vars(g.stats))

    _, _, (r,), summary, (later, stats) = drive(cfg, pool, ["hello"], during=during)
    assert r.guardian_verdict == "timeout" and later[0] in ("pass", "block")
    assert stats["checks"] == 2 and stats["timeouts"] == 1 and len(pool.busy) == 2 and min(pool.busy) > 0
    assert stats["busy_s"] == pytest.approx(sum(pool.busy))  # the timed-out check's time too
    assert summary["guardians"]["judge"]["busy_s"] == pytest.approx(sum(pool.busy), abs=1e-6)


def test_the_live_summary_counts_checks_by_stage_and_answers_retracted_after_the_reply(tmp_path):
    rules = {"name": "rules", "kind": "rules", "patterns": ["."]}  # blocks every text
    cfg = config(tmp_path, [rules], mode="async", stages=["output"])
    _, _, results, summary, _ = drive(cfg, LocalThreadPool(cpu_threads=1), ["one", "two"])
    assert all(r.status == "completed" for r in results)  # served, then retracted
    g = summary["guardians"]["rules"]
    assert (g["checks"], g["checks_input"], g["checks_output"]) == (2, 0, 2)
    assert summary["guardian_blocks_after_reply"] == 2
    assert summary["guardian_sampling"]["sampled-guardian"]["answers_checked_share"] == 1.0
    assert g["answers_checked_share"] == 1.0
