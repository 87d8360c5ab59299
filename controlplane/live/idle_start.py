"""What a prefill costs more when it starts on a worker that was idle: the live path's wake-up.

Measured on a CPU worker (2026-12-05, docs/history/calibration.md): the control plane's time around a
prefill (its effective time minus the backend's) was 1.07-1.36 ms after more than 100 ms of idleness
and 0.53-0.77 ms right after another iteration; decodes 0.48-0.51 ms at any gap. One overhead for
both priced low load's prefills 13% low when the calibration's heavy run dominated the fit, or high
load's 9% high when it did not. `idle_prefill_extra` measures the step on the calibration's own
samples and takes it out of the idle prefills, so the profile's rows are back-to-back costs and the
simulator adds the step where its replica was idle (``idle_prefill_extra_s`` in the profile).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

from controlplane.live.iteration_samples import IterationSample

__all__ = ["BACK_TO_BACK_S", "IDLE_GAP_S", "MIN_SAMPLES", "idle_prefill_extra"]

#: A worker idle at least this long before an iteration starts it cold.
IDLE_GAP_S = 0.1
#: An iteration starting within this of the worker's previous one is back to back (the baseline live path).
BACK_TO_BACK_S = 0.001
#: Idle and back-to-back prefills each needed to measure the step; with fewer it is 0.
MIN_SAMPLES = 10


def idle_prefill_extra(samples: Sequence[IterationSample], idle_gap_s: float = IDLE_GAP_S,
                       min_samples: int = MIN_SAMPLES) -> tuple[float, list[IterationSample]]:
    """(the step: the median live path of prefills starting after ``idle_gap_s`` of idleness minus that of
    prefills right after another iteration (gap under ``BACK_TO_BACK_S``), at least 0; ``samples`` with the
    step taken out of the idle prefills' times). Gaps are per worker on the samples' timeline (a worker's
    first iteration counts as after idle). The step is 0, and the samples unchanged, with fewer than
    ``min_samples`` of either."""
    last_end: dict[str, float] = {}
    idle: list[int] = []
    busy: list[int] = []
    ordered = sorted(range(len(samples)), key=lambda i: samples[i].start_s)
    for i in ordered:
        s = samples[i]
        gap = s.start_s - last_end.get(s.worker_id, float("-inf"))
        last_end[s.worker_id] = s.end_s
        if s.num_prefill_seqs:
            if gap >= idle_gap_s:
                idle.append(i)
            elif gap < BACK_TO_BACK_S:
                busy.append(i)
    if len(idle) < min_samples or len(busy) < min_samples:
        return 0.0, list(samples)
    path = [s.effective_s - s.backend_s for s in samples]
    back_to_back = statistics.median(path[i] for i in busy)
    step = max(0.0, statistics.median(path[i] for i in idle) - back_to_back)
    if step == 0.0:
        return 0.0, list(samples)
    out = list(samples)
    for i in idle:  # (never below a back-to-back prefill's live path: an idle one that was quick keeps its own)
        cut = min(step, max(0.0, path[i] - back_to_back))
        out[i] = dataclasses.replace(samples[i], end_s=samples[i].end_s - cut)
    return step, out
