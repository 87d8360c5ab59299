"""The daemon's OpenAI-compatible routes: ``POST /v1/completions``, ``POST /v1/chat/completions``
(both with ``stream: true`` server-sent events), ``GET /v1/models`` and ``GET /v1/models/{id}``; and
``GET /v1/requests/{id}``, a request's state and guardian verdict, including a block that came after its reply
(`controlplane.live.guardian_verdicts`).

A request's prompts go to the live driver; the answer waits for every result unless the client
disconnects first (its requests are then cancelled). A stream starts once the first text is
ready, so a request refused before then gets a plain HTTP error; a failure after the start is
sent in-band before ``[DONE]``, except a guardian's block: the stream then ends with
``finish_reason: "content_filter"``. A stream's last chunks (``finish_reason``, usage) carry the
``controlplane`` object a response has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError
from starlette.requests import Request as HTTPRequest

from controlplane.guardian_checks import holds_answers
from controlplane.live.client_presence import ClientPresence
from controlplane.live.core_refusals import is_recorded, record_refusal
from controlplane.live.daemon_choices import cancel_if_refused, refuse_never_admitted
from controlplane.live.daemon_deps import APIError, DaemonDep, DriverDep, TenantDep, result_error
from controlplane.live.daemon_openai import (
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    controlplane_extension,
    new_id,
    sse,
    usage,
)
from controlplane.live.daemon_probes import models_never_started
from controlplane.live.daemon_requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EdgeError,
    check_for_model,
)
from controlplane.live.driver import LiveDriver
from controlplane.live.http_errors import RequestError
from controlplane.live.ignored_fields import HEADER as IGNORED_HEADER
from controlplane.live.results import LiveRequestHandle, LiveResult
from controlplane.live.served_model import LARGE_PROMPT_CHARS
from controlplane.types import ReasonCode

__all__ = ["router"]

router = APIRouter(prefix="/v1")

_INVALID = ReasonCode.INVALID.value
#: A completion's max_tokens when the request gives none (OpenAI's default), at most the context's room.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@router.get("/models")
async def models(driver: DriverDep, tenant: TenantDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model_entry(name, m, driver) for name, m in driver.models.items()]}


@router.get("/models/{model_id:path}")
async def model(model_id: str, driver: DriverDep, tenant: TenantDep) -> dict[str, Any]:
    """One model, as OpenAI's ``models.retrieve`` reads it (its ``/v1/models`` entry); 404 for one not served."""
    served = driver.models.get(model_id)
    if served is None:
        raise APIError(404, f"model {model_id[:200]!r} is not served here; served: {', '.join(driver.models)}",
                       param="model", code=ReasonCode.UNKNOWN_MODEL.value)
    return _model_entry(model_id, served, driver)


def _model_entry(name: str, m: Any, driver: Any) -> dict[str, Any]:
    """A model's ``/v1/models`` entry: ``max_model_len`` the longest request (prompt + max_tokens) it serves, its
    length, or less where no worker's KV cache holds that many tokens (its memory plan: longer is does_not_fit)."""
    room = getattr(getattr(driver.core, "kv", None), "room", {}).get(name)
    return {"id": name, "object": "model", "created": 0, "owned_by": "controlplane",
            "max_model_len": m.max_seq_len if room is None else min(m.max_seq_len, room),
            "source": m.settings.source_name()}


@router.get("/requests/{request_id}")
async def request_state(request_id: str, driver: DriverDep, tenant: TenantDep) -> dict[str, Any]:
    """A request in flight or among the last finished: status, finish reason, guardian verdict
    (``retracted``: a guardian blocked it after its reply). With API keys, a tenant's own only."""
    state = driver.guardians.late.status(request_id, tenant)
    if state is None:
        raise APIError(404, f"no request {request_id!r} here (unknown, another tenant's, or long finished)",
                       param="request_id", code="not_found")
    return state


@router.post("/completions")
async def completions(body: CompletionRequest, request: HTTPRequest, daemon: DaemonDep,
                      tenant: TenantDep) -> Response:
    return await _naming_ignored(daemon, body, tenant, "/v1/completions", _completions(body, request, daemon, tenant))


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: HTTPRequest, daemon: DaemonDep,
                           tenant: TenantDep) -> Response:
    return await _naming_ignored(daemon, body, tenant, "/v1/chat/completions", _chat(body, request, daemon, tenant))


async def _naming_ignored(daemon: Any, body: Any, tenant: str | None, endpoint: str,
                          answer: Awaitable[Response]) -> Response:
    """``answer``, its fields accepted but unused named in its ``x-ignored-fields`` header (an
    error's too), and each warned about in the log the first time (`controlplane.live.ignored_fields`).
    A refusal before the request reached the core, for a reason the core refuses it too, is recorded (`_record`)."""
    ignored = daemon.ignored_fields.note(body, endpoint)
    try:
        response = await answer
    except (APIError, RequestError) as exc:  # (an unknown model's 404 is a RequestError: named all the same)
        await _record(daemon.driver, body, tenant, exc)
        if ignored:
            exc.headers = {**(getattr(exc, "headers", None) or {}), IGNORED_HEADER: ignored}
        raise
    if ignored:
        response.headers[IGNORED_HEADER] = ignored
    return response


async def _completions(body: CompletionRequest, request: HTTPRequest, daemon: Any, tenant: str | None) -> Response:
    prompts = body.prompts()
    if not prompts:
        raise APIError(400, "prompt is empty", param="prompt", code=_INVALID)
    # (without max_tokens: OpenAI's 16, at most what the context leaves after the prompt)
    return await _serve(request, daemon.driver, body, prompts, body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS,
                        chat=False, tenant=tenant)


async def _chat(body: ChatCompletionRequest, request: HTTPRequest, daemon: Any, tenant: str | None) -> Response:
    if not body.messages:
        raise APIError(400, "messages is empty", param="messages", code=_INVALID)
    served = daemon.driver.model(body.model)  # an unknown model is a 404 before anything else
    _check(body, daemon.driver)
    try:
        prompt, _ = served.render_chat(body.template_messages())
    except (TemplateError, ValueError, TypeError) as exc:  # a template refusing the conversation
        raise APIError(400, f"messages: the model's chat template refused them: {str(exc)[:200]}",
                       param="messages", code=_INVALID) from None
    return await _serve(request, daemon.driver, body, [prompt], body.max_new_tokens(),
                        daemon.options.default_max_tokens, chat=True, tenant=tenant)


async def _serve(request: HTTPRequest, driver: LiveDriver, body: Any, prompts: list[Any], max_tokens: int | None,
                 default_max_tokens: int, *, chat: bool, tenant: str | None = None) -> Response:
    bad = body.unsupported()
    if bad:
        raise APIError(400, f"{bad} is not supported by this server", param=bad, code=_INVALID)
    if body.stream and (len(prompts) != 1 or body.n != 1):
        raise APIError(400, "streaming supports one prompt and n=1", param="stream", code=_INVALID)
    _check(body, driver)
    try:
        handles = await _submit_all(driver, prompts, body, max_tokens, default_max_tokens, chat, tenant)
    except RequestError as exc:
        if chat and exc.param == "prompt":  # (a chat's prompt is its rendered messages)
            exc.param = "messages"
        raise
    model = body.model or next(iter(driver.models))
    rid = new_id("chatcmpl" if chat else "cmpl")
    if body.stream and _checks_answers_before_reply(driver):
        return await _held_stream(request, handles[0], rid, model, chat, body.include_usage(), driver.metrics)
    if body.stream:
        return await _stream(request, handles[0], rid, model, chat, body.include_usage(), driver.metrics)
    gathered = await _results_unless_gone(request, handles)
    if gathered is None:
        return _client_gone(handles)  # nobody is listening any more
    results = list(gathered)
    failed = next((r for r in results if r.status == "rejected"), None) or next((r for r in results if not r.ok),
                                                                                 None)
    ids = [r.request_id for r in results]
    if failed is not None:
        raise result_error(failed, chat=chat, results=results)
    payload = (chat_response if chat else completion_response)(rid, model, results, n=body.n)
    return JSONResponse(payload, headers={"x-request-id": ",".join(ids)})


async def _record(driver: LiveDriver, body: CompletionRequest | ChatCompletionRequest, tenant: str | None,
                  error: APIError | RequestError) -> None:
    """A refusal the core makes too (an unknown model, ``too_long``, a model never served) is recorded as the
    simulator records it: a ``rejected`` row with its code, one per HTTP request, its ``x-request-id`` on the
    error (`controlplane.live.core_refusals`). Any other (a protocol error: ``invalid``) is left as it is."""
    chat = isinstance(body, ChatCompletionRequest)
    prompts = () if chat else body.prompts()
    counted = None
    if is_recorded(error) and error.code in (ReasonCode.TOO_LONG, ReasonCode.TOO_LONG.value):
        counted = await _prompt_tokens(driver, body)  # (the core's reason states the prompt's length)
    record_refusal(driver, error, model=body.model, prompt=prompts[0] if len(prompts) == 1 else None,
                   max_tokens=body.max_new_tokens() if chat else body.max_tokens,
                   tenant=tenant if tenant is not None else body.user, priority=body.priority, prompt_tokens=counted)


async def _prompt_tokens(driver: LiveDriver, body: CompletionRequest | ChatCompletionRequest) -> int | None:
    """A ``too_long`` request's prompt tokens when its refusal did not count them (``max_tokens`` over the
    context, checked before the prompt is tokenized): its longest prompt as its model encodes it (a chat's, its
    rendered messages; a large text in a thread). None without a served model or when the template refuses."""
    try:
        served = driver.model(body.model)
        chat = isinstance(body, ChatCompletionRequest)
        prompts = [served.render_chat(body.template_messages())[0]] if chat else body.prompts()
    except (RequestError, TemplateError, ValueError, TypeError):
        return None
    counts = []
    for p in prompts:
        if not isinstance(p, str):
            counts.append(len(p))
        elif len(p) > LARGE_PROMPT_CHARS:  # (as `ServedModel.tokenize_ahead`: not on the event loop)
            counts.append(len(await asyncio.to_thread(served.encode, p, special_tokens=not chat)))
        else:
            counts.append(len(served.encode(p, special_tokens=not chat)))
    return max(counts, default=None)


def _check(body: CompletionRequest | ChatCompletionRequest, driver: LiveDriver) -> None:
    """The checks that need the model (404 for an unknown one, then its length and vocabulary)."""
    served = driver.model(body.model)
    try:
        check_for_model(body, served.max_seq_len, served.vocab_size)
    except EdgeError as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from None
    if any(d.replicas == 0 for d in driver.config.cluster.models):  # (the usual config: no lookup per request)
        never = models_never_started(driver).get(served.name)
        if never is not None:  # it would wait for --request-timeout, then 504: say why now
            raise APIError(503, f"model {served.name!r} is never served here: {never}; the operator must give it "
                                "workers (--workers N, or replicas in the config) or an autoscaler that scales "
                                "from zero", param="model", code=ReasonCode.UNAVAILABLE.value)


async def _submit_all(driver: LiveDriver, prompts: list[Any], body: Any, max_tokens: int | None,
                      default_max_tokens: int, chat: bool, tenant: str | None) -> list[LiveRequestHandle]:
    """Submit each prompt ``n`` times; a large text prompt is tokenized in a thread first (the
    event loop keeps serving the other requests meanwhile)."""
    served = driver.model(body.model)
    ahead = [p for p in prompts if await served.tokenize_ahead(p, chat=chat)]
    try:
        return await _submit_prepared(driver, prompts, body, max_tokens, default_max_tokens, chat, tenant)
    finally:
        for p in ahead:
            served.forget_ahead(p, chat=chat)


async def _submit_prepared(driver: LiveDriver, prompts: list[Any], body: Any, max_tokens: int | None,
                           default_max_tokens: int, chat: bool, tenant: str | None) -> list[LiveRequestHandle]:
    kwargs = body.sampling_kwargs()
    if tenant is not None:  # the API key's tenant, not the client's own `user` field
        kwargs["tenant"] = tenant
    if len(prompts) > 1:  # all of them are checked before any is submitted: all or nothing
        served = driver.model(body.model)
        checks = {k: kwargs[k] for k in ("temperature", "top_p", "top_k", "stop", "ignore_eos")}
        for prompt in prompts:
            served.prepare(prompt, max_tokens=max_tokens or 1, seed=body.seed, chat=chat, **checks)
    lengths: dict[int, int] = {}

    def length(i: int) -> int:  # (encoded as `ServedModel.prepare` does: a completion's prompt with its BOS)
        if i not in lengths:
            p = prompts[i]
            lengths[i] = len(driver.model(body.model).encode(p, special_tokens=not chat) if isinstance(p, str) else p)
        return lengths[i]

    def max_for(i: int) -> int:  # no max_tokens: the default, at most what the context leaves
        if max_tokens is not None:
            return max_tokens
        return min(default_max_tokens, max(1, driver.model(body.model).max_seq_len - length(i)))

    if len(prompts) * body.n > 1:  # choices that can never be admitted together: refused before any is submitted
        refuse_never_admitted(driver, kwargs.get("tenant"),
                              lambda: [length(i) + max_for(i) for i in range(len(prompts)) for _ in range(body.n)])
    handles: list[LiveRequestHandle] = []
    for i, prompt in enumerate(prompts):
        mt = max_for(i)
        for j in range(body.n):
            seed = body.seed + j if body.seed is not None and body.n > 1 else body.seed
            handles.append(await driver.submit(prompt, max_tokens=mt, model=body.model, seed=seed, chat=chat,
                                               **kwargs))
            if len(prompts) * body.n > 1 and await cancel_if_refused(driver, handles):
                return handles  # the rest are not submitted; the reply is its refusal
    return handles


async def _results_unless_gone(request: HTTPRequest, handles: list[LiveRequestHandle]) -> list[LiveResult] | None:
    """The handles' results, or None if the client disconnects first, learned the moment it does
    (`ClientPresence`): its requests are then cancelled (a worker stops on them at the next iteration; the
    core records them ``client_gone``), and a result ready as the client is found gone is None too."""
    presence = ClientPresence(request)
    try:
        here, results = await presence.unless_gone(asyncio.gather(*(h.result() for h in handles)))
    finally:
        presence.close()
    if not here:
        for h in handles:
            h.cancel("client disconnected")
        return None
    return results


def _client_gone(handles: list[LiveRequestHandle]) -> Response:
    """A client that left before its answer: 499 (nginx's "client closed the request"), which nobody reads but
    the access log and ``http_requests_total`` count, with its requests' ids as an answer would have them."""
    return Response(status_code=499, headers={"x-request-id": ",".join(h.request_id for h in handles)})


def _checks_answers_before_reply(driver: LiveDriver) -> bool:
    """Whether a guardian planner may check an answer before its reply (its ``sync_answer_checks``,
    else ``mode: sync`` with the ``output`` stage): the core's rule too, whose requests' TTFT is then
    the reply's (`controlplane.guardian_checks.holds_answers`)."""
    return holds_answers(driver.session.plugins)


async def _held_stream(request: HTTPRequest, handle: LiveRequestHandle, rid: str, model: str, chat: bool,
                       include_usage: bool, metrics: Any) -> Response:
    """A stream whose answer a guardian may check before the reply: nothing is sent until the
    verdict, then the text in one chunk, or only the ``content_filter`` end when it was blocked.
    A request that ends otherwise, nothing sent yet, is a plain HTTP error. A client gone before the
    reply gets none (499, its request ``client_gone``); one gone while it is sent has no ``[DONE]``
    (``end="client_gone"``)."""
    gathered = await _results_unless_gone(request, [handle])
    if gathered is None:
        return _client_gone([handle])
    (result,) = gathered
    if not result.ok:
        raise result_error(result, chat=chat)
    chunk = _ChunkMaker(rid, model, chat)
    events = [sse(chat_chunk(rid, model, chunk.created, {"role": "assistant", "content": ""}))] if chat else []
    events += [sse(chunk(result.text))] if result.text else []
    events += _last_chunks(chunk, result, include_usage)
    events.append(sse("[DONE]"))

    async def send() -> AsyncIterator[bytes]:
        end = "client_gone"
        try:
            for event in events[:-1]:
                yield event
            if not await request.is_disconnected():  # (uvicorn drops what is sent to a gone client, unsaid)
                yield events[-1]
                end = "done"
        finally:
            metrics.stream_end(_route(chat), end)

    return StreamingResponse(send(), media_type="text/event-stream",
                             headers={"x-request-id": handle.request_id, "cache-control": "no-cache"})


async def _first_text(it: AsyncIterator[str]) -> str | None:
    """A stream's first text delta, None when the request ended without one."""
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


async def _stream(request: HTTPRequest, handle: LiveRequestHandle, rid: str, model: str, chat: bool,
                  include_usage: bool, metrics: Any) -> Response:
    """A stream of the text as it comes; a client gone before the first text gets none (499, its request
    cancelled then). Its status is 200 from the first byte, so how it ended is
    counted apart (`PrometheusExporter.stream_end`): ``done``, ``error`` (an error event in-band:
    the request timed out or failed after the start) or ``client_gone`` (the client left first)."""
    it = handle.__aiter__()
    presence = ClientPresence(request)
    try:
        here, first = await presence.unless_gone(_first_text(it))
    finally:
        presence.close()
    if not here:  # it left while the request waited for its first text: cancelled now, not at the first token
        handle.cancel("client disconnected")
        return _client_gone([handle])
    if first is None:
        result = await handle.result()
        if not result.ok:  # nothing was sent yet: a proper HTTP error
            raise result_error(result, chat=chat) from None
    chunk = _ChunkMaker(rid, model, chat)

    async def events() -> AsyncIterator[bytes]:
        end, ended = "client_gone", "done"
        try:
            if chat:
                yield sse(chat_chunk(rid, model, chunk.created, {"role": "assistant", "content": ""}))
            if first:
                yield sse(chunk(first))
            async for delta in it:
                yield sse(chunk(delta))
            result = await handle.result()
            if result.ok or result.status == "blocked":  # a block after text went out: content_filter
                for event in _last_chunks(chunk, result, include_usage):
                    yield event
            else:  # the stream had started: report the failure in-band
                ended = "error"
                yield b"data: " + result_error(result, chat=chat).response().body + b"\n\n"
            yield sse("[DONE]")
            end = ended
        finally:  # the client went away mid-stream (the server closed this generator)
            handle.cancel("client disconnected")
            metrics.stream_end(_route(chat), end)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"x-request-id": handle.request_id, "cache-control": "no-cache"})


def _last_chunks(chunk: _ChunkMaker, result: LiveResult, include_usage: bool) -> list[bytes]:
    """A stream's end: the ``finish_reason`` chunk, then the usage chunk when asked for; each
    carries the ``controlplane`` object a response has (request id, cache hit, ...)."""
    extension = controlplane_extension([result])
    events = [sse(chunk(None, result.finish_reason or "content_filter", extension=extension))]
    if include_usage:
        events.append(sse(chunk(None, usage_=usage([result]), extension=extension)))
    return events


def _route(chat: bool) -> str:
    """A stream's ``route`` label, as ``controlplane_http_requests_total`` names its path."""
    return "/v1/chat/completions" if chat else "/v1/completions"


class _ChunkMaker:
    """A stream's chunk maker: ``chunk(text, finish, usage)`` for a chat or a completion."""

    def __init__(self, rid: str, model: str, chat: bool) -> None:
        self.rid, self.model, self.chat, self.created = rid, model, chat, int(time.time())

    def __call__(self, text: str | None, finish: str | None = None, usage_: dict | None = None,
                 extension: dict | None = None) -> dict[str, Any]:
        if self.chat:
            delta = {"content": text} if text is not None else {}
            return chat_chunk(self.rid, self.model, self.created, delta, finish, usage_, extension)
        return completion_chunk(self.rid, self.model, self.created, text or "", finish, usage_, extension)
