"""`controlplane daemon` in its own process on a free loopback port, for the benchmarks that talk
to it over HTTP (live_throughput, db_outage, soak)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_command() -> list[str]:
    """``controlplane daemon`` from this interpreter's environment (the command a user runs)."""
    script = Path(sys.executable).with_name("controlplane")
    if script.exists():
        return [str(script), "daemon"]
    found = shutil.which("controlplane")
    if found:
        return [found, "daemon"]
    return [sys.executable, "-c", "from controlplane.cli import main; main()", "daemon"]


@contextlib.contextmanager
def running_daemon(args: Sequence[str], *, cwd: Path, log_path: Path, env: Mapping[str, str] | None = None,
                   ready_timeout_s: float = 300, stop_timeout_s: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the daemon with ``args`` (the port is added), wait until ``/readyz`` answers 200, yield
    (base URL, process); SIGTERM it on the way out (killed after ``stop_timeout_s``)."""
    import httpx

    port = free_port()
    cmd = [*daemon_command(), *args, "--port", str(port)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the daemon did not become ready in {ready_timeout_s:.0f}s")
                time.sleep(0.2)
            yield base, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("daemon_run.py", "live_throughput.py [--help] (also live_prefix_reuse.py, db_outage.py)"))


def add_daemon_options(ap: Any) -> None:
    """The daemon options the live benchmarks share (``ap``: an ``argparse.ArgumentParser``): its workers, their
    preset and pool, and its request timeout."""
    from bench_cli import positive_float, positive_int

    ap.add_argument("--workers", type=positive_int, default=2, help="the daemon's workers (default: %(default)s)")
    ap.add_argument("--preset", default="tiny-llama", help="the workers' random-weight preset (default: %(default)s)")
    ap.add_argument("--pool", default="process", choices=("thread", "process"),
                    help="where the daemon's workers run (default: %(default)s)")
    ap.add_argument("--request-timeout-s", type=positive_float, default=120.0,
                    help="the daemon's --request-timeout: a request unanswered this long gets 504 (default: "
                         "%(default)s)")
