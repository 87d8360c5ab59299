"""Ctrl-C during benchmarks/fidelity.py: a clean stop, what was finished as the JSON line, the temporary folder gone."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fidelity_bench", ROOT / "benchmarks" / "fidelity.py")
F = importlib.util.module_from_spec(_spec)
sys.modules["fidelity_bench"] = F
_spec.loader.exec_module(F)


def test_ctrl_c_prints_what_was_finished_removes_the_temporary_folder_and_exits_130(tmp_path):
    """A real SIGINT (as Ctrl-C sends it) once the first round has finished: the second round, then running, is
    listed as partial; the frozen profile, written with --profile-out, is named with its hash; no traceback."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    profile = tmp_path / "p.json"
    # stderr to a file, not a pipe read only at the end: the benchmark's warnings filled the pipe's 64 KiB and it
    # blocked writing them, never reaching round 1 (the test hung)
    err_file = (tmp_path / "stderr.txt").open("w+")
    proc = subprocess.Popen([sys.executable, "benchmarks/fidelity.py", "--quick", "--profile-out", str(profile)],
                            cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)}, text=True, stdout=subprocess.PIPE,
                            stderr=err_file,
                            # a background process started by a non-interactive shell ignores SIGINT: not this one
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "round 1:" in line:
                break
        assert seen and "round 1:" in seen[-1], "".join(seen) + (tmp_path / "stderr.txt").read_text()
        time.sleep(1)  # into round 2: its live run alone lasts ~3 s
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        err_file.close()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "ReplayInterrupted" not in err
    assert "interrupted (Ctrl-C) during round 2 (high-2, run 1)" in err
    got = json.loads(out.strip().splitlines()[-1])
    assert got["interrupted"] is True and got["smoke_run"] is True
    assert got["interrupted_during"] == "round 2 (high-2, run 1)"
    # the frozen profile: the file whose hash the progress printed
    printed = re.search(r"frozen profile \S+ sha256\s+([0-9a-f]{64})", " ".join(seen)).group(1)
    assert got["profile"] == str(profile)
    assert got["profile_sha256"] == printed == hashlib.sha256(profile.read_bytes()).hexdigest()
    assert len(got["calibration_runs"]) == 2 and got["calibration_repeat_runs"] == [got["calibration_runs"]]
    # round 1 finished, with its figures; round 2 cut short, marked partial; no sweep point yet
    assert got["rounds"] == 1 and got["rounds_planned"] == 2
    first, second = got["round_detail"]
    assert first["round"] == 1 and "partial" not in first and first["completed"] == first["requests"]
    assert second == {"round": 2, "slice": "high-2", "level": "high", "run": 1, "rate": second["rate"],
                      "partial": True}
    assert got["capacity_sweep"] == []
    # the temporary folder (grid, calibrated and variant profiles, the runs' database) is gone, and said to be
    assert list(tmp.glob("cp-fidelity-*")) == [] and got["workdir"] is None and got["grid_profile"] is None
    assert "removed" in err


def _protocol(tmp_path, *flags):
    from fidelity_lib.protocol import Protocol

    args = F.parse_args(["--quick", *flags])
    args.workdir = tmp_path / "work"
    args.workdir.mkdir(parents=True)
    proto = Protocol(args, Console(file=io.StringIO()))
    proto.frozen = proto.tmp / "calibrated-profile.json"  # as the calibration leaves it without --profile-out
    proto.frozen.write_text("{}")
    proto.stage = "round 1 (low-1, run 1)"
    return args, proto


def test_keep_temp_keeps_the_folder_and_names_it_else_it_goes_with_the_profile_in_it(tmp_path):
    from fidelity_lib.interrupted import stopped

    digest = hashlib.sha256(b"{}").hexdigest()
    args, proto = _protocol(tmp_path / "a", "--keep-temp")
    err = io.StringIO()
    got = stopped(args, proto, proto.tmp, Console(file=err))
    assert proto.tmp == args.workdir and args.workdir.is_dir() and got["workdir"] == str(args.workdir)
    assert got["profile"] == str(proto.frozen) and got["profile_sha256"] == digest
    assert got["db"] == f"sqlite:///{args.workdir}/fidelity.db" and f"temporary folder kept: {args.workdir}" in err.getvalue()

    args, proto = _protocol(tmp_path / "b")
    err = io.StringIO()
    got = stopped(args, proto, proto.tmp, Console(file=err))
    assert not args.workdir.exists() and got["workdir"] is None and got["db"] is None
    assert got["profile"] is None and got["profile_sha256"] == digest  # the hash stays: the file went with the folder
    assert "removed with the temporary folder (--profile-out PATH or --keep-temp keeps it)" in err.getvalue()
