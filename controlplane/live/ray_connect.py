"""Joining a Ray cluster without hanging, and noticing when its head is gone.

``ray.init(address=...)`` with nothing listening at the address does not fail: Ray's C++ client
retries for minutes, logging only its own warnings. `check_reachable` opens a TCP connection to
the cluster's GCS (the address Ray would connect to, ``auto`` and ``$RAY_ADDRESS`` resolved as Ray
resolves them) with a short timeout first, so an address with no cluster behind it is one clear
`ConnectionError` (the daemon's ``--ray-address``, ``sim sweep --ray-address``).

`gcs_reachable` is the same check, for the Ray pool's health monitor: once the head is gone, every
call that needs the GCS blocks its thread, and about 60 s later (``RAY_gcs_rpc_server_reconnect_timeout_s``)
Ray's client ends the process. `no_auto_init` turns off Ray's implicit ``ray.init()`` on a call
made while Ray is not initialised (after ``ray.shutdown()``, it started a new local Ray instance).
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

__all__ = ["CONNECT_TIMEOUT_S", "check_reachable", "gcs_address", "gcs_reachable", "host_port", "no_auto_init"]

#: How long the TCP connection to a cluster's GCS may take before the address is refused.
CONNECT_TIMEOUT_S = 5.0


def gcs_address(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of the GCS that ``ray.init(address=address)`` connects to; None where Ray
    starts a local instance (no address, ``local``) or finds no cluster by itself (``auto`` with none
    running: Ray then says so at once). A ``ray://`` (Ray Client) address is its server's host and port."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address == "local":
        return None
    if address.startswith("ray://"):
        hostport: str | None = address.removeprefix("ray://").split("/", 1)[0]
    else:
        hostport = address
        with contextlib.suppress(Exception):  # (as Ray resolves it: `auto`, localhost to this node's address)
            from ray._private.services import canonicalize_bootstrap_address

            hostport = canonicalize_bootstrap_address(address)
    return host_port(hostport)


def host_port(text: str | None) -> tuple[str, int] | None:
    """``"host:port"`` as ``(host, port)``; None for anything else (Ray refuses it in its own words)."""
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def gcs_reachable(where: tuple[str, int], timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether something accepts a TCP connection at ``where`` within ``timeout_s``."""
    try:
        with socket.create_connection(where, timeout=timeout_s):
            return True
    except OSError:
        return False


def check_reachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise `ConnectionError` when nothing listens where ``address`` points (Ray would retry for minutes)."""
    where = gcs_address(address)
    if where is None or gcs_reachable(where, timeout_s):
        return
    host, port = where
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise ConnectionError(f"nothing answers at {shown} (no connection within {timeout_s:g} s): no Ray cluster "
                          "is running there")


def no_auto_init(ray: Any) -> None:
    """Turn off Ray's implicit ``ray.init()`` in this process (``RAY_ENABLE_AUTO_CONNECT=0``, which
    Ray reads once, at its import): a call after ``ray.shutdown()`` then raises instead of starting
    a new local Ray instance."""
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    with contextlib.suppress(Exception):  # (a private module: where it is gone, the pool's own guards remain)
        from ray._private import auto_init_hook

        auto_init_hook.enable_auto_connect = False
