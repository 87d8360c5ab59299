"""`runs show`'s line of what a live run's workers served: the model's source, precision, device, and whether it was
compiled (in which mode), as each worker reported when it was first ready (its ``ready`` event's facts)."""

from __future__ import annotations

from typing import Any

__all__ = ["served_line"]


def served_line(engine: Any, run: dict[str, Any]) -> str | None:
    """``served: small-llama in int8 on cpu, not compiled (small-0, small-1)``, a part per kind of worker; None for a
    simulated run."""
    if run.get("mode") != "live":
        return None
    from controlplane.live.iteration_log import META_KEYS, workers_meta

    kinds: dict[str, list[str]] = {}
    for worker, meta in sorted(workers_meta(engine, run["id"], (*META_KEYS, "compile_mode")).items()):
        kinds.setdefault(_kind(meta), []).append(worker)
    if not kinds:
        return "served: no worker became ready"
    return "served: " + "; ".join(f"{kind} ({', '.join(workers)})" for kind, workers in kinds.items())


def _kind(meta: dict[str, Any]) -> str:
    compiled = meta.get("compiled")
    how = ("" if compiled is None else ", not compiled" if not compiled else
           f", compiled ({meta['compile_mode']})" if meta.get("compile_mode") else ", compiled")
    return f"{meta.get('model', '?')} in {meta.get('precision', '?')} on {meta.get('device', '?')}{how}"
