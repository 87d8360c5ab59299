"""Exceptions raised by the storage layer."""

from __future__ import annotations

from pathlib import Path


class StorageError(RuntimeError):
    """The database could not be written or is in an unusable state.

    ``spill_path`` is set when rows that could not be written were saved to a
    JSON-lines file instead, so the caller can report where they are and
    replay them later with :meth:`RunRecorder.replay_spill`.
    """

    def __init__(self, message: str, *, spill_path: Path | None = None) -> None:
        super().__init__(message)
        self.spill_path = spill_path
