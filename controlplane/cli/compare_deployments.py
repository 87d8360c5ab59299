"""`runs compare`'s note when the compared runs ran on different deployments: other models, other GPUs, or
(between simulated runs, or between live ones) another latency model or profile, or another live worker. Their
differences then mix the policies' effect with the hardware's: a live CPU run beside a replay on the default
config's simulated A100s reads as TTFT -99%. Policies, replicas and scaling limits may differ (what a comparison
of policies compares); a live run beside a simulated one is not told apart by its latency model (the simulator's
latency model is what that comparison checks), only by its models and GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ASPECTS", "deployment_differences", "deployments_note"]

#: What is compared, in the note's order: JSON key -> its word in the note.
ASPECTS = {"models": "models", "gpus": "GPUs", "latency_models": "latency models"}


def _models(run: dict[str, Any]) -> list[dict[str, Any]]:
    models = ((run.get("config") or {}).get("cluster") or {}).get("models") or []
    return sorted((m for m in models if isinstance(m, dict)), key=lambda m: str(m.get("name")))


def _gpu(model: dict[str, Any]) -> str:
    gpu, n = model.get("gpu") or "-", model.get("gpus_per_replica") or 1
    return gpu if n == 1 else f"{gpu} x{n}"


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if v is not None)


def _latency(run: dict[str, Any], model: dict[str, Any]) -> str:
    """What times the deployment's iterations: a live run's worker (its model source, precision, compiled or
    not); a simulated run's latency model with its settings, a profile file by its name and content's SHA-256
    (``config["latency_files"]``: the same file under two paths is the same profile, an edited one is not)."""
    if run.get("mode") == "live":
        worker = model.get("worker") or {}
        source = worker.get("preset") or worker.get("path") or (
            f"{(worker.get('config') or {}).get('model_type')}-custom" if worker.get("config") else "tiny-llama")
        return f"live worker {source} ({model.get('precision') or worker.get('precision') or 'auto'}" + (
            ", compiled)" if worker.get("compile") else ")")
    settings = dict(model.get("latency") or {})
    file = ((run.get("config") or {}).get("latency_files") or {}).get(model.get("name"))
    if file and "path" in settings:
        settings["path"] = f"{Path(file['path']).name} sha256 {file['sha256'][:12]}"
    said = _settings(settings)
    return f"{model.get('latency_model') or '-'}" + (f" ({said})" if said else "")


def _aspects(run: dict[str, Any]) -> dict[str, list[str]]:
    models = _models(run)
    several = len(models) > 1  # (a run of several models: each GPU and latency model by its model's name)

    def named(m: dict[str, Any], text: str) -> str:
        return f"{m.get('name')}: {text}" if several else text

    return {"models": [str(m.get("name")) for m in models],
            "gpus": [named(m, _gpu(m)) for m in models],
            "latency_models": [named(m, _latency(run, m)) for m in models]}


def deployment_differences(runs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """The aspects (`ASPECTS`) in which the runs' deployments differ, each as run id -> that run's values
    (``{}`` when they do not differ). Latency models are compared among runs of one mode only: between a live
    run and a simulated one, how the simulator times iterations is what the comparison checks."""
    seen = {r["id"]: (r.get("mode"), _aspects(r)) for r in runs if _models(r)}
    found: dict[str, dict[str, list[str]]] = {}
    for aspect in ASPECTS:
        modes = {mode for mode, _ in seen.values()} if aspect == "latency_models" else {None}
        for mode in sorted(modes, key=str):
            ones = {rid: values[aspect] for rid, (m, values) in seen.items()
                    if aspect != "latency_models" or m == mode}
            if len({tuple(v) for v in ones.values()}) > 1:
                found.setdefault(aspect, {}).update({str(rid): v for rid, v in ones.items()})
    return found


def deployments_note(runs: tuple[dict[str, Any], ...] | list[dict[str, Any]],
                     differences: dict[str, dict[str, list[str]]] | None = None) -> str:
    """A note (for stderr) when the runs' deployments differ (`deployment_differences`), naming each run's;
    '' when they do not. Beside a live run, it says how to set the simulator beside it."""
    differences = deployment_differences(runs) if differences is None else differences
    if not differences:
        return ""
    said = "; ".join(f"{ASPECTS[aspect]}: " + ", ".join(f"run {rid} {' + '.join(v) or '-'}" for rid, v in by_run.items())
                     for aspect, by_run in differences.items())
    note = (f"note: the runs' deployments differ ({said}): their differences mix the policies' effect with the "
            "hardware's")
    if len({r.get("mode") for r in runs}) > 1:
        note += ("; to set the simulator beside a live run, replay with a --config of the live deployment (its "
                 "model's name, its gpu and a measured latency profile: docs/calibration.md)")
    return note
