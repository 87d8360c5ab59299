"""An output whose encoding cannot write a name (``PYTHONIOENCODING=ascii``, a C locale) ends with one error line
saying what to do, exit 1; it was a traceback ending ``UnicodeEncodeError`` after the run was stored."""

from __future__ import annotations

import os
import subprocess
import sys


def test_an_ascii_stdout_gets_an_error_line_not_a_traceback(tmp_path):
    trace = tmp_path / "é.csv"
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"r{i},{i},10,5\n" for i in range(3)), encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", str(trace), "--db",
                           str(tmp_path / "runs.db"), "--no-progress"], capture_output=True, env=env, timeout=120)
    err = done.stderr.decode("ascii")
    assert done.returncode == 1 and "Traceback" not in err, err
    assert "'\\xe9' cannot be written in the output's encoding (ascii); set PYTHONIOENCODING=utf-8" in err
    json_out = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim", "replay", str(trace), "--db",
                               str(tmp_path / "runs.db"), "--json"], capture_output=True, env=env, timeout=120)
    assert json_out.returncode == 0, json_out.stderr.decode("ascii")
