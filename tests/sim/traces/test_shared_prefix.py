"""The multi-tenant shared-prefix workload generator."""

from __future__ import annotations

import pytest

from sim.traces import read_trace
from sim.traces.shared_prefix import SharedPrefixWorkload, main, shared_prefix_trace


def test_tenants_share_their_system_prompt_blocks_and_nothing_else():
    trace = shared_prefix_trace(num_requests=200, num_tenants=4, system_prompt_tokens=100, hash_block_tokens=16,
                                question_tokens=(10, 40), seed=3)
    sys_blocks = 100 // 16
    by_tenant: dict[str, set] = {}
    own = []
    for r in trace:
        assert len(r.hash_ids) == -(-r.prompt_tokens // 16) and r.hash_block_tokens == 16
        assert 110 <= r.prompt_tokens <= 140
        by_tenant.setdefault(r.tenant, set()).add(r.hash_ids[:sys_blocks])
        own.extend(r.hash_ids[sys_blocks:])
    assert len(by_tenant) == 4 and all(len(v) == 1 for v in by_tenant.values())  # one prefix per tenant
    assert len({next(iter(v)) for v in by_tenant.values()}) == 4  # different tenants, different prefixes
    assert len(own) == len(set(own))  # question blocks are never shared
    arrivals = [r.arrival_s for r in trace]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0


def test_deterministic_for_a_seed_and_skew_makes_hot_tenants():
    a = shared_prefix_trace(num_requests=500, seed=1, tenant_skew=1.5, num_tenants=16)
    assert a == shared_prefix_trace(num_requests=500, seed=1, tenant_skew=1.5, num_tenants=16)
    hot = sum(r.tenant == "tenant-0" for r in a)
    uniform = sum(r.tenant == "tenant-0" for r in shared_prefix_trace(num_requests=500, seed=1, num_tenants=16))
    assert hot > 3 * uniform


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="qps"):
        SharedPrefixWorkload(qps=0)
    with pytest.raises(ValueError, match="question_tokens"):
        SharedPrefixWorkload(question_tokens=(10, 5))


def test_the_command_writes_a_canonical_trace(tmp_path, capsys):
    out = tmp_path / "sp.jsonl"
    assert main([str(out), "--requests", "50", "--tenants", "3", "--system-prompt-tokens", "64"]) == 0
    back = list(read_trace(out, "canonical"))
    assert len(back) == 50 and {r.tenant for r in back} <= {"tenant-0", "tenant-1", "tenant-2"}
    assert back[0].hash_ids == shared_prefix_trace(num_requests=50, num_tenants=3, system_prompt_tokens=64)[0].hash_ids


@pytest.mark.parametrize("name", ["sp.jsonl.xz", "sp.csv.bz2"])
def test_the_command_compresses_as_the_output_name_says(tmp_path, name):
    out = tmp_path / name
    assert main([str(out), "--requests", "20", "--tenants", "2"]) == 0
    assert len(list(read_trace(out, "canonical"))) == 20


def test_the_command_refuses_an_output_compression_no_reader_reads(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "sp.jsonl.zst"), "--requests", "20"])
    assert exit_.value.code == 2 and "does not write .zst files" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
