"""Shared plumbing for the readers: opening files, CSV headers, value checks.

Kept apart so each format module only holds what is specific to that format.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence, TextIO

from .errors import TraceFormatError
from .record import with_arrival

# Rows whose arrival goes backwards by less than this (seconds) are clamped to the previous
# arrival instead of rejected: float round-off in converted traces, not a real disorder.
ORDER_TOLERANCE_S = 1e-6

PathLike = str | os.PathLike[str]


#: The compressed traces the readers open, by extension: the standard library's module for each.
COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
#: Compressed files read by none (by extension, and by the first bytes of a file named otherwise).
_OTHER_COMPRESSED = {".zst": "zstd", ".zip": "zip", ".7z": "7z", ".lz4": "lz4", ".zstd": "zstd"}
_MAGIC = ((b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip"), (b"7z\xbc\xaf", "7z"), (b"\x04\x22\x4d\x18", "lz4"),
          (b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), *((b"BZh" + bytes([c]), "bz2") for c in b"123456789"))


def compression(path: PathLike) -> str | None:
    """The standard-library module that decompresses ``path`` (gzip, bz2, lzma), by its extension; None: plain."""
    return COMPRESSED.get(Path(path).suffix.lower())


def open_binary(path: PathLike) -> BinaryIO:
    """``path``'s bytes, decompressed for a .gz, .bz2 or .xz file."""
    module = compression(path)
    if module is None:
        return open(path, "rb")
    import importlib  # only for a compressed trace

    return importlib.import_module(module).open(path, "rb")


def open_text(path: PathLike) -> TextIO:
    """Open a trace as text: UTF-8 (a BOM is dropped), newlines untranslated for csv; .gz, .bz2
    and .xz decompressed."""
    if compression(path) is not None:
        return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")
    return open(Path(path), "r", encoding="utf-8-sig", newline="", buffering=1 << 18)


def compressed_writer(path: PathLike, raw: BinaryIO) -> BinaryIO:
    """``raw`` (a file being written as ``path``), compressed as ``path``'s extension says (gzip, bzip2, xz:
    `compression`, what `open_binary` reads back); ``raw`` as is for a plain name. Closing what it returns ends
    the compressed stream and leaves ``raw`` open."""
    module = compression(path)
    if module == "gzip":
        import gzip

        return gzip.GzipFile(filename=Path(path).with_suffix("").name, mode="wb", fileobj=raw)
    if module == "bz2":
        import bz2

        return bz2.BZ2File(raw, "wb")
    if module == "lzma":
        import lzma

        return lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ)
    return raw


def unwritten_compression(path: PathLike) -> tuple[str, str] | None:
    """(extension, compression) of a name whose compression no reader reads, so nothing writes it (``x.jsonl.zst``:
    ('.zst', 'zstd')); None for a plain name or one ending in .gz, .bz2 or .xz."""
    suffix = Path(path).suffix.lower()
    kind = _OTHER_COMPRESSED.get(suffix)
    return None if kind is None else (suffix, kind)


def compressed_as(path: PathLike) -> str | None:
    """The compression of a file no reader decompresses (zstd, zip, ...: by extension or first
    bytes), or of a file named as plain text that is compressed (a .csv holding gzip); None else."""
    named = _OTHER_COMPRESSED.get(Path(path).suffix.lower())
    if named is not None:
        return named
    if compression(path) is not None:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def not_a_trace_file(path: PathLike) -> OSError | ValueError | None:
    """Why ``path`` cannot be read as a trace, None when it can be: not there (`FileNotFoundError`), a folder
    (`IsADirectoryError`), or not a regular file (a pipe, a process substitution ``<(...)``, a device such as
    /dev/null: a `ValueError` saying so, not "not found"). A replay reads its trace more than once (its format
    detected from the first line, the rows read, the file opened again for ``repeat``), which a stream cannot
    give: it is saved to a file first. ``-`` (standard input, for many commands) is such a stream, unless a file
    has that name."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if str(path) == "-":
            return _a_stream(path, "standard input (no trace is read from it)")
        from controlplane.checkout_paths import missing_path_note  # (a path of the source repository: where it is)
        from sim.traces.bundled import BUNDLED_TRACES

        bundled = {f"sim/data/{rel}": f"bundled:{name}" for name, rel in BUNDLED_TRACES.items()}
        return FileNotFoundError(f"trace file not found: {path}{missing_path_note(path, bundled)}")
    except OSError as exc:  # (no permission on a folder above it, a name too long: what the system says)
        return exc
    if stat.S_ISDIR(mode):
        return IsADirectoryError(f"trace {path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = ("a pipe (such as <(...) or a named pipe)" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a plain file")
        return _a_stream(path, kind)
    return None


def _a_stream(path: PathLike, kind: str) -> ValueError:
    return ValueError(f"trace {path} is not a regular file but {kind}: a trace is read more than once (its format "
                      "detected from its first line, then its rows, and again for --repeat), which a stream cannot "
                      "give; save it to a file first (e.g. `cat ... > trace.csv`) and name that")


def base_suffix(path: PathLike) -> str:
    """The extension that names the format, ignoring a trailing .gz, .bz2 or .xz ('x.csv.gz' -> '.csv')."""
    p = Path(path)
    if p.suffix.lower() in COMPRESSED:
        p = p.with_suffix("")
    return p.suffix.lower()


def empty_file(path: PathLike, jsonl: bool = False) -> TraceFormatError:
    """The error of a file holding nothing (or blank lines only): a CSV needs a header and rows, JSON Lines
    objects."""
    expected = "one JSON object per line" if jsonl else "a header row and data rows"
    return TraceFormatError(path, None, None, f"empty file: expected {expected}")


def no_rows(path: PathLike) -> TraceFormatError:
    return TraceFormatError(path, None, None, "no data rows (the file holds only a header or blank lines)")


def csv_header(path: PathLike, reader: Iterator[list[str]]) -> list[str]:
    """The first non-blank row of a CSV, stripped; raises on an empty file."""
    for row in reader:
        if row and any(c.strip() for c in row):
            return [c.strip() for c in row]
    raise empty_file(path)


def blank_line(row: Sequence[str]) -> bool:
    """Whether a CSV row is a blank line, which the readers skip: no fields, or one field of spaces. A row of
    delimiters only (``,,,``) is not one: `check_not_empty` refuses it."""
    return not row or (len(row) == 1 and not row[0].strip())


def check_not_empty(path: PathLike, line: int, row: Sequence[str]) -> None:
    """A row of delimiters only (``,,,``, `` , , ``: every field empty, such as a spreadsheet's empty row) is an
    error on its line, as a short row is: only blank lines are skipped, and a row whose every cell was lost would
    otherwise go unseen (with ``on_error="skip"`` it is skipped and counted, as other bad rows are)."""
    if not any(c.strip() for c in row):
        raise TraceFormatError(path, line, None, "empty row: every field empty (only blank lines are skipped: remove "
                               "the row, or fill it in)")


def column_index(
    path: PathLike, header: Sequence[str], line: int, required: Iterable[str],
    optional: Iterable[str] = (), *, ignore_case: bool = False,
) -> dict[str, int]:
    """Map each wanted column name to its index; a missing required one, or one the header has twice (two
    columns matching it, ``TIMESTAMP`` and ``timestamp`` where case is ignored), is an error on the header line."""
    key = (lambda s: s.lower()) if ignore_case else (lambda s: s)
    required, optional = tuple(required), tuple(optional)
    pos: dict[str, int] = {}
    wanted = {key(name): name for name in (*required, *optional)}
    for i, name in enumerate(header):
        first = pos.setdefault(key(name), i)
        if first != i and key(name) in wanted:
            case = " (names are matched ignoring case)" if header[first] != name else ""
            raise TraceFormatError(path, line, wanted[key(name)],
                                   f"the header has this column twice: {header[first]!r} (column {first + 1}) and "
                                   f"{name!r} (column {i + 1}){case}; which one to read is not known: rename or "
                                   "remove one")
    out: dict[str, int] = {}
    for name in required:
        i = pos.get(key(name))
        if i is None:
            raise TraceFormatError(path, line, name,
                                   f"missing required column (header has: {', '.join(header) or 'nothing'})")
        out[name] = i
    for name in optional:
        i = pos.get(key(name))
        if i is not None:
            out[name] = i
    return out


def check_row_width(path: PathLike, line: int, row: Sequence[str], header: Sequence[str]) -> None:
    """A row with text past the header's last column is an error naming that column: an unquoted
    comma inside a field shifts every field after it, and the rest would be dropped unseen. Empty
    fields there (trailing commas) are not an error. A row with fewer fields than the header is an
    error naming the first column it lacks, whether or not the reader reads that column: a comma
    missing from a row shifts the fields after it as well (one rule for every reader)."""
    if len(row) < len(header):
        raise TraceFormatError(path, line, header[len(row)], f"row has {len(row)} fields, expected {len(header)} (a "
                               "comma missing, or the row cut short: every row has the header's fields, empty ones "
                               "included)")
    if len(row) > len(header) and any(c.strip() for c in row[len(header):]):
        raise TraceFormatError(path, line, header[-1], f"row has {len(row)} fields, the header {len(header)} "
                               "(a field holding a comma must be quoted)")


def json_column(line: str, error: json.JSONDecodeError) -> int:
    """The 1-based column on ``line`` (one line of a JSON Lines file) where ``error`` was found: the
    decoder's own column counts the line's newline as a line of its own, so a line cut short is
    reported one column past its end, not at column 1 of a next line."""
    return min(error.pos, len(line.rstrip("\r\n"))) + 1


#: The largest count (or integer) a trace field may hold: runs store them in 32-bit integer columns.
MAX_INT = 2**31 - 1


def plain(text: str) -> bool:
    """Whether a cell writes its number as trace text may: ASCII, without '_' (``int()`` and ``float()`` also take
    Python's literal forms, '1_000' and other scripts' digits, '１０'). The readers check every numeric cell with it,
    their fast paths too."""
    return text.isascii() and "_" not in text


def _not_plain(text: object, parse: type) -> str:
    """What an error adds of a cell that ``parse`` (int, float) reads but `plain` refuses; else ''."""
    if not isinstance(text, str) or plain(text):
        return ""
    try:
        parse(text)
    except ValueError:
        return ""
    return NOT_PLAIN


#: What an error adds of a numeric cell that is not `plain`.
NOT_PLAIN = " (plain ASCII decimal only: no '_' separators, no other scripts' digits)"


def parse_count(path: PathLike, line: int, field: str, text: object) -> int:
    """A token count: a non-negative integer (CSV text of ASCII digits, or a JSON int / integral float)."""
    if isinstance(text, str):
        try:
            v = int(text) if plain(text) else -1
        except ValueError:
            v = -1
    elif isinstance(text, bool):
        v = -1
    elif isinstance(text, int):
        v = text
    elif isinstance(text, float) and text.is_integer():
        v = int(text)
    else:
        v = -1
    if v < 0:
        raise TraceFormatError(path, line, field, f"expected a non-negative integer, got {text!r}"
                                                  f"{_not_plain(text, int)}")
    if v > MAX_INT:
        raise TraceFormatError(path, line, field, f"expected at most {MAX_INT:,} (runs store counts as 32-bit "
                                                  f"integers), got {text!r}")
    return v


def parse_int(path: PathLike, line: int, field: str, text: object) -> int:
    """Any 32-bit integer (priority may be negative)."""
    v: int | None = None
    if isinstance(text, int) and not isinstance(text, bool):
        v = text
    elif isinstance(text, float) and text.is_integer():
        v = int(text)
    elif isinstance(text, str) and plain(text):
        try:
            v = int(text)
        except ValueError:
            pass
    if v is None:
        raise TraceFormatError(path, line, field, f"expected an integer, got {text!r}{_not_plain(text, int)}")
    if not -MAX_INT - 1 <= v <= MAX_INT:
        raise TraceFormatError(path, line, field, f"expected an integer from {-MAX_INT - 1:,} to {MAX_INT:,} (runs "
                               f"store it as a 32-bit integer), got {text!r}")
    return v


def parse_seconds(path: PathLike, line: int, field: str, text: object) -> float:
    """A finite, non-negative number of seconds (text: `plain`, as ``float()`` reads it: 12, 0.5, 1e-05)."""
    try:
        v = float(text) if (isinstance(text, (int, float)) and not isinstance(text, bool)
                            or isinstance(text, str) and plain(text)) else math.nan
    except ValueError:
        v = math.nan
    if not (0.0 <= v < math.inf):
        raise TraceFormatError(path, line, field, f"expected a finite non-negative number of seconds, got {text!r}"
                               f"{_not_plain(text, float)}")
    return v


def check_text(path: PathLike, line: int, field: str, text: str) -> str:
    """``text``, a text field a run stores (an id, a tenant, a model, a prompt): an error naming
    the row and field if it holds a NUL character (PostgreSQL stores none in text) or a lone UTF-16
    surrogate (a JSON escape such as ``"\\ud800"`` that is no character: no UTF-8 encodes it), which
    the database would refuse only when the run stores the row, naming neither file nor line."""
    if "\x00" in text:
        raise TraceFormatError(path, line, field, f"holds a NUL character (\\x00), which no database stores as text: "
                               f"{text[:80]!r}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TraceFormatError(path, line, field, f"holds a lone UTF-16 surrogate ({text[exc.start]!r}), which is "
                                   f"no character (a JSON escape of half a pair): {text[:80]!r}") from None
    return text


def check_texts(path: PathLike, line: int, field: str, value: object) -> None:
    """`check_text` on every string in a JSON value (keys too), e.g. a request's ``params``."""
    if isinstance(value, str):
        check_text(path, line, field, value)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(path, line, field, str(k))
            check_texts(path, line, field, v)
    elif isinstance(value, list):
        for v in value:
            check_texts(path, line, field, v)


def duplicate_id(path: PathLike, line: int, field: str, request_id: str) -> TraceFormatError:
    """The error of a row whose request id an earlier row of the file has: a run names its requests
    by id (its stored rows, `controlplane runs compare`'s pairs), so they must be unique. The readers
    that take ids from the file keep those seen (a set: about 100 bytes a request)."""
    return TraceFormatError(path, line, field, f"duplicate request id {request_id!r}: an earlier row has it "
                            "(request ids must be unique in a trace)")


def backwards(path: PathLike, line: int, field: str, value: float, previous: float, unit: str = "s") -> TraceFormatError:
    err = TraceFormatError(
        path, line, field,
        f"arrival goes backwards: {value:g} {unit} is before the previous row's {previous:g} {unit} "
        "(rows must be in arrival order)")
    err.ahead = previous  # (the arrival it is behind: `ErrorSink` tells many rows behind one row ahead of them)
    return err


def in_order(path: PathLike, line: int, req, last: float):
    """`req`, clamped to `last` if it is a hair early; an error naming the line if it is earlier."""
    if req.arrival_s < last:
        if req.arrival_s < last - ORDER_TOLERANCE_S:
            raise backwards(path, line, "arrival_s", req.arrival_s, last)
        return with_arrival(req, last)
    return req
