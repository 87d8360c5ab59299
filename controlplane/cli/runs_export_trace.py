"""`controlplane runs export RUN --what trace`: a run's requests as a canonical trace, to replay its traffic.

A run's request rows are its traffic as it arrived (a daemon's run: what its clients sent), with what became of
each request beside it. Read as a trace, a ``--what requests`` export replays it wrong: a request that did not
complete (rejected, failed, cancelled, in flight) stored the tokens it generated before it left as its
``output_tokens`` (0 for a rejected one), and its text cells carry the ``'`` that keeps a spreadsheet from
running them as formulas. This writes the columns the canonical reader reads (`sim.traces.canonical`):
``request_id``, ``arrival_s``, ``prompt_tokens``, ``output_tokens`` (the tokens it was to generate,
``max_output_tokens``, where stored; else those it generated), ``model``, ``tenant`` and ``priority``, in arrival
order, each value as stored: a trace, not a spreadsheet, so nothing is prefixed. The request table keeps no
prompt text, prefix hashes or generation parameters: the trace has none.
"""

from __future__ import annotations

import csv
import json
from typing import Any, NamedTuple, TextIO

__all__ = ["TRACE_COLUMNS", "TraceWritten", "lengths_unknown_note", "write_run_trace"]

#: The canonical trace's columns this writes, in order (`sim.traces.canonical.REQUIRED`, then the optional ones
#: the request table has).
TRACE_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens", "model", "tenant", "priority")


class TraceWritten(NamedTuple):
    """What `write_run_trace` wrote: ``requests``, and ``lengths_unknown``, those that did not complete with no
    ``max_output_tokens`` stored (rows of a release before revision 0004): their output is what they generated."""

    requests: int
    lengths_unknown: int


def _trace_row(row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A request row as a canonical trace's row, and whether its output length is only what it generated."""
    wanted = row.get("max_output_tokens")
    unknown = wanted is None and row.get("status") != "completed"
    return {"request_id": str(row["request_id"]), "arrival_s": float(row["arrival_s"]),
            "prompt_tokens": int(row["prompt_tokens"]),
            "output_tokens": int(wanted if wanted is not None else row["output_tokens"]),
            "model": row.get("model"), "tenant": row.get("tenant"), "priority": row.get("priority") or 0}, unknown


def write_run_trace(engine: Any, run_id: int, fmt: str, out: TextIO) -> TraceWritten:
    """Write run ``run_id``'s requests to ``out`` as a canonical trace, ``fmt`` ``csv`` or ``jsonl`` (open ``out``
    with ``newline=""`` for CSV). ``ValueError`` for another format, and for a CSV cell holding a line that its
    reader would take for a row (`sim.traces.csv_quotes.row_in_field`: JSON Lines holds any text)."""
    from controlplane.storage import iter_request_rows

    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"--what trace writes a canonical trace, CSV or JSON Lines (.csv or .jsonl, .gz added for "
                         f"gzip), which `sim replay --format canonical` reads; not {fmt.upper()}")
    rows = iter_request_rows(engine, run_id)
    count = unknown = 0
    if fmt == "jsonl":
        for row in rows:
            trace_row, guessed = _trace_row(row)
            obj = {k: v for k, v in trace_row.items() if v is not None and (k != "priority" or v)}
            out.write(json.dumps(obj, ensure_ascii=False))
            out.write("\n")
            count, unknown = count + 1, unknown + guessed
        return TraceWritten(count, unknown)
    from sim.traces.csv_quotes import row_in_field, row_shape

    shape = row_shape(len(TRACE_COLUMNS), ints=(2, 3), numbers=(1,))  # (what the reader takes for a row)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRACE_COLUMNS)
    for row in rows:
        trace_row, guessed = _trace_row(row)
        cells = ["" if trace_row[c] is None else trace_row[c] for c in TRACE_COLUMNS]
        cells[1] = repr(trace_row["arrival_s"])  # (every digit: the replay's arrivals as stored)
        for name, value in zip(TRACE_COLUMNS, cells):
            if isinstance(value, str) and ("\n" in value or "\r" in value) and row_in_field(value, shape):
                raise ValueError(f"request {trace_row['request_id']!r}: its {name} holds a line that reads as a row "
                                 "of a CSV trace, which its reader refuses as a quote left open; export the trace as "
                                 "JSON Lines (-o trace.jsonl), which holds any text")
        writer.writerow(cells)
        count, unknown = count + 1, unknown + guessed
    return TraceWritten(count, unknown)


def lengths_unknown_note(written: TraceWritten) -> str | None:
    """The stderr note for requests whose output length the trace gives as what they generated; None if none."""
    if not written.lengths_unknown:
        return None
    return (f"note: {written.lengths_unknown:,} of the {written.requests:,} requests did not complete and were stored "
            "without the tokens they were to generate (max_output_tokens: rows of a release before schema revision "
            "0004): the trace gives them the tokens they generated before they left (0 for a rejected one)")
