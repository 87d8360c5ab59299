"""Live guardians: a rule guardian and tiny random-weight guardian models (a causal-LM judge and a
sequence classifier, built from transformers configs and saved to a temp dir) check every response
on their own threads; verdicts are recorded, blocked replies end with ``content_filter`` and
blocked prompts are refused with a 400 in the OpenAI error shape."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from controlplane.guardian_config import GuardianSpec
from controlplane.live.driver import LiveDriver
from controlplane.live.guardian_models import ClassifierGuardian, JudgeGuardian, RuleGuardian, load_guardian
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.testing import make_config, stored_rows as run_rows
from controlplane.types import ReasonCode

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tiny(**extra):
    return transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                    pad_token_id=0, **extra)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("guardians")
    torch.manual_seed(0)
    judge = transformers.LlamaForCausalLM(_tiny())
    judge.save_pretrained(root / "judge")
    clf = transformers.LlamaForSequenceClassification(_tiny(num_labels=2))
    clf.save_pretrained(root / "classifier")
    return {"judge": str(root / "judge"), "classifier": str(root / "classifier")}


def specs(dirs, *, rule: dict[str, Any] | None = None, judge_threshold=1.0, clf_threshold=1.0):
    return [
        {"name": "rules", "kind": "rules", **(rule or {"blocklist": ["never matches this phrase"]})},
        {"name": "judge", "kind": "causal-lm", "model": dirs["judge"], "threshold": judge_threshold},
        {"name": "classifier", "kind": "classifier", "model": dirs["classifier"], "threshold": clf_threshold,
         "replicas": 2},
    ]


# --- the guardian models alone ---------------------------------------------------------------------


def test_rules_block_on_phrases_and_patterns():
    g = RuleGuardian(GuardianSpec(name="r", kind="rules", patterns=[r"\bbomb\b"], blocklist=["Credit Card"]))
    assert g.check("how to build a bomb")[:2] == ("block", 1.0)
    assert g.check("my credit card number")[0] == "block" and "credit card" in g.check("my credit card")[2]
    assert g.check("a bombastic poem") == ("pass", 0.0, "no rule matched")
    # a pattern that does not compile is refused by the config (tests/controlplane/test_guardian_config.py);
    # a spec built without validation still meets the guardian's own check
    with pytest.raises(ValueError, match=r"guardians.models\[r\].patterns: '\(' is not a valid pattern"):
        RuleGuardian(GuardianSpec.model_construct(name="r", kind="rules", patterns=["("], blocklist=[]))


def test_a_model_path_that_is_not_a_directory_says_so(tmp_path):
    # it read "cannot load '/models/llama-guard-3-1b': Repo id must be in the form 'repo_name' or
    # 'namespace/repo_name'": transformers took the missing directory for a Hub repo id
    missing = str(tmp_path / "llama-guard-3-1b")
    for cls, kind in ((JudgeGuardian, "causal-lm"), (ClassifierGuardian, "classifier")):
        with pytest.raises(ValueError, match=r"guardians.models\[j\].model: cannot load '.*llama-guard-3-1b': no such directory on this machine"):
            cls(GuardianSpec(name="j", kind=kind, model=missing))


def test_model_guardians_score_every_text(model_dirs):
    judge = JudgeGuardian(GuardianSpec(name="j", kind="causal-lm", model=model_dirs["judge"]))
    clf = ClassifierGuardian(GuardianSpec(name="c", kind="classifier", model=model_dirs["classifier"]))
    for g in (judge, clf):
        a = g.check("some text to check")
        b = g.check("some text to check")
        assert a == b and a[0] in ("pass", "block") and 0.0 < a[1] < 1.0  # a real score, deterministic
        assert g.check("another, rather different text")[1] != a[1]
    blocking = JudgeGuardian(GuardianSpec(name="j", kind="causal-lm", model=model_dirs["judge"], threshold=0.0))
    assert blocking.check("anything")[0] == "block"


def test_a_checkpoint_without_the_kinds_head_is_refused_at_load(model_dirs):
    # a causal LM given to a classifier loaded with `score.weight | MISSING` (initialised at random):
    # random verdicts from a guardian that looked healthy
    with pytest.raises(ValueError, match=r"guardians.models\[c\].model: '.*judge' does not load as a classifier "
                                         r"\(AutoModelForSequenceClassification\): weights missing from the "
                                         r"checkpoint would be initialised at random \(score.weight\)"):
        ClassifierGuardian(GuardianSpec(name="c", kind="classifier", model=model_dirs["judge"]))
    with pytest.raises(ValueError, match=r"does not load as a causal-lm \(AutoModelForCausalLM\): .*lm_head.weight"):
        JudgeGuardian(GuardianSpec(name="j", kind="causal-lm", model=model_dirs["classifier"]))


def test_a_block_label_the_classifier_lacks_is_refused_at_load(model_dirs):
    # it loaded, and every check then raised (the model has 2 labels): each answered "error"
    with pytest.raises(ValueError, match=r"guardians.models\[c\].block_label: 7 is not a label of '.*classifier', "
                                         r"which has 2 \(0 to 1\)"):
        ClassifierGuardian(GuardianSpec(name="c", kind="classifier", model=model_dirs["classifier"], block_label=7))
    ok = ClassifierGuardian(GuardianSpec(name="c", kind="classifier", model=model_dirs["classifier"], block_label=0))
    assert ok.check("text")[2].startswith("P(label 0) = ")


def test_bad_guardian_declarations_name_the_guardian(tmp_path):
    with pytest.raises(ValueError, match=r"guardians.models\[j\].model: cannot load"):
        load_guardian(GuardianSpec(name="j", kind="causal-lm", model=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match=r"guardians.models\[s\]: kind 'simulated' runs only in the simulator"):
        load_guardian(GuardianSpec(name="s", kind="simulated"))


# --- through the live driver ----------------------------------------------------------------------------


def config(tmp_path: Path, guardians, **settings):
    return make_config(
        storage={"url": f"sqlite:///{tmp_path / 'live.db'}"},
        cluster={"models": [{"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama"}}]},
        plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync",
                                                   "guardians": [g["name"] for g in guardians], **settings}}},
        guardians={"models": guardians},
    )


def run(cfg, prompts, max_tokens=4):
    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            results = [await driver.generate(p, max_tokens=max_tokens, ignore_eos=True) for p in prompts]
            text = driver.metrics.render().decode()
        finally:
            await driver.close()
        return results, driver, text

    return asyncio.run(main())


def test_every_response_is_checked_by_rules_and_tiny_models(tmp_path, model_dirs):
    cfg = config(tmp_path, specs(model_dirs))
    results, driver, metrics = run(cfg, ["hello there", "what is a cache"])
    assert all(r.ok and r.status == "completed" and r.guardian_verdict == "pass" for r in results)
    rows = run_rows(cfg.storage.url, driver.run_id, "decisions")
    verdicts = [(d["subject"], d["payload"]["guardian"], d["payload"]["verdict"]) for d in rows
                if d["action"] == "guardian_verdict"]
    assert sorted(g for _, g, _ in verdicts) == ["classifier", "classifier", "judge", "judge", "rules", "rules"]
    assert {v for *_, v in verdicts} == {"pass"}  # a real verdict from each, never "unavailable"
    scores = [d["payload"]["score"] for d in rows if d["action"] == "guardian_verdict"
              and d["payload"]["guardian"] != "rules"]
    assert all(0.0 < s < 1.0 for s in scores)
    requests = run_rows(cfg.storage.url, driver.run_id, "requests")
    assert {r["guardian_verdict"] for r in requests} == {"pass"}
    assert 'controlplane_guardian_verdicts_total{guardian="judge",stage="output",verdict="pass"} 2.0' in metrics


def test_a_blocked_reply_ends_with_content_filter(tmp_path, model_dirs):
    cfg = config(tmp_path, specs(model_dirs, rule={"patterns": ["."]}))  # the rule blocks any answer
    (result,), driver, metrics = run(cfg, ["hello there"])
    assert result.status == "blocked" and result.ok and result.http_status == 200
    assert result.finish_reason == "content_filter" and result.text == "" and result.reason_code is None
    assert result.guardian_verdict == "block" and result.reason.startswith("blocked by rules")
    (row,) = run_rows(cfg.storage.url, driver.run_id, "requests")
    assert row["status"] == "blocked" and row["guardian_verdict"] == "block"
    assert 'controlplane_guardian_verdicts_total{guardian="rules",stage="output",verdict="block"} 1.0' in metrics


def test_a_blocked_prompt_never_reaches_a_worker(tmp_path, model_dirs):
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["forbidden"]}], stages=["input"])
    (bad, good), driver, _ = run(cfg, ["a Forbidden request", "a fine request"])
    assert bad.status == "blocked" and not bad.ok and bad.http_status == 400
    assert bad.reason_code is ReasonCode.BLOCKED and bad.worker_id is None and bad.completion_tokens == 0
    assert good.ok and good.status == "completed"


def test_an_async_prompt_block_answers_as_its_stored_row_says(tmp_path, model_dirs):
    """The row and the reply agree: a request that generated tokens before the block (the batch
    running when it came counts) is a 200 ``content_filter`` with those tokens; one that generated
    none a 400 ``blocked``. The reply said 400 and no tokens while the row kept the batch's token."""
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["forbidden"]}], stages=["input"],
                 mode="async")
    results, driver, _ = run(cfg, [f"forbidden {i}" for i in range(4)], max_tokens=50)
    stored = {r["request_id"]: r for r in run_rows(cfg.storage.url, driver.run_id, "requests")}
    for result in results:
        row = stored[result.request_id]
        assert (row["status"], row["output_tokens"], row["first_token_s"]) == (
            result.status, result.completion_tokens, result.first_token_s), (row, result)
        assert result.http_status == (200 if row["output_tokens"] else 400), (row, result)
        assert result.text == "" and row["output_tokens"] < 50


def test_a_guardian_that_times_out_fails_as_configured(tmp_path, model_dirs):
    slow = {"name": "judge", "kind": "causal-lm", "model": model_dirs["judge"], "timeout_s": 0.000001,
            "on_error": "closed"}
    cfg = config(tmp_path, [slow])
    (result,), _, _ = run(cfg, ["hello"])
    assert result.status == "blocked" and result.finish_reason == "content_filter"
    assert "no verdict within" in result.reason


def _daemon(tmp_path, yaml_text):
    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config

    path = tmp_path / "daemon.yaml"
    path.write_text(yaml_text)
    cfg, _ = daemon_config(path, workers=1)
    d = Daemon(cfg, DaemonOptions(pool="thread", admin_token=None, cpu_threads=1), record=False)
    http = TestClient(d.app)
    http.__enter__()
    deadline = time.monotonic() + 120
    while http.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return http, openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def test_the_daemon_answers_a_blocked_reply_with_content_filter(tmp_path, model_dirs):
    http, client = _daemon(tmp_path, (
        "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: sync, guardian: judge}\n"
        "guardians:\n  models:\n"
        f"    - {{name: judge, kind: causal-lm, model: '{model_dirs['judge']}', threshold: 0.0}}\n"))
    try:
        r = client.completions.create(model="tiny-llama", prompt="hello", max_tokens=3,
                                      extra_body={"ignore_eos": True})
        assert r.choices[0].finish_reason == "content_filter" and r.choices[0].text == ""
        c = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=3, extra_body={"ignore_eos": True})
        assert c.choices[0].finish_reason == "content_filter" and c.choices[0].message.content == ""
        ext = r.model_extra["controlplane"]["requests"][0]
        assert ext["guardian_verdict"] == "block" and ext["reason"].startswith("blocked by judge")
    finally:
        http.__exit__(None, None, None)


def test_the_daemon_refuses_a_blocked_prompt_with_a_400(tmp_path, model_dirs):
    http, client = _daemon(tmp_path, (
        "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: sync, stages: [input], guardian: rules}\n"
        "guardians:\n  models:\n    - {name: rules, kind: rules, blocklist: [forbidden]}\n"))
    try:
        ok = client.completions.create(model="tiny-llama", prompt="fine", max_tokens=3,
                                       extra_body={"ignore_eos": True})
        assert ok.choices[0].finish_reason == "length"
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "forbidden"}],
                                           max_tokens=3)
        body = refused.value.response.json()["error"]
        assert body["code"] == "blocked" and "blocked by rules" in body["message"]
    finally:
        http.__exit__(None, None, None)


def test_a_stream_under_a_sync_answer_check_holds_its_text_until_the_verdict(tmp_path):
    """A blocked answer never reaches a stream's client (only the ``content_filter`` end); a passed
    one arrives whole, the same text as the plain reply."""
    def streamed(client, prompt, **extra):
        return list(client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=12, stream=True,
                                              temperature=0, extra_body={"ignore_eos": True}, **extra))

    for pattern, blocks in (("(?s).", True), ("never matches this", False)):
        http, client = _daemon(tmp_path, (
            "plugins:\n  settings:\n    sampled-guardian: {rate: 1.0, mode: sync, guardian: rules}\n"
            f"guardians:\n  models:\n    - {{name: rules, kind: rules, patterns: ['{pattern}']}}\n"))
        try:
            chunks = streamed(client, "out 1")
            plain = client.completions.create(model="tiny-llama", prompt="out 1", max_tokens=12, temperature=0,
                                              extra_body={"ignore_eos": True})
            chat = list(client.chat.completions.create(
                model="tiny-llama", messages=[{"role": "user", "content": "out 1"}], max_tokens=12, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
        finally:
            http.__exit__(None, None, None)
        text = "".join(c.choices[0].text for c in chunks)
        chat_text = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
        if blocks:
            assert text == "" and chat_text == "", (text, chat_text)
            assert chunks[-1].choices[0].finish_reason == "content_filter"
            assert [c.choices[0].finish_reason for c in chat if c.choices][-1] == "content_filter"
            # what docs/guardians.md says a held, blocked chat stream gets at its verdict: OpenAI's role chunk,
            # then the content_filter end (and the usage chunk asked for), nothing else
            deltas = [(c.choices[0].delta.role, c.choices[0].delta.content, c.choices[0].finish_reason)
                      for c in chat if c.choices]
            assert deltas == [("assistant", "", None), (None, None, "content_filter")], deltas
        else:
            assert text == plain.choices[0].text and text and chunks[-1].choices[0].finish_reason == "length"
            assert chat_text and chat[-1].usage.completion_tokens == 12


def test_a_reload_counts_a_guardians_share_of_answers_from_the_reload_on(tmp_path):
    # the guardian's answer checks were counted from the run's start and the planner's answers from the
    # reload: 3 answers checked before it, 1 after, read a share of 4.0
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["never said"]}])

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            for p in ("one", "two", "three"):
                await driver.generate(p, max_tokens=2, ignore_eos=True)
            changed = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["never said"]}],
                             max_inflight_per_replica=100)
            driver.reload(changed)  # its settings changed: a new sampled-guardian, counting from now
            await driver.generate("after the reload", max_tokens=2, ignore_eos=True)
        finally:
            summary = await driver.close()
        return summary

    summary = asyncio.run(main())
    assert summary["guardian_sampling"]["sampled-guardian"]["answers"] == 1
    rules = summary["guardians"]["rules"]
    assert rules["checks_output"] == 4 and rules["answers_checked_share"] == 1.0


def test_a_guardian_that_never_answers_checks_no_answer(tmp_path, model_dirs):
    # every check timed out (open): the shares read 1.0, "checked", though no answer got a verdict
    slow = {"name": "judge", "kind": "causal-lm", "model": model_dirs["judge"], "timeout_s": 0.000001}
    results, driver, _ = run(config(tmp_path, [slow]), ["one", "two"])
    assert all(r.status == "completed" and r.guardian_verdict == "timeout" for r in results)
    summary = driver.summary
    sampling = summary["guardian_sampling"]["sampled-guardian"]
    assert (sampling["answers"], sampling["answers_checked"], sampling["answers_served_without_verdict"]) == (2, 0, 2)
    assert sampling["answers_checked_share"] == 0.0 and summary["guardians"]["judge"]["answers_checked_share"] == 0.0


def test_a_reply_held_for_its_answers_check_has_the_replys_ttft_live_as_simulated(tmp_path):
    # live rows said TTFT 0.01-0.14 s (the generation's first token) while held streams' first text came after 3-6 s
    cfg = config(tmp_path, [{"name": "rules", "kind": "rules", "blocklist": ["never said"]}], rate=0.5)
    results, driver, metrics = run(cfg, ["one", "two", "three", "four"], max_tokens=8)
    rows = run_rows(cfg.storage.url, driver.run_id, "requests")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    for r in rows:  # checked or not (rate 0.5): every stream was held, as the simulator counts them
        assert r["ttft_s"] == r["e2e_s"] and r["tpot_s"] is None and r["first_token_s"] < r["finish_s"], r
    assert driver.summary["ttft_p99_s"] == driver.summary["e2e_p99_s"]
