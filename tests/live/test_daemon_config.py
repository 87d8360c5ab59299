"""The daemon's run config: `with_request_deadline` bounds the admitted work by the request timeout
(queue-limit's max_finish_s), and a daemon under a burst it cannot serve in time refuses the excess
with 429 and retry-after instead of letting it time out."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from controlplane.errors import ConfigError
from controlplane.live.daemon_config import FINISH_SHARE, daemon_config, with_request_deadline
from tests.live.daemon_process import DaemonProcess


def _queue_limit(cfg):
    return cfg.plugins.settings.get("queue-limit") or {}


def test_the_request_timeout_sets_queue_limits_max_finish_s(tmp_path):
    cfg, _ = daemon_config(None, workers=1)
    assert "max_finish_s" not in _queue_limit(cfg)  # the run config (and the simulator) leave it off
    assert _queue_limit(with_request_deadline(cfg, 30))["max_finish_s"] == FINISH_SHARE * 30
    assert with_request_deadline(cfg, None) is cfg  # no timeout: nothing to bound by


def test_a_config_that_sets_it_or_leaves_queue_limit_out_is_kept(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("plugins:\n  settings:\n    queue-limit: {max_finish_s: null, max_queued: 9}\n")
    cfg, _ = daemon_config(own, workers=1)
    assert _queue_limit(with_request_deadline(cfg, 30)) == {"max_finish_s": None, "max_queued": 9}
    other = tmp_path / "other.yaml"
    other.write_text("plugins:\n  enabled: [least-loaded, continuous-batching, fixed-replicas]\n")
    cfg, _ = daemon_config(other, workers=1)
    assert with_request_deadline(cfg, 30) is cfg


async def _burst(base: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as c:
        return await asyncio.gather(*(
            c.post(f"{base}/v1/completions", json={"model": "tiny-llama", "prompt": f"burst {i}", "max_tokens": 8,
                                                   "ignore_eos": True})
            for i in range(n)))


def test_a_burst_beyond_what_can_finish_in_time_is_refused_at_once(tmp_path):
    """4 batch slots, nothing timed yet: 4 requests run, the rest get 429 with retry-after, none 504."""
    config = tmp_path / "small.yaml"
    config.write_text("cluster:\n  models:\n    - {max_num_seqs: 4}\n")
    daemon = DaemonProcess(tmp_path, ["--pool", "thread", "--workers", "1", "--config", str(config),
                                      "--db", f"sqlite:///{tmp_path / 'cp.db'}", "--request-timeout", "30"])
    try:
        daemon.wait_ready()
        answers = asyncio.run(_burst(daemon.base, 24))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {200, 429}, codes
        assert codes.count(200) >= 4, codes
        refused = [r for r in answers if r.status_code == 429]
        assert refused, codes
        for r in refused:
            assert r.json()["error"]["code"] == "admission_denied"
            assert "overloaded" in r.json()["error"]["message"]
            assert int(r.headers["retry-after"]) >= 1
        # once iterations were timed, a lone request is admitted and served
        assert asyncio.run(_burst(daemon.base, 1))[0].status_code == 200
    finally:
        daemon.stop()


def test_a_cpu_worker_is_costed_as_a_cpu_unless_the_config_names_its_gpu(tmp_path):
    """A live run on a CPU worker was priced as an A100 (the deployment's default `gpu`): $2.50 an hour where
    `gpu_prices` has cpu at $0.05."""
    from controlplane.live.daemon_config import device_gpu
    from controlplane.live.placement import cuda_device_count

    assert device_gpu("cpu") == "cpu"
    cfg, overrides = daemon_config(None, workers=1)
    if cuda_device_count() == 0:  # (this machine: the worker runs on the CPU)
        assert cfg.cluster.models[0].gpu == "cpu" and overrides["cluster"]["models"][0]["gpu"] == "cpu"
    named = tmp_path / "named.yaml"
    named.write_text("cluster:\n  models:\n    - {name: m, gpu: h100-80gb, worker: {preset: tiny-llama, device: cpu}}\n"
                     "    - {name: n, worker: {preset: tiny-llama, device: cpu}}\n")
    cfg, _ = daemon_config(named)
    assert [d.gpu for d in cfg.cluster.models] == ["h100-80gb", "cpu"]


def test_the_environment_outranks_the_files_cluster_keys_as_in_load_config(tmp_path, monkeypatch):
    """The daemon passed the file's whole ``cluster`` back as an override (to price the device), so
    ``CONTROLPLANE_CLUSTER__MAX_RETRIES=0`` (docs/daemon.md's own example) was ignored: 2 from the file."""
    from controlplane.config import load_config

    path = tmp_path / "mr.yaml"
    path.write_text("cluster:\n  max_retries: 2\n  models:\n    - {name: chat, replicas: 1, worker: {preset: tiny-llama}}\n")
    monkeypatch.setenv("CONTROLPLANE_CLUSTER__MAX_RETRIES", "0")
    for flags in ({}, {"workers": 2}):
        cfg, overrides = daemon_config(path, **flags)
        assert cfg.cluster.max_retries == load_config(path).cluster.max_retries == 0
        assert set(overrides.get("cluster", {})) <= {"models"}  # a reload re-reads the rest from the file


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_model_name_is_refused_not_ignored(name):
    with pytest.raises(ConfigError, match="--model-name is empty"):
        daemon_config(None, model_name=name)


def test_max_model_len_is_the_workers_context_where_that_is_smaller(tmp_path, caplog):
    """The core refuses a prompt + max_tokens beyond max_model_len (400 too_long); a worker
    holding less would cut the answer short (a 200 with finish_reason length) instead."""
    conf = tmp_path / "msl.yaml"
    conf.write_text(
        "cluster:\n  models:\n"
        "    - {name: chat, replicas: 1, max_model_len: 4096, worker: {preset: tiny-llama, max_seq_len: 1000}}\n"
        "    - {name: open, replicas: 1, worker: {preset: tiny-llama, max_seq_len: 700}}\n"
        "    - {name: short, replicas: 1, max_model_len: 500, worker: {preset: tiny-llama}}\n")
    with caplog.at_level("WARNING"):
        cfg, _ = daemon_config(conf)
    assert {m.name: m.max_model_len for m in cfg.cluster.models} == {"chat": 1000, "open": 700, "short": 500}
    assert [r.getMessage() for r in caplog.records] == [
        "cluster.models[chat]: max_model_len 4096 is above the worker's max_seq_len 1000: lowered to 1000 "
        "(raise worker.max_seq_len to serve longer requests)"]


def test_the_deployments_precision_is_its_workers(tmp_path, caplog):
    """A config's worker section alone said int8: the run stored the deployment's default fp16, and `runs
    compare` named it. The deployment's precision is now its worker's in every case (`auto` when unset)."""
    conf = tmp_path / "p.yaml"
    conf.write_text(
        "cluster:\n  models:\n"
        "    - {name: q, replicas: 1, worker: {preset: tiny-llama, precision: int8}}\n"
        "    - {name: same, replicas: 1, precision: bf16, worker: {preset: tiny-llama, precision: bf16}}\n"
        "    - {name: plain, replicas: 1, worker: {preset: tiny-llama}}\n")
    cfg, _ = daemon_config(conf)
    assert {m.name: m.precision for m in cfg.cluster.models} == {"q": "int8", "same": "bf16", "plain": "auto"}
    one = tmp_path / "one.yaml"
    one.write_text("cluster:\n  models:\n    - {name: q, precision: fp16, worker: {preset: tiny-llama, "
                   "precision: int8}}\n")
    (m,) = daemon_config(one, precision="nf4")[0].cluster.models  # the flag sets both
    assert (m.precision, m.worker["precision"]) == ("nf4", "nf4")
    assert daemon_config(None, precision="int8")[0].cluster.models[0].precision == "int8"
    with caplog.at_level("WARNING"):
        sim = tmp_path / "sim.yaml"
        sim.write_text("cluster:\n  models:\n    - {name: s, precision: int8, worker: {preset: tiny-llama}}\n")
        assert daemon_config(sim)[0].cluster.models[0].precision == "auto"
    assert "precision int8 is not what its workers run" in caplog.text and "set worker.precision: int8" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # (fp8: simulated only; the warning told to set what workers then refuse)
        sim.write_text("cluster:\n  models:\n    - {name: s, precision: fp8, worker: {preset: tiny-llama}}\n")
        assert daemon_config(sim)[0].cluster.models[0].precision == "auto"
    assert "live workers do not load fp8 (they load fp32, bf16, fp16, int8, nf4)" in caplog.text
    assert "set worker.precision: fp8" not in caplog.text


def test_a_deployment_precision_that_contradicts_the_workers_is_refused_naming_both(tmp_path):
    conf = tmp_path / "p.yaml"
    conf.write_text("cluster:\n  models:\n    - {name: q, precision: fp16, worker: {preset: tiny-llama, "
                    "precision: int8}}\n")
    with pytest.raises(ConfigError) as err:
        daemon_config(conf)
    assert ("cluster.models.0.precision (fp16) and cluster.models.0.worker.precision (int8) disagree"
            in str(err.value)) and str(conf) in str(err.value)


@pytest.mark.parametrize("name, gpu", [("NVIDIA L40S", None), ("NVIDIA L4", "l4"), ("NVIDIA H100 80GB HBM3", "h100-80gb"),
                                       ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA A10G", "a10g")])
def test_a_cuda_device_is_costed_as_the_gpu_its_name_names_as_a_word(monkeypatch, name, gpu):
    """An L40S was costed as an L4 ('l4' is in 'nvidia l40s'): device names are read by whole words, as a
    profile's device is."""
    import torch

    import controlplane.live.daemon_config as dc

    import controlplane.hardware.specs as specs

    monkeypatch.setattr(dc, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
    # (GPUs of one's own an earlier config of this process declared, an "l40s" among them, are found first)
    monkeypatch.setattr(specs, "own_specs", lambda kind: {})
    assert dc.device_gpu("cuda:0") == gpu
