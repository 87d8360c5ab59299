"""`controlplane sim replay` into a shared PostgreSQL database: what its last line says."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from controlplane.cli import app
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.mark.postgres
def test_the_stored_line_hides_the_password_and_names_the_database(pg_url):  # noqa: F811
    url = make_url(pg_url).set(password="Sekrit68").render_as_string(hide_password=False)  # (trust auth takes any)
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--db", url])
    assert result.exit_code == 0, result.output
    assert "Sekrit68" not in result.output
    shown = url.replace(":Sekrit68@", ":***@")
    assert (f"stored in {shown} as run 1; see `controlplane runs show 1 --db '{shown}'` (the password is shown as "
            "***: put yours back)") in result.stdout  # (shell-quoted: *** would glob)
    plain = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--db", pg_url])  # no password: nothing to say
    assert plain.exit_code == 0 and "put yours back" not in plain.stdout


def test_the_default_database_needs_no_db_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "20"])
    assert result.exit_code == 0, result.output
    assert "stored in sqlite:///controlplane.db as run 1; see `controlplane runs show 1`\n" in result.stdout


def test_length_caps_say_how_many_requests_they_left_at_the_cap(tmp_path, monkeypatch):
    # As `live-replay` says before its run: a capped trace can become requests of one length.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "50", "--max-prompt-tokens", "1000",
                                      "--max-output-tokens", "100000"])
    assert result.exit_code == 0, result.output
    from controlplane.storage import make_engine
    from controlplane.storage.queries import iter_request_rows

    rows = list(iter_request_rows(make_engine("sqlite:///controlplane.db"), 1))
    at_cap = sum(r["prompt_tokens"] == 1000 for r in rows)
    assert len(rows) == 50 and 0 < at_cap < 50 and max(r["prompt_tokens"] for r in rows) == 1000
    text = " ".join(result.stderr.split())
    assert (f"length caps: {at_cap} of 50 prompts at --max-prompt-tokens 1000, 0 of 50 outputs at --max-output-tokens "
            "100000 (cut there, or exactly that long; `live-replay` with the same caps serves the same lengths)") in text
    plain = CliRunner().invoke(app, ["sim", "replay", "--limit", "5"])  # no cap, no line
    assert plain.exit_code == 0 and "length caps" not in plain.stderr


def test_a_caps_count_that_cannot_be_read_back_says_so(tmp_path):
    from controlplane.cli.sim import _caps_line

    assert _caps_line(f"sqlite:///{tmp_path / 'elsewhere.db'}", 1, 256, None) == (
        "length caps: not counted (the run's requests could not be read back)")


@pytest.mark.parametrize("kind", ["not a database", "unreachable server"])
def test_a_database_that_cannot_be_used_is_one_error_line_naming_its_url(tmp_path, kind):
    # As every command's (`runs list`, docs/configuration.md): the URL, its password hidden.
    if kind == "not a database":
        path = tmp_path / "notdb.db"
        path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" * 200)
        url = shown = f"sqlite:///{path}"
    else:
        url, shown = "postgresql://nobody:secret@127.0.0.1:1/x", "postgresql://nobody:***@127.0.0.1:1/x"
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "--db", url, "--no-progress", "--json"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: database: {shown}: ") and "secret" not in result.stderr


@pytest.mark.parametrize("json_out", [False, True])
def test_a_run_whose_rows_were_spilled_at_its_end_still_prints_its_summary(tmp_path, monkeypatch, json_out):
    """The database away when the run ended: its rows went to a spill file and the error said so, but the
    summary (whole, carried by the error) was never printed, not even with --json."""
    import sim.replay
    from controlplane.storage.errors import StorageError

    spill = tmp_path / "controlplane-spill-run1.jsonl"

    def spilled(*args, **kwargs):
        exc = StorageError(f"1,234 rows could not be written; saved to {spill}: load them with "
                           f"`controlplane db load-spill {spill}` once the database is back", spill_path=spill)
        exc.summary = {"run_id": 1, "num_requests": 20, "num_completed": 20, "slo_attainment": 1.0}
        raise exc

    monkeypatch.setattr(sim.replay, "replay", spilled)
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--no-progress",
                                      "--db", f"sqlite:///{tmp_path / 'runs.db'}", *(["--json"] if json_out else [])])
    assert result.exit_code == 2
    if json_out:
        assert json.loads(result.stdout.splitlines()[0])["num_completed"] == 20
    else:
        assert "run 1 - its rows spilled" in result.stdout and "SLO attainment" in result.stdout
    assert result.stderr.count(str(spill)) == 2  # (the message's own, once, and the command to load it)


def test_a_warning_s_brackets_are_text_not_markup(capsys):
    """A config warning naming `guardians.models[rules]` printed `guardians.models`: the brackets read as a markup
    tag and vanished."""
    from controlplane.cli.sim import _warn

    _warn("guardians.models[rules].latency: the default; see /data/[run 1]/p.json")
    assert "guardians.models[rules].latency: the default; see /data/[run 1]/p.json" in capsys.readouterr().err
