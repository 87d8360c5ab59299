"""Reader for BurstGPT traces (HPMLL/BurstGPT: ChatGPT and GPT-4 usage in Azure OpenAI, CC-BY-4.0).

Columns `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`, matched by name
ignoring case and surrounding spaces, in any order. Timestamp is seconds since the trace's start
(an integer or a decimal); Model is e.g. "ChatGPT" or "GPT-4"; Log Type "Conversation log" or
"API log". In the files "with fails" a failed request has 0 response tokens.

Options: `models` and `log_types` keep only those values (default: all), `failed="drop"` leaves
out the 0-response rows (default "keep"), `model_column=True` copies Model into
`TraceRequest.model` (default off: a replay rejects a request naming a model no deployment
serves), each model named as its first row kept spells it (`models` matches ignoring case and
spaces, so a later `chatgpt ` is the same model as `ChatGPT`). Rows left out by these options are
counted by reason on the reader (`dropped`) and summed up in one logged warning at the end of the file; they still use up their row index.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator

from ._io import (MAX_INT, ORDER_TOLERANCE_S, PathLike, backwards, blank_line, check_not_empty, check_row_width,
                  check_text, column_index, csv_header, no_rows, open_text, parse_count, parse_seconds, plain)
from .csv_quotes import CsvRows, open_quote, row_shape
from .errors import ErrorSink, OnError, TraceFormatError, as_sink
from .gaps import FAR_S, checked_max_gap, long_gap
from .record import TraceRequest, new_basic, new_labelled

TS, MODEL, REQ, RESP, TOTAL, LOG = "Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"
HEADER = (TS, MODEL, REQ, RESP, TOTAL, LOG)  # the released files' order
FAILED = ("keep", "drop")
# `TraceReader.dropped` keys (the option that left the row out) and how the warning says them
DROP_FAILED, DROP_MODEL, DROP_LOG = "failed", "models", "log_types"
_SAY = {DROP_FAILED: "failed (Response tokens 0, failed='drop')", DROP_MODEL: "with a Model not in models",
        DROP_LOG: "with a Log Type not in log_types"}

log = logging.getLogger("sim.traces")


def read_burstgpt(path: PathLike, *, models: Any = None, log_types: Any = None, failed: str = "keep",
                  model_column: bool = False, on_error: OnError = "raise",
                  errors: list[TraceFormatError] | None = None, max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    """Stream a BurstGPT CSV as TraceRequests (ids = 0-based data row index, first kept arrival 0.0). A row more
    than ``max_gap_s`` after the row before it is an error (`sim.traces.gaps.long_gap`), whatever ``on_error``."""
    keep_models = _choices("models", models, _norm_model)
    keep_logs = _choices("log_types", log_types, _norm_log)
    if failed not in FAILED:
        raise ValueError(f"unknown failed {failed!r} for format 'burstgpt'; valid choices: {', '.join(FAILED)}")
    if not isinstance(model_column, bool):
        raise ValueError(f"model_column must be true or false, got {model_column!r}")
    return _read(path, keep_models, keep_logs, failed == "drop", model_column, as_sink(on_error, errors),
                 checked_max_gap(max_gap_s))


def _norm_model(value: str) -> str:
    return value.strip().lower()


def _norm_log(value: str) -> str:
    """'Conversation log', 'conversation', ' API LOG ' -> 'conversation' / 'api'."""
    v = value.strip().lower()
    return v[:-4].rstrip() if v.endswith(" log") else v


def _choices(name: str, value: Any, norm: Any) -> dict[str, str] | None:
    """A filter option: None (keep all), a comma-separated string, or a list of strings; as
    {normalized value: the value as given} (a warning names an unmatched value as the user wrote it)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"{name} must be a list of strings or a comma-separated string, got {value!r}")
    out: dict[str, str] = {}
    for v in items:
        if v.strip():
            out.setdefault(norm(v), v.strip())
    if not out:
        raise ValueError(f"{name} names no value (got {value!r}); leave it out to keep all rows")
    return out


_MAX_CACHED = 10_000  # distinct cell values remembered (a real file has a few; a hostile one, any number)


class _Filter:
    """Which raw cell values a `models` / `log_types` option keeps, decided once per distinct value."""

    __slots__ = ("option", "wanted", "norm", "decided", "matched", "sample", "in_bad")

    def __init__(self, option: str, wanted: dict[str, str], norm: Any) -> None:
        self.option, self.wanted, self.norm = option, wanted, norm  # wanted: normalized -> as given
        self.decided: dict[str, bool] = {}  # raw cell -> kept
        self.matched: set[str] = set()      # wanted values some row had
        self.sample: dict[str, str] = {}    # up to 10 values the rows had, normalized: as first spelt (warning)
        self.in_bad: dict[str, int] = {}    # wanted value -> the line of the first bad row (skipped) that had it

    def keeps(self, raw: str) -> bool:
        value = self.norm(raw)
        keep = value in self.wanted
        if keep:
            self.matched.add(value)
        if len(self.sample) < 10:
            self.sample.setdefault(value, raw.strip())  # (one value however spelt: 'ChatGPT' and 'chatgpt' match alike)
        if len(self.decided) < _MAX_CACHED:
            self.decided[raw] = keep
        return keep

    def bad_row(self, raw: str, line: int | None) -> None:
        """A bad row (skipped) had the cell ``raw``: a value given that only bad rows have is said so, not
        said to match no row."""
        value = self.norm(raw)
        if value in self.wanted:
            self.in_bad.setdefault(value, line)

    def unmatched(self) -> list[str]:
        """What the rows read say of the values given that no good row had: those bad rows had, and the others."""
        said = []
        missed = [value for value in self.wanted if value not in self.matched]
        only_bad = sorted((self.wanted[v], self.in_bad[v]) for v in missed if v in self.in_bad)
        if only_bad:
            said.append(f"{self.option} value(s) matched only by bad rows, which were skipped: "
                        + ", ".join(f"{given!r} (the first at line {line})" for given, line in only_bad))
        never = sorted(self.wanted[v] for v in missed if v not in self.in_bad)
        if never:
            seen = ", ".join(value or "(empty)" for value in sorted(self.sample.values())) or "none"
            said.append(f"{self.option} value(s) {', '.join(map(repr, never))} matched no row (seen: {seen})")
        return said


def _read(path: PathLike, keep_models: dict[str, str] | None, keep_logs: dict[str, str] | None, drop_failed: bool,
          model_column: bool, sink: ErrorSink, max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    with open_text(path) as f:
        rows = CsvRows(f)
        reader = rows.reader
        header = csv_header(path, reader)
        optional = [c for c, needed in ((MODEL, keep_models is not None or model_column),
                                        (LOG, keep_logs is not None)) if not needed]
        required = [TS, REQ, RESP] + [c for c in (MODEL, LOG) if c not in optional]
        cols = column_index(path, header, reader.line_num, required, optional + [TOTAL], ignore_case=True)
        its, ireq, iresp = cols[TS], cols[REQ], cols[RESP]
        imodel, ilog = cols.get(MODEL), cols.get(LOG)
        width = len(header)
        standard = width == 6 and [cols.get(c) for c in HEADER] == list(range(6))
        models = _Filter("models", keep_models, _norm_model) if keep_models is not None else None
        logs = _Filter("log_types", keep_logs, _norm_log) if keep_logs is not None else None
        keep_model = models.decided if models is not None else None
        keep_log = logs.decided if logs is not None else None
        names: dict[str, str | None] = {}  # raw Model cell -> TraceRequest.model
        spellings: dict[str, str] = {}      # Model ignoring case and spaces -> its first spelling kept
        dropped = sink.dropped
        model = log_type = ""
        last = 0.0  # (also the least timestamp: seconds since the trace's start)
        timed = False  # whether `last` is a row's (a gap is measured from it), not the least timestamp
        t0 = None
        idx = 0
        bad_before = sink.count  # (the rows skipped as bad here: the sink may be shared)
        shape = row_shape(width, ints=(ireq, iresp), numbers=(its,))
        end = reader.line_num  # (the last line read: the row's next starts after it)
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if start != end and (err := open_quote(path, row, start, end, header, rows.cut_by_end, shape)) is not None:
                    sink(err)  # (a quote left open: the lines after it read as one field, not as rows)
                    idx += 1
                    continue
                try:
                    if standard:
                        ts, model, p, o, _, log_type = row
                    else:
                        if len(row) != width:
                            raise ValueError  # (the slow path says whether the fields past the header hold text)
                        ts, p, o = row[its], row[ireq], row[iresp]
                        if imodel is not None:
                            model = row[imodel]
                        if ilog is not None:
                            log_type = row[ilog]
                    if not (p.isdigit() and o.isdigit() and (ts + p + o).isascii()) or "_" in ts:
                        raise ValueError  # (`plain`, inlined: int() and float() take '1_000' and '１０' too)
                    p = int(p)
                    o = int(o)
                    t = float(ts)
                    # nan fails every comparison; inf, negatives, a step back and a long gap fail the range
                    if not (0 <= p <= MAX_INT and 0 <= o <= MAX_INT) or not (last <= t < last + max_gap_s):
                        raise ValueError
                except (ValueError, IndexError, TypeError):
                    if blank_line(row):
                        continue
                    line = start
                    try:
                        t, p, o = _slow_row(path, line, row, header, cols, last)
                    except TraceFormatError as err:
                        sink(err)
                        idx += 1
                        for flt, i in ((models, imodel), (logs, ilog)):
                            if flt is not None and i is not None and i < len(row):
                                flt.bad_row(row[i], line)
                        if t0 is None:  # (a bad token count does not move the time axis, nor a window on it)
                            t0 = _origin(row, cols, last, models, logs, drop_failed)
                            if t0 is not None:
                                last, timed = t0, True
                        continue
                    if timed and t - last > max_gap_s:  # (a whole-file error: not skipped)
                        raise long_gap(path, line, TS, last, t, max_gap_s)
                    if imodel is not None:
                        model = row[imodel]
                    if ilog is not None:
                        log_type = row[ilog]
                last, timed = t, True
                idx += 1
                # Both filters see every row (a row is counted under the first that leaves it out): a
                # value of one that no row has is told from one whose rows the other filter left out.
                kept = True
                if keep_model is not None:
                    keep = keep_model.get(model)
                    if not (models.keeps(model) if keep is None else keep):
                        dropped[DROP_MODEL] = dropped.get(DROP_MODEL, 0) + 1
                        kept = False
                if keep_log is not None:
                    keep = keep_log.get(log_type)
                    if not (logs.keeps(log_type) if keep is None else keep) and kept:
                        dropped[DROP_LOG] = dropped.get(DROP_LOG, 0) + 1
                        kept = False
                if not kept:
                    continue
                if o == 0 and drop_failed:
                    dropped[DROP_FAILED] = dropped.get(DROP_FAILED, 0) + 1
                    continue
                if t0 is None:
                    t0 = t
                if model_column:
                    name = names.get(model)
                    if name is None and model not in names:
                        # one name per model, as `models` matches them (ignoring case and spaces): the first
                        # spelling kept ('ChatGPT', then 'chatgpt ': both ChatGPT, the deployment that serves them)
                        spelled = spellings.get(_norm_model(model), model.strip())
                        try:  # (a NUL in the name: a row error)
                            name = check_text(path, start, MODEL, spelled) or None
                        except TraceFormatError as err:
                            sink(err)
                            continue
                        if len(spellings) < _MAX_CACHED:
                            spellings.setdefault(_norm_model(model), spelled)
                        if len(names) < _MAX_CACHED:
                            names[model] = name
                if model_column:
                    yield new_labelled(str(idx - 1), t - t0, p, o, name, None)
                else:
                    yield new_basic(str(idx - 1), t - t0, p, o)
        except GeneratorExit:  # the caller stopped early (a window's end, a limit): say what was left out so far
            if dropped:
                log.warning("%s: left out %s of the first %s rows (the read stopped there): %s", path,
                            f"{sum(dropped.values()):,}", f"{idx:,}", _reasons(dropped))
            raise
        if idx == 0:
            raise no_rows(path)
        _report(path, idx, dropped, t0 is None, models, logs, sink.count - bad_before)


def _origin(row: list[str], cols: dict[str, int], last: float, models: _Filter | None, logs: _Filter | None,
            drop_failed: bool) -> float | None:
    """The time origin a bad row (skipped) sets when it is the first the options keep: its Timestamp, if it
    reads and is in order, and if its Model and Log Type (and Response tokens, for failed='drop') do not
    leave it out, as far as they read. None: it sets none."""
    def cell(name: str) -> str | None:
        i = cols.get(name)
        return row[i] if i is not None and i < len(row) else None

    text = cell(TS)
    try:
        t = float(text.strip()) if text is not None and plain(text) else math.nan
    except ValueError:
        return None
    if not last <= t < math.inf:
        return None
    for flt, name in ((models, MODEL), (logs, LOG)):
        if flt is not None and ((value := cell(name)) is None or flt.norm(value) not in flt.wanted):
            return None
    if drop_failed:
        try:
            if int(cell(RESP) or "") == 0:
                return None
        except ValueError:
            pass  # (a bad count: not known to be a failed request)
    return t


def _slow_row(path: PathLike, line: int, row: list[str], header: list[str], cols: dict[str, int],
              last: float) -> tuple[float, int, int]:
    """A row the fast path refused: its values, or the error naming its bad field."""
    check_not_empty(path, line, row)
    needed = [c for c in (TS, MODEL, REQ, RESP, LOG) if c in cols]
    short = [c for c in needed if cols[c] >= len(row)]
    if short:
        raise TraceFormatError(path, line, short[0], f"row has {len(row)} fields, expected {len(header)}")
    check_row_width(path, line, row, header)
    p = parse_count(path, line, REQ, row[cols[REQ]].strip())
    o = parse_count(path, line, RESP, row[cols[RESP]].strip())
    t = parse_seconds(path, line, TS, row[cols[TS]].strip())
    if t < last:
        if t < last - ORDER_TOLERANCE_S:
            raise backwards(path, line, TS, t, last)
        t = last
    return t, p, o


def _report(path: PathLike, rows: int, dropped: dict[str, int], none_kept: bool,
            models: _Filter | None, logs: _Filter | None, bad: int) -> None:
    """Say what the options left out: an error when they left nothing, else one warning line. ``bad``:
    the rows skipped as bad (on_error), which the options did not leave out."""
    unmatched = [said for flt in (models, logs) if flt for said in flt.unmatched()]
    if none_kept and dropped:
        left = sum(dropped.values())
        what = f"the options left out all {left:,} rows ({_reasons(dropped)})" if not bad else (
            f"the options left out {left:,} of the {rows:,} rows ({_reasons(dropped)}), and the other "
            + ("row was a bad row, skipped" if bad == 1 else f"{bad:,} were bad rows, skipped"))
        raise TraceFormatError(path, None, None, f"no row kept: {what}" + (f"; {'; '.join(unmatched)}" if unmatched else ""))
    if dropped or unmatched:
        log.warning("%s: left out %s of %s rows: %s", path, f"{sum(dropped.values()):,}", f"{rows:,}",
                    "; ".join(([_reasons(dropped)] if dropped else []) + unmatched))


def _reasons(dropped: dict[str, int]) -> str:
    return "; ".join(f"{n:,} {_SAY[why]}" for why, n in dropped.items())
