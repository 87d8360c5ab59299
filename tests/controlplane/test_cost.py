"""The cost model: GPU-seconds per GPU type priced from `cluster.gpu_prices`, in a run's summary."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.config import load_config
from controlplane.decisions import ScaleDecision
from controlplane.events import WorkerChanged
from controlplane.errors import ConfigError
from controlplane.hardware.cost import DEFAULT_GPU_PRICES, cost_per_1k_requests, gpu_price_per_hour, run_cost
from controlplane.testing import make_trace, replay_with


def test_prices_gpu_seconds_per_type():
    assert run_cost({"a100-80gb": 3600.0, "h100-80gb": 1800.0}) == pytest.approx(
        DEFAULT_GPU_PRICES["a100-80gb"] + DEFAULT_GPU_PRICES["h100-80gb"] / 2)
    assert run_cost({"a100-80gb": 7200.0}, {"a100-80gb": 1.5}) == pytest.approx(3.0)
    assert gpu_price_per_hour("H100", {}) == DEFAULT_GPU_PRICES["h100-80gb"]  # alias of the catalogue name
    assert run_cost({}) == 0.0
    assert cost_per_1k_requests(2.0, 500) == pytest.approx(4.0) and cost_per_1k_requests(1.0, 0) is None


def test_unknown_gpu_and_bad_prices_are_named():
    with pytest.raises(KeyError, match="cluster.gpu_prices.tpu-v9") as caught:
        run_cost({"tpu-v9": 10.0})
    assert str(caught.value).startswith("no price for GPU 'tpu-v9'")  # its message, not a KeyError's quoted repr
    with pytest.raises(ValueError, match="negative GPU-seconds"):
        run_cost({"a100-80gb": -1.0})
    with pytest.raises(ConfigError, match="gpu_prices"):
        load_config(None, {"cluster": {"gpu_prices": {"a100-80gb": -2}}})
    cfg = load_config(None, {"cluster": {"gpu_prices": {"tpu-v9": 9.0}}})
    prices = cfg.cluster.gpu_prices
    assert prices["tpu-v9"] == 9.0 and prices["a100-80gb"] == DEFAULT_GPU_PRICES["a100-80gb"]


class _UpAt5(Plugin):
    """Two replicas from t=5 s on."""

    name = "up-at-5"

    @hookimpl
    def cp_scale(self, ctx, model, workers, scaling):
        return ScaleDecision(model, 2 if ctx.now_s >= 5.0 else 1, "test")


def test_summary_prices_every_replica_from_its_request_including_the_cold_start():
    # One replica of a 2-GPU deployment on h100s, a second requested at 5 s with a 40 s cold start.
    cluster = {"models": [{"name": "default", "replicas": 1, "cold_start_s": 40.0, "gpu": "h100-80gb",
                           "gpus_per_replica": 2}], "gpu_prices": {"h100-80gb": 10.0}}
    res = replay_with(_UpAt5(), trace=make_trace(20, qps=0.5), cluster=cluster)
    s = res.summary
    end = s["sim_end_s"]
    started = [e for e in res.events if type(e) is WorkerChanged and e.kind == "starting"][-1]
    ready = [e for e in res.events
             if type(e) is WorkerChanged and e.kind == "ready" and e.worker_id == started.worker_id]
    assert started.time_s == pytest.approx(5.0) and ready[0].time_s == pytest.approx(45.0)
    # The second replica costs from its request (5 s), through its cold start, to the end.
    assert s["gpu_seconds_by_gpu"] == {"h100-80gb": pytest.approx(2 * end + 2 * (end - 5.0))}
    assert s["gpu_hours"] == pytest.approx(s["gpu_seconds"] / 3600, rel=1e-6)
    assert s["cost_usd"] == pytest.approx(s["gpu_seconds"] / 3600 * 10.0, rel=1e-6)
    assert s["cost_per_1k_requests_usd"] == pytest.approx(s["cost_usd"] * 1000 / 20, rel=1e-6)
    assert s["peak_replicas"] == 2


def test_cold_start_follows_the_configured_load_bandwidth():
    from controlplane.hardware.memory_plan import deployment_cold_start_s

    def cold(**model):
        cfg = load_config(None, {"cluster": {"models": [{"name": "m", "model_spec": "meta-llama/Meta-Llama-3-8B",
                                                          **model}]}})
        return deployment_cold_start_s(cfg.cluster.models[0])

    default, fast = cold(), cold(load_bandwidth_gb_s=8.0)
    assert default > fast > 15.0  # the fixed engine start stays
    assert default - 15.0 == pytest.approx(4 * (fast - 15.0))  # 4x the bandwidth, a quarter of the load time
    assert cold(cold_start_s=7.0, load_bandwidth_gb_s=8.0) == 7.0


def test_guardian_cost_is_added_apart_and_a_gpu_without_a_price_leaves_the_totals_unknown():
    from controlplane.hardware.cost import add_guardian_cost

    summary = {"cost_usd": 10.0, "gpu_hours": 4.0}
    add_guardian_cost(summary, {"h100-80gb": 7200.0})
    assert summary == {"cost_usd": 10.0, "gpu_hours": 4.0, "guardian_held_gpu_seconds": 7200.0,
                       "guardian_gpu_hours": 2.0, "guardian_cost_usd": 8.0, "total_cost_usd": 18.0}
    unpriced = {"cost_usd": 10.0}
    add_guardian_cost(unpriced, {"tpu-v9": 3600.0})
    assert unpriced["guardian_cost_usd"] is None and unpriced["total_cost_usd"] is None
    assert "cluster.gpu_prices.tpu-v9" in unpriced["guardian_cost_error"]


@pytest.mark.parametrize("key", ["h100", "H100", "h100-80gb"])
def test_a_price_under_an_alias_prices_its_gpu(key):
    """``gpu_prices: {h100: 3.0}`` was merged beside the default's ``h100-80gb: 4.0``, whose exact key won every
    lookup: the user's price was silently ignored. Keys are the catalogue's names now, the given price over the
    default's; two prices of one GPU are refused."""
    prices = load_config(None, {"cluster": {"gpu_prices": {key: 3.0}}}).cluster.gpu_prices
    assert prices["h100-80gb"] == 3.0 and "h100" not in prices and "H100" not in prices
    for gpu in ("h100", "h100-80gb", "H100"):
        assert gpu_price_per_hour(gpu, prices) == 3.0
    assert load_config(None, {"cluster": {"gpu_prices": {"A100-80GB": 1.5}}}).cluster.gpu_prices["a100-80gb"] == 1.5
    with pytest.raises(ConfigError, match=r"cluster.gpu_prices: .*'h100' \(3.0\) and 'h100-80gb' \(5.0\) price one "
                                          r"GPU, h100-80gb: give one price"):
        load_config(None, {"cluster": {"gpu_prices": {"h100": 3.0, "h100-80gb": 5.0}}})
    assert load_config(None, {"cluster": {"gpu_prices": {"h100": 3.0, "h100-80gb": 3.0}}}).cluster.gpu_prices[
        "h100-80gb"] == 3.0


def test_gpu_names_the_catalogue_lacks_are_named_with_the_one_probably_meant():
    from controlplane.hardware.cost import unknown_gpu_names

    prices = load_config(None, {"cluster": {"gpu_prices": {"h100-80g": 3.0, "mi300x": 2.0}}}).cluster.gpu_prices
    said = unknown_gpu_names(prices, {"cluster.models.0.gpu": "h10-80gb", "cluster.models.1.gpu": "mi300x",
                                      "cluster.models.2.gpu": "a100"})
    assert said == [
        "cluster.models.0.gpu: unknown gpu 'h10-80gb' (did you mean 'h100-80gb'?): neither the GPU catalogue "
        "(a100-80gb, a10g, cpu, h100-80gb, h200, l4) nor cluster.gpu_prices has it, so the run's cost is unknown; "
        "give a catalogue GPU, or its price as cluster.gpu_prices.h10-80gb",
        "cluster.gpu_prices.h100-80g: unknown gpu (did you mean 'h100-80gb'?), and no model or guardian of this "
        "config runs on it: the price prices nothing"]


def test_a_price_of_a_gpu_of_ones_own_matches_in_any_case_and_a_missing_one_names_the_price_meant():
    """``gpu: l40s`` with ``gpu_prices: {L40S: 1.8}`` was 'no price for GPU l40s', while the catalogue's GPUs match in
    any case (``H100``): a GPU of one's own does too, and two prices of it in two cases are refused."""
    from controlplane.hardware.cost import unknown_gpu_names

    prices = load_config(None, {"cluster": {"gpu_prices": {"L40S": 1.8, "l40s-48gb": 1.9}}}).cluster.gpu_prices
    assert gpu_price_per_hour("l40s", prices) == 1.8 and gpu_price_per_hour("L40s", prices) == 1.8
    assert run_cost({"l40s": 3600.0}, prices) == pytest.approx(1.8)
    assert unknown_gpu_names(prices, {"cluster.models.0.gpu": "l40s"}) == [
        "cluster.gpu_prices.l40s-48gb: unknown gpu, and no model or guardian of this config runs on it: the price "
        "prices nothing"]
    with pytest.raises(KeyError, match=r"no price for GPU 'l40' \(did you mean 'L40S'"):
        gpu_price_per_hour("l40", prices)
    with pytest.raises(ConfigError, match=r"'L40S' \(1.8\) and 'l40s' \(1.9\) price one GPU"):
        load_config(None, {"cluster": {"gpu_prices": {"L40S": 1.8, "l40s": 1.9}}})
