"""One entry point for every trace format: `read_trace` and `detect_format`.

Callers (configs, the CLI) name a file and maybe a format and options; this module checks the
options against what that format takes, so a typo such as `qsp=2` fails loudly instead of
being ignored.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from controlplane.errors import did_you_mean

from ._io import PathLike, base_suffix, compressed_as, compression, empty_file, open_binary, open_text
from .azure import read_azure
from .bailian import read_bailian
from .burstgpt import read_burstgpt
from .canonical import read_canonical
from .errors import ErrorSink, OnError, TraceFormatError
from .gaps import OPTION as GAP_OPTION
from .mooncake import read_mooncake
from .record import TraceRequest
from .vidur import read_vidur

FORMATS: tuple[str, ...] = ("azure", "mooncake", "vidur", "canonical", "burstgpt", "bailian")


@dataclass(frozen=True)
class _Format:
    reader: Callable[..., Iterator[TraceRequest]]
    options: tuple[str, ...]  # format-specific keyword options, besides on_error
    uses_rng: bool
    ids_from_file: bool = False  # its request ids are the file's (not row indices): `unique_ids` checks them


_READERS: dict[str, _Format] = {
    "azure": _Format(read_azure, ("max_gap_s",), False),
    "mooncake": _Format(read_mooncake, ("spread", "block_tokens", "timestamp_unit", "max_gap_s"), True),
    "vidur": _Format(read_vidur, ("arrival", "qps", "cv"), True),
    "canonical": _Format(read_canonical, ("rebase", "max_gap_s"), False, ids_from_file=True),
    "burstgpt": _Format(read_burstgpt, ("models", "log_types", "failed", "model_column", "max_gap_s"), False),
    "bailian": _Format(read_bailian, ("spread", "block_tokens", "type_as_tenant", "max_gap_s"), True,
                       ids_from_file=True),
}

# Header signatures used to sniff a file, checked in this order (lower-case names).
_CSV_SIGNATURES = (
    ("azure", {"timestamp", "contexttokens", "generatedtokens"}),
    ("vidur", {"num_prefill_tokens", "num_decode_tokens"}),
    ("canonical", {"arrival_s", "prompt_tokens", "output_tokens"}),
    ("burstgpt", {"timestamp", "request tokens", "response tokens"}),
)
_JSON_SIGNATURES = (
    ("bailian", {"chat_id", "timestamp", "input_length", "output_length"}),
    ("mooncake", {"timestamp", "input_length", "output_length"}),
    ("canonical", {"arrival_s", "prompt_tokens", "output_tokens"}),
)
#: JSON's names of the values a line may hold instead of an object.
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
# A JSON object with chat_id and one of these is Bailian's, whatever else it lacks: its keys are
# Mooncake's too, and read as Mooncake its seconds would be taken as milliseconds.
_BAILIAN_ID, _BAILIAN_KEYS = "chat_id", {"turn", "parent_chat_id"}
#: The formats that read CSV only and those that read JSON Lines only (canonical reads both).
_CSV_ONLY, _JSONL_ONLY = ("azure", "vidur", "burstgpt"), ("mooncake", "bailian")


def detect_format(path: PathLike) -> str:
    """Guess a trace's format from its extension and first line (header or first JSON object).

    A header matching no format fully but one best (e.g. an Azure file missing a column) returns
    that one, so reading it reports the missing column by name.
    """
    try:
        with open_text(path) as f:
            lineno, first = next(((i, line) for i, line in enumerate(f, 1) if line.strip()), (None, None))
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except Exception as exc:
        if (error := not_gzip(path, exc)) is None:
            raise
        raise error from None
    suffix = base_suffix(path)
    if first is None:
        raise empty_file(path, jsonl=suffix in (".jsonl", ".ndjson", ".json"))
    as_json = suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and first.lstrip().startswith("{"))
    if as_json:
        try:
            obj = json.loads(first)
        except json.JSONDecodeError as e:
            raise TraceFormatError(path, lineno, None, f"cannot detect format: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise TraceFormatError(path, lineno, None, f"cannot detect format: the line holds a JSON "
                                   f"{_JSON_TYPES.get(type(obj), type(obj).__name__)}, not an object; expected JSON "
                                   "Lines, one request object per line (a file holding one JSON array is not a trace: "
                                   "write each element on a line of its own)")
        keys = set(obj)
        if _BAILIAN_ID in keys and keys & _BAILIAN_KEYS:
            return "bailian"
        signatures = _JSON_SIGNATURES
    else:
        keys = {c.strip().lower() for c in next(csv.reader([first]))}
        signatures = _CSV_SIGNATURES
    for name, needed in signatures:
        if needed <= keys:
            return name
    # No full match: take a unique best partial match, so the reader can name the missing column.
    overlap = sorted(((len(needed & keys), name) for name, needed in signatures), reverse=True)
    if overlap[0][0] > 0 and overlap[0][0] > overlap[1][0]:
        return overlap[0][1]
    expected = "; ".join(f"{name}: {', '.join(sorted(k))}" for name, k in signatures)
    raise TraceFormatError(path, lineno, None,
                           f"cannot detect format from {'keys' if as_json else 'header'} {sorted(keys)}; "
                           f"expected one of ({expected}); name the format: --format on the command line, "
                           f"format= in read_trace (one of {', '.join(FORMATS)})")


class TraceReader(Iterator[TraceRequest]):
    """Iterator over one trace's requests that also holds the rows skipped under on_error='skip'."""

    def __init__(self, path: PathLike, fmt: str, requests: Iterator[TraceRequest], sink: ErrorSink) -> None:
        self.path = path
        self.format = fmt
        self._requests = requests
        self._sink = sink

    @property
    def errors(self) -> list[TraceFormatError]:
        """Skipped rows' errors (the first 1000; see `skipped` for the count)."""
        return self._sink.errors

    @property
    def skipped(self) -> int:
        return self._sink.count

    @property
    def dropped(self) -> dict[str, int]:
        """Good rows the format's options left out so far, by reason (e.g. BurstGPT's
        ``failed="drop"``); empty for formats that drop nothing."""
        return dict(self._sink.dropped)

    def __iter__(self) -> Iterator[TraceRequest]:
        # The underlying generator itself, so a for-loop skips this wrapper's __next__ per row.
        return self._requests

    def __next__(self) -> TraceRequest:
        return next(self._requests)

    def close(self) -> None:
        """Stop early and release the file now (generators otherwise close when collected)."""
        close = getattr(self._requests, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "TraceReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trace(path: PathLike, format: str | None = None, *,
               rng: np.random.Generator | Callable[[], np.random.Generator] | None = None,
               on_error: OnError = "raise", unique_ids: bool = False, **options: Any) -> TraceReader:
    """Stream a trace file as TraceRequests in arrival order.

    format: one of FORMATS, or None to detect it. rng: a seeded numpy Generator (or a function
    making one, called only for a format that draws), required where the format needs randomness
    (mooncake or bailian spread='uniform', vidur arrivals). on_error: 'raise'
    (default), 'skip' (bad rows are left out and listed in the returned reader's `errors`), or a
    callable given each error. unique_ids: a row repeating an earlier row's request id is a bad
    row, naming its file, line and id field (what a replay reads: a run names its requests by id);
    the reader then keeps the ids read (about 100 bytes a request), else it holds one row. Other
    options are format-specific (see FORMAT_OPTIONS).
    """
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith("~"):  # (no shell expanded it: a path
        path = type(path)(os.path.expanduser(os.fspath(path)))  # in code or a YAML file) the home folder, as the CLI's
    fmt = detect_format(path) if format is None else format
    spec = _READERS.get(fmt)
    if spec is None:
        raise ValueError(f"unknown trace format {fmt!r}{did_you_mean(str(fmt), FORMATS)}; "
                         f"valid formats: {', '.join(FORMATS)}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        # (the format's own options first, then those shared by several: on_error, max_gap_s)
        shared = ("on_error",) + tuple(o for o in spec.options if o == GAP_OPTION)
        valid_options = tuple(o for o in spec.options if o != GAP_OPTION) + shared
        valid = ", ".join(valid_options)
        named = ", ".join(f"{o!r}{did_you_mean(o, valid_options)}" for o in unknown)
        raise ValueError(f"unknown option(s) {named} for trace format {fmt!r}; "
                         f"valid options: {valid}")
    if format is not None and (error := wrong_kind(path, fmt)) is not None:
        raise error
    sink = ErrorSink(on_error)
    kwargs: dict[str, Any] = dict(options)
    if spec.uses_rng:
        kwargs["rng"] = rng() if callable(rng) else rng
    if unique_ids and spec.ids_from_file:  # (the other formats number their rows: unique as they are)
        kwargs["unique_ids"] = True
    try:
        requests = spec.reader(path, on_error=sink, errors=sink.errors, **kwargs)
    except UnicodeDecodeError as exc:  # a reader that looks at the file before its first row
        raise not_utf8(path, exc) from None
    except Exception as exc:
        if (error := not_gzip(path, exc)) is None:
            raise
        raise error from None
    return TraceReader(path, fmt, _decoded(path, requests), sink)


def wrong_kind(path: PathLike, fmt: str) -> TraceFormatError | None:
    """The error of a format named for a file of the other kind: a CSV format (azure, vidur,
    burstgpt) given JSON Lines (its first line a JSON object, which the reader would take for a
    header), a JSON Lines format (mooncake, bailian) given a CSV file (its first line a header, of
    a CSV format's by detection, or in a .csv file), naming the format detection reads it as.
    None otherwise, and where the file cannot be read (the reader says why)."""
    if fmt not in _CSV_ONLY and fmt not in _JSONL_ONLY:
        return None
    try:
        with open_text(path) as f:
            lineno, first = next(((i, line) for i, line in enumerate(f, 1) if line.strip()), (None, ""))
    except Exception:  # noqa: BLE001 - not readable: the reader's own error says why
        return None
    text = first.strip()
    if not text or _is_json_object(text) != (fmt in _CSV_ONLY) or text.startswith("["):
        return None
    detected = _detected(path)
    if fmt in _CSV_ONLY:
        kind, other = "a JSON Lines file (its first line is a JSON object)", "a CSV format"
    else:
        if text.startswith("{") or (detected not in (*_CSV_ONLY, "canonical") and base_suffix(path) != ".csv"):
            return None
        kind, other = f"a CSV file (its first line is a header: {text[:120]})", "a JSON Lines format"
    hint = (f"format detection reads it as {detected!r}: leave the format out, or name {detected!r}"
            if detected is not None else f"name the format that reads it (one of {', '.join(FORMATS)})")
    return TraceFormatError(path, lineno, None, f"{kind}, but {fmt!r} is {other}; {hint}")


def _is_json_object(text: str) -> bool:
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _detected(path: PathLike) -> str | None:
    """The format `detect_format` reads ``path`` as; None where it detects none."""
    try:
        return detect_format(path)
    except Exception:  # noqa: BLE001 - no format detected, or the file unreadable
        return None


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """Format options from command-line ``KEY=VALUE`` items (``--opt``): VALUE read as JSON where it
    parses (``qps=2.5``, ``model_column=true``, ``models=["GPT-4"]``), else kept as text
    (``failed=drop``, ``models=ChatGPT,GPT-4``). Which keys the format takes is `read_trace`'s check."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--opt {item!r}: expected KEY=VALUE, e.g. --opt failed=drop")
        if key in out:
            raise ValueError(f"--opt {key} is given twice")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _decoded(path: PathLike, requests: Iterator[TraceRequest]) -> Iterator[TraceRequest]:
    """The reader's requests; bytes that are not UTF-8 become a `TraceFormatError` naming the line."""
    try:
        yield from requests
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except Exception as exc:
        if (error := not_gzip(path, exc)) is None:
            raise
        raise error from None


def not_gzip(path: PathLike, exc: BaseException) -> TraceFormatError | None:
    """For a compressed trace (.gz, .bz2, .xz), its module's error (not that format at all, cut
    short, corrupt) as a `TraceFormatError` naming the file; None for any other error."""
    module = compression(path)
    if module is None or isinstance(exc, (TraceFormatError, FileNotFoundError)):
        return None
    if isinstance(exc, (OSError, EOFError)) or type(exc).__module__ in ("zlib", "_lzma", "lzma"):
        kind = {"gzip": "gzip", "bz2": "bzip2", "lzma": "xz"}[module]
        return TraceFormatError(path, None, None, f"not a readable {kind} file ({exc})")
    return None


_EXTENSIONS = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz"}


def not_utf8(path: PathLike, exc: UnicodeDecodeError) -> TraceFormatError:
    """The error for a file that is not UTF-8 text, at the first line that does not decode; for
    a file compressed in a way no reader decompresses, that (converting it to UTF-8 would not help)."""
    kind = compressed_as(path)
    if kind in _EXTENSIONS:  # (named as plain text)
        return TraceFormatError(path, None, None, f"a {kind}-compressed file named as plain text: the readers "
                                f"decompress by the file's extension; name it {Path(path).name}{_EXTENSIONS[kind]}")
    if kind is not None:
        return TraceFormatError(path, None, None, f"a {kind}-compressed file: the readers decompress gzip (.gz), bzip2 "
                                "(.bz2) and xz (.xz) only; decompress it, or compress it with one of those")
    with open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return TraceFormatError(path, number, None, f"not UTF-8 text (byte {bad.start + 1} of the line: "
                                        f"{bad.reason}); convert the file to UTF-8")
    return TraceFormatError(path, None, None, f"not UTF-8 text ({exc.reason}); convert the file to UTF-8")


FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {name: spec.options for name, spec in _READERS.items()}
