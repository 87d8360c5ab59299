"""Tables in a narrow terminal (`controlplane.cli.tables`): numbers, ids, times and names are never cut (rich
cut them with an ellipsis: `runs list` headed its requests 'reque…', `runs show --timeline` cut its clock to
'0:00:…', `plugins list` gave its descriptions 5 characters); text folds; what does not fit goes a field a line."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from controlplane.cli import app, common
from controlplane.cli.tables import TEXT, WHOLE, WORDS, fitted

pytestmark = pytest.mark.usefixtures("no_controlplane_env")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('tables') / 'runs.db'}"
    for limit, name in (("300", "a-rather-long-run-name-for-a-narrow-terminal"), ("40", "short")):
        done = CliRunner().invoke(app, ["sim", "replay", "--limit", limit, "--db", db, "--json", "--no-progress",
                                        "--name", name])
        assert done.exit_code == 0, done.output
    return db


@pytest.fixture
def columns(monkeypatch):
    """The commands' stdout console ``width`` columns wide, as a terminal of that width."""
    def set_width(width: int) -> None:
        monkeypatch.setattr(common.out, "_width", width)
    return set_width


def _text(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.stdout


def _fits(text: str, width: int) -> None:
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text


@pytest.mark.parametrize("width", [80, 60, 40])
def test_runs_list_cuts_no_number_id_or_date(runs, columns, width):
    columns(width)
    text = _text("runs", "list", "--db", runs)
    _fits(text, width)
    listed = json.loads(_text("runs", "list", "--db", runs, "--json"))
    words = set(text.split())
    for run in listed:
        assert {str(run["id"]), str(run["num_requests"]), str(run["num_completed"]), f"{run['e2e_p50_s']:.4g}",
                run["started_at"][:10], run["started_at"][11:19]} <= words, (run, text)
    assert {"requests", "completed"} <= words


def test_runs_list_at_200_columns_is_the_table_as_it_was(runs, columns):
    columns(200)
    text = _text("runs", "list", "--db", runs)
    assert re.search(r"│ 2  │ short +│ sim  │ finished │ AzureLLMInferenceTrace_code\.csv \(limit=40\) +│ 40 +│ 40 +│", text), text


@pytest.mark.parametrize("width", [80, 100])
def test_the_timeline_cuts_no_time_clock_or_target(runs, columns, width):
    columns(width)
    text = _text("runs", "show", "1", "--db", runs, "--timeline")
    _fits(text, width)
    decisions = json.loads(_text("runs", "show", "1", "--db", runs, "--timeline", "--json"))["scale_decisions"]
    assert decisions
    words = text.split()
    for d in decisions:
        m, s = divmod(int(round(d["time_s"])), 60)
        assert f"{m // 60:d}:{m % 60:02d}:{s:02d}" in words and f"{d['time_s']:.1f}" in words


@pytest.mark.parametrize("width", [80, 130])
def test_plugins_list_shows_every_name_version_and_description_whole(columns, width):
    from controlplane.plugin_manager import discover_plugins

    columns(width)
    done = CliRunner().invoke(app, ["plugins", "list"])
    text = done.stdout
    _fits(text, width)
    said = " ".join(text.replace("│", " ").split())
    for name, p in discover_plugins().items():
        assert name in text.split() and (p.version or "-") in text.split()
        if width == 80:  # (a plugin's fields a line each: its description whole, one paragraph)
            assert " ".join(p.doc.split()) in said, name


def test_a_table_that_fits_is_left_as_it_is():
    t = Table("id", "text")
    t.add_row("12345", "a few words")
    assert fitted(t, 80, (WHOLE, TEXT)) is t and t.box is not None and t.columns[0].min_width is None


@pytest.mark.parametrize("width", [30, 24])
def test_whole_columns_keep_their_values_and_words_columns_their_words(width):
    t = Table("id", "requests", "status", "reason")
    t.add_row("1234567", "8,819", "finished (300 rows refused)", "a reason of many words " * 3)
    console = Console(width=width, record=True)
    console.print(fitted(t, width, (WHOLE, WHOLE, WORDS, TEXT)))
    text = console.export_text()
    _fits(text, width)
    assert {"1234567", "8,819", "finished", "refused)"} <= set(text.split())


def test_a_dumb_terminal_gets_the_width_asked_for(monkeypatch):
    """Under ``TERM=dumb`` rich makes every terminal console 80 columns wide, the one `fitted` measures with
    too: a 90- or 120-column terminal's tables came out cut (``reque…``, ``2026-1…``)."""
    import io

    from rich.console import Console
    from rich.table import Table

    from controlplane.cli.tables import TEXT, WHOLE, WORDS, fitted

    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("FORCE_COLOR", "1")  # (a terminal, as a real one is)
    t = Table(header_style="bold")
    for h in ("id", "name", "status", "trace", "requests", "completed", "started"):
        t.add_column(h)
    t.add_row("2", "bundled-slo-planner", "finished", "AzureLLMInferenceTrace_code.csv (window_end_s=600)", "1482",
              "1482", "2026-12-07 12:03:58")
    buf = io.StringIO()
    Console(file=buf, width=90, height=25, force_terminal=True).print(
        fitted(t, 90, (WHOLE, TEXT, WORDS, TEXT, WHOLE, WHOLE, WORDS)))
    assert "…" not in buf.getvalue() and "12:03:58" in buf.getvalue(), buf.getvalue()


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("plugin", ["slo-planner", "queue-limit"])
def test_plugins_show_never_cuts_a_type_default_or_description(columns, width, plugin):
    """At 80 columns `plugins show slo-planner` cut 42 cells (``'request_cost…``, ``(plugins.finish_tim…``):
    the allowed values a reader came to look up."""
    columns(width)
    text = _text("plugins", "show", plugin)
    assert "…" not in text
    _fits(text, width)
