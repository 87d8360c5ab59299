"""The machine's CPU while a live run plays: this process (the driver and the client), its children (the
worker) and everything else (other jobs on a shared host).

A live worker on a CPU shares the cores with whatever else runs: when other jobs take more than the
cores the driver and the worker leave free, the worker is descheduled in the middle of its
iterations and every one of them takes longer - on this project's 2-core host, 0.57 cores for the
worker in a second whose iterations wanted 1.26 s (2026-12-03). A frozen profile cannot foresee that;
`contention` says how much of it a run had, so a round that missed can be read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["CpuSampler", "contention", "cpu_per_window", "host_text"]
#: Why a run's worker share is not known (`contention`'s ``worker_cpu_note``).
IN_PROCESS = "n/a: the worker runs in this process (--pool thread), its CPU not told apart from the driver's"
NEVER_BUSY = "n/a: no 1 s window with the worker computing more than half of it"


class CpuSampler:
    """CPU seconds used every ``period_s`` by this process (the driver, the client), its children (the
    worker) and everything else on the machine (other jobs), from a background thread."""

    def __init__(self, period_s: float = 0.25) -> None:
        import psutil

        self.period_s, self.rows, self._stop = period_s, [], threading.Event()
        self._me = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[float, float, float, float]:
        import psutil

        mine = self._me.cpu_times()
        kids = 0.0
        for c in self._me.children(recursive=True):
            try:
                t = c.cpu_times()
                kids += t.user + t.system
            except psutil.Error:
                pass
        total = psutil.cpu_times()
        busy = total.user + total.system + total.nice + getattr(total, "irq", 0) + getattr(total, "softirq", 0)
        return time.perf_counter(), mine.user + mine.system, kids, busy

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.rows.append(self._sample())

    def start(self) -> CpuSampler:
        self.rows.append(self._sample())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def per_second(self, clock: tuple[float, float], t0: float) -> list[tuple[float, float, float, float]]:
        """(run time since ``t0``, driver, worker, others) CPU cores busy in each sampling period."""
        out = []
        for (w0, d0, k0, b0), (w1, d1, k1, b1) in zip(self.rows, self.rows[1:]):
            dt = w1 - w0
            if dt <= 0 or k1 < k0:  # the worker process started or ended between the two samples
                continue
            t = w0 - clock[0] + clock[1] - t0
            out.append((t, (d1 - d0) / dt, (k1 - k0) / dt, max(0.0, (b1 - b0) - (d1 - d0) - (k1 - k0)) / dt))
        return out



def cpu_per_window(rows: list[tuple[float, float, float, float]], step_s: float) -> list[tuple[float, ...]]:
    acc: dict[int, list[float]] = {}
    for t, d, k, o in rows:
        if t < 0:
            continue
        a = acc.setdefault(int(t // step_s), [0.0, 0.0, 0.0, 0])
        a[0] += d
        a[1] += k
        a[2] += o
        a[3] += 1
    return [(i * step_s, a[0] / a[3], a[1] / a[3], a[2] / a[3]) for i, a in sorted(acc.items())]


def contention(sampler: CpuSampler, clock: tuple[float, float] | None, t0: float, backend_s_by_window: dict[int, float],
               window_s: float = 1.0, *, worker_is_child: bool = True) -> dict[str, Any]:
    """Over a run: the mean and busiest cores other jobs used, and the worker's CPU over its iterations'
    backend time in the windows where it was busy (1.0: it ran whenever it computed; 0.6: descheduled
    40% of the time). A worker in this process (``worker_is_child`` false: the thread pool) cannot be
    told apart from the driver: its share is None, and ``worker_cpu_note`` says why (or that it was never busy)."""
    if clock is None or len(sampler.rows) < 2:
        return {}
    per = cpu_per_window(sampler.per_second(clock, t0), window_s)
    if not per:
        return {}
    busy = [(k, backend_s_by_window.get(int(t // window_s), 0.0) / window_s) for t, _, k, _ in per]
    worked = [(k, b) for k, b in busy if b > 0.5]
    out = {"others_cores_mean": round(sum(o for *_, o in per) / len(per), 3),
           "others_cores_max": round(max(o for *_, o in per), 3),
           "worker_cpu_per_backend": (round(sum(k for k, _ in worked) / sum(b for _, b in worked), 3)
                                      if worked and worker_is_child else None)}
    if out["worker_cpu_per_backend"] is None:
        out["worker_cpu_note"] = IN_PROCESS if not worker_is_child else NEVER_BUSY
    return out


def host_text(facts: dict[str, Any]) -> str:
    """A run's `contention` facts in words for its progress line; "n/a" and why where one is not known."""
    if facts.get("others_cores_mean") is None:
        return "host: n/a (the run ended before its CPU was sampled twice, 0.5 s apart)"
    share = facts.get("worker_cpu_per_backend")
    worker = (f"worker on a core {share:.3f} of its iterations' time" if share is not None
              else f"worker on a core: {facts.get('worker_cpu_note') or 'n/a'}")
    return f"host: other jobs {facts['others_cores_mean']:.3f} cores (max {facts['others_cores_max']:.3f}), {worker}"


def backend_by_window(samples: Sequence[Any], t0: float, window_s: float = 1.0) -> dict[int, float]:
    """Backend seconds of the iterations started in each ``window_s`` since ``t0``."""
    out: dict[int, float] = {}
    for s in samples:
        k = int((s.start_s - t0) // window_s)
        out[k] = out.get(k, 0.0) + s.backend_s
    return out
