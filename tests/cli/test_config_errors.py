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
     "cluster.models.0.precision: unknown precision 'fp61'; known: auto, bf16, fp16, fp32, int8, nf4"),
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
