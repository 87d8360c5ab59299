"""Sweeps and configuration search over run configs (docs/sweeps.md).

``load_spec`` reads a ``SPEC.yaml``; ``run_sweep`` runs every point once per seed on a backend
(Ray, a process pool, or this process) and stores each run under one sweep id;
``search`` finds the cheapest configuration meeting SLO attainment targets.
"""

from sim.sweep.backends import BACKENDS, make_backend, ray_available
from sim.sweep.run import SweepResult, run_sweep
from sim.sweep.spec import LoadedSpec, SweepSpec, load_spec

__all__ = ["BACKENDS", "LoadedSpec", "SweepResult", "SweepSpec", "load_spec", "make_backend", "ray_available",
           "run_sweep"]
