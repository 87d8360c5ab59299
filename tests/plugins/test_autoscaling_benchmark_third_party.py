"""benchmarks/autoscaling.py with third-party autoscalers (installed by entry point): one that raises is reported
as such (its row, the JSON line and a warning on stderr), and one without bound settings is bounded as the
built-in ones are (--max-replicas, by the `scaling-rules` wrapper)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("autoscaling_benchmark_3p", ROOT / "benchmarks" / "autoscaling.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

PLUGINS = '''
from controlplane import Plugin, hookimpl
from controlplane.decisions import ScaleDecision


class Broken(Plugin):
    name = "broken-scaler"

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        raise RuntimeError("bug in my forecaster")


class Four(Plugin):
    name = "four-scaler"  # no min_replicas / max_replicas settings

    @hookimpl
    def cp_scale(self, ctx, model, scaling):
        return ScaleDecision(model, 4, "always 4")
'''


def _install(tmp_path, monkeypatch) -> None:
    """A distribution on sys.path with the autoscalers 'broken-scaler' and 'four-scaler'."""
    from controlplane import plugin_manager

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugin_manager, "_discovered", None)  # (restored after: later runs do not see them)
    (site / "cp_third_party_scalers.py").write_text(PLUGINS)
    info = site / "cp_third_party_scalers-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cp-third-party-scalers\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[controlplane]\nbroken-scaler = cp_third_party_scalers:Broken\n"
                                           "four-scaler = cp_third_party_scalers:Four\n")


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_a_policy_that_raises_is_reported_with_its_plugin_errors(tmp_path, monkeypatch, capsys):
    """Its row was the fallback's numbers (one fixed replica), with nothing saying the policy had raised."""
    _install(tmp_path, monkeypatch)
    assert bench.main(["--limit", "200", "--policies", "broken-scaler,hpa", "--no-static", "--progress", "0"]) == 0
    out, err = capsys.readouterr()
    summary = _last_json(out)
    assert summary["broken-scaler"]["plugin_errors"] > 0 and summary["hpa"]["plugin_errors"] == 0
    for key in ("slo_attainment", "gpu_hours", "scale_events", "oscillations"):  # the documented keys stay
        assert key in summary["broken-scaler"] and key in summary["hpa"]
    header = next(ln for ln in out.splitlines() if ln.startswith("policy "))
    assert "plugin err" in header
    warning = next(ln for ln in err.splitlines() if ln.startswith("warning: plugin errors"))
    assert "broken-scaler: " in warning and "broken-scaler cp_scale" in warning and "hpa" not in warning


def test_no_warning_when_no_plugin_raised(capsys):
    assert bench.main(["--limit", "200", "--policies", "hpa", "--no-static", "--progress", "0"]) == 0
    out, err = capsys.readouterr()
    assert _last_json(out)["hpa"]["plugin_errors"] == 0 and "plugin errors" not in err


def test_a_policy_without_bound_settings_is_bounded_by_max_replicas(tmp_path, monkeypatch, capsys):
    """`four-scaler` (always 4, no min/max settings) peaked at 4 with --max-replicas 2 beside hpa at 2."""
    _install(tmp_path, monkeypatch)
    runs = tmp_path / "runs.jsonl"
    assert bench.main(["--limit", "200", "--speed-up", "8", "--policies", "four-scaler,hpa", "--max-replicas", "2",
                       "--no-static", "--progress", "0", "--out", str(runs)]) == 0
    rows = {r["policy"]: r for r in map(json.loads, runs.read_text().splitlines())}
    assert rows["four-scaler"]["peak_replicas"] == 2 and rows["four-scaler"]["scale_events"] >= 1
    assert rows["hpa"]["peak_replicas"] <= 2
    err = capsys.readouterr().err
    assert "note: four-scaler has no min_replicas or max_replicas setting: the scaling-rules wrapper bounds it " \
           "to 1..2" in err
    assert "note: hpa" not in err  # (the built-in ones take their bounds as settings)


def test_bounds_go_to_the_policy_s_settings_or_to_scaling_rules(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch)
    bounds = {"min_replicas": 1, "max_replicas": 16}
    assert bench.split_bounds("hpa", bounds) == (bounds, {})
    assert bench.split_bounds("four-scaler", bounds) == ({}, bounds)
    assert bench.split_bounds("scheduled-replicas", bounds) == ({}, {})  # (the clairvoyant bound: its schedule)


def test_the_oscillation_window_of_a_policy_without_a_window_setting_is_300_s(tmp_path, monkeypatch):
    """docs/autoscaling.md#benchmark: a third-party policy without a window setting, and the clairvoyant bound
    (`scheduled-replicas`), are counted at 300 s; the first of WINDOW_SETTINGS a policy has, set or not, is its window."""
    _install(tmp_path, monkeypatch)
    assert bench.window_s("four-scaler", {}) == 300.0 and bench.window_s("scheduled-replicas", {}) == 300.0
    assert bench.window_s("kpa", {}) == 60.0 and bench.window_s("kpa", {"scale_down_delay_s": 30}) == 30.0
