"""`controlplane keys`: the printed config entry loads back as the same digest and tenant, whatever
the tenant's name."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from controlplane.cli import keys
from controlplane.config import load_config
from controlplane.live.api_keys import hash_key

runner = CliRunner()


def entry_of(output: str) -> str:
    return output[output.index("auth:"):]


@pytest.mark.parametrize("tenant", ["team-a", "team: a", "#ops", "a,b", "yes", "123", "it's", "[x]", "ünï"])
def test_the_printed_entry_loads_back_as_the_same_tenant(tmp_path, tenant):
    done = runner.invoke(keys.app, ["hash", tenant, "--key", "secret"])
    assert done.exit_code == 0, done.output
    path = tmp_path / "keys.yaml"
    path.write_text(entry_of(done.output))
    (key,) = load_config(path).auth.api_keys
    assert (key.tenant, key.sha256) == (tenant, hash_key("secret"))


def test_a_plain_tenant_stays_plain():
    done = runner.invoke(keys.app, ["new", "team-a"])
    assert done.exit_code == 0 and "tenant: team-a}" in done.output
    key = done.output.split("shown once, not stored anywhere): ")[1].split()[0]
    assert yaml.safe_load(entry_of(done.output))["auth"]["api_keys"][0]["sha256"] == hash_key(key)


@pytest.mark.parametrize("command", [["new", ""], ["hash", "  ", "--key", "k"]])
def test_an_empty_tenant_is_a_usage_error(command):
    done = runner.invoke(keys.app, command)
    assert done.exit_code == 2 and "the tenant must not be empty" in done.output


def test_hash_reads_one_line_of_standard_input():
    done = runner.invoke(keys.app, ["hash", "team-b"], input="secret\n")
    assert done.exit_code == 0 and hash_key("secret") in done.output
    empty = runner.invoke(keys.app, ["hash", "team-b"], input="")
    assert empty.exit_code == 2 and "no key given" in empty.output


def test_no_key_is_an_error_on_stderr():
    """The error goes to stderr, as every command's does: stdout (a config entry, redirected to a file) stays empty."""
    empty = runner.invoke(keys.app, ["hash", "team-b"], input="")
    assert empty.exit_code == 2 and "no key given" in empty.stderr and empty.stdout == ""


def test_hash_asks_for_the_key_on_a_terminal(monkeypatch):
    """On a terminal, a prompt (not echoed) instead of a silent wait for a line."""
    asked = []
    monkeypatch.setattr(keys.sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(keys.typer, "prompt", lambda text, **kw: asked.append((text, kw)) or "secret")
    assert keys._read_key() == "secret"
    assert asked == [("key", {"hide_input": True, "default": "", "show_default": False})]
