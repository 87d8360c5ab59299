"""The serving worker's own pace, probed right before a live run's first arrival.

`profiling.Probe` times grid shapes on the benchmark's own copy of the model, a process other than
the worker that then serves the run. On this 2-core host the pace moves between worker processes
minutes apart by more than inside one (docs/history/calibration.md, fourteenth session: the same decode
shapes 13-25% dearer per sequence in the evaluated runs than in the calibration runs minutes
before, flat within each 70 s run). The worker probe measures the process that will serve: after
its warm-up and before the run's first arrival, the live driver sends it a fixed load - one
request alone, then ``batch`` requests at once, each ``prompt_tokens`` long generating
``output_tokens`` - and the probe's pace is the median over those iterations of their backend time
over the grid model's for the same shapes (1.0: the pace the grid was profiled at).

A run's pace factor is its probe's pace over the reference: the mean probe pace of the two live
runs (light, heavy) of the calibration repeat that was frozen. The factor uses nothing measured
after the run's first arrival (`probe_taken_s` < `started_s`, both on the monotonic clock).
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.live.iteration_samples import IterationSample


@dataclass(frozen=True)
class WorkerProbe:
    """The fixed load a fresh worker serves before the run: shapes from the model's limits, no trace's."""

    prompt_tokens: int = 128
    output_tokens: int = 24
    batch: int = 16

    @classmethod
    def for_limits(cls, max_prompt: int, max_output: int, max_batch: int) -> WorkerProbe:
        """Half the prompt limit, the output limit (at most 24 steps), 16 sequences or the batch limit."""
        return cls(max(8, max_prompt // 2), max(2, min(24, max_output)), max(2, min(16, max_batch)))

    async def serve(self, driver: Any, vocab: int, seed: int) -> None:
        """One request alone (single-sequence decodes), then ``batch`` at once (decodes of ``batch``); stored
        in the run as ``probe-0``, ``probe-1``, ..."""
        rng = random.Random(seed)
        served = 0
        for group in (1, self.batch):
            prompts = [[rng.randrange(4, vocab) for _ in range(self.prompt_tokens)] for _ in range(group)]
            handles = [await driver.submit(p, max_tokens=self.output_tokens, ignore_eos=True,
                                           request_id=f"probe-{served + k}") for k, p in enumerate(prompts)]
            served += group
            await asyncio.gather(*[h.result() for h in handles])


def probe_pace(samples: Sequence[IterationSample], model: Any) -> float | None:
    """The median over ``samples`` of their backend time over ``model``'s for their shape; None: no samples."""
    from sim.calibration import predict_row

    ratios = [s.row["iteration_s"] / p for s in samples if (p := predict_row(model, s.row)) > 0]
    return statistics.median(ratios) if ratios else None


def pace_factor(run_pace: float | None, reference: Sequence[float | None]) -> float:
    """A run's probe pace over the reference (the mean of the frozen calibration runs' probe paces); 1.0
    when either is missing (a run with no probe is simulated on the frozen profile as it is)."""
    known = [p for p in reference if p]
    if not run_pace or not known:
        return 1.0
    return run_pace / statistics.fmean(known)
