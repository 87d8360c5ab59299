"""Which process owns a run: host name, pid and the process's start time, kept under the run's
``config["process"]`` when its row is inserted (a replay, a sweep's run, the daemon), so that
`controlplane.storage.crashed` can tell a run whose process is gone. Standard library only: the
simulator's start imports it without SQLAlchemy."""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["pid_namespace", "process_alive", "process_marker"]


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        return stat[stat.rindex(")") + 2:].split()
    except ValueError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None."""
    fields = _stat(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (ValueError, IndexError):
        return None


def pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[4026531836]``, Linux), or None. Containers that share
    a host name (host networking) have PID namespaces of their own: a pid names a process only in
    its namespace."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_marker(pid: int | None = None) -> dict[str, Any]:
    """Who owns a run: this host, the pid, (where known) the process's start time and the PID
    namespace its pid is in."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "start_ticks": _start_ticks(pid), "pid_ns": pid_namespace()}


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs on this host and is the same process (same start time, when known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _stat(pid)
    if fields is not None and fields[:1] == ["Z"]:
        return False  # killed, not yet reaped by its parent: it will never close its run
    if start_ticks is not None:
        now = _start_ticks(pid)
        if now is not None and now != start_ticks:
            return False  # the pid was reused
        if now is None and os.path.isdir("/proc"):
            return os.path.exists(f"/proc/{pid}")
    return True
