"""The live driver without HTTP: real tiny models in worker threads, the real core and plugins.

Greedy decoding makes outputs comparable with the backend run alone, so batching, chunked
prefill and preemption are checked to change nothing in what a client receives.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controlplane.live import driver_admin
from controlplane.live.driver import GUARDIAN_UNAVAILABLE, LiveDriver
from controlplane.live.http_errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.live.sampling import StopCondition
from controlplane.testing import make_config, stored_rows as rows
from controlplane.types import ReasonCode

PROMPTS = [f"The quick brown fox number {i} jumps over the lazy dog" for i in range(6)]
N_OUT = 12


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    """Each prompt's greedy text from the backend alone (no batching, no control plane)."""
    from controlplane.live.backend import CausalLMBackend

    backend = CausalLMBackend.from_settings(WorkerModelSettings(preset="tiny-llama"))
    return {
        p: backend.generate_one(backend.tokenizer(p)["input_ids"], N_OUT, stop=StopCondition(eos_token_ids=())).text
        for p in PROMPTS
    }


def config(tmp_path: Path, *, replicas: int = 1, model: dict[str, Any] | None = None, **overrides: Any):
    deployment = {"name": "tiny", "replicas": replicas, "worker": {"preset": "tiny-llama"}, **(model or {})}
    cluster = {"models": [deployment], **overrides.pop("cluster", {})}
    return make_config(
        storage={"url": f"sqlite:///{tmp_path / 'live.db'}"}, cluster=cluster, sim={"tick_s": 0.2}, **overrides
    )


def run(cfg, body, **kwargs: Any) -> tuple[Any, dict[str, Any], LiveDriver]:
    """Start a driver (on a one-thread thread pool unless ``pool=`` is given), run ``body(driver)``,
    close; returns (body's result, summary, driver)."""
    kwargs.setdefault("pool", LocalThreadPool(cpu_threads=1))

    async def main():
        driver = LiveDriver(cfg, **kwargs)
        await driver.start(wait_ready_s=120)
        try:
            out = await body(driver)
        finally:
            summary = await driver.close()
        return out, summary, driver

    return asyncio.run(main())


def run_row(url: str, run_id: int) -> dict[str, Any]:
    from controlplane.storage import make_engine
    from controlplane.storage.queries import get_run

    engine = make_engine(url)
    try:
        return get_run(engine, run_id)
    finally:
        engine.dispose()


def test_concurrent_requests_are_batched_streamed_and_recorded(tmp_path, reference):
    cfg = config(tmp_path)

    async def body(d: LiveDriver):
        async def one(p: str):
            h = await d.submit(p, max_tokens=N_OUT, ignore_eos=True)
            deltas = [x async for x in h]
            return deltas, await h.result()

        return await asyncio.gather(*(one(p) for p in PROMPTS))

    out, summary, d = run(cfg, body)
    for p, (deltas, r) in zip(PROMPTS, out, strict=True):
        assert r.status == "completed" and r.http_status == 200
        assert r.completion_tokens == N_OUT and r.finish_reason == "length"
        assert "".join(deltas) == r.text == reference[p]  # batching changes nothing
        assert r.arrival_s <= r.first_token_s <= r.finish_s
    assert summary["num_completed"] == len(PROMPTS) and summary["output_tokens"] == N_OUT * len(PROMPTS)

    url = cfg.storage.url
    run_info = run_row(url, d.run_id)
    assert run_info["mode"] == "live" and run_info["status"] == "finished"
    requests = rows(url, d.run_id, "requests")
    assert len(requests) == len(PROMPTS)
    for row in requests:
        assert row["status"] == "completed" and row["output_tokens"] == N_OUT
        assert row["arrival_s"] <= row["scheduled_s"] <= row["first_token_s"] <= row["finish_s"]
        assert row["ttft_s"] == pytest.approx(row["first_token_s"] - row["arrival_s"])
    batches = [x for x in rows(url, d.run_id, "decisions") if x["action"] == "batch"]
    sizes = [x["payload"]["prefill"] + x["payload"]["decode"] for x in batches]
    assert max(sizes) > 1, "concurrent requests should share batches"
    events = {(e["worker_id"], e["kind"]) for e in rows(url, d.run_id, "worker_events")}
    assert {("tiny-0", "starting"), ("tiny-0", "ready"), ("tiny-0", "stopped")} <= events
    ready = next(e for e in rows(url, d.run_id, "worker_events") if e["kind"] == "ready")
    assert ready["detail"]["device"] == "cpu" and ready["detail"]["total_bytes"] > 0


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("chunked prefill", {"plugins": {"settings": {"continuous-batching": {"policy": "sarathi",
                                                                              "chunk_size": 16}}}}),
        ("preemption", {"model": {"kv_block_size": 4, "num_kv_blocks": 40}}),
    ],
)
def test_chunked_prefill_and_preemption_keep_the_output(tmp_path, reference, name, overrides):
    cfg = config(tmp_path, **overrides)

    async def body(d: LiveDriver):
        return await asyncio.gather(*(d.generate(p, max_tokens=N_OUT, ignore_eos=True) for p in PROMPTS))

    results, summary, d = run(cfg, body)
    assert [r.text for r in results] == [reference[p] for p in PROMPTS]
    decisions = rows(cfg.storage.url, d.run_id, "decisions")
    if name == "chunked prefill":
        prompt_tokens = min(r.prompt_tokens for r in results)
        batches = [x["payload"] for x in decisions if x["action"] == "batch"]
        chunks = [b["prefill_tokens"] for b in batches if b["prefill"]]
        assert chunks and max(chunks) <= 16 < prompt_tokens  # every prompt really was split
    else:
        assert summary["num_preemptions"] > 0
        assert any(x["action"] == "preempt" for x in decisions)
        assert sum(r.num_preemptions for r in results) == summary["num_preemptions"]


def test_rejections_carry_reasons_and_http_statuses(tmp_path):
    cfg = config(tmp_path, model={"max_model_len": 40},
                 plugins={"settings": {"queue-limit": {"max_prompt_tokens": 30}}})

    async def body(d: LiveDriver):
        too_long = await d.generate("x" * 31, max_tokens=2)  # admission policy
        over_context = await d.generate("y" * 20, max_tokens=30)  # the core's max_model_len
        fine = await d.generate("z" * 20, max_tokens=3, ignore_eos=True)
        return too_long, over_context, fine

    (too_long, over_context, fine), summary, d = run(cfg, body)
    assert too_long.status == "rejected" and too_long.reason.startswith("prompt too long")
    assert too_long.reason_code is ReasonCode.TOO_LONG and too_long.http_status == 400
    assert over_context.status == "rejected" and "max_model_len 40" in over_context.reason
    assert over_context.reason_code is ReasonCode.TOO_LONG and over_context.http_status == 400
    assert fine.ok and fine.completion_tokens == 3
    assert summary["num_rejected"] == 2
    stored = {r["request_id"]: r for r in rows(cfg.storage.url, d.run_id, "requests")}
    assert stored[too_long.request_id]["status"] == "rejected"
    assert stored[too_long.request_id]["reason"] == too_long.reason

    cfg = config(tmp_path / "full", plugins={"settings": {"queue-limit": {"max_queued": 0}}})
    (tmp_path / "full").mkdir()

    async def overload(d: LiveDriver):
        return await d.generate("hello", max_tokens=2)

    shed, _, _ = run(cfg, overload)
    assert shed.status == "rejected" and shed.reason.startswith("queue full") and shed.http_status == 429
    assert shed.reason_code is ReasonCode.QUEUE_FULL


def test_guardian_checks_are_recorded_as_unavailable_not_passed(tmp_path):
    cfg = config(tmp_path, plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync"}}})

    async def body(d: LiveDriver):
        return await d.generate("check me", max_tokens=4, ignore_eos=True)

    result, _, d = run(cfg, body)
    assert result.ok and result.completion_tokens == 4
    assert result.guardian_verdict == GUARDIAN_UNAVAILABLE
    (row,) = rows(cfg.storage.url, d.run_id, "requests")
    assert row["guardian_verdict"] == GUARDIAN_UNAVAILABLE
    assert not any(x["guardian_verdict"] == "pass" for x in [row])


def test_bad_requests_timeouts_and_drain(tmp_path):
    from controlplane.storage.journal import RequestJournal, read_answered, read_journal

    cfg = config(tmp_path)
    journal = RequestJournal(tmp_path / "journal.log")

    async def body(d: LiveDriver):
        d.journal = journal
        with pytest.raises(InvalidRequest, match="empty"):
            await d.submit("", max_tokens=2)
        with pytest.raises(InvalidRequest, match="token ids"):
            await d.submit([1, 2, 99999], max_tokens=2)
        with pytest.raises(InvalidRequest, match="max_tokens"):
            await d.submit("hi", max_tokens=0)
        with pytest.raises(InvalidRequest, match="temperature"):
            await d.submit("hi", temperature=-1)
        with pytest.raises(ModelNotFound, match="served: tiny") as unknown:
            await d.submit("hi", model="gpt-4")
        assert (unknown.value.code, unknown.value.http_status) == (ReasonCode.UNKNOWN_MODEL, 404)
        with pytest.raises(InvalidRequest, match="too long") as too_long:
            await d.submit([5] * 5000, max_tokens=2)
        assert (too_long.value.code, too_long.value.http_status) == (ReasonCode.TOO_LONG, 400)
        assert too_long.value.headers["x-request-id"].startswith("req-")  # recorded: the core refuses it too
        ids = await d.generate([5, 6, 7, 8], max_tokens=3, ignore_eos=True)  # token ids work too
        d.request_timeout_s = 0.01
        slow = await d.generate("a slow one", max_tokens=400, ignore_eos=True)
        d.request_timeout_s = None
        d.begin_drain()
        assert not d.ready
        with pytest.raises(ServiceUnavailable, match="draining") as late:
            await d.submit("late", max_tokens=2)
        assert (late.value.code, late.value.http_status) == (ReasonCode.UNAVAILABLE, 503)
        assert await d.drain(timeout_s=60)  # the timed-out request is answered: nothing pending
        return ids, slow, [e.value.headers["x-request-id"] for e in (unknown, too_long)]

    (ids, slow, refused), summary, _ = run(cfg, body)
    assert ids.ok and ids.prompt_tokens == 4 and ids.completion_tokens == 3
    assert slow.status == "timeout" and slow.http_status == 504
    # invalid submissions never reach the core; those it refuses too (a model not served, a prompt over the
    # context) are rejected there, as in the simulator
    assert summary["num_requests"] == 4 and summary["num_rejected"] == 2
    rejected = {r["reason_code"]: r for r in rows(cfg.storage.url, summary["run_id"], "requests")
                if r["status"] == "rejected"}
    assert set(rejected) == {"unknown_model", "too_long"} and rejected["unknown_model"]["model"] == "gpt-4"
    assert (rejected["too_long"]["prompt_tokens"], rejected["too_long"]["max_output_tokens"]) == (5000, 2)
    # The timed-out request did not keep its worker busy for 400 tokens: it was cancelled.
    assert summary["num_cancelled"] == 1 and summary["num_completed"] == 1
    (row,) = [r for r in rows(cfg.storage.url, summary["run_id"], "requests") if r["request_id"] == slow.request_id]
    assert row["status"] == "cancelled" and row["reason"].startswith("timed out")
    assert row["reason_code"] == "timeout" and slow.reason_code is ReasonCode.TIMEOUT  # not a client gone
    assert row["output_tokens"] < 400
    # Each answer is in the journal once, with its status: a kill before its row was written cannot
    # have it listed as never answered (safe to retry). The refusals the core recorded (a row, an x-request-id)
    # are in it too, accepted and answered at once.
    assert read_journal(journal.path) == [*refused, ids.request_id, slow.request_id]
    assert read_answered(journal.path) == {**dict.fromkeys(refused, "rejected"), ids.request_id: "completed",
                                           slow.request_id: "timeout"}
    assert len(journal.path.read_text().splitlines()) == 8


def test_a_cancelled_request_frees_its_worker_and_is_recorded(tmp_path):
    cfg = config(tmp_path)

    async def body(d: LiveDriver):
        handle = await d.submit("a long story", max_tokens=500, ignore_eos=True)
        got = []
        async for delta in handle:
            got.append(delta)
            if len(got) == 3:
                handle.cancel("client disconnected")
        result = await handle.result()
        after = await d.generate("and then", max_tokens=4, ignore_eos=True)  # the worker serves others
        (w,) = d.core.workers.values()
        return result, after, list(w.running), list(w.waiting)

    (result, after, running, waiting), summary, _ = run(cfg, body)
    assert result.status == "cancelled" and result.http_status == 499 and result.reason == "client disconnected"
    assert 3 <= result.completion_tokens < 500
    assert after.ok and running == [] and waiting == []
    assert summary["num_cancelled"] == 1 and summary["num_completed"] == 1
    (row,) = [r for r in rows(cfg.storage.url, summary["run_id"], "requests") if r["request_id"] == result.request_id]
    assert (row["status"], row["reason_code"]) == ("cancelled", "client_gone")  # not a timeout
    decisions = [d for d in rows(cfg.storage.url, summary["run_id"], "decisions") if d["action"] == "cancel"]
    assert [(d["subject"], d["reason"]) for d in decisions] == [(result.request_id, "client disconnected")]


def test_reload_swaps_plugins_and_records_it(tmp_path):
    cfg = config(tmp_path, replicas=2)
    enabled = [p if p != "least-loaded" else "round-robin" for p in cfg.plugins.enabled]
    reloaded = cfg.model_copy(update={"plugins": cfg.plugins.model_copy(update={"enabled": enabled})})

    async def body(d: LiveDriver):
        while sum(w.state.value == "ready" for w in d.core.workers.values()) < 2:
            await asyncio.sleep(0.05)
        await d.generate("before", max_tokens=2)
        so_far = driver_admin.summary_so_far(d.core, d.now_s())  # what a plugin the reload drops gets
        changed = d.reload(reloaded)
        for i in range(4):
            await d.generate(f"after {i}", max_tokens=2)
        return changed, so_far

    (changed, so_far), summary, d = run(cfg, body)
    assert "round-robin" in changed["plugins"] and "least-loaded" not in changed["plugins"]
    assert changed["needs_restart"] == [] and changed["finished"] == ["least-loaded"]
    assert so_far["reload"] is True and (so_far["num_requests"], so_far["num_completed"]) == (1, 1)
    assert summary["num_completed"] == 5 and "reload" not in summary
    decisions = rows(cfg.storage.url, d.run_id, "decisions")
    (reload,) = [x for x in decisions if x["action"] == "reload"]
    assert reload["payload"]["finished"] == ["least-loaded"]
    routes = [x for x in decisions if x["hook"] == "cp_route_request" and x["action"] == "route"]
    assert {x["plugin"] for x in routes if x["time_s"] < reload["time_s"]} == {"least-loaded"}
    after = [x for x in routes if x["time_s"] > reload["time_s"]]
    assert {x["plugin"] for x in after} == {"round-robin"}
    assert {x["payload"]["worker"] for x in after} == {"tiny-0", "tiny-1"}


def test_every_iteration_is_reported_as_a_timed_event(tmp_path):
    """The driver feeds `IterationTimed` into the core for each worker step that computed
    something: stamped on the run clock, with the backend's profile row and its padding."""
    from controlplane.events import IterationTimed
    from controlplane.hardware.profile_format import PADDED_FIELDS, ROW_FIELDS
    from controlplane.hookspecs import hookimpl

    class Timings:
        name = "timings"

        def __init__(self) -> None:
            self.events: list[IterationTimed] = []
            self.batch_ends: dict[int, float] = {}

        @hookimpl
        def cp_on_event(self, event: Any) -> None:
            if type(event) is IterationTimed:
                self.events.append(event)

    timings = Timings()

    async def body(d: LiveDriver):
        handles = [await d.submit([5 + i] * (3 + 4 * i), max_tokens=5, ignore_eos=True) for i in range(3)]
        results = [await h.result() for h in handles]
        return results, d.now_s()

    (results, end_s), _, d = run(config(tmp_path), body, extra_plugins=[timings])
    assert all(r.ok and r.completion_tokens == 5 for r in results)
    events = timings.events
    assert events and all(e.worker_id == "tiny-0" for e in events)
    for e in events:
        assert 0 <= e.start_s <= e.time_s <= end_s
        assert set(ROW_FIELDS) | set(PADDED_FIELDS) <= set(e.row)
        assert e.row["num_prefill_tokens"] or e.row["num_decode_seqs"]
        assert e.row["padded_prefill_tokens"] >= e.row["num_prefill_tokens"]
        assert e.row["padded_decode_context"] >= e.row["sum_decode_context"]
        assert e.time_s - e.start_s >= e.row["iteration_s"] > 0  # the loop saw the backend's time and more
    assert [e.time_s for e in events] == sorted(e.time_s for e in events)
    assert len({e.batch_id for e in events}) == len(events)
    # Each request's tokens: one from its prefill, the rest from decodes; every one timed once.
    assert sum(e.row["num_prefill_seqs"] + e.row["num_decode_seqs"] for e in events) == 3 * 5
    assert sum(e.row["num_prefill_tokens"] for e in events) == 3 + 7 + 11
    # Prompts of 3, 7 and 11 tokens decoded together: each row attends over the longest KV.
    assert any(e.row["padded_decode_context"] > e.row["sum_decode_context"] for e in events)


def test_queue_limit_times_a_lone_request_from_its_iterations(tmp_path):
    """One long request alone, nothing arriving or finishing meanwhile and no batch decisions
    (``record_batches: false``): queue-limit's ``max_finish_s`` still learns the iteration time,
    from the driver's `IterationTimed` events (a look at each iteration's start)."""
    cfg = make_config(storage={"url": f"sqlite:///{tmp_path / 'live.db'}", "record_batches": False},
                      cluster={"models": [{"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama"}}]},
                      sim={"tick_s": 0.2}, plugins={"settings": {"queue-limit": {"max_finish_s": 8}}})

    async def body(d: LiveDriver):
        r = await (await d.submit([5] * 8, max_tokens=2000, ignore_eos=True)).result()
        return r, d.now_s()

    (r, end_s), _, d = run(cfg, body)
    assert r.ok and r.completion_tokens == 2000
    times = d.core.plugins.get("queue-limit")._finish._times["tiny"]
    assert set(times) == {1}
    t, at = times[1]
    # about its run time per token (the last iterations' time: up to ~2.3x the mean where other processes took the
    # CPU at the end, as in a loaded full-suite run), sampled to the end
    assert 0 < t < end_s / 2000 * 4 and at > end_s - 2.0


def test_a_cached_answer_cut_at_max_tokens_says_length(tmp_path):
    """A hit said "stop" for an answer cut at max_tokens: the finish reason came from tokens generated
    for this request, and a hit generates none."""
    cfg = config(tmp_path)

    async def body(d: LiveDriver):
        return [await d.generate("hi", max_tokens=4, temperature=0.0, ignore_eos=True) for _ in range(2)]

    (miss, hit), _, _ = run(cfg, body)
    assert miss.cache_hit is None and hit.cache_hit == "exact" and hit.text == miss.text
    assert hit.completion_tokens == miss.completion_tokens == 4
    assert miss.finish_reason == hit.finish_reason == "length"


class _RefusingPool(LocalThreadPool):
    """A pool whose every start fails before its first await (as a pool refusing a bad address does)."""

    async def start(self, worker_id: str, settings: Any, **kw: Any) -> Any:
        raise RuntimeError("refused at once")


def test_a_start_that_fails_at_once_logs_no_starting_line_after_its_error(tmp_path, caplog):
    """'worker tiny-0 could not start' was followed by 'worker tiny-0 starting: loading ...' (the second scheduled
    for the next loop turn, the first logged before it)."""
    caplog.set_level("INFO", logger="controlplane.live")

    async def main():
        driver = LiveDriver(config(tmp_path), pool=_RefusingPool(cpu_threads=1), record=False)
        await driver.start(wait_ready_s=0)
        await asyncio.sleep(0.2)  # (past the loop turn the starting line was scheduled for)
        await driver.close()

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if "tiny-0" in r.getMessage()]
    failed = [i for i, line in enumerate(lines) if "refused at once" in line]
    assert failed, lines
    assert not any("starting: loading" in line for line in lines[failed[0]:]), lines


@pytest.mark.parametrize("exc", [SystemExit(2), asyncio.CancelledError()], ids=["SystemExit", "CancelledError"])
def test_a_router_raising_system_exit_or_cancelled_error_live_is_its_error_and_the_request_is_served(tmp_path, exc):
    """Live, such a router's request hung (the daemon answered 500, the request stayed until the drain's timeout):
    its raise is the plugin's error, the built-in router decides, and the driver's own task goes on."""
    from controlplane import Plugin, hookimpl

    class Exiting(Plugin):
        name = "exiting"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            raise exc

    async def body(d: LiveDriver):
        return await asyncio.wait_for(d.generate("a prompt", max_tokens=2), 60)

    result, summary, d = run(config(tmp_path), body, extra_plugins=[Exiting()])
    assert result.ok and summary["num_completed"] == 1
    errors = [x for x in rows(d.config.storage.url, d.run_id, "decisions") if x["is_error"]]
    assert [(x["plugin"], x["hook"], x["reason"].split(":")[0]) for x in errors] == [
        ("exiting", "cp_route_request", type(exc).__name__)]
