"""The daemon's logs: one format for its own lines and uvicorn's, the access log, and the lines about
requests.

* `configure_logging`: every line, uvicorn's included, as ``TIME LEVEL LOGGER: MESSAGE`` (``--log-format
  text``) or one JSON object a line (``--log-format json``: ``time``, ``level``, ``logger``, ``message``,
  and ``request_id`` on the lines about a request). Under ``json`` the progress bars of transformers and the
  Hugging Face Hub (transformers' "Loading weights" as a model loads from a directory) are off, in the daemon's
  process and the worker processes it starts (`quiet_progress_bars`): they are not log lines.
* `AccessLog`: with ``--access-log``, one line per HTTP request on the ``controlplane.access`` logger, when
  its answer is sent (a stream's at its end): client, request line, status, seconds taken and the
  ``x-request-id`` it answered with (``-`` for none), at INFO whatever ``--log-level``.
* `REQUESTS_LOGGER`: the lines about one request (`controlplane.live.event_log`: a timeout, a
  cancellation, a refusal, a re-route), at INFO, each naming its request id; shown with ``--access-log``
  (or ``--log-level debug``) only, so that a busy daemon's log is not one line per request by default.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

__all__ = ["ACCESS_LOGGER", "LOG_FORMATS", "REQUESTS_LOGGER", "AccessLog", "JsonFormatter", "configure_logging",
           "quiet_progress_bars"]

ACCESS_LOGGER = "controlplane.access"
REQUESTS_LOGGER = "controlplane.requests"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, local time with its offset), ``level``, ``logger``,
    ``message``, ``request_id`` where the line is about a request, ``exception`` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            + f".{int(record.msecs):03d}" + time.strftime("%z", time.localtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "info", log_format: str = "text", *, access_log: bool = False) -> None:
    """The daemon's logging: a handler on the root logger in ``log_format`` for every logger, uvicorn's too
    (`controlplane.live.daemon.serve` passes uvicorn no logging config of its own), at ``level``; the access
    log and the request lines at INFO when ``access_log`` whatever ``level``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: choose one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    detail = logging.INFO if access_log or root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger(ACCESS_LOGGER).setLevel(detail)
    logging.getLogger(REQUESTS_LOGGER).setLevel(detail)
    if log_format == "json":
        quiet_progress_bars()


def quiet_progress_bars() -> None:
    """Turn off the progress bars transformers and the Hugging Face Hub draw on stderr (a model loaded from a
    directory: "Loading weights: 100%|...", and a blank line): in this process, and, through the environment
    ``HF_HUB_DISABLE_PROGRESS_BARS`` (read as they are imported), in the worker processes it starts."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:  # imported already: its setting read the environment then
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def _quiet_by_default(name: str) -> None:
    """Per-request lines stay out of a log at INFO unless asked for (`configure_logging`)."""
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


_quiet_by_default(ACCESS_LOGGER)
_quiet_by_default(REQUESTS_LOGGER)


class AccessLog:
    """ASGI middleware: one ``controlplane.access`` line per HTTP request once it is answered."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        answer: dict[str, Any] = {"status": None, "request_id": None}

        async def sent(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for key, value in message.get("headers") or ():
                    if key.lower() == b"x-request-id":
                        answer["request_id"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except BaseException:
            if answer["status"] is None:
                answer["status"] = 500  # (what uvicorn answers)
            raise
        finally:
            self._line(scope, answer["status"], answer["request_id"], time.monotonic() - start)

    def _line(self, scope: dict[str, Any], status: int | None, request_id: str | None, took_s: float) -> None:
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "-"
        path = scope.get("raw_path") or scope.get("path", "").encode()
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        if scope.get("query_string"):
            path = f"{path}?{scope['query_string'].decode('latin-1')}"
        self.log.info('%s - "%s %s HTTP/%s" %s %.3fs x-request-id=%s', where, scope.get("method"), path,
                      scope.get("http_version", "1.1"), status if status is not None else "-", took_s,
                      request_id or "-", extra={"request_id": request_id} if request_id else None)
