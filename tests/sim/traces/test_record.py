import dataclasses

import pytest

from sim.traces import TraceRequest
from sim.traces.record import freeze, new_basic, new_hashed, params_from_mapping, thaw, with_arrival


def test_fast_constructors_equal_the_dataclass_constructor():
    assert new_basic("7", 1.5, 10, 2) == TraceRequest("7", 1.5, 10, 2)
    assert new_hashed("7", 1.5, 10, 2, (1, 2), 512) == TraceRequest("7", 1.5, 10, 2, hash_ids=(1, 2), hash_block_tokens=512)
    full = TraceRequest("x", 2.0, 5, 6, model="m", tenant="t", priority=3, prompt="hi",
                        hash_ids=(9,), hash_block_tokens=16, params=(("temperature", 0.5),))
    moved = with_arrival(full, 4.0, "x.r1")
    assert moved == dataclasses.replace(full, arrival_s=4.0, request_id="x.r1")
    assert type(moved) is TraceRequest


def test_record_is_frozen_and_slotted():
    r = new_basic("0", 0.0, 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.arrival_s = 3.0  # type: ignore[misc]
    assert not hasattr(r, "__dict__")
    assert [f.name for f in dataclasses.fields(TraceRequest)] == [
        "request_id", "arrival_s", "prompt_tokens", "output_tokens", "model", "tenant", "priority",
        "prompt", "hash_ids", "hash_block_tokens", "params"]


def test_params_are_sorted_hashable_pairs_and_round_trip():
    params = {"temperature": 0.7, "stop": ["\n", "###"], "logit_bias": {"50256": -100}}
    pairs = params_from_mapping(params)
    assert [k for k, _ in pairs] == ["logit_bias", "stop", "temperature"]
    r = TraceRequest("0", 0.0, 1, 1, params=pairs)
    hash(r)  # nested lists/dicts were frozen
    assert {k: thaw(v) for k, v in r.params} == params
    assert freeze([1, [2]]) == (1, (2,))
