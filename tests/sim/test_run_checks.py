"""What a simulated run's start refuses of its memory plan, and warns of its GPU names (`sim.run_checks`)."""

from __future__ import annotations

import pytest

from controlplane.config import load_config
from controlplane.errors import ConfigError
from sim.run_checks import checked_run_config

LLAMA7 = "meta-llama/Llama-2-7b-hf"
PLUGINS = ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "builtin-latency-models"]


def _config(tmp_path, deployment: dict, plugins: list[str] | None = None, settings: dict | None = None, **more):
    import yaml

    data = {"cluster": {"models": [{"name": "default", "replicas": 1, **deployment}]},
            "plugins": {"enabled": plugins if plugins is not None else [*PLUGINS, "static-memory"],
                        "settings": settings or {}}, **more}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_config(path)


def _check(path, config, said=None):
    return checked_run_config(config, simulated=True, warn=(said.append if said is not None else print), path=path,
                              database=False)


def test_an_unknown_gpu_under_a_known_model_is_named_by_its_key(tmp_path):
    """``gpu: a100-40gb`` with a known model_spec said "unknown gpu 'a100-40gb'", no file nor key (the catalogue's
    KeyError passed the check, which caught ValueErrors)."""
    path, config = _config(tmp_path, {"latency_model": "linear", "model_spec": LLAMA7, "gpu": "a100-40gb"})
    with pytest.raises(ConfigError) as caught:
        _check(path, config)
    assert str(caught.value).startswith(
        f"invalid configuration in {path}:\n  cluster.models.0.gpu: unknown gpu 'a100-40gb' (did you mean "
        "'a100-80gb'?); known: a100-80gb, a10g, cpu, h100-80gb, h200, l4 (static-memory's plan: "
        "meta-llama/Llama-2-7b-hf's KV cache is what the GPU's memory leaves); give a catalogue GPU, one of your own "
        "described under cluster.gpus.NAME (memory_gib, fp16_tflops, memory_bandwidth_gb_s), or the cache's size as "
        "num_kv_blocks")
    _check(*_config(tmp_path, {"latency_model": "linear", "model_spec": LLAMA7, "gpu": "a100-40gb",
                               "num_kv_blocks": 100}))  # (a cache sized by the config: nothing to plan)


@pytest.mark.parametrize(("slot", "block"), [(8, 16), (4096, 8192)])
def test_a_request_slot_shorter_than_a_kv_block_is_named_by_both_keys(tmp_path, slot, block):
    """It planned no block a slot and said '... does not fit on l4 ...: needs ~12.1 GiB per GPU, usable 72.0 GiB'."""
    path, config = _config(tmp_path, {"latency_model": "roofline", "latency": {"model": LLAMA7, "gpu": "a100"},
                                      "kv_block_size": block},
                           settings={"static-memory": {"request_slot_tokens": slot}})
    with pytest.raises(ConfigError) as caught:
        _check(path, config)
    assert str(caught.value) == (
        f"invalid configuration in {path}:\n  plugins.settings.static-memory.request_slot_tokens and "
        f"cluster.models.0.kv_block_size: request_slot_tokens ({slot}) is less than the KV block size ({block}): the "
        "memory plan sizes the KV cache in request slots of whole blocks; give request_slot_tokens of at least one "
        "block (a multiple of it), none (null) for a block-granular cache, or a smaller kv_block_size (static-memory's "
        "plan)")


@pytest.mark.parametrize("plugins", [PLUGINS, [*PLUGINS, "device-memory"]])
def test_a_model_without_room_is_refused_early_when_the_fallback_plans_it(tmp_path, plugins):
    """Without static-memory in plugins.enabled (none, or device-memory: it plans no simulated worker), the core's
    fallback static-memory plans every worker: a model it cannot plan was not checked before the run, which was stored
    as failed with a message naming neither file nor key."""
    deployment = {"latency_model": "roofline", "latency": {"model": "meta-llama/Llama-2-70b-hf", "gpu": "h200"}}
    path, config = _config(tmp_path, deployment, plugins)
    with pytest.raises(ConfigError) as caught:
        _check(path, config)
    assert str(caught.value).startswith(f"invalid configuration in {path}:\n  cluster.models.0: "
                                        "meta-llama/Llama-2-70b-hf does not fit on h200 with tensor_parallel=1")
    assert ("(the plan of static-memory, the fallback memory planner (no enabled plugin plans a simulated worker's "
            "memory), with its default settings: memory_fraction 0.9 of each GPU, less the weights, must hold one "
            "request's KV cache)") in str(caught.value)
    # (a fitting model passes; a planner of the config's own decides: nothing known before the run)
    _check(*_config(tmp_path, {**deployment, "latency": {"model": LLAMA7, "gpu": "h200"}}, plugins))


def test_a_memory_planner_of_the_configs_own_decides_and_nothing_is_planned_before_the_run():
    from sim.run_checks import memory_planner

    config = load_config(None, {"plugins": {"enabled": [*PLUGINS, "my-planner"]}})
    made = []
    assert memory_planner(config, config.plugins.enabled, lambda name: name == "my-planner", made.append) is None
    assert memory_planner(config, [*PLUGINS, "device-memory"], lambda name: "memory" in name, made.append) is None
    assert made == [None]  # (device-memory plans no simulated worker: the fallback's default settings)


def test_a_gpu_the_catalogue_lacks_is_warned_of_with_the_one_probably_meant(tmp_path):
    """Without a model, any GPU name passed: ``gpu: h100-80g`` (a typo) ran with cost '-' and an unlimited KV cache,
    and a price under a typo (``gpu_prices: {h100-80g: 3.0}``) priced nothing; both silently."""
    said: list[str] = []
    path, config = _config(tmp_path, {"latency_model": "linear", "gpu": "h10-80gb"})
    _check(path, config, said)
    assert said == [f"{path}: cluster.models.0.gpu: unknown gpu 'h10-80gb' (did you mean 'h100-80gb'?): neither the "
                    "GPU catalogue (a100-80gb, a10g, cpu, h100-80gb, h200, l4) nor cluster.gpu_prices has it, so the "
                    "run's cost is unknown; give a catalogue GPU, or its price as cluster.gpu_prices.h10-80gb"]
    said.clear()
    config = load_config(path, {"cluster": {"gpu_prices": {"h100-80g": 3.0, "h10-80gb": 2.0}}})
    _check(path, config, said)  # (priced: a GPU of the user's own)
    assert said == [f"{path}: cluster.gpu_prices.h100-80g: unknown gpu (did you mean 'h100-80gb'?), and no model or "
                    "guardian of this config runs on it: the price prices nothing"]
    said.clear()
    _check(*_config(tmp_path, {"latency_model": "linear", "gpu": "H100"}), said)
    assert said == []  # (an alias of the catalogue)


@pytest.mark.parametrize("plugins", [[*PLUGINS, "static-memory"], PLUGINS])
def test_a_library_replay_refuses_a_model_that_does_not_fit_as_the_cli_does(tmp_path, plugins):
    """`sim.replay.replay` ran Llama-2-70B on one H200 (no room for one request's KV cache) on an unlimited cache and
    reported a normal run, the plan's error a plugin error; `sim replay` refused it. Nothing is stored either way."""
    from controlplane.testing import make_trace
    from sim.replay import replay

    db = tmp_path / "r.db"
    _, config = _config(tmp_path, {"latency_model": "roofline",
                                   "latency": {"model": "meta-llama/Llama-2-70b-hf", "gpu": "h200"}}, plugins,
                        storage={"url": f"sqlite:///{db}"})
    with pytest.raises(ConfigError, match=r"^invalid configuration:\n  cluster.models.0: meta-llama/Llama-2-70b-hf does "
                                          r"not fit on h200 with tensor_parallel=1"):
        replay(make_trace(3), config)
    assert not db.exists() or "run" not in _tables(db) or not _runs(db)
    _, config = _config(tmp_path, {"latency_model": "roofline", "latency": {"model": LLAMA7, "gpu": "h200"}}, plugins)
    assert replay(make_trace(3), config, record=False).summary["num_completed"] == 3


def _tables(db) -> set[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}


def _runs(db) -> list:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("select id from run").fetchall()
