"""fp8 weights: a precision of the catalogue (1 byte a weight, a 16-bit KV cache), so a deployment may name it and a
`measured` profile timed in it sizes the memory plan as fp8; a profile precision the catalogue lacks is refused
rather than sized as fp16."""

from __future__ import annotations

import re

import pytest

from controlplane.errors import ConfigError
from controlplane.hardware.memory_plan import plan_replica_memory, weights_bytes_per_gpu
from controlplane.hardware.specs import get_precision
from tests.controlplane.hardware.test_deployment_fit import _deployment, _profile

LLAMA3_8B = "meta-llama/Meta-Llama-3-8B"


def test_fp8_weights_take_one_byte_and_the_kv_cache_stays_16_bit():
    fp8 = get_precision("fp8")
    assert (fp8.bytes_per_weight, fp8.kv_bytes_per_element) == (1.0, 2.0)
    assert weights_bytes_per_gpu(LLAMA3_8B, "fp8") * 2 == weights_bytes_per_gpu(LLAMA3_8B, "fp16")
    assert (plan_replica_memory(LLAMA3_8B, "l4", precision="fp8").num_kv_blocks
            > plan_replica_memory(LLAMA3_8B, "l4", precision="fp16").num_kv_blocks)
    assert _deployment(precision="fp8", model_spec=LLAMA3_8B, gpu="l4").precision == "fp8"  # was 'unknown precision'


def test_a_profile_timed_in_fp8_sizes_the_deployment_in_fp8_and_refuses_int8(tmp_path):
    """It made the deployment fp16 (the field's default), silently: 15 GiB of weights planned for an 8B in fp8."""
    path = _profile(tmp_path / "fp8.json", precision="fp8")
    measured = {"latency_model": "measured", "latency": {"path": str(path)}}
    assert _deployment(**measured).precision == "fp8"
    assert _deployment(**measured, precision="fp8").precision == "fp8"
    with pytest.raises(ConfigError, match=re.escape(f"the measured profile {path}'s precision (fp8) and precision "
                                                    "(int8) disagree")):
        _deployment(**measured, precision="int8")  # (one size, but timed in another format)


def test_a_profile_precision_the_catalogue_lacks_is_refused_where_the_deployment_gives_none(tmp_path):
    path = _profile(tmp_path / "fp4.json", precision="fp4")
    measured = {"latency_model": "measured", "latency": {"path": str(path)}}
    with pytest.raises(ConfigError, match=re.escape(
            f"the measured profile {path}'s precision (fp4) is not a precision the catalogue knows (bf16, fp16, "
            "fp32, fp8, int8, nf4): the memory plan and cold start cannot size the weights in it; give the precision")):
        _deployment(**measured)
    assert _deployment(**measured, precision="nf4").precision == "nf4"  # (sized as the config says)
