"""A file written where its user said: never over a file the command reads, whole or not at all
(controlplane/output_file.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controlplane.output_file import check_not_read, database_files, replaced_on_success


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_database_files_are_the_sqlite_file_and_its_journals(tmp_path):
    db = tmp_path / "runs"
    for source in (f"sqlite:///{db}", f"sqlite+pysqlite:///{db}?timeout=5",
                   f"sqlite+pysqlite:///file:{db}?mode=ro&uri=true", db):
        assert [p for _, p in database_files(source)] == [db, *(Path(f"{db}{s}") for s in ("-wal", "-shm", "-journal"))]
    assert database_files("postgresql+psycopg://postgres@127.0.0.1:5432/test") == []
    assert database_files("sqlite://") == database_files("sqlite:///:memory:") == []


@pytest.mark.parametrize("name", ["runs", "runs-wal", "runs-shm", "runs-journal", "link", "hard", "sub/../runs"])
def test_the_database_by_any_name_is_refused(tmp_path, name):
    db = tmp_path / "runs"
    db.write_bytes(b"SQLite format 3\0")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to("runs")
    os.link(db, tmp_path / "hard")
    with pytest.raises(ValueError, match=f"-o {tmp_path / name}: that is the .*SQLite database {db}, which this "
                                         "command uses; writing there would destroy it"):
        check_not_read(tmp_path / name, database_files(f"sqlite:///{db}"))
    check_not_read(tmp_path / "runs.csv", database_files(f"sqlite:///{db}"))  # (another file: no error)


def test_content_replaces_the_file_only_when_complete(tmp_path):
    out = tmp_path / "rows.csv"
    out.write_text("previous\n")
    os.chmod(out, 0o640)
    with pytest.raises(RuntimeError), replaced_on_success(out) as partial:
        assert partial.parent == tmp_path and partial.name.endswith("-rows.csv") and partial.name.startswith(".")
        partial.write_text("half")
        raise RuntimeError("the export failed")
    assert out.read_text() == "previous\n" and _left(tmp_path) == ["rows.csv"]  # (no partial file left)
    with replaced_on_success(out) as partial:
        partial.write_text("new\n")
        assert out.read_text() == "previous\n"  # (until it is complete)
    assert out.read_text() == "new\n" and _left(tmp_path) == ["rows.csv"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # (an existing file's permissions kept)


def test_a_new_file_gets_the_umask_s_mode_and_a_link_s_target_is_replaced(tmp_path):
    old = os.umask(0o022)
    try:
        with replaced_on_success(tmp_path / "new.json") as partial:
            partial.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644  # (not mkstemp's 0600)
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to("real.csv")
    with replaced_on_success(tmp_path / "link.csv") as partial:
        partial.write_text("new")
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text() == "new"


def test_a_device_or_pipe_is_written_in_place_and_a_missing_folder_named(tmp_path):
    with replaced_on_success(Path(os.devnull)) as partial:
        assert partial == Path(os.devnull)
    with pytest.raises(FileNotFoundError) as caught, replaced_on_success(tmp_path / "nope" / "x.csv"):
        pass
    assert caught.value.filename == str(tmp_path / "nope" / "x.csv") and "its folder" in caught.value.strerror
    with replaced_on_success(tmp_path / "made" / "x.csv", make_folder=True) as partial:
        partial.write_text("x")
    assert (tmp_path / "made" / "x.csv").read_text() == "x"
    with pytest.raises(IsADirectoryError):
        with replaced_on_success(tmp_path / "made"):
            pass


def test_an_unwritable_folder_is_an_error_naming_the_file_asked_for(tmp_path, monkeypatch):
    """It named ``.partial-8b680405-x.csv``, the hidden temporary file, an internal detail (a read-only folder
    refuses the temporary file; made so by refusing its creation, as root writes into a read-only folder)."""
    import controlplane.output_file as output_file

    real_open = os.open

    def refusing(path, flags, *args):
        if ".partial-" in str(path):
            raise PermissionError(13, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(output_file.os, "open", refusing)
    output = tmp_path / "x.csv"
    with pytest.raises(PermissionError) as refused, replaced_on_success(output):
        pass
    assert refused.value.filename == str(output) and ".partial-" not in str(refused.value)


def test_an_error_writing_the_temporary_file_names_the_file_asked_for(tmp_path):
    output = tmp_path / "x.csv"
    with pytest.raises(OSError) as refused, replaced_on_success(output) as temp:
        raise OSError(28, "No space left on device", str(temp))
    assert refused.value.filename == str(output) and refused.value.errno == 28
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, fd", [("-", 1), ("/dev/stdout", 1), ("/dev/stderr", 2), ("/dev/fd/5", 5),
                                      ("/proc/self/fd/3", 3), (f"/proc/{os.getpid()}/fd/4", 4)])
def test_a_stream_is_known_by_its_name_or_a_link_to_it(tmp_path, name, fd):
    from controlplane.output_file import Stream, stream_of

    assert stream_of(name) == Stream(fd)
    (tmp_path / "link").symlink_to(name)
    assert stream_of(tmp_path / "link") == (Stream(fd) if name != "-" else None)  # (a link to a file named -)
    assert stream_of("/proc/1/fd/1") == Stream(1, "/proc/1/fd/1") and stream_of(tmp_path / "x.csv") is None


def test_dev_stdout_is_written_into_the_open_stream_after_what_it_holds(tmp_path):
    """The link /dev/stdout -> /proc/self/fd/1 -> log.csv was resolved and log.csv replaced: a shell's
    ``>> log.csv`` lost the file's lines, ``{ echo head; cmd; echo foot; } > log`` its head."""
    import subprocess
    import sys

    log = tmp_path / "log.csv"
    log.write_text("a\nb\n")
    script = ("import sys\nfrom controlplane.output_file import replaced_on_success\n"
              "print('before', flush=True)\n"
              "with replaced_on_success(sys.argv[1]) as partial:\n    partial.write_text('x,y\\n')\n"
              "try:\n    with replaced_on_success(sys.argv[1]) as partial:\n"
              "        partial.write_text('half')\n        raise RuntimeError\nexcept RuntimeError:\n    pass\n"
              "print('after')\n")
    for name in ("/dev/stdout", "-", "/dev/fd/1"):
        with open(log, "a") as appended:
            subprocess.run([sys.executable, "-c", script, name], stdout=appended, check=True, timeout=60)
    assert log.read_text() == "a\nb\n" + "before\nx,y\nafter\n" * 3  # (nothing of the failed one)
    assert list(tmp_path.iterdir()) == [log]


def test_a_descriptor_not_open_is_an_error_before_the_work(tmp_path):
    with pytest.raises(OSError, match="no file descriptor 97 is open") as refused:
        with replaced_on_success("/dev/fd/97"):
            raise AssertionError("not reached")
    assert refused.value.filename == "/dev/fd/97"
