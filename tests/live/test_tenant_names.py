"""Tenant names lose surrounding spaces live as they do in traces: in the body's ``user``, in
``controlplane keys new|hash`` and in the config's ``auth.api_keys``; a blank one is no tenant (``user``) or
refused (a key's)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import keys
from controlplane.config import ApiKey
from controlplane.live.daemon_requests import ChatCompletionRequest, CompletionRequest
from controlplane.testing import make_config
from tests.live.daemon_process import tiny_live_config

DIGEST = "a" * 64


def test_the_bodys_user_loses_surrounding_spaces_and_a_blank_one_is_no_tenant():
    """``"user": " team-a "`` was stored and quota-checked as ' team-a ', so it fell under ``default``'s quota."""
    assert CompletionRequest(prompt="hi", user=" team-a ").sampling_kwargs()["tenant"] == "team-a"
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], user="\tteam-a\n")
    assert chat.user == "team-a" and chat.sampling_kwargs()["tenant"] == "team-a"
    assert CompletionRequest(prompt="hi", user="   ").user is None
    assert CompletionRequest(prompt="hi", user="a b").user == "a b"  # inner spaces are the name's


def test_a_key_files_tenant_loses_surrounding_spaces_and_a_blank_one_is_refused():
    assert ApiKey(sha256=DIGEST, tenant=" team-a ").tenant == "team-a"
    cfg = make_config(auth={"api_keys": [{"sha256": DIGEST, "tenant": "  team-b"}]})
    assert cfg.auth.api_keys[0].tenant == "team-b"
    with pytest.raises(ValueError):
        ApiKey(sha256=DIGEST, tenant="   ")


@pytest.mark.parametrize("command", [["new", " team-a "], ["hash", " team-a ", "--key", "k"]])
def test_keys_prints_the_tenant_without_its_surrounding_spaces(command):
    done = CliRunner().invoke(keys.app, command)
    assert done.exit_code == 0, done.output
    assert "tenant: team-a}" in done.output, done.output


def test_the_librarys_tenant_loses_surrounding_spaces_too(tmp_path):
    """`LiveDriver.submit(tenant=" team-a ")` kept the spaces the API and the traces strip."""
    import asyncio

    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import stored_rows

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    cfg = tiny_live_config(db)

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            for rid, tenant in (("a", " team-a "), ("b", "   ")):
                assert (await driver.generate([5] * 4, max_tokens=2, request_id=rid, tenant=tenant)).ok
        finally:
            await driver.close()
        return driver.run_id

    run_id = asyncio.run(main())
    assert {r["request_id"]: r["tenant"] for r in stored_rows(db, run_id, "requests")} == {"a": "team-a", "b": None}
