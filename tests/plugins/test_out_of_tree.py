"""An out-of-tree plugin, installed as a real distribution, found through its entry point.

`examples/cp-plugin-shortest-prompt` is pip-installed (no network, no build isolation) into a
temporary `--target` folder put on `sys.path`, so `importlib.metadata` sees its entry point the
way it sees any installed plugin, and the shared virtual environment is left untouched.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections import deque
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.config import DEFAULT_PLUGINS
from controlplane.errors import ConfigError
from controlplane.plugin_manager import discover_plugins
from controlplane.testing import make_context, make_requests, make_trace, make_worker, replay_with
from sim.traces import TraceRequest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cp-plugin-shortest-prompt"
DIST = "cp-plugin-shortest-prompt"
NAME = "shortest-prompt-first"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    # Build from a copy: a build writes build/ and *.egg-info next to the sources.
    src = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site-packages")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip install of {EXAMPLE} failed:\n{proc.stdout}\n{proc.stderr}")
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("cp_shortest_prompt", None)
        importlib.invalidate_caches()


def test_the_entry_point_is_visible_to_importlib_metadata(installed):
    eps = [ep for ep in metadata.entry_points(group="controlplane") if ep.name == NAME]
    assert len(eps) == 1
    assert eps[0].value == "cp_shortest_prompt:ShortestPromptFirst"
    assert (eps[0].dist.name, eps[0].dist.version) == (DIST, "0.1.0")


def test_discover_plugins_lists_it_with_its_distribution(installed):
    info = discover_plugins()[NAME]
    assert (info.dist, info.version, info.entry_point) == (DIST, "0.1.0", "cp_shortest_prompt:ShortestPromptFirst")
    assert info.hooks == ["cp_form_batch"]
    assert Path(sys.modules[info.target.__module__].__file__).parent == installed  # the installed copy
    assert info.doc == "Prefill waiting requests in order of prompt length, shortest first."


def test_plugins_list_shows_it(installed, monkeypatch):
    from controlplane.cli import app, common

    monkeypatch.setattr(common.out, "_width", 400)
    out = CliRunner().invoke(app, ["plugins", "list"]).stdout
    line = next(ln for ln in out.splitlines() if f"│ {NAME} " in ln)
    assert DIST in line and "0.1.0" in line and "cp_form_batch" in line


def _burst() -> list[TraceRequest]:
    # A long prompt keeps the worker busy while four more arrive: 4000, 50, 2000 and 10 tokens.
    return [TraceRequest("long", 0.0, 3000, 4)] + [
        TraceRequest(f"p{n}", 0.01 * (i + 1), n, 4) for i, n in enumerate((4000, 50, 2000, 10))
    ]


def _enabled_first(settings: dict | None = None) -> dict:
    plugins = {"enabled": [NAME, *DEFAULT_PLUGINS]}
    if settings is not None:
        plugins["settings"] = {NAME: settings}
    return plugins


def test_a_replay_with_it_enabled_records_its_decisions(installed):
    one = {"models": [{"name": "default", "replicas": 1, "max_batch_tokens": 4096}]}
    res = replay_with(trace=_burst(), cluster=one, plugins=_enabled_first({"max_prefills": 8}))
    batches = [d for d in res.decisions if d.action == "batch"]
    mine = [d for d in batches if d.plugin == NAME]
    assert mine and all(d.reason.startswith("shortest prompt first") for d in mine)
    started = {r.request_id: r.scheduled_s for r in res.requests}
    # Shortest first: 10, 50 and 2000 tokens go together, 4000 waits for the next batch.
    assert started["p10"] == started["p50"] == started["p2000"] < started["p4000"]
    assert res.summary["num_completed"] == 5
    assert mine[1].payload["prefill"] == 3 and mine[1].payload["prefill_tokens"] == 2060

    fcfs = replay_with(trace=_burst(), cluster=one)
    started = {r.request_id: r.scheduled_s for r in fcfs.requests}
    assert started["p4000"] < started["p10"]  # the built-in serves arrival order
    assert NAME not in {d.plugin for d in fcfs.decisions}


def test_its_settings_are_validated_by_name(installed):
    with pytest.raises(ConfigError, match=rf"plugins\.settings\.{NAME}\.max_prefills"):
        replay_with(trace=make_trace(3), plugins=_enabled_first({"max_prefills": 0}))


def test_the_installed_class_orders_prefills_by_prompt_length(installed):
    from cp_shortest_prompt import ShortestPromptFirst

    w = make_worker(waiting=deque(make_requests(4, prompt_tokens=[900, 30, 30, 200])), max_num_seqs=3)
    plan = ShortestPromptFirst().cp_form_batch(ctx=make_context(workers=[w]), worker=w)
    assert [(r.request_id, n) for r, n in plan.prefill] == [("r1", 30), ("r2", 30), ("r3", 200)]
    w = make_worker(waiting=deque(make_requests(2, prompt_tokens=[300, 100])), num_kv_blocks=10)
    plan = ShortestPromptFirst().cp_form_batch(ctx=make_context(workers=[w]), worker=w)
    assert [n for _, n in plan.prefill] == [100]  # 300 tokens need 19 blocks: it waits
