"""A `controlplane runs export --what requests` file read as a canonical trace: a warning, not a trace.

The export's columns hold the canonical ones (``request_id``, ``arrival_s``, ``prompt_tokens``,
``output_tokens``, ``model``, ``tenant``, ``priority``), so the canonical reader reads it, ignoring the rest. But
its ``output_tokens`` are what each request generated (0 for a rejected one, a part for one cut short: their
``max_output_tokens`` is not read), and in CSV a text cell starting with ``=``, ``+``, ``-`` or ``@`` carries the
``'`` the export adds against spreadsheet formulas (tenant ``-ops`` is ``'-ops``), which a trace reads as written.
`runs export --what trace` writes a run's requests as a trace (neither of these). The reader reads such a file
all the same, with this warning once (its own ``warning:`` line on the command line:
`controlplane.cli.shown_warnings`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from ._io import PathLike

__all__ = ["EXPORT_ONLY_COLUMNS", "ExportNotTraceWarning", "warn_if_export"]

#: Columns of a ``runs export --what requests`` file that a trace does not have.
EXPORT_ONLY_COLUMNS = ("first_token_s", "finish_s", "status", "max_output_tokens")


class ExportNotTraceWarning(UserWarning):
    """A run's ``--what requests`` export read as a trace. ``one_line``: shown as one ``warning:`` line."""

    one_line = True


def warn_if_export(path: PathLike, columns: Iterable[str], *, csv: bool) -> None:
    """Warn (`ExportNotTraceWarning`) where ``columns`` (a CSV header, a JSONL row's keys) are a runs export's."""
    names = {str(c).strip().lower() for c in columns}
    if not all(c in names for c in EXPORT_ONLY_COLUMNS):
        return
    quoted = (", and its text cells starting with = + - @ carry the ' the export adds for spreadsheets (read as part "
              "of the request id, model or tenant)") if csv else ""
    warnings.warn(ExportNotTraceWarning(
        f"{path} is a `controlplane runs export --what requests` file, not a trace: a request that did not complete "
        f"is replayed with the output tokens it generated (0 for a rejected one: max_output_tokens is not read)"
        f"{quoted}; `controlplane runs export RUN --what trace` writes a run's requests as a trace to replay"),
        stacklevel=3)
