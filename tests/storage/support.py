"""Row builders shared by the storage tests."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from controlplane.storage import RunRecorder

STARTED = datetime(2025, 6, 1, 8, 0, 0, tzinfo=timezone.utc)
FINISHED = datetime(2025, 6, 1, 8, 5, 30, tzinfo=timezone.utc)


def start_run(recorder: RunRecorder, **overrides: Any) -> int:
    args: dict[str, Any] = dict(
        name="unit",
        mode="sim",
        trace="traces/tiny.jsonl",
        trace_format="jsonl",
        seed=7,
        config={"cluster": {"workers": 2}, "router": "least_loaded"},
        plugins=[{"name": "defaults", "dist": "controlplane", "version": "0.1.0"}],
        started_at=STARTED,
    )
    args.update(overrides)
    return recorder.start_run(**args)


def request_row(i: int, **overrides: Any) -> dict[str, Any]:
    arrival = i * 0.5
    row: dict[str, Any] = dict(
        request_id=f"req-{i:06d}",
        model="llama-8b",
        tenant=f"t{i % 3}",
        worker_id=f"w{i % 2}",
        status="completed",
        arrival_s=arrival,
        scheduled_s=arrival + 0.25,
        first_token_s=arrival + 0.5,
        finish_s=arrival + 2.5,
        prompt_tokens=100 + i,
        output_tokens=41,
    )
    row.update(overrides)
    return row


def decision_row(i: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(
        time_s=i * 0.5,
        plugin="least_loaded",
        hook="route",
        subject=f"req-{i:06d}",
        action="route",
        payload={"worker": f"w{i % 2}", "load": [1, 2]},
        reason="lowest queue depth",
    )
    row.update(overrides)
    return row


def metric_row(i: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(time_s=i * 1.0, name="queue_depth", value=float(i % 5), labels={"worker": "w0"})
    row.update(overrides)
    return row


def worker_event_row(i: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(time_s=i * 10.0, worker_id="w0", kind="ready", detail={"gpu": "H100"})
    row.update(overrides)
    return row


def spill_beside(info, path):
    """The spill file a ``StorageError`` (``pytest.raises`` info) names: beside the SQLite file at
    ``path`` and named in the message."""
    spill_path = info.value.spill_path
    assert spill_path is not None and spill_path.parent == path.parent and str(spill_path) in str(info.value)
    return spill_path
