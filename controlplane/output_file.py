"""A file a command writes where its user said (``runs export -o``, ``runs plot -o``, ``runs report --html``,
``live replay --save-trace``, ``calibrate -o``, ``bench quant --json-out``): written whole or not at all.

* A file the command reads is refused before anything is written: the SQLite database it reads runs from
  (or writes its run into), with its ``-wal``, ``-shm`` and ``-journal`` files, by name (after symbolic links)
  and by inode (a hard link). ``runs export 1 --db runs -o runs`` truncated the database before reading it
  ("database disk image is malformed", every run gone).
* The content goes to a hidden temporary file in the output's folder (``.partial-XXXXXXXX-NAME``: the same
  extensions as NAME, which some writers read the format from), renamed over the output once it is complete.
  A failed or interrupted command leaves the previous file as it was and no partial one; an existing file is
  replaced (as ``cp``, ``curl -o`` and ``sort -o`` do), keeping its permissions.
* ``~`` (``-o "~/rows.csv"``, quoted so the shell left it) is the user's home, as ``--db`` and ``storage.url``
  take it.
* A folder that does not exist is an error naming it (`check_folder`), checked before the command's work: no
  folder is made (a typo in its name made a tree of them).
* An output that exists and is not a regular file (``/dev/null``, a named pipe) is written directly: there is
  nothing to replace.
* A stream the process has open (`stream_of`: ``-`` and ``/dev/stdout`` for stdout, ``/dev/stderr``,
  ``/dev/fd/N``, ``/proc/self/fd/N``, ``/proc/PID/fd/N``, or a symbolic link to one) is written into that
  open stream once the content is complete, where its offset stands (after what a shell's ``>>`` or ``{ ...; }
  > log`` wrote before), never reopened, truncated or replaced: ``export -o /dev/stdout >> log.csv`` replaced
  ``log.csv`` (the link resolved to the file behind it) and lost what it held.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

__all__ = ["SQLITE_COMPANIONS", "STDOUT", "Stream", "check_folder", "check_not_read", "database_files",
           "replaced_on_success", "stream_of", "writes_to_stdout"]

#: The files SQLite keeps beside a database ``runs.db``: its write-ahead log, its shared-memory index and its
#: rollback journal. Writing over one of them loses (or corrupts) the database's latest rows.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
TEMP_PREFIX = ".partial-"
#: The output name that means stdout, as ``cat -``, ``tar -f -`` and ``curl -o -`` take it.
STDOUT = "-"
_STANDARD_STREAMS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_DESCRIPTOR_LINK = re.compile(r"/(?:dev/fd|proc/(self|thread-self|\d+)/fd)/(\d+)")


class Stream(NamedTuple):
    """A stream an output names: this process's descriptor ``fd``, or (``path`` set) another process's
    ``/proc/PID/fd/N``, opened to append to it."""

    fd: int
    path: str | None = None


def stream_of(output: str | os.PathLike[str]) -> Stream | None:
    """The open stream ``output`` names: ``-`` (stdout), ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``,
    ``/proc/self/fd/N`` or ``/proc/PID/fd/N``, or a symbolic link (or a chain of them) to one; None for
    any other path. Read from the name and its links: those of a stream end at the file behind it."""
    text = os.fspath(output)
    if text == STDOUT:
        return Stream(1)
    path = os.path.abspath(text)
    for _ in range(40):  # (a loop of links ends here, as the kernel's ELOOP would)
        if path in _STANDARD_STREAMS:
            return Stream(_STANDARD_STREAMS[path])
        if (named := _DESCRIPTOR_LINK.fullmatch(path)) is not None:
            owner, fd = named.group(1), int(named.group(2))
            if owner is None or not owner.isdigit() or int(owner) == os.getpid():
                return Stream(fd)
            return Stream(fd, path)
        try:
            target = os.readlink(path)
        except OSError:  # (not a link: a file, a folder, nothing)
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return None


def writes_to_stdout(output: str | os.PathLike[str]) -> bool:
    """Whether ``output`` is this process's stdout (``-``, ``/dev/stdout``, or a descriptor open on the same
    file, pipe or terminal): a command's own "wrote ..." line then goes to stderr, out of the content."""
    stream = stream_of(output)
    if stream is None or stream.path is not None:
        return False
    if stream.fd == 1:
        return True
    try:
        mine, stdout = os.fstat(stream.fd), os.fstat(1)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (stdout.st_dev, stdout.st_ino)


def database_files(source: Any) -> list[tuple[str, Path]]:
    """The SQLite database file behind ``source`` (an engine, a URL, or a SQLite file's path given as a
    `Path`) and its `SQLITE_COMPANIONS`, whether they exist or not, each with what it is (for
    `check_not_read`'s message); none for a server database or one in memory. A read-only ``file:`` URI
    (``sqlite:///file:/x/runs.db?mode=ro&uri=true``) names its file too."""
    if isinstance(source, Path):
        path: str | None = str(source)
    else:
        path = _sqlite_file(getattr(source, "url", source))
    if not path:
        return []
    return [(f"the SQLite database {path}", Path(path)),
            *((f"the {suffix[1:]} file of the SQLite database {path}", Path(path + suffix))
              for suffix in SQLITE_COMPANIONS)]


def _sqlite_file(url: Any) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # (not a URL: the command that opens it says what is wrong)
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        if "mode=memory" in database or parsed.query.get("mode") == "memory":
            return None
        return unquote(urlsplit(database).path) or None
    return database


def check_not_read(output: Path, reads: Iterable[tuple[str, Path]], *, option: str | None = "-o") -> None:
    """``ValueError`` where ``output`` is one of the files the command reads: ``reads`` holds (what it is,
    for the message; its path) pairs (`database_files`). The same file by its resolved name (the folder's
    symbolic links followed), or, for files that exist, by device and inode. ``option``: the command-line
    option that named ``output``, for the message (None: the path alone)."""
    output = Path(output).expanduser()
    stream = stream_of(output)
    mine = _resolved(output) if stream is None else None  # (a stream: by the file behind its descriptor)
    try:
        st = os.fstat(stream.fd) if stream is not None and stream.path is None else os.stat(output)
        ident = (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
    except OSError:
        ident = None
    for what, path in reads:
        same = mine is not None and _resolved(path) == mine
        if not same and ident is not None:
            try:
                other = os.stat(path)
                same = (other.st_dev, other.st_ino) == ident
            except OSError:
                pass
        if same:
            raise ValueError(f"{option + ' ' if option else ''}{output}: that is {what}, which this command uses; writing there would "
                             f"destroy it: choose another file")


def check_folder(output: Path) -> None:
    """``output``'s folder exists (after a symbolic link ``output`` is): else an error naming both, as every
    command that writes a file says it (``runs export -o``, ``runs plot -o``, ``runs report --html``): a
    typo in a folder's name makes no folders. Called before the work, and again by `replaced_on_success`."""
    output = Path(output).expanduser()
    if stream_of(output) is not None:  # (a stream: no folder of its own)
        return
    folder = (Path(os.path.realpath(output)) if output.is_symlink() else output).parent
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"its folder {folder} does not exist", str(output))


def _resolved(path: Path) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


@contextmanager
def replaced_on_success(output: Path, *, reads: Iterable[tuple[str, Path]] = (), option: str | None = "-o",
                        make_folder: bool = False) -> Iterator[Path]:
    """The path to write ``output``'s content to: a temporary file beside it, renamed over ``output`` when
    the ``with`` block ends without an exception, and removed when it raises (anything, Ctrl-C included),
    so ``output`` is never left partly written. ``reads`` are checked first (`check_not_read`).
    ``make_folder``: make ``output``'s missing folders (else a missing folder is an error naming it).
    An existing ``output`` that is not a regular file (``/dev/null``, a named pipe) is yielded itself, written in
    place. A stream (`stream_of`: ``-``, ``/dev/stdout``, ``/dev/fd/N``) gets a temporary file, copied into the
    open stream when the block ends without an exception (nothing of a failed command's content there).
    ``~`` is the user's home, as an unquoted one is in a shell (``-o "~/rows.csv"`` reaches a command as typed)."""
    output = Path(output).expanduser()
    check_not_read(output, reads, option=option)
    if (stream := stream_of(output)) is not None:
        with _into_stream(stream, output) as temp:
            yield temp
        return
    target = Path(os.path.realpath(output)) if output.is_symlink() else output  # (the file a link points to)
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(output))
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        yield output
        return
    folder = target.parent
    if make_folder:
        folder.mkdir(parents=True, exist_ok=True)
    else:
        check_folder(output)
    try:
        temp = _create_temp(folder, target.name, existing)
    except OSError as exc:  # (a read-only folder: the error names the file asked for, not the hidden temporary one)
        raise _naming(exc, output) from None
    try:
        yield temp
        _sync(temp)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if exc.filename is not None and Path(exc.filename) == temp:  # (a full disk while writing, say)
            raise _naming(exc, output) from None
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def _into_stream(stream: Stream, output: Path) -> Iterator[Path]:
    """A temporary file for ``output``'s content, copied into ``stream`` once the block completes."""
    if stream.path is None:
        try:
            os.fstat(stream.fd)
        except OSError as exc:  # (`-o /dev/fd/7` without a descriptor 7: said before the command's work)
            raise OSError(exc.errno, f"no file descriptor {stream.fd} is open in this process", str(output)) from None
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=f"-{output.name or 'stdout'}")
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        _copy_into(stream, temp, output)
    finally:
        temp.unlink(missing_ok=True)


def _copy_into(stream: Stream, content: Path, output: Path) -> None:
    """``content``'s bytes written into ``stream`` where its offset stands (appended where it was opened to
    append), after what Python's own ``sys.stdout`` / ``sys.stderr`` hold unwritten."""
    for std in (sys.stdout, sys.stderr):
        if std is not None:
            std.flush()
    std = {1: sys.stdout, 2: sys.stderr}.get(stream.fd) if stream.path is None else None
    with open(content, "rb") as source:
        try:
            if std is not None and getattr(std, "buffer", None) is not None:  # (its own stream: a test's too)
                shutil.copyfileobj(source, std.buffer)
                std.buffer.flush()
            elif std is not None and not _has_descriptor(std):  # (a text-only stream put in its place)
                std.write(source.read().decode("utf-8", "replace"))
                std.flush()
            else:
                fd = os.open(stream.path, os.O_WRONLY | os.O_APPEND) if stream.path else os.dup(stream.fd)
                with os.fdopen(fd, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _naming(exc, output) from None


def _has_descriptor(std: Any) -> bool:
    try:
        std.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _naming(exc: OSError, output: Path) -> OSError:
    """``exc`` about the temporary file, as the same error about ``output``."""
    return type(exc)(exc.errno, exc.strerror, str(output)) if exc.errno is not None else exc


def _create_temp(folder: Path, name: str, existing: os.stat_result | None) -> Path:
    """A new empty file in ``folder`` for ``name``'s content: the mode a new file gets (``0666`` less the
    umask), or ``existing``'s."""
    while True:
        temp = folder / f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            if existing is not None:
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        finally:
            os.close(fd)
        return temp


def _sync(path: Path) -> None:
    """The file's content on disk before it is renamed over the old one (else a crash soon after could
    leave an empty file under the output's name)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # (a writer that wrote nothing, or replaced it itself: os.replace says so)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
