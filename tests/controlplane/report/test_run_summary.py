"""A run's report shows its summary as `runs show` does: labelled rows, and the per-model figures and the GPU
time by GPU type as tables (they were raw summary keys, `by_model` and `gpu_seconds_by_gpu` JSON blobs in a cell)."""

from __future__ import annotations

import dataclasses
import html
import re

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.report.summary import by_gpu_table, other_rows, shown_rows
from controlplane.testing import make_config, make_trace, replay_with

from .test_report import _open

CLUSTER = {"models": [{"name": "chat", "replicas": 1, "gpu": "l4"},
                      {"name": "code", "replicas": 2, "gpu": "h100-80gb"}],
           "gpu_prices": {"l4": 1.0}}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary")
    url = f"sqlite:///{tmp / 'runs.db'}"
    trace = [dataclasses.replace(t, model="code" if i % 2 else "chat") for i, t in enumerate(make_trace(40, qps=4))]
    summary = replay_with(trace=trace, config=make_config(cluster=CLUSTER, storage={"url": url}), db_url=url).summary
    out = tmp / "run.html"
    done = CliRunner().invoke(app, ["runs", "report", "1", "--db", url, "--html", str(out)])
    assert done.exit_code == 0, done.output
    return tmp, out, summary


def _cells(page: str, heading: str) -> list[list[str]]:
    """The rows of the table under ``heading`` (an h2 or h3), each a list of its cells' text."""
    table = re.search(rf"<h[23]>{re.escape(heading)}</h[23]><table>(.*?)</table>", page, re.S).group(1)
    return [[html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table)]


def test_the_summary_has_labels_and_no_json_blob(two_models):
    _, out, summary = two_models
    page = out.read_text()
    rows = {r[0]: r[1] for r in _cells(page, "summary")[1:]}
    assert rows["GPU-hours"] == f"{summary['gpu_hours']:.4g}" and rows["cost (USD)"] == f"{summary['cost_usd']:.4g}"
    assert rows["requests"] == "40" and "gpu_hours" not in rows and "by_model" not in rows
    assert not any(v.startswith("{") for v in rows.values())


def test_by_model_and_by_gpu_are_tables(two_models):
    _, out, summary = two_models
    page = out.read_text()
    models = _cells(page, "by model")
    assert models[0][:3] == ["model", "requests", "completed"] and "GPU-hours" in models[0]
    i, j = models[0].index("GPU-hours"), models[0].index("cost (USD)")
    found = {r[0]: (r[i], r[j]) for r in models[1:]}
    for name in ("chat", "code"):
        entry = summary["by_model"][name]
        assert found[name] == (f"{entry['gpu_hours']:.4g}", f"{entry['cost_usd']:.4g}")
    gpus = {r[0]: r[1:] for r in _cells(page, "GPU time by GPU type")[1:]}
    l4 = summary["gpu_seconds_by_gpu"]["l4"]
    assert gpus["l4"] == [f"{l4:.4g}", f"{l4 / 3600:.4g}", "1", f"{l4 / 3600:.4g}"]  # the config's price
    assert gpus["h100-80gb"][2] == "4"  # the default price


def test_the_page_still_opens_clean_in_chromium(two_models):
    tmp, out, _ = two_models
    errors, natural, _, outside, _ = _open(out, tmp / "run.png")
    assert errors == [] and outside == [] and all(w > 500 for w in natural)


def test_other_keys_flatten_and_unpriced_gpus_have_no_cost():
    summary = {"num_requests": 3, "gpu_hours": 0.5, "cost_usd": None, "cost_error": "no price for GPU 'x'",
               "gpu_seconds_by_gpu": {"x": 1800.0}, "prefix": {"hits": 2, "by": {"a": 1}}, "tags": ["p", "q"],
               "cache_gpu_seconds_saved_upper": 1.0}
    rows = dict(map(tuple, shown_rows(summary)))
    assert rows["cost (USD)"] == "-" and rows["cost not known"] == "no price for GPU 'x'"
    assert rows["\u00a0\u00a0at most (hits computed one at a time)"] == "1"
    assert other_rows(summary) == [["prefix.hits", "2"], ["prefix.by.a", "1"], ["tags", "p, q"]]
    headers, gpus = by_gpu_table(summary, {})
    assert gpus == [["x", "1800", "0.5", "-", "-"]]
