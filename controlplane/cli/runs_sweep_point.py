"""`runs show`'s line for a run of a sweep or search: its sweep, stage, and the point's overrides of the sweep's
config (``run.notes``)."""

from __future__ import annotations

import json

from controlplane.cli.common import fmt_value


def sweep_point_line(run: dict) -> str | None:
    """A sweep's (or search's) run: its sweep, and the point's overrides of the sweep's config (``run.notes``)."""
    if run.get("sweep_id") is None:
        return None
    try:
        notes = json.loads(run.get("notes") or "{}")
    except ValueError:
        notes = {}
    overrides = notes.get("overrides") if isinstance(notes, dict) else None
    stage = f" (stage {notes['stage']})" if isinstance(notes, dict) and notes.get("stage") else ""
    said = "; ".join(f"{k} = {json.dumps(v) if isinstance(v, (list, dict)) else fmt_value(v)}"
                     for k, v in sorted((overrides or {}).items())) or "none (the sweep's base config)"
    return f"sweep {run['sweep_id']}{stage}, overrides: {said}"
