"""The project's own trace format: canonical CSV and JSONL, read and written.

Any trace can be converted to it once (after transforms, too) and replayed without the
original reader's options. The Vidur anchors' `workload.csv` files are canonical CSV as is.

CSV: header with `request_id,arrival_s,prompt_tokens,output_tokens` (required, any order, any case),
optional `model,tenant,priority,prompt,hash_ids,hash_block_tokens,params`; `hash_ids` is
space-separated integers, `params` a JSON object. JSONL: one object per line with the same keys
(`hash_ids` a list, `params` an object). Unknown columns/keys are ignored. arrival_s is kept
as written (not rebased; `rebase=True` starts the trace at its first arrival) and must be
non-decreasing. A first arrival more than a day after 0 is refused unless ``rebase`` is given:
true starts the trace there, false keeps it as written (a replay idles from 0 until it).
"""

from __future__ import annotations

import contextlib
import csv
import json
from typing import Any, Iterable, Iterator, Sequence, TextIO

from controlplane.generation_params import param_problem

from ._io import (MAX_INT, PathLike, base_suffix, blank_line, check_not_empty, check_row_width, check_text,
                  check_texts, compressed_writer, unwritten_compression, column_index, csv_header, duplicate_id, in_order, json_column, empty_file, no_rows, open_text, parse_count, parse_int,
                  parse_seconds, plain, NOT_PLAIN)
from .csv_quotes import CsvRows, open_quote, row_in_field, row_shape
from .errors import OnError, TraceFormatError, as_sink
from .export_not_trace import warn_if_export
from .gaps import FAR_S, checked_max_gap, idle_text, long_gap, seconds_text
from .record import TraceRequest, new_basic, params_from_mapping, thaw, with_arrival

REQUIRED = ("request_id", "arrival_s", "prompt_tokens", "output_tokens")
OPTIONAL = ("model", "tenant", "priority", "prompt", "hash_ids", "hash_block_tokens", "params")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: What to do where a quoted field (a prompt) holds a line that reads as a row on purpose (`open_quote`).
_ROW_IN_A_FIELD = "write the trace as canonical JSON Lines (write_canonical to a .jsonl path), which holds any text"


def read_canonical(path: PathLike, *, on_error: OnError = "raise", errors: list[TraceFormatError] | None = None,
                   unique_ids: bool = False, rebase: bool | None = None,
                   max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    """Canonical CSV or JSONL, chosen by extension (.jsonl/.ndjson/.json) or else a leading '{'.
    ``unique_ids``: a row repeating an earlier row's request id is a bad row (the ids read are kept).
    ``rebase``: True, arrivals measured from the first row's (whose arrival_s reads); False, kept as
    written; None (not said), kept as written, but a first arrival more than `FAR_S` after 0 is an error
    (`far_first_arrival`), whatever ``on_error``. ``max_gap_s``: a row arriving longer than this after the row
    before it is an error (`sim.traces.gaps.long_gap`), whatever ``on_error``."""
    if rebase is not None and not isinstance(rebase, bool):
        raise ValueError(f"rebase must be true or false, got {rebase!r}")
    max_gap_s = checked_max_gap(max_gap_s)
    kw = dict(on_error=on_error, errors=errors, unique_ids=unique_ids, rebase=rebase, max_gap_s=max_gap_s)
    if base_suffix(path) in JSONL_SUFFIXES or _starts_with_brace(path):
        return read_canonical_jsonl(path, **kw)
    return read_canonical_csv(path, **kw)


def _time_zero(path: PathLike, line: int, first: float, rebase: bool | None) -> float:
    """The arrival that is time 0: ``first`` (the first arrival that reads, on ``line``) with ``rebase``, else
    0.0; with ``rebase`` not said, `far_first_arrival` when ``first`` is more than `FAR_S` after 0."""
    if rebase:
        return first
    if rebase is None and first > FAR_S:
        raise far_first_arrival(path, line, first)
    return 0.0


def far_first_arrival(path: PathLike, line: int, first: float) -> TraceFormatError:
    """The error of a first arrival more than `FAR_S` after 0, ``rebase`` not said: absolute times (such as
    Unix epoch seconds) that a replay would idle from 0 up to, ticking its control loop all the way."""
    days = first / 86_400
    days_text = f"{days:,.0f}" if days >= 10 else f"{days:,.1f}"
    return TraceFormatError(
        path, line, "arrival_s",
        f"the first request arrives at {seconds_text(first)} s, {days_text} days after time 0: canonical arrival_s is "
        f"kept as written, and a replay runs from 0, so it would idle {idle_text(first)}; say which you mean: --opt "
        "rebase=true (read_trace(..., rebase=True)) starts the trace at its first arrival (absolute times, such as "
        "Unix epoch seconds), --opt rebase=false replays it as written, idling from 0")


def _arrival(value: object, last: float) -> float | None:
    """A bad row's arrival_s, if it reads and is in order (the time origin, if the row is the first); else None."""
    try:
        t = parse_seconds("", 0, "arrival_s", value.strip() if isinstance(value, str) else value)
    except TraceFormatError:
        return None
    return t if t >= last else None


def _starts_with_brace(path: PathLike) -> bool:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


# --- CSV ---------------------------------------------------------------------------------

def read_canonical_csv(path: PathLike, *, on_error: OnError = "raise", errors: list[TraceFormatError] | None = None,
                       unique_ids: bool = False, rebase: bool | None = None,
                       max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    """Stream canonical CSV; an empty request_id falls back to the 0-based row index."""
    sink = as_sink(on_error, errors)
    with open_text(path) as f:
        rows = CsvRows(f)
        reader = rows.reader
        header = csv_header(path, reader)
        cols = column_index(path, header, reader.line_num, REQUIRED, OPTIONAL, ignore_case=True)
        warn_if_export(path, header, csv=True)  # (a run's requests export: read, with a warning)
        ii, ia, ip, io_ = (cols[c] for c in REQUIRED)
        extra = [(name, cols[name]) for name in OPTIONAL if name in cols]
        basic = not extra and (ii, ia, ip, io_) == (0, 1, 2, 3) and len(header) == 4
        last = 0.0
        shift = None  # time 0 (`_time_zero`), once the first row whose arrival_s reads is read
        timed = False  # whether `last` is a row's arrival (a gap is measured from it), not time 0
        idx = 0
        seen: set[str] | None = set() if unique_ids else None  # the request ids of the rows read
        shape = row_shape(len(header), ints=(ip, io_), numbers=(ia,))
        end = reader.line_num  # (the last line read: the row's next starts after it)
        for row in reader:
            start, end = end + 1, reader.line_num
            if start != end and (err := open_quote(path, row, start, end, header, rows.cut_by_end, shape,
                                                   _ROW_IN_A_FIELD)) is not None:
                sink(err)  # (a quote left open: the lines after it read as one field, not as rows)
                idx += 1
                continue
            req = None
            if basic:  # four plain columns (e.g. the Vidur anchors): no per-field dispatch
                try:
                    rid, a, pt, ot = row
                    t = float(a)
                    p = int(pt)
                    o = int(ot)
                    # (nan fails every comparison; inf, a step back and a long gap fail the range; `plain`, inlined:
                    # int() and float() take '1_000' and other scripts' digits too)
                    if (last <= t < last + max_gap_s and 0 <= p <= MAX_INT and 0 <= o <= MAX_INT and rid
                            and "\x00" not in rid and (seen is None or rid not in seen) and pt.isdigit()
                            and ot.isdigit() and (a + pt + ot).isascii() and "_" not in a):
                        req = new_basic(rid, t, p, o)
                except ValueError:
                    pass
            if req is None:  # general path: optional columns, or a row the fast path refused
                if blank_line(row):
                    continue
                line = start
                try:
                    req = _csv_row(path, line, row, header, ii, ia, ip, io_, extra, idx)
                    req = in_order(path, line, req, last)
                    if seen is not None and req.request_id in seen:
                        raise duplicate_id(path, line, "request_id", req.request_id)
                except TraceFormatError as err:
                    sink(err)
                    idx += 1
                    if shift is None and ia < len(row) and (t := _arrival(row[ia], last)) is not None:
                        shift = _time_zero(path, start, t, rebase)  # (a bad token count does not move time 0)
                        last, timed = (t, True) if rebase else (last, False)
                    continue
                if timed and req.arrival_s - last > max_gap_s:  # (a whole-file error: not skipped)
                    raise long_gap(path, start, "arrival_s", last, req.arrival_s, max_gap_s)
            if seen is not None:
                seen.add(req.request_id)
            last, timed = req.arrival_s, True
            if shift is None:
                shift = _time_zero(path, start, last, rebase)
            yield with_arrival(req, last - shift) if shift else req
            idx += 1
        if idx == 0:
            raise no_rows(path)


def _csv_row(path: PathLike, line: int, row: list[str], header: list[str], ii: int, ia: int, ip: int,
             io_: int, extra: list[tuple[str, int]], idx: int) -> TraceRequest:
    """Slow, careful parse of one canonical CSV row."""
    def cell(name: str, i: int) -> str:
        if i >= len(row):
            raise TraceFormatError(path, line, name, f"row has {len(row)} fields, expected {len(header)}")
        return row[i].strip()

    check_not_empty(path, line, row)
    check_row_width(path, line, row, header)
    rid = cell("request_id", ii) and check_text(path, line, "request_id", row[ii])  # verbatim, as on the fast path
    rid = rid or str(idx)
    t = parse_seconds(path, line, "arrival_s", cell("arrival_s", ia))
    p = parse_count(path, line, "prompt_tokens", cell("prompt_tokens", ip))
    o = parse_count(path, line, "output_tokens", cell("output_tokens", io_))
    kw: dict[str, Any] = {}
    for name, i in extra:
        raw = row[i] if i < len(row) else ""
        text = raw.strip()
        if not text:
            continue  # empty cell = field default
        if name in ("model", "tenant"):
            kw[name] = check_text(path, line, name, text)
        elif name == "prompt":
            kw[name] = check_text(path, line, name, raw)  # prompt text kept verbatim, whitespace included
        elif name == "priority":
            kw[name] = parse_int(path, line, name, text)
        elif name == "hash_block_tokens":
            kw[name] = _block_tokens(path, line, text)
        elif name == "hash_ids":
            try:
                if not plain(text):
                    raise ValueError
                kw[name] = tuple(int(h) for h in text.split())
            except ValueError:
                raise TraceFormatError(path, line, name, f"expected space-separated integers, got {text[:80]!r}"
                                                         f"{'' if plain(text) else NOT_PLAIN}") from None
        elif name == "params":
            kw[name] = _params(path, line, _json_cell(path, line, name, text))
    return TraceRequest(rid, t, p, o, **kw)


def _block_tokens(path: PathLike, line: int, value: object) -> int:
    """``hash_block_tokens``: tokens per prefix-hash block, a positive integer (0 would block nothing)."""
    try:
        tokens = parse_count(path, line, "hash_block_tokens", value)
    except TraceFormatError:
        tokens = 0  # (not "a non-negative integer": 0 is refused too)
    if tokens == 0:
        raise TraceFormatError(path, line, "hash_block_tokens", "expected a positive integer (tokens per prefix-hash "
                               f"block, at most {MAX_INT:,}), got {value!r}; leave the field empty for the model's "
                               "default")
    return tokens


def _json_cell(path: PathLike, line: int, name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceFormatError(path, line, name, f"invalid JSON: {e.msg}") from None


def _params(path: PathLike, line: int, value: Any) -> tuple[tuple[str, object], ...]:
    if not isinstance(value, dict):
        raise TraceFormatError(path, line, "params", f"expected a JSON object, got {type(value).__name__}")
    for name, v in value.items():
        problem = param_problem(str(name), v)
        if problem is not None:
            raise TraceFormatError(path, line, f"params.{name}", problem.split(" ", 1)[1])
    return params_from_mapping(value)


# --- JSONL -------------------------------------------------------------------------------

def read_canonical_jsonl(path: PathLike, *, on_error: OnError = "raise", errors: list[TraceFormatError] | None = None,
                         unique_ids: bool = False, rebase: bool | None = None,
                         max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    """Stream canonical JSONL; a missing/null/empty request_id falls back to the 0-based row index."""
    sink = as_sink(on_error, errors)
    loads = json.loads
    with open_text(path) as f:
        last = 0.0
        shift = None  # time 0 (`_time_zero`), once the first row whose arrival_s reads is read
        timed = False  # whether `last` is a row's arrival (a gap is measured from it), not time 0
        idx = 0
        any_line = False
        seen: set[str] | None = set() if unique_ids else None  # the request ids of the rows read
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            any_line = True
            obj = None
            try:
                try:
                    obj = loads(text)
                except json.JSONDecodeError as e:
                    raise TraceFormatError(path, lineno, None, f"invalid JSON: {e.msg} (column {json_column(text, e)})") from None
                if idx == 0 and isinstance(obj, dict):
                    warn_if_export(path, obj, csv=False)  # (a run's requests export: read, with a warning)
                req = _json_obj(path, lineno, obj, idx)
                req = in_order(path, lineno, req, last)
                if seen is not None and req.request_id in seen:
                    raise duplicate_id(path, lineno, "request_id", req.request_id)
            except TraceFormatError as err:
                sink(err)
                idx += 1
                if shift is None and isinstance(obj, dict) and (t := _arrival(obj.get("arrival_s"), last)) is not None:
                    shift = _time_zero(path, lineno, t, rebase)  # (a bad token count does not move time 0)
                    last, timed = (t, True) if rebase else (last, False)
                continue
            if timed and req.arrival_s - last > max_gap_s:  # (a whole-file error: not skipped)
                raise long_gap(path, lineno, "arrival_s", last, req.arrival_s, max_gap_s)
            if seen is not None:
                seen.add(req.request_id)
            last, timed = req.arrival_s, True
            if shift is None:
                shift = _time_zero(path, lineno, last, rebase)
            yield with_arrival(req, last - shift) if shift else req
            idx += 1
        if not any_line:
            raise empty_file(path, jsonl=True)


def _json_obj(path: PathLike, line: int, obj: Any, idx: int) -> TraceRequest:
    if not isinstance(obj, dict):
        raise TraceFormatError(path, line, None, f"expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED[1:]:
        if key not in obj:
            raise TraceFormatError(path, line, key, "missing required key")
    rid = obj.get("request_id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        raise TraceFormatError(path, line, "request_id", f"expected a string or an integer, got {rid!r:.80}")
    rid = str(idx) if rid is None or rid == "" else check_text(path, line, "request_id", str(rid))
    t = parse_seconds(path, line, "arrival_s", obj["arrival_s"])
    p = parse_count(path, line, "prompt_tokens", obj["prompt_tokens"])
    o = parse_count(path, line, "output_tokens", obj["output_tokens"])
    kw: dict[str, Any] = {}
    for name in ("model", "tenant", "prompt"):
        v = obj.get(name)
        if v is not None:
            if not isinstance(v, str):
                raise TraceFormatError(path, line, name, f"expected a string, got {v!r:.80}")
            text = v.strip()
            if text:  # empty or blank: missing, as an empty CSV cell (a model named '' no deployment serves)
                kw[name] = check_text(path, line, name, v if name == "prompt" else text)  # (a prompt verbatim)
    if obj.get("priority") is not None:
        kw["priority"] = parse_int(path, line, "priority", obj["priority"])
    if obj.get("hash_block_tokens") is not None:
        kw["hash_block_tokens"] = _block_tokens(path, line, obj["hash_block_tokens"])
    hashes = obj.get("hash_ids")
    if hashes is not None:
        if not (isinstance(hashes, list) and all(type(h) is int for h in hashes)):
            raise TraceFormatError(path, line, "hash_ids", f"expected a list of integers, got {str(hashes)[:80]!r}")
        kw["hash_ids"] = tuple(hashes)
    if obj.get("params") is not None:
        check_texts(path, line, "params", obj["params"])
        kw["params"] = _params(path, line, obj["params"])
    return TraceRequest(rid, t, p, o, **kw)


# --- writing -----------------------------------------------------------------------------

def write_canonical(reqs: Iterable[TraceRequest], path: PathLike, *,
                    columns: Sequence[str] | None = None) -> int:
    """Write requests as canonical JSONL (.jsonl/.ndjson/.json) or CSV (else); returns the count.

    Streams in O(1) memory. A CSV header must be known before the first row, so its optional
    `columns` default to those the first request sets (a length-only trace stays in the fast
    four-column form); a later request setting another optional field raises ValueError — pass
    `columns` or write JSONL then. A trailing .gz, .bz2 or .xz compresses (gzip, bzip2, xz: what the
    readers decompress), the extension before it naming the format (``x.jsonl.xz``: JSONL); a
    compression the readers do not read (.zst, .zip, ...) is a ValueError before any file is made.
    """
    check_writable_name(path)
    if base_suffix(path) in JSONL_SUFFIXES:
        return _write_jsonl(reqs, path)
    if columns is not None:
        unknown = [c for c in columns if c not in OPTIONAL]
        if unknown:
            raise ValueError(f"unknown canonical column(s) {', '.join(unknown)}; optional columns: {', '.join(OPTIONAL)}")
    return _write_csv(reqs, path, columns)


#: What `write_canonical` writes, as its errors say it.
WRITTEN = ".csv, .jsonl, .ndjson or .json (anything else: CSV), each with .gz, .bz2 or .xz added to compress it"


def check_writable_name(path: PathLike) -> None:
    """A ValueError for a file name whose compression `write_canonical` does not write (``x.jsonl.zst``,
    ``x.csv.zip``): text under it would be a file no reader reads (the readers name such a file's compression
    and refuse it), and the format would be taken from the compression's extension."""
    refused = unwritten_compression(path)
    if refused is not None:
        suffix, kind = refused
        raise ValueError(f"{path}: write_canonical does not write {suffix} files ({kind}); it writes {WRITTEN}")


def _write_jsonl(reqs: Iterable[TraceRequest], path: PathLike) -> int:
    n = 0
    with _open_write(path) as f:
        for r in reqs:
            obj: dict[str, Any] = {"request_id": r.request_id, "arrival_s": float(r.arrival_s),
                                   "prompt_tokens": int(r.prompt_tokens), "output_tokens": int(r.output_tokens)}
            for name in ("model", "tenant", "prompt", "hash_block_tokens"):
                v = getattr(r, name)
                if v is not None:
                    obj[name] = v
            if r.priority:
                obj["priority"] = r.priority
            if r.hash_ids:
                obj["hash_ids"] = list(r.hash_ids)
            if r.params:
                obj["params"] = {k: thaw(v) for k, v in r.params}
            f.write(json.dumps(obj, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def _write_csv(reqs: Iterable[TraceRequest], path: PathLike, columns: Sequence[str] | None) -> int:
    it = iter(reqs)
    first = next(it, None)
    if columns is not None:
        optional = [name for name in OPTIONAL if name in columns]
    else:
        optional = [] if first is None else [name for name in OPTIONAL if _is_set(first, name)]
    n = 0
    header = REQUIRED + tuple(optional)
    shape = row_shape(len(header), ints=(2, 3), numbers=(1,))  # (what the reader takes for a row: `open_quote`)
    with _open_write(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        if first is None:
            return 0
        for r in _chain(first, it):
            lost = [name for name in OPTIONAL if name not in optional and _is_set(r, name)]
            if lost:
                raise ValueError(f"request {r.request_id!r} sets {', '.join(lost)}, which has no CSV column; "
                                 "pass columns=... or write JSONL")
            row = [r.request_id, repr(float(r.arrival_s)), int(r.prompt_tokens), int(r.output_tokens),
                   *(_csv_value(r, name) for name in optional)]
            for name, value in zip(header, row):
                if isinstance(value, str) and ("\n" in value or "\r" in value) and \
                        (found := row_in_field(value, shape)) is not None:
                    raise ValueError(
                        f"request {r.request_id!r}: its {name} holds a line that reads as a row of this CSV "
                        f"({found[1][:60]!r}), which its reader refuses as a quote left open (the rows "
                        "after it read into one field); write the trace as JSON Lines (a .jsonl path), which holds "
                        "any text")
            w.writerow(row)
            n += 1
    return n


def _chain(first: TraceRequest, rest: Iterator[TraceRequest]) -> Iterator[TraceRequest]:
    yield first
    yield from rest


def _is_set(r: TraceRequest, name: str) -> bool:
    v = getattr(r, name)
    return bool(v) if name in ("priority", "hash_ids", "params") else v is not None


def _csv_value(r: TraceRequest, name: str) -> object:
    v = getattr(r, name)
    if name == "hash_ids":
        return " ".join(map(str, v))
    if name == "params":
        return json.dumps({k: thaw(x) for k, x in v}, ensure_ascii=False) if v else ""
    return "" if v is None else v


@contextlib.contextmanager
def _open_write(path: PathLike) -> Iterator[TextIO]:
    """``path`` opened for writing text (compressed for .gz, .bz2 and .xz: `compressed_writer`, as the readers
    open it), written as a temporary file beside it and renamed to it on success (`controlplane.output_file.replaced_on_success`): a write that raises (a
    request with no CSV column, a full disk) leaves no partial file, and an earlier file of that name
    stays as it was."""
    import io
    from pathlib import Path

    from controlplane.output_file import replaced_on_success

    p = Path(path)
    with replaced_on_success(p, option=None) as temporary, open(temporary, "wb") as raw:
        with io.TextIOWrapper(compressed_writer(p, raw), encoding="utf-8", newline="") as f:
            yield f

