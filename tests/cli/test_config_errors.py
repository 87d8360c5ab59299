"""`controlplane sim replay -c FILE` of a config the tester got wrong: an error naming the file and the key, exit
status 2, and no run row left behind (the config is checked when it loads, before a run is stored)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def _replay(tmp_path: Path, config: Path) -> tuple[int, str]:
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "-c", str(config), "--db", f"sqlite:///{db}",
                                      "--no-progress"])
    assert not db.exists()  # no run row, failed or not
    return result.exit_code, " ".join(result.stderr.split())


@pytest.mark.parametrize(("text", "line"), [
    ("cluster: {models: [{name: default, precision: fp61, model_spec: meta-llama/Llama-2-7b-hf}]}\n",
     "cluster.models.0.precision: unknown precision 'fp61'; known: auto, bf16, fp16, fp32, fp8, int8, nf4"),
    ("cluster: {models: [{name: default, model_spec: meta-llama/Llama-2-7b}]}\n",
     "cluster.models.0.model_spec: unknown model 'meta-llama/Llama-2-7b'; known: Qwen/Qwen-72B, "),
    ("sim: {guardian_tenant_block_rates: {a: 1.5}}\n",
     "sim.guardian_tenant_block_rates.a: Input should be less than or equal to 1"),
])
def test_an_unknown_precision_or_model_or_a_rate_out_of_range_is_a_config_error(tmp_path, text, line):
    """They failed when the run started (a failed run row), as a KeyError's quoted text naming neither key nor file."""
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, err = _replay(tmp_path, config)
    assert code == 2 and err.startswith(f"error: invalid configuration in {config}: {line}"), err


@pytest.mark.parametrize("url, file", [("${DB_URL}", "${DB_URL}"), ("sqlite:///${HOME}/runs.db", "${HOME}/runs.db"),
                                       ("$DB_URL", "$DB_URL")])
def test_a_variable_in_storage_url_is_refused_not_taken_for_a_file_s_name(tmp_path, monkeypatch, url, file):
    """`storage: {url: "${DB_URL}"}` is not expanded: the run went, silently, to a SQLite file named `${DB_URL}` in
    the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_URL", f"sqlite:///{tmp_path / 'meant.db'}")
    (tmp_path / "${HOME}").mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(f'storage: {{url: "{url}"}}\n')
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "5", "-c", str(config), "--no-progress"])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2 and said.startswith(
        f"error: invalid configuration in {config}: storage.url: {url!r} holds the variable reference "), said
    assert (f"config values are not expanded: it would be used as written (the SQLite file {file!r}); write the URL "
            f'itself, or have a shell expand it into the environment variable that overrides storage.url: '
            f'CONTROLPLANE_STORAGE__URL="{url}"') in said, said
    assert not (tmp_path / file).exists() and not (tmp_path / "meant.db").exists()
    monkeypatch.setenv("CONTROLPLANE_STORAGE__URL", url)  # (the variable given unexpanded: `runs list` reads it alone)
    result = CliRunner().invoke(app, ["runs", "list"])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2 and f"storage.url: {url!r} holds the variable reference" in said, said
    assert "(from the environment: CONTROLPLANE_STORAGE__URL)" in said


def test_a_dollar_in_a_storage_url_s_password_is_no_variable():
    from controlplane.config import load_config

    url = "postgresql+psycopg://me:pa$word@127.0.0.1:5432/test"
    assert load_config(overrides={"storage": {"url": url}}).storage.url == url
