"""What `sim replay` and `live-replay` refuse of a run's config before they touch the database or start a worker:
`sim.run_checks` (a sweep checks its points with it too)."""

from __future__ import annotations

from sim.run_checks import check_database_folder, checked_run_config

__all__ = ["check_database_folder", "checked_run_config"]
