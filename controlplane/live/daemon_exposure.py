"""What keeps a daemon reachable from a network usable: the connection limits it gives uvicorn, the open-files
limit it raises, accept errors logged once a minute instead of a traceback each, and the start's warning when
it listens beyond loopback with no API keys ([daemon.md](../../docs/daemon.md#exposing-the-daemon)).

uvicorn closes a connection that stays idle between requests (``timeout_keep_alive``) and answers 503 beyond
``limit_concurrency`` connections or requests, but it has no deadline for a request's headers (a client sending
them a byte at a time holds its connection open for good); the body's deadline is the daemon's own
(`RequestGuard`'s ``body_timeout_s``). Hence a reverse proxy with its own timeouts in front of an exposed daemon.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("controlplane.daemon")

__all__ = ["ACCEPT_ERROR", "AcceptErrorLog", "exposure_warning", "install_accept_error_log", "open_files_warning",
           "raise_open_file_limit"]

#: asyncio's message when ``accept()`` fails for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM).
ACCEPT_ERROR = "socket.accept() out of system resource"
#: File descriptors the daemon needs besides its connections (worker pipes, the database, logs, models).
FD_HEADROOM = 128


def exposure_warning(host: str, api_keys: Sequence[Any]) -> str | None:
    """The start's warning when ``host`` is not a loopback address and no API key is configured: anyone who
    reaches the port may use the inference endpoints. None otherwise."""
    if api_keys or _loopback(host):
        return None
    return (f"listening on {host}, beyond loopback, with no API keys: anyone who can reach this port may use the "
            "inference endpoints (and /metrics, /healthz, /readyz answer everyone); set auth.api_keys, and put a "
            "reverse proxy with TLS and timeouts in front (docs/daemon.md#exposing-the-daemon)")


def _loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def raise_open_file_limit() -> int | None:
    """Raise this process's soft limit of open files to its hard limit (often 1,024 of 524,288: a thousand
    idle connections then made every ``accept()`` fail, /healthz included); returns the soft limit now, None
    where the platform has none."""
    try:
        import resource
    except ImportError:  # (Windows)
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return None if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # a hard limit the kernel caps lower (macOS: OPEN_MAX)
        return soft
    log.debug("open files limit raised from %d to %s", soft, hard)
    return None if hard == resource.RLIM_INFINITY else hard


def open_files_warning(open_files: int | None, limit_concurrency: int | None) -> str | None:
    """A warning when the open files limit is reached before ``limit_concurrency`` (connections would then fail
    to be accepted, rather than be answered 503)."""
    if open_files is None:
        return None
    if limit_concurrency is None or open_files < limit_concurrency + FD_HEADROOM:
        cap = f"--limit-concurrency {limit_concurrency}" if limit_concurrency else "no --limit-concurrency"
        return (f"the open files limit is {open_files} with {cap}: connections beyond it cannot be accepted "
                f"(/healthz included); raise it (ulimit -n) or lower --limit-concurrency below {open_files - FD_HEADROOM}")
    return None


class AcceptErrorLog:
    """An event loop's exception handler that logs asyncio's ``socket.accept() out of system resource`` once per
    ``interval_s``, with how many there were, instead of a traceback each (asyncio retries every accept of its
    backlog: tens of megabytes of log a minute while the open files limit is reached). Anything else goes to
    ``previous`` (the loop's handler before, else its default)."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 previous: Callable[[Any, dict], None] | None = None) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.previous = previous
        self.unlogged = 0  # accept errors since the last line
        self.total = 0
        self._last: float | None = None

    def __call__(self, loop: Any, context: dict) -> None:
        if not str(context.get("message", "")).startswith(ACCEPT_ERROR):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.total += 1
        self.unlogged += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return
        exc = context.get("exception")
        what = f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc or "out of a system resource")
        since = "" if self._last is None else f" in the last {now - self._last:.0f} s"
        times = "once" if self.unlogged == 1 else f"{self.unlogged} times"
        log.error("cannot accept new connections: %s (%s%s); they wait in the listen queue until a connection "
                  "closes; logged again at most every %.0f s", what, times, since, self.interval_s)
        self._last, self.unlogged = now, 0


def install_accept_error_log(loop: Any, interval_s: float = 60.0) -> AcceptErrorLog:
    """Put an `AcceptErrorLog` on ``loop`` (the handler it had before still handles the rest)."""
    handler = AcceptErrorLog(interval_s, previous=loop.get_exception_handler())
    loop.set_exception_handler(handler)
    return handler
