"""The daemon: the live driver behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with ``stream: true``
server-sent events), ``GET /v1/models``, ``GET /healthz`` (the process answers), ``GET /readyz``
(a worker is ready and the daemon is not draining), ``GET /metrics`` (Prometheus), and admin
endpoints behind ``Authorization: Bearer $CONTROLPLANE_ADMIN_TOKEN`` (404 when no token is set):
``GET /admin/plugins``, ``GET /admin/workers``, ``POST /admin/reload``, ``POST /admin/drain``,
``POST /admin/resume``.

SIGTERM (or SIGINT, or ``POST /admin/drain``) drains: readiness goes false, new API requests get
503, requests in flight finish, then the server stops, the run is closed in SQL and the process
exits 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request as HTTPRequest

from controlplane.config import RunConfig, load_config, read_config_file
from controlplane.errors import ConfigError
from controlplane.live.daemon_openai import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    error_body,
    new_id,
    sse,
    usage,
)
from controlplane.live.driver import (
    InvalidRequest,
    LiveDriver,
    LiveRequestHandle,
    LiveResult,
    ModelNotFound,
    ServiceUnavailable,
)
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.pool import POOL_KINDS, cuda_device_count, make_pool
from controlplane.live.prometheus import CONTENT_TYPE_LATEST

log = logging.getLogger("controlplane.daemon")

__all__ = ["Daemon", "DaemonOptions", "create_app", "daemon_config", "serve"]

ADMIN_TOKEN_ENV = "CONTROLPLANE_ADMIN_TOKEN"
DEFAULT_PRESET = "tiny-llama"
_ROUTES = frozenset({
    "/v1/completions", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics",
    "/admin/plugins", "/admin/workers", "/admin/reload", "/admin/drain", "/admin/resume",
})


@dataclass
class DaemonOptions:
    """How the daemon serves (the run's config says what it serves)."""

    host: str = "127.0.0.1"
    port: int = 8000
    pool: str = "process"
    admin_token: str | None = None
    config_path: Path | None = None  # re-read by POST /admin/reload
    overrides: dict[str, Any] = field(default_factory=dict)  # CLI overrides, applied again on reload
    drain_timeout_s: float = 120.0  # longest wait for requests in flight when draining
    request_timeout_s: float | None = 600.0  # a request unanswered this long gets a 504
    default_max_tokens: int = 256  # chat requests without max_tokens
    cpu_threads: int | None = None  # torch threads per CPU worker (default: cores / workers)
    ray_address: str | None = None
    log_level: str = "info"
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.pool not in POOL_KINDS:
            raise ConfigError(f"unknown pool {self.pool!r}; choose one of {', '.join(POOL_KINDS)}")


def default_workers() -> int:
    """One replica per GPU when CUDA is present, else one CPU worker."""
    return cuda_device_count() or 1


def daemon_config(
    config_path: str | Path | None = None,
    *,
    db: str | None = None,
    workers: int | None = None,
    preset: str | None = None,
    model_path: str | None = None,
    precision: str | None = None,
    model_name: str | None = None,
) -> tuple[RunConfig, dict[str, Any]]:
    """The run config for a daemon: the file, with command-line choices applied; also the overrides.

    Without a config file (or one with no ``cluster.models``) the daemon serves one model, by
    default the random-weight ``tiny-llama`` preset, on one replica per GPU or one CPU worker.
    """
    if preset and model_path:
        raise ConfigError("give --preset or --model-path, not both")
    file_values = read_config_file(config_path) if config_path else {}
    overrides: dict[str, Any] = {}
    if db:
        overrides["storage"] = {"url": db}
    models = (file_values.get("cluster") or {}).get("models")
    flags = {"workers": workers, "preset": preset, "model_path": model_path, "precision": precision,
             "model_name": model_name}
    given = [k for k, v in flags.items() if v is not None]
    if models:
        if given and len(models) != 1:
            raise ConfigError(
                f"--{given[0].replace('_', '-')} applies to a one-model config; "
                f"{config_path} serves {len(models)} models"
            )
        deployments = [dict(m) for m in models]
    else:
        deployments = [{}]
    if not models or given:
        d = deployments[0]
        worker = dict(d.get("worker") or {})
        if preset or model_path:
            worker.pop("preset", None)
            worker.pop("path", None)
            worker.pop("config", None)
            worker["preset" if preset else "path"] = preset or model_path
        if not any(k in worker for k in ("preset", "path", "config")):
            worker["preset"] = DEFAULT_PRESET
        if precision:
            worker["precision"] = precision
        try:
            settings = WorkerModelSettings(**worker)
        except Exception as exc:
            raise ConfigError(f"worker settings: {exc}") from None
        if settings.path is not None and not Path(settings.path).is_dir():
            raise ConfigError(f"model path {settings.path} is not a directory (models are never downloaded)")
        d["worker"] = worker
        if model_name or "name" not in d:
            d["name"] = model_name or settings.source_name()
        if workers is not None or "replicas" not in d:
            d["replicas"] = workers if workers is not None else default_workers()
        d.setdefault("max_model_len", settings.max_seq_len)
        d.setdefault("precision", settings.precision)
        cluster = dict(file_values.get("cluster") or {})
        cluster["models"] = deployments
        overrides["cluster"] = cluster
    return load_config(config_path, overrides), overrides


class Daemon:
    """The HTTP app, the live driver and the drain/exit logic of one daemon process."""

    def __init__(self, config: RunConfig, options: DaemonOptions | None = None, *, record: bool = True) -> None:
        self.options = options or DaemonOptions()
        self.config = config
        pool_options: dict[str, Any] = {}
        if self.options.pool == "ray" and self.options.ray_address:
            pool_options["address"] = self.options.ray_address
        pool = make_pool(self.options.pool, cpu_threads=self.options.cpu_threads, **pool_options)
        self.driver = LiveDriver(config, pool=pool, record=record, request_timeout_s=self.options.request_timeout_s,
                                 cpu_threads=self.options.cpu_threads)
        self.metrics = self.driver.metrics
        self.admin_token = self.options.admin_token or None
        self.server: Any = None  # the uvicorn server, when `serve` runs it
        self.api_in_flight = 0
        self.exiting = False
        self.drained_cleanly = True
        self._drain_task: asyncio.Task | None = None
        self.app = create_app(self)

    # --- lifecycle ------------------------------------------------------------------------------

    async def startup(self) -> None:
        await self.driver.start()
        models = ", ".join(f"{d.name} x{d.replicas}" for d in self.config.cluster.models)
        log.info("run %s (mode live) recording to %s; starting %s on the %s pool", self.driver.run_id,
                 self.config.storage.url if self.driver.record else "nowhere", models, self.options.pool)

    async def shutdown(self) -> None:
        if not self.exiting:  # stopped without a drain (uvicorn's own exit): drain now
            self.exiting = True
            self.drained_cleanly = await self._wait_drained()
        status = "finished" if self.drained_cleanly else "interrupted"
        summary = await self.driver.close(status=status)
        log.info("run %s closed (%s): %s", self.driver.run_id, status,
                 {k: (summary or {}).get(k) for k in ("num_completed", "num_failed", "num_rejected")})

    async def _wait_drained(self) -> bool:
        self.driver.begin_drain()
        deadline = time.monotonic() + self.options.drain_timeout_s
        while self.driver.num_pending or self.api_in_flight:
            if time.monotonic() > deadline:
                log.warning("drain timed out after %.0fs with %d requests pending", self.options.drain_timeout_s,
                            self.driver.num_pending)
                return False
            await asyncio.sleep(0.05)
        return True

    def request_exit(self, why: str) -> None:
        """Drain, then stop the server (the run is closed by the app's shutdown). Loop thread only."""
        if self.exiting:
            return
        self.exiting = True
        log.info("%s: draining %d pending requests, then exiting", why, self.driver.num_pending)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        self.drained_cleanly = await self._wait_drained()
        if self.server is not None:
            self.server.should_exit = True

    def check_admin(self, request: HTTPRequest) -> JSONResponse | None:
        """None when the request may use admin endpoints, else the error response."""
        if not self.admin_token:
            return JSONResponse(
                error_body(404, f"admin endpoints are disabled: set {ADMIN_TOKEN_ENV} to enable them"), 404
            )
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.admin_token.encode()):
            return JSONResponse(error_body(401, "admin endpoints need 'Authorization: Bearer <token>'"), 401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None


class _Accounting:
    """ASGI middleware: HTTP response counts by route and code, and API requests in flight."""

    def __init__(self, app: Any, daemon: Daemon) -> None:
        self.app = app
        self.daemon = daemon

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        api = path.startswith("/v1/")
        status = 500

        async def send_and_see(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.daemon.metrics
        metrics.http_in_flight.inc()
        if api:
            self.daemon.api_in_flight += 1
        try:
            await self.app(scope, receive, send_and_see)
        finally:
            metrics.http_in_flight.dec()
            if api:
                self.daemon.api_in_flight -= 1
            metrics.http_response(path if path in _ROUTES else "other", status)


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param), status)


def _result_error(r: LiveResult) -> JSONResponse:
    status = r.http_status
    message = r.reason or r.status
    if r.status == "rejected":
        message = f"rejected: {message}"
    elif r.status == "failed":
        message = f"failed: {message}"
    return JSONResponse(error_body(status, message, code=r.status), status,
                        headers={"retry-after": "1"} if status in (429, 503) else None)


def create_app(daemon: Daemon) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await daemon.startup()
        try:
            yield
        finally:
            await daemon.shutdown()

    app = FastAPI(title="controlplane daemon", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(_Accounting, daemon=daemon)
    driver = daemon.driver

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request", where)

    # --- probes and metrics -----------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "draining": driver.draining}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        states: dict[str, int] = {}
        if driver.core is not None:
            for w in driver.core.workers.values():
                states[w.state.value] = states.get(w.state.value, 0) + 1
        body = {"ready": driver.ready, "draining": driver.draining, "workers": states}
        if not driver.ready:
            body["reason"] = "draining" if driver.draining else "no worker is ready yet"
        return JSONResponse(body, 200 if driver.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(daemon.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "controlplane",
                 "max_model_len": m.max_seq_len, "source": m.settings.source_name()}
                for name, m in driver.models.items()
            ],
        }

    # --- completions ----------------------------------------------------------------------------

    async def submit_all(prompts: list[Any], body: Any, max_tokens: int | None, chat: bool) -> list[LiveRequestHandle]:
        kwargs = body.sampling_kwargs()
        handles = []
        for prompt in prompts:
            room = None
            for j in range(body.n):
                seed = body.seed + j if body.seed is not None and body.n > 1 else body.seed
                mt = max_tokens
                if mt is None:  # chat without max_tokens: up to the context, capped
                    if room is None:
                        served = driver.model(body.model)
                        ids = served.encode(prompt, special_tokens=False) if isinstance(prompt, str) else prompt
                        n_prompt = len(ids)
                        room = max(1, served.max_seq_len - n_prompt)
                    mt = min(daemon.options.default_max_tokens, room)
                handles.append(await driver.submit(prompt, max_tokens=mt, model=body.model, seed=seed, chat=chat,
                                                   **kwargs))
        return handles

    async def results_unless_gone(request: HTTPRequest, handles: list[LiveRequestHandle]) -> list[LiveResult] | None:
        """The handles' results, or None if the client disconnects first (the requests are
        then cancelled: their workers stop on them at the next iteration)."""
        results = asyncio.ensure_future(asyncio.gather(*(h.result() for h in handles)))
        while True:
            done, _ = await asyncio.wait({results}, timeout=0.25)
            if done:
                return results.result()
            if await request.is_disconnected():
                for h in handles:
                    h.cancel("client disconnected")
                results.cancel()
                return None

    async def run(request: HTTPRequest, body: Any, prompts: list[Any], max_tokens: int | None,
                  chat: bool) -> Response:
        bad = body.unsupported()
        if bad:
            return _error(400, f"{bad} is not supported by this server", bad)
        if body.stream and (len(prompts) != 1 or body.n != 1):
            return _error(400, "streaming supports one prompt and n=1", "stream")
        if body.model is not None and body.model not in driver.models:
            return _error(404, f"model {body.model!r} is not served here; served: {', '.join(driver.models)}", "model")
        try:
            handles = await submit_all(prompts, body, max_tokens, chat)
        except ServiceUnavailable as exc:
            return JSONResponse(error_body(503, str(exc)), 503, headers={"retry-after": "5"})
        except ModelNotFound as exc:
            return _error(404, str(exc), "model")
        except InvalidRequest as exc:
            return _error(400, str(exc))
        model = body.model or next(iter(driver.models))
        rid = new_id("chatcmpl" if chat else "cmpl")
        if body.stream:
            return await stream(handles[0], rid, model, chat, body.include_usage())
        gathered = await results_unless_gone(request, handles)
        if gathered is None:
            return Response(status_code=499)  # nobody is listening any more
        results = list(gathered)
        failed = next((r for r in results if not r.ok), None)
        if failed is not None:
            return _result_error(failed)
        payload = (chat_response if chat else completion_response)(rid, model, results)
        return JSONResponse(payload, headers={"x-request-id": ",".join(r.request_id for r in results)})

    async def stream(handle: LiveRequestHandle, rid: str, model: str, chat: bool, include_usage: bool) -> Response:
        it = handle.__aiter__()
        try:
            first: str | None = await it.__anext__()
        except StopAsyncIteration:
            first = None
            result = await handle.result()
            if not result.ok:  # nothing was sent yet: a proper HTTP error
                return _result_error(result)
        created = int(time.time())

        def chunk(text: str | None, finish: str | None = None, usage_: dict | None = None) -> dict[str, Any]:
            if chat:
                delta = {"content": text} if text is not None else {}
                return chat_chunk(rid, model, created, delta, finish, usage_)
            return completion_chunk(rid, model, created, text or "", finish, usage_)

        async def events() -> AsyncIterator[bytes]:
            try:
                if chat:
                    yield sse(chat_chunk(rid, model, created, {"role": "assistant", "content": ""}))
                if first:
                    yield sse(chunk(first))
                async for delta in it:
                    yield sse(chunk(delta))
                result = await handle.result()
                if result.ok:
                    yield sse(chunk(None, result.finish_reason))
                    if include_usage:
                        yield sse(chunk(None, usage_=usage([result])))
                else:  # the stream had started: report the failure in-band
                    body = _result_error(result).body
                    yield b"data: " + body + b"\n\n"
                yield sse("[DONE]")
            finally:  # the client went away mid-stream (the server closed this generator)
                handle.cancel("client disconnected")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-request-id": handle.request_id, "cache-control": "no-cache"})

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: HTTPRequest) -> Response:
        prompts = body.prompts()
        if not prompts:
            return _error(400, "prompt is empty", "prompt")
        return await run(request, body, prompts, body.max_tokens if body.max_tokens is not None else 16, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: HTTPRequest) -> Response:
        if not body.messages:
            return _error(400, "messages is empty", "messages")
        if body.model is not None and body.model not in driver.models:
            return _error(404, f"model {body.model!r} is not served here; served: {', '.join(driver.models)}", "model")
        served = driver.model(body.model)
        prompt, _ = served.render_chat(body.messages)
        return await run(request, body, [prompt], body.max_new_tokens(), chat=True)

    # --- admin ----------------------------------------------------------------------------------

    async def admin(request: HTTPRequest) -> None:
        denied = daemon.check_admin(request)
        if denied is not None:
            raise _Denied(denied)

    @app.exception_handler(_Denied)
    async def _denied(request: HTTPRequest, exc: _Denied) -> JSONResponse:
        return exc.response

    @app.get("/admin/plugins", dependencies=[Depends(admin)])
    async def admin_plugins() -> dict[str, Any]:
        return {"run_id": driver.run_id, "plugins": driver.plugin_listing()}

    @app.get("/admin/workers", dependencies=[Depends(admin)])
    async def admin_workers() -> dict[str, Any]:
        return {"pool": driver.pool.kind, "workers": driver.worker_listing()}

    @app.post("/admin/reload", dependencies=[Depends(admin)])
    async def admin_reload() -> JSONResponse:
        opts = daemon.options
        try:
            cfg = await asyncio.to_thread(load_config, opts.config_path, opts.overrides)
            changed = driver.reload(cfg)
        except ConfigError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # e.g. a plugin that fails to load: keep the old plugins
            log.exception("reload failed")
            return _error(400, f"reload failed, old plugins kept: {type(exc).__name__}: {exc}")
        return JSONResponse({"reloaded": True, "config": str(opts.config_path) if opts.config_path else None,
                             **changed})

    @app.post("/admin/drain", dependencies=[Depends(admin)])
    async def admin_drain(request: HTTPRequest) -> JSONResponse:
        exit_after = True
        with contextlib.suppress(Exception):
            body = await request.json()
            if isinstance(body, dict) and "exit" in body:
                exit_after = bool(body["exit"])
        if exit_after:
            daemon.request_exit("POST /admin/drain")
        else:
            driver.begin_drain()
        return JSONResponse({"draining": True, "exit": exit_after, "pending": driver.num_pending}, 202)

    @app.post("/admin/resume", dependencies=[Depends(admin)])
    async def admin_resume() -> JSONResponse:
        if daemon.exiting:
            return _error(409, "the daemon is shutting down")
        driver.resume()
        return JSONResponse({"draining": False})

    return app


class _Denied(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def _server_class() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, but SIGTERM / SIGINT drain first and the process then exits 0."""

        daemon: Daemon

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.daemon.exiting:
                if sig == signal.SIGINT:  # a second Ctrl+C: stop now
                    self.force_exit = True
                    self.should_exit = True
                return
            loop = getattr(self, "_cp_loop", None)
            if loop is None or not self.started:
                self.should_exit = True  # not serving yet: nothing to drain
                return
            name = signal.Signals(sig).name
            loop.call_soon_threadsafe(self.daemon.request_exit, f"received {name}")

        async def serve(self, sockets: Any = None) -> None:
            self._cp_loop = asyncio.get_running_loop()
            await super().serve(sockets)

    return DrainingServer


def serve(config: RunConfig, options: DaemonOptions) -> int:
    """Run the daemon until it is drained and stopped; returns the process exit code."""
    import uvicorn

    daemon = Daemon(config, options)
    uv_config = uvicorn.Config(
        daemon.app, host=options.host, port=options.port, log_level=options.log_level,
        access_log=options.access_log, lifespan="on", timeout_graceful_shutdown=options.drain_timeout_s,
    )
    server = _server_class()(uv_config)
    server.daemon = daemon
    daemon.server = server
    server.run()
    if not server.started:
        log.error("the daemon did not start")
        return 1
    return 0


def admin_token_from_env() -> str | None:
    return os.environ.get(ADMIN_TOKEN_ENV) or None
