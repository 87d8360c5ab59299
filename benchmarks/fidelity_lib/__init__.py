"""The pieces of ``benchmarks/fidelity.py``: simulator fidelity against a live worker.

* `slices`: trace windows (calibration, evaluated slices, capacity) and their load.
* `window_plan`: each window's size, checked before the live runs that use it (a trace too short: exit 2).
* `replay`: one slice replayed live (a fresh worker behind the live driver) or simulated.
* `metrics`: percentiles, signed errors, the live-vs-live noise floor, per-request agreement.
* `profiling`: the generic grid profile of the worker and the short pace probe.
* `pace`: pace corrections that only see measurements taken before the run they correct.
* `capacity`: the highest rate within the SLO, live and simulated.
* `attribution`: a miss split into latency model and scheduling.
* `protocol` / `protocol_report`: the operator's out-of-sample protocol (the default).
* `warn_once`: a profile's far-rows warning once per profile, not at every fit.
* `insample*`: the older in-sample diagnostics (``--protocol in-sample``).
"""
