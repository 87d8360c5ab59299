"""A pool sweep started by a script's top-level code, without `if __name__ == "__main__":`, is refused before the
database is touched, saying to add the guard (it was multiprocessing's bootstrapping traceback, BrokenProcessPool
and a sweep stored failed)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.sweep.main_guard import MainGuardError, in_reimported_main

ROOT = Path(__file__).resolve().parents[3]
SPEC = "name: tiny\ntrace: {format: azure, limit: 20}\nseeds: [0]\nspace:\n  cluster.models.0.replicas: [1, 2]\n"


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "spec.yaml").write_text(SPEC)
    script = tmp_path / "sweep_script.py"
    script.write_text(body.format(spec=tmp_path / "spec.yaml", db=f"sqlite:///{tmp_path / 'runs.db'}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("call", [
    'run_sweep(load_spec("{spec}"), "{db}", backend="pool", workers=1)',
    'run_sweep(load_spec("{spec}"), "{db}", backend=make_backend("pool", workers=1))',
])
def test_a_script_without_the_main_guard_is_told_to_add_it(tmp_path, call):
    done = _run(tmp_path, "from sim.sweep import load_spec, make_backend, run_sweep\n\n" + call + "\n")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"sim.sweep.main_guard.MainGuardError: the pool backend's worker processes import the main module "
                    f"again, and line 3 of {tmp_path / 'sweep_script.py'}, which starts this sweep, is not under "
                    "`if __name__ == \"__main__\":`, so each of them would start it again: put the script's code "
                    "under `if __name__ == \"__main__\":` (docs/sweeps.md, 'From Python'), or use backend=\"serial\"")
    assert "BrokenProcessPool" not in done.stderr and "bootstrapping" not in done.stderr
    assert not (tmp_path / "runs.db").exists()  # (refused before the database is touched: no sweep stored failed)


def test_a_script_with_the_guard_runs_its_pool_sweep(tmp_path):
    done = _run(tmp_path, 'from sim.sweep import load_spec, run_sweep\n\n\ndef main():\n'
                          '    result = run_sweep(load_spec("{spec}"), "{db}", backend="pool", workers=1)\n'
                          '    print(result.ran, result.failed)\n\n\nif __name__ == "__main__":\n    main()\n')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2 {}"


def test_a_worker_importing_the_main_module_again_refuses_the_sweep():
    process = multiprocessing.current_process()
    process._inheriting = True  # (what multiprocessing sets while a new worker imports the main module)
    try:
        with pytest.raises(MainGuardError, match=r"^this process is a pool worker importing the main module \(.*\) "
                                                 r"again, whose top-level code starts a sweep: put the script's code"):
            in_reimported_main()
    finally:
        del process._inheriting
    in_reimported_main()
