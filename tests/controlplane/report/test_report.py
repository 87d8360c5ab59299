"""HTML reports, opened in a real headless Chromium: no console errors, every plot rendered,
nothing fetched from a network, the sweep table sorts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import make_engine
from sim.sweep import load_spec, run_sweep
from sim.sweep.store import sweep_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip():
    """Playwright driving the system Chromium; in CI (CI=true) a missing one fails the test."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (.ci/setup installs it)"
    if missing is None and not Path(CHROMIUM).exists():
        missing = f"Chromium not found at {CHROMIUM} (.ci/setup installs the Debian package chromium)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright


def _open(path: Path, screenshot: Path):
    """Load ``path``; return (console errors, image natural widths, visible image widths, outside requests)."""
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors, outside = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri(), wait_until="load")
            natural = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            shown = page.evaluate("Array.from(document.images).map(i => i.getBoundingClientRect().width)")
            page.screenshot(path=str(screenshot), full_page=True)
            sorted_ok = None
            if page.query_selector("table.sortable th"):
                sorted_ok = page.evaluate(SORT_CHECK)
            return errors, natural, shown, outside, sorted_ok
        finally:
            browser.close()


# Click the sweep table's "attainment" header: the rows must come out in ascending order.
SORT_CHECK = """() => {
  const t = Array.from(document.querySelectorAll('table.sortable')).pop();
  const heads = Array.from(t.querySelectorAll('th')).map(h => h.textContent);
  const i = heads.indexOf('attainment');
  if (i < 0) return null;
  t.querySelectorAll('th')[i].click();
  const v = Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[i].dataset.v));
  return v.length > 1 && v.every((x, k) => k == 0 || v[k - 1] <= x);
}"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    db = f"sqlite:///{tmp / 'runs.db'}"
    spec = {"trace": {"limit": 600}, "space": {"cluster.models.0.replicas": [1, 2, 4]},
            "base": {"plugins.enabled": ["queue-limit", "least-loaded", "continuous-batching", "seed-autoscaler",
                                         "static-memory", "builtin-latency-models"]}}
    result = run_sweep(load_spec(data=spec), db, backend="serial")
    engine = make_engine(db)
    runs = sweep_runs(engine, result.sweep_id)
    engine.dispose()
    return tmp, db, result.sweep_id, [r["id"] for r in runs]


def test_run_report_opens_in_chromium_with_its_plots(stored):
    tmp, db, _, run_ids = stored
    out = tmp / "run.html"
    r = CliRunner().invoke(app, ["runs", "report", str(run_ids[0]), "--db", db, "--html", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "http://" not in page and "https://" not in page  # self-contained
    for section in ("summary", "latency CDFs", "per minute", "replicas and queue", "decisions"):
        assert f"<h2>{section}</h2>" in page
    errors, natural, shown, outside, _ = _open(out, tmp / "run.png")
    assert errors == [] and outside == []
    assert len(natural) == 4 and all(w > 500 for w in natural)  # CDFs, per minute, replicas/queue, timeline
    assert all(w > 300 for w in shown)
    assert (tmp / "run.png").stat().st_size > 50_000


def test_sweep_report_has_a_pareto_front_and_a_sortable_table(stored):
    tmp, db, sweep_id, run_ids = stored
    out = tmp / "sweep.html"
    r = CliRunner().invoke(app, ["runs", "report", "--sweep", str(sweep_id), "--db", db, "--html", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "<h2>Pareto front</h2>" in page and page.count("<tr>") >= 1 + len(run_ids)
    errors, natural, shown, outside, sorted_ok = _open(out, tmp / "sweep.png")
    assert errors == [] and outside == [] and len(natural) == 1 and natural[0] > 500
    assert sorted_ok is True


def test_report_errors_name_what_is_missing(stored):
    tmp, db, _, _ = stored
    r = CliRunner().invoke(app, ["runs", "report", "999", "--db", db, "--html", str(tmp / "x.html")])
    assert r.exit_code == 2 and "run 999 not found" in r.output
    r = CliRunner().invoke(app, ["runs", "report", "--sweep", "77", "--db", db, "--html", str(tmp / "x.html")])
    assert r.exit_code == 2 and f"sweep 77 not found in {db}" in r.output  # (which database: as for a run)
    r = CliRunner().invoke(app, ["runs", "report", "--db", db])
    assert r.exit_code != 0


def test_a_sweep_without_full_trace_runs_says_so_instead_of_an_empty_plot(tmp_path):
    from controlplane.storage import ensure_schema
    from sim.sweep.store import create_or_resume

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(db)
    ensure_schema(engine)
    sweep_id, _ = create_or_resume(engine, name="killed", kind="search", spec={"name": "killed"}, spec_hash="h",
                                   trace="t.csv", num_runs=None, fresh=True)
    engine.dispose()
    out = tmp_path / "sweep.html"
    r = CliRunner().invoke(app, ["runs", "report", "--sweep", str(sweep_id), "--db", db, "--html", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "no run of the full trace is stored" in page and "<h2>Pareto front</h2>" not in page
