"""benchmarks/vs_vidur.py: bad --runs, --anchors, --repeats are one line naming them, before any run."""

from __future__ import annotations

import pytest

from tests.fixtures.benchmarks import load_benchmark, never_called

bench = load_benchmark("vs_vidur")


@pytest.mark.parametrize(("argv", "option", "says"), [
    (["--runs", "bogus"], "--runs", "code_r1_n10000_qps0.8"),  # (was a FileNotFoundError traceback)
    (["--runs", "code_r1_n10000_qps0.8"], "--runs", "other_run"),  # no such folder: the folders there
    (["--anchors", "{tmp}/nope"], "--anchors", "no such folder"),  # (FileNotFoundError traceback)
    (["--repeats", "0"], "--repeats", ">= 1"),  # (IndexError)
])
def test_a_bad_option_is_one_line_naming_it(argv, option, says, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "time_cli", never_called)
    monkeypatch.setattr(bench, "yardstick_us", lambda: 29.5)
    (tmp_path / "other_run").mkdir()
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        bench.run_main(bench.main, ["--anchors", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    line = next(line for line in err.splitlines() if "error:" in line)
    assert option in line and says in line
