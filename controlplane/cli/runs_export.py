"""`controlplane runs export -o FILE`: the format and the compression the file's name decides.

``.csv``, ``.json`` and ``.jsonl`` (or ``.ndjson``) name the format, and ``.gz`` after one of them
(``rows.jsonl.gz``) compresses it with gzip. ``--format`` that contradicts the name is an error, as is
a name whose extension is none of these (``rows.parquet``, ``rows.jsonl.bz2``): both before the file
is made. A name without one of these extensions (``rows``, ``rows.txt``) takes ``--format``. A stream (``-o -``,
``-o /dev/stdout``, `controlplane.output_file.stream_of`) takes ``--format`` too, and is CSV without one, as
stdout is without ``-o``.

``--what trace`` (`controlplane.cli.runs_export_trace`) writes the run's requests as a canonical trace: CSV or JSON
Lines (with .gz), the formats the canonical reader reads; JSON (one array) is refused.
"""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path
from typing import Any, NamedTuple, TextIO

__all__ = ["EXPORT_SUFFIXES", "ExportTarget", "export_target", "open_export", "write_export"]

#: The export format an output file's extension names (``-o rows.json``), as `write_canonical` takes a trace's.
EXPORT_SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: Extensions of formats and compressions that ``runs export`` does not write: an error even with ``--format``
#: (CSV under a ``.parquet`` name is a file its readers refuse).
NOT_WRITTEN = frozenset({".parquet", ".pq", ".feather", ".arrow", ".ipc", ".orc", ".avro", ".xlsx", ".xls", ".ods",
                         ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip", ".tgz", ".tar", ".7z", ".sqlite", ".db"})
SUPPORTED = ".csv, .json, .jsonl or .ndjson, each with .gz added for gzip (rows.jsonl.gz)"


class ExportTarget(NamedTuple):
    """What ``runs export`` writes: the format, and whether through gzip."""

    format: str
    gzip: bool = False


def export_target(given: str | None, output: Path | None, what: str = "requests") -> ExportTarget:
    """``runs export``'s format and compression: the ones ``output``'s name gives, else ``--format``
    (``given``; csv on stdout, or a stream such as ``-o -``, without one). ``ValueError`` for an unknown
    ``--format``, one its name contradicts (``--format csv -o x.json``), a name of a format or compression it
    does not write (``x.parquet``, ``x.csv.bz2``), a name without a format's extension and no ``--format``, and
    JSON for ``what`` ``trace`` (a canonical trace is CSV or JSON Lines)."""
    target = _target(given, output)
    if what == "trace" and target.format == "json":
        named = f"-o {output} names JSON" if given is None else "--format json is JSON"
        raise ValueError(f"--what trace writes a canonical trace, CSV or JSON Lines, which `sim replay --format "
                         f"canonical` reads; {named} (one array), which it does not: name the file .csv or .jsonl "
                         "(.gz added for gzip), or give --format csv or jsonl")
    return target


def write_export(engine: Any, run_id: int, what: str, fmt: str, out: TextIO) -> int:
    """Write run ``run_id``'s rows of ``what`` (a table's, `controlplane.storage.export_rows`; ``trace``: its
    requests as a canonical trace, `write_run_trace`, with a note on stderr for lengths it does not know) to
    ``out``; return how many rows."""
    from controlplane.storage.queries import EXPORT_COLUMNS

    if what not in EXPORT_COLUMNS and what != "trace":
        raise ValueError(f"--what: unknown export {what!r}; expected one of {', '.join([*EXPORT_COLUMNS, 'trace'])}")
    if what != "trace":
        from controlplane.storage import export_rows

        return export_rows(engine, run_id, what, fmt, out)
    from controlplane.cli.common import err
    from controlplane.cli.runs_export_trace import lengths_unknown_note, write_run_trace

    written = write_run_trace(engine, run_id, fmt, out)
    if note := lengths_unknown_note(written):
        err.print(note, highlight=False, markup=False, soft_wrap=True)
    return written.requests


def _target(given: str | None, output: Path | None) -> ExportTarget:
    from controlplane.storage.queries import FORMATS

    if given is not None and given not in FORMATS:
        raise ValueError(f"--format: unknown export format {given!r}; expected one of {', '.join(FORMATS)}")
    from controlplane.output_file import stream_of

    if output is None or stream_of(output) is not None:  # (no name to tell a format by: stdout's default)
        return ExportTarget(given or "csv")
    if output.expanduser().is_dir():  # (what is in the way first, as `runs plot -o FOLDER` says it)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(output))
    suffixes = [s.lower() for s in output.suffixes[-2:]]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    inner = (suffixes[:-1] if gz else suffixes)[-1:] or [""]
    refused = next((s for s in suffixes if s in NOT_WRITTEN), None)
    if refused is not None:
        raise ValueError(f"-o {output}: runs export does not write {refused} files; it writes {SUPPORTED}")
    named = EXPORT_SUFFIXES.get(inner[0])
    if given is None:
        if named is None:
            what = f"its extension {inner[0]} names no export format" if inner[0] else "it has no extension"
            raise ValueError(f"-o {output}: {what}; name the file {SUPPORTED}, or give --format (csv, json, jsonl) "
                             "to write that format under this name")
        return ExportTarget(named, gz)
    if named is not None and named != given:
        raise ValueError(f"--format {given} writes {given.upper()}, but -o {output} names {named.upper()} by its "
                         f"extension: give a matching extension, or leave --format out")
    return ExportTarget(given, gz)


def open_export(output: Path, target: ExportTarget) -> TextIO:
    """``output`` open for writing the rows (UTF-8, no newline translation, as the csv module asks), through
    gzip where ``target`` says so."""
    if target.gzip:
        return gzip.open(output, "wt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return output.open("w", encoding="utf-8", newline="")
