"""The daemon's FastAPI app: its routers, error handlers, the accounting middleware and the
lifespan that starts and stops the daemon's run."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from controlplane.live import daemon_admin, daemon_api, daemon_probes
from controlplane.live.daemon_deps import error_handlers, key_refusal
from controlplane.live.request_guard import RequestGuard

if TYPE_CHECKING:
    from controlplane.live.daemon import Daemon

__all__ = ["ROUTES", "create_app", "route_label"]

#: Paths counted under their own name in ``controlplane_http_requests_total`` (others: "other").
ROUTES = frozenset({
    "/v1/completions", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics",
    "/admin/plugins", "/admin/workers", "/admin/reload", "/admin/drain", "/admin/resume",
})
#: Paths with an id counted under their template (one label for every id, so the label set stays bounded).
ROUTE_TEMPLATES = {"/v1/requests/": "/v1/requests/{id}", "/v1/models/": "/v1/models/{id}"}
#: Templates whose id may hold a ``/`` (a model's name: ``meta-llama/Llama-3-8B``, the route's ``{model_id:path}``).
_SLASHED_IDS = frozenset({"/v1/models/"})


def route_label(path: str) -> str:
    """The ``route`` label of ``path`` in ``controlplane_http_requests_total``: a known route, a route
    template for a path with an id (``/v1/requests/req-7``: ``/v1/requests/{id}``; ``/v1/models/org/name``:
    ``/v1/models/{id}``), else "other"."""
    if path in ROUTES:
        return path
    for prefix, template in ROUTE_TEMPLATES.items():
        rest = path[len(prefix):]
        if path.startswith(prefix) and rest and (prefix in _SLASHED_IDS or "/" not in rest):
            return template
    return "other"


def create_app(daemon: Daemon) -> FastAPI:
    """The app serving ``daemon`` (routes find it through ``app.state.daemon``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await daemon.startup()  # (done already when `daemon.serve` runs it)
        try:
            yield
        finally:
            await daemon.shutdown()

    app = FastAPI(title="controlplane daemon", lifespan=lifespan, docs_url=None, redoc_url=None,
                  exception_handlers=error_handlers)
    app.state.daemon = daemon
    # the API key, then size, JSON, depth, Unicode: before anything parses the body
    app.add_middleware(RequestGuard, authorize=functools.partial(key_refusal, daemon),
                       body_timeout_s=daemon.options.body_timeout_s)
    app.add_middleware(_Accounting, daemon=daemon)  # outermost: counts the guard's answers too
    app.include_router(daemon_probes.router)
    app.include_router(daemon_api.router)
    app.include_router(daemon_admin.router)
    return app


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
            metrics.http_response(route_label(path), status)
