"""The OpenAI routes' own helpers, without a daemon."""

from __future__ import annotations

import asyncio
import gc

from controlplane.live.daemon_api import _results_unless_gone


class NeverAnswered:
    """A request handle whose result never comes."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def result(self) -> None:
        await asyncio.sleep(3600)

    def cancel(self, reason: str) -> None:
        self.cancelled.append(reason)


class GoneClient:
    """A Starlette request whose client has left."""

    async def receive(self) -> dict:
        return {"type": "http.disconnect"}

    async def is_disconnected(self) -> bool:
        return True


def test_a_client_gone_before_its_answer_cancels_its_requests_and_leaves_no_error_unretrieved():
    """asyncio logged ``_GatheringFuture exception was never retrieved ... CancelledError`` for
    each non-streamed request whose client went away."""
    handles = [NeverAnswered(), NeverAnswered()]

    async def main() -> tuple[object, list[dict]]:
        unhandled: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unhandled.append(context))
        out = await _results_unless_gone(GoneClient(), handles)
        for _ in range(3):  # the cancelled waits end, then the gathering future is collected
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        return out, unhandled

    out, unhandled = asyncio.run(main())
    assert out is None and [h.cancelled for h in handles] == [["client disconnected"]] * 2
    assert unhandled == []


class Streamed:
    """A request handle that streams ``deltas``, then ends with ``result``."""

    request_id = "req-0"

    def __init__(self, deltas: list[str], result: object) -> None:
        self.deltas, self._result, self.cancelled = deltas, result, []

    def __aiter__(self):
        return self._deltas()

    async def _deltas(self):
        for d in self.deltas:
            yield d

    async def result(self) -> object:
        return self._result

    def cancel(self, reason: str) -> None:
        self.cancelled.append(reason)


def _result(status: str, code=None):
    from controlplane.live.results import LiveResult

    return LiveResult(request_id="req-0", model="tiny", status=status, text="ab", finish_reason=None, reason=status,
                      prompt_tokens=3, completion_tokens=2, reason_code=code)


def test_a_streams_end_is_counted_done_error_or_client_gone():
    """A stream's status is 200 from its first byte: one that timed out or lost its client after the
    start was counted as a clean 200, whatever followed."""
    from controlplane.live.daemon_api import _stream
    from controlplane.live.prometheus import PrometheusExporter
    from controlplane.types import ReasonCode

    metrics = PrometheusExporter()

    async def serve(handle, *, read: int | None = None) -> list[bytes]:
        response = await _stream(StayingClient(), handle, "cmpl-1", "tiny", False, False, metrics)
        got = []
        async for event in response.body_iterator:
            got.append(event)
            if read is not None and len(got) == read:
                await response.body_iterator.aclose()  # the client hangs up
                break
        return got

    done = asyncio.run(serve(Streamed(["a", "b"], _result("completed"))))
    assert done[-1] == b"data: [DONE]\n\n"
    timed_out = asyncio.run(serve(Streamed(["a", "b"], _result("timeout", ReasonCode.TIMEOUT))))
    assert b'"code":"timeout"' in timed_out[-2].replace(b" ", b"")
    gone = Streamed(["a", "b", "c"], _result("completed"))
    asyncio.run(serve(gone, read=1))
    assert gone.cancelled == ["client disconnected"]

    def ends(end: str) -> float | None:
        return metrics.registry.get_sample_value("controlplane_http_streams_total",
                                                 {"route": "/v1/completions", "end": end})

    assert (ends("done"), ends("error"), ends("client_gone")) == (1.0, 1.0, 1.0)


class StayingClient:
    """A Starlette request whose client waits for its answer."""

    async def receive(self) -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def is_disconnected(self) -> bool:
        return False


def test_a_streams_last_chunks_carry_the_controlplane_object_a_response_has():
    """Streamed answers had no ``controlplane`` object (request id, cache hit, ...): a streaming
    client could not see that its answer was a cache hit. The ``finish_reason`` chunk and the usage
    chunk now carry the one a non-streamed response has, on both routes and for a held stream."""
    import json
    from dataclasses import replace

    from controlplane.live.daemon_api import _held_stream, _stream
    from controlplane.live.daemon_openai import completion_response
    from controlplane.live.prometheus import PrometheusExporter

    metrics = PrometheusExporter()
    hit = replace(_result("completed"), finish_reason="length", cache_hit="exact", reason="exact cache hit")
    expected = completion_response("cmpl-1", "tiny", [hit])["controlplane"]
    assert expected["requests"][0]["cache_hit"] == "exact" and expected["requests"][0]["request_id"] == "req-0"

    async def chunks(chat: bool, include_usage: bool, held: bool) -> list[dict]:
        handle = Streamed(["a", "b"], hit)
        if held:
            response = await _held_stream(StayingClient(), handle, "cmpl-1", "tiny", chat, include_usage, metrics)
        else:
            response = await _stream(StayingClient(), handle, "cmpl-1", "tiny", chat, include_usage, metrics)
        events = [e async for e in response.body_iterator]
        assert events[-1] == b"data: [DONE]\n\n"
        return [json.loads(e[len(b"data: "):]) for e in events[:-1]]

    for chat in (False, True):
        for held in (False, True):
            got = asyncio.run(chunks(chat, True, held))
            finish, usage_chunk = got[-2], got[-1]
            assert finish["choices"][0]["finish_reason"] == "length" and "usage" in usage_chunk
            assert finish["controlplane"] == expected and usage_chunk["controlplane"] == expected
            assert all("controlplane" not in c for c in got[:-2])  # the text chunks stay as OpenAI's
            no_usage = asyncio.run(chunks(chat, False, held))
            assert no_usage[-1]["choices"][0]["finish_reason"] == "length"
            assert no_usage[-1]["controlplane"] == expected


def test_v1_models_says_the_longest_request_a_worker_s_kv_cache_holds_where_that_is_less():
    """A memory plan of 3 blocks of 16 refused a 102-token request (does_not_fit) while /v1/models said 1024."""
    from types import SimpleNamespace

    from controlplane.live.daemon_api import _model_entry

    served = SimpleNamespace(max_seq_len=1024, settings=SimpleNamespace(source_name=lambda: "small-llama"))
    planned = SimpleNamespace(core=SimpleNamespace(kv=SimpleNamespace(room={"small": 48})))
    assert _model_entry("small", served, planned)["max_model_len"] == 48
    roomy = SimpleNamespace(core=SimpleNamespace(kv=SimpleNamespace(room={"small": 1 << 34})))
    assert _model_entry("small", served, roomy)["max_model_len"] == 1024
    for unplanned in (SimpleNamespace(core=SimpleNamespace(kv=SimpleNamespace(room={}))), SimpleNamespace(core=None)):
        assert _model_entry("small", served, unplanned)["max_model_len"] == 1024  # (no plan yet, not started)


class LeavesDuringTheReply(StayingClient):
    """A client there when its held reply is ready, gone before the reply's end."""

    def __init__(self) -> None:
        self.looks = 0

    async def is_disconnected(self) -> bool:
        self.looks += 1
        return self.looks > 1


def test_a_held_stream_whose_client_left_while_it_was_sent_ends_client_gone_without_done():
    """uvicorn drops what is sent to a client gone: the held stream went on to its ``[DONE]`` and counted
    ``end="done"``. It looks at the connection before its ``[DONE]``."""
    from controlplane.live.daemon_api import _held_stream
    from controlplane.live.prometheus import PrometheusExporter

    metrics = PrometheusExporter()

    async def main() -> list[bytes]:
        response = await _held_stream(LeavesDuringTheReply(), Streamed([], _result("completed")), "cmpl-1", "tiny",
                                      False, False, metrics)
        return [event async for event in response.body_iterator]

    events = asyncio.run(main())
    assert events and b"data: [DONE]\n\n" not in events
    assert metrics.registry.get_sample_value("controlplane_http_streams_total",
                                             {"route": "/v1/completions", "end": "client_gone"}) == 1.0
