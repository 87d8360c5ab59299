"""The benchmarks' command lines: a bad option value is one line naming the option, exit status 2.

* `OneLineParser`: an ``ArgumentParser`` whose usage errors are that one line too, with no usage
  block before it (``--help`` shows the usage);
* argparse ``type=`` helpers (`positive_int`, `nonnegative_int`, `positive_float`,
  `nonnegative_float`, `share` in (0, 1], `fraction` in [0, 1]): argparse itself then says
  ``NAME.py: error: argument --repeats: must be an integer >= 1, got '0'`` and exits 2, before
  anything runs;
* `check_trace`: a trace that is missing, a folder or not a trace (its format not detected,
  or no such format) is the parser's one-line error naming the option, before any replay;
  `trace_errors`: so is a bad row met reading the trace's rows;
* `warnings_once`: a trace reader's warning (logged each time the file is read: a benchmark reads
  it once per replay) shown once per run of the benchmark;
* `library_module`: what a helper module of the benchmarks says when it is run as a script (it was
  nothing, exit 0, even for ``--help``): what it is and the command to run, exit status 2;
* `run_main`: for ``if __name__ == "__main__":``. The errors a user's input causes and a script
  meets only once it runs (`controlplane.errors.ControlPlaneError`, config and settings errors
  included; `sim.traces.errors.TraceFormatError`, a bad row of a trace; a file or folder that is
  missing or cannot be read or written) become one line ``NAME.py: error: ...`` on stderr and exit
  status 2. Anything else is a bug and stays a traceback.

Scripts import it as a sibling (``sys.path.insert(0, <benchmarks>)``, then ``from bench_cli import ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from pathlib import Path
from typing import Callable, Iterator, NoReturn

#: OSErrors that are about a path the user gave even when they carry no ``filename``
#: (``FileNotFoundError("trace file not found: x.csv")``).
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE``, exit status 2: argparse's own put
    the whole usage block (17 lines for benchmarks/autoscaling.py) before it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
    return value


def _number(text: str, ok: Callable[[float], bool], wanted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of requests, replicas, repetitions)."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (0 usually: off)."""
    return _integer(text, 0)


def positive_float(text: str) -> float:
    """A finite number > 0 (a rate, a factor, a time)."""
    return _number(text, lambda v: v > 0, "a finite number > 0")


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    return _number(text, lambda v: v >= 0, "a finite number >= 0")


def share(text: str) -> float:
    """A share in (0, 1]: of requests checked, of blocks kept."""
    return _number(text, lambda v: 0 < v <= 1, "a share in (0, 1]")


def fraction(text: str) -> float:
    """A share in [0, 1] (0 allowed: none)."""
    return _number(text, lambda v: 0 <= v <= 1, "a share in [0, 1]")


def one_line(exc: BaseException | str) -> str:
    """A message as one line: a config error's lines (``invalid configuration:\\n  key: ...``)
    joined, ``; `` between the items."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    out = lines[0] if lines else type(exc).__name__
    for line in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + line
    return out


def check_trace(ap: argparse.ArgumentParser, path: str | Path, trace_format: str | None = None,
                option: str = "--trace", note: str = "") -> Path:
    """``path`` as a trace the replay can open (its format detected or the one named): else
    ``ap.error`` naming ``option`` (``note`` added, e.g. where the default lives). Reads the
    header only, not the rows."""
    p = Path(path)
    if not p.exists():
        ap.error(f"{option} {path}: no such file{note}")
    if p.is_dir():
        ap.error(f"{option} {path}: a folder, not a trace file")
    from sim.replay import open_trace  # (the scripts that need no trace import no simulator)

    try:
        open_trace(p, trace_format, seed=0).close()
    except (OSError, ValueError) as exc:  # TraceFormatError (names the file), an unknown format
        text = one_line(exc)
        ap.error(f"{option}: {text}" if str(p) in text else f"{option} {path}: {text}")
    return p


@contextlib.contextmanager
def trace_errors(ap: argparse.ArgumentParser, option: str = "--trace") -> Iterator[None]:
    """Reading the trace's rows (before any replay): a bad row (`TraceFormatError`, which names
    the file and line) is ``ap.error`` naming ``option`` too."""
    from sim.traces.errors import TraceFormatError

    try:
        yield
    except TraceFormatError as exc:
        ap.error(f"{option}: {one_line(exc)}")


class _Once(logging.Filter):
    """Lets each message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextlib.contextmanager
def warnings_once(logger: str = "sim.traces") -> Iterator[None]:
    """Within it, each message of ``logger`` (the trace readers') is shown once: a reader warns once per read
    (a Bailian file read as mooncake, BurstGPT's failed rows), and a benchmark that replays the trace 30 times
    read it 30 times."""
    log, once = logging.getLogger(logger), _Once()
    log.addFilter(once)
    try:
        yield
    finally:
        log.removeFilter(once)


def user_error(exc: BaseException) -> str | None:
    """The one-line message of an error a user's input causes, or None for anything else (a bug).
    The project's error types are looked up only where their modules were imported: an error of a
    module never imported was never raised."""
    kinds = [getattr(sys.modules.get(module), name, None) for module, name in (
        ("controlplane.errors", "ControlPlaneError"), ("sim.traces.errors", "TraceFormatError"),
        ("controlplane.storage.errors", "StorageError"))]
    if any(k is not None and isinstance(exc, k) for k in kinds):
        return one_line(exc)
    if isinstance(exc, OSError) and (exc.filename is not None or isinstance(exc, _PATH_ERRORS)):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return one_line(exc)
    return None


def library_module(name: str, command: str) -> int:
    """Run as a script, a helper module says what it serves and what to run instead (on stderr); exit status 2."""
    print(f"{name}: library module of benchmarks/{command.split()[0]}, not a benchmark; run: python benchmarks/{command}",
          file=sys.stderr, flush=True)
    return 2


def run_main(main: Callable[..., int | None], argv: list[str] | None = None, prog: str | None = None) -> NoReturn:
    """``main(argv)``, exiting with its status (None: 0); an error of the user's input (`user_error`)
    is one line ``PROG: error: ...`` on stderr and exit status 2, a bug a traceback as before."""
    try:
        code = main(argv)
    except Exception as exc:
        text = user_error(exc)
        if text is None:
            raise
        sys.stdout.flush()
        print(f"{prog or Path(sys.argv[0]).name}: error: {text}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    raise SystemExit(code or 0)


if __name__ == "__main__":
    raise SystemExit(library_module("bench_cli.py", "autoscaling.py [--help] (or any other benchmark: every one uses it)"))
