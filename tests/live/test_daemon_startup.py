"""What an operator gets when the daemon cannot start: one ``error:`` line naming the cause, exit
code 2, no traceback, and no run recorded or worker started for nothing (a port in use, a database
that cannot be reached, a model directory without a model, a bad ``worker`` key in the file)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from controlplane.errors import ConfigError
from controlplane.live.daemon import listen
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import free_port


def start(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """The daemon's command line, run to its exit (each of these fails before any worker starts)."""
    return subprocess.run([sys.executable, "-m", "controlplane.cli.live", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def assert_one_clear_error(done: subprocess.CompletedProcess, *words: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "recorded in" not in output, output  # the start line comes only once the run is recorded
    assert "Started server process" not in output, output  # nor any uvicorn line: the run starts first
    for word in words:
        assert word in " ".join(output.split()), output


def test_a_port_in_use_is_one_error_and_records_no_run(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = start(tmp_path, "--port", str(port), "--db", f"sqlite:///{tmp_path / 'runs.db'}")
    assert_one_clear_error(done, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert not (tmp_path / "runs.db").exists()  # no run was opened, no worker started


def test_an_unreachable_database_is_one_error(tmp_path):
    url = f"postgresql+psycopg://nobody:hunter2@127.0.0.1:{free_port()}/nothing"
    done = start(tmp_path, "--port", str(free_port()), "--db", url)
    assert_one_clear_error(done, "error: database:", "Connection refused")
    assert "hunter2" not in done.stdout + done.stderr  # the password is never shown (banner, log, error)
    error = next(line for line in done.stderr.splitlines() if line.startswith("error:"))
    assert error.startswith(f"error: database: {url.replace(':hunter2@', ':***@')}: OperationalError: ")  # which one


def test_a_database_url_that_is_not_one_is_one_error(tmp_path):
    done = start(tmp_path, "--port", str(free_port()), "--db", "postgresql:/127.0.0.1/test")  # (a path is a file's)
    assert_one_clear_error(done, "malformed database URL 'postgresql:/127.0.0.1/test'")


def test_a_guardian_the_daemon_cannot_run_is_one_error(tmp_path):
    """A config error found as the run starts (a simulated guardian) came after uvicorn's first line."""
    config = tmp_path / "g.yaml"
    config.write_text("guardians:\n  models:\n    - {name: screen, kind: simulated}\n")
    done = start(tmp_path, "--port", str(free_port()), "-c", str(config), "--db", f"sqlite:///{tmp_path / 'runs.db'}")
    assert_one_clear_error(done, "guardians.models[screen]: kind 'simulated' runs only in the simulator")


def test_a_model_directory_without_a_model_is_one_error(tmp_path):
    (tmp_path / "empty").mkdir()
    done = start(tmp_path, "--port", str(free_port()), "--model-path", "empty", "--db",
                 f"sqlite:///{tmp_path / 'runs.db'}")
    assert_one_clear_error(done, "model empty: cannot read a model config in empty")


def test_a_ray_address_ray_cannot_use_is_one_error(tmp_path):
    """It was the normal start line, then "could not start" every few seconds and /readyz 503."""
    pytest.importorskip("ray")
    address = f"ray://127.0.0.1:{free_port()}"  # no cluster there (and Ray Client needs ray[client])
    done = start(tmp_path, "--pool", "ray", "--ray-address", address, "--port", str(free_port()), "--db",
                 f"sqlite:///{tmp_path / 'runs.db'}")
    assert_one_clear_error(done, f"error: --pool ray --ray-address {address}: could not join the Ray cluster at")
    assert not (tmp_path / "runs.db").exists()  # no run was opened, no worker started


@pytest.mark.parametrize(("plugins", "words"), [
    ("{settings: {queue-limit: {max_queud: 3}}}", ["plugins.settings.queue-limit.max_queud"]),
    ("{enabled: [queue-limt]}", ["queue-limt", "did you mean 'queue-limit'"]),
])
def test_a_bad_plugin_key_is_one_error_before_the_server_starts(tmp_path, plugins, words):
    """It came after uvicorn's "Started server process" line (as a run's start that fails did too)."""
    config = tmp_path / "c.yaml"
    config.write_text(f"plugins: {plugins}\n")
    done = start(tmp_path, "--port", str(free_port()), "-c", str(config), "--db", f"sqlite:///{tmp_path / 'runs.db'}")
    assert_one_clear_error(done, *words)
    assert not (tmp_path / "runs.db").exists()


def test_a_bad_log_level_is_a_usage_error(tmp_path):
    done = start(tmp_path, "--log-level", "verbose")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'verbose' is not one of debug, info," in done.stderr


def test_listen_names_the_address_in_use():
    with listen("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)


@pytest.mark.parametrize(("worker", "key"), [
    ("{preset: tiny-lama}", "cluster.models.0.worker.preset: unknown preset 'tiny-lama'"),
    ("{preset: tiny-llama, precison: fp32}", "cluster.models.0.worker.precison: Extra inputs are not permitted"),
    ("{path: /no/such/model}", "cluster.models.0.worker.path: model path /no/such/model is not a directory"),
    # worker.config: transformers' own check (a traceback from the worker's start), an unknown model type (a line
    # listing ~400), sizes below 1 (-1 layers served a model of none) and what the byte tokenizer needs
    ("{config: {model_type: llama, hidden_size: 65, num_attention_heads: 4}}",
     "cluster.models.0.worker.config: The hidden size (65) is not a multiple of the number of attention heads (4)."),
    ("{config: {model_type: lama}}",
     "cluster.models.0.worker.config.model_type: unknown transformers model type 'lama' (did you mean 'llama'"),
    ("{config: {model_type: llama, num_hidden_layers: -1}}",
     "cluster.models.0.worker.config.num_hidden_layers: -1 is no size: it must be at least 1"),
    ("{config: {model_type: gpt2, n_layer: 0}}", "cluster.models.0.worker.config.n_layer: 0 is no size"),
    ("{config: {model_type: llama, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 3}}",
     "cluster.models.0.worker.config.num_key_value_heads: 3 does not divide num_attention_heads (4)"),
    ("{config: {model_type: llama, vocab_size: 128}}",
     "cluster.models.0.worker.config.vocab_size: 128 is too small: a random-weight model's byte tokenizer needs"),
    ("{config: {model_type: llama, hidden_size: '64'}}",
     "cluster.models.0.worker.config.hidden_size: Field 'hidden_size' expected int, got str"),
    ("{config: {model_type: vit}}", "cluster.models.0.worker.config.model_type: model type 'vit' has no causal"),
    ("{preset: tiny-llama, compile: true, compile_mode: turbo}",
     "cluster.models.0.worker.compile_mode: unknown compile_mode 'turbo'; torch.compile's modes: default, "),
])
def test_a_bad_worker_key_in_the_file_names_the_key_before_anything_starts(tmp_path, worker, key):
    config = tmp_path / "cluster.yaml"
    config.write_text(f"cluster:\n  models:\n    - name: chat\n      worker: {worker}\n")
    with pytest.raises(ConfigError) as err:
        daemon_config(config)
    assert f"invalid configuration in {config}" in str(err.value) and key in str(err.value)
    assert "pydantic" not in str(err.value) and len(str(err.value)) < 300  # (not ~400 model types)


def test_a_worker_config_transformers_refuses_is_one_error_not_a_traceback(tmp_path):
    """The daemon exited 1 with 75 lines of traceback (StrictDataclassClassValidationError, from the model's build)."""
    config = tmp_path / "c.yaml"
    config.write_text("cluster:\n  models:\n    - name: m\n      worker: {config: {model_type: llama, hidden_size: 65, "
                      "num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 512}}\n")
    done = start(tmp_path, "--port", str(free_port()), "-c", str(config), "--db", f"sqlite:///{tmp_path / 'runs.db'}")
    assert_one_clear_error(done, "cluster.models.0.worker.config: The hidden size (65) is not a multiple")
    assert not (tmp_path / "runs.db").exists()


def test_an_unknown_compile_mode_is_one_error_at_the_start_not_workers_failing_again_and_again(tmp_path):
    """compile_mode: turbo loaded; every worker then failed to start ("Unrecognized mode=turbo") and was replaced."""
    config = tmp_path / "c.yaml"
    config.write_text("cluster:\n  models:\n    - name: m\n      worker: {preset: tiny-llama, compile: true, "
                      "compile_mode: turbo}\n")
    done = start(tmp_path, "--port", str(free_port()), "-c", str(config), "--db", f"sqlite:///{tmp_path / 'runs.db'}")
    assert_one_clear_error(done, "cluster.models.0.worker.compile_mode: unknown compile_mode 'turbo'",
                           "reduce-overhead", "max-autotune-no-cudagraphs")
    assert not (tmp_path / "runs.db").exists()


def test_a_bad_flag_names_the_key_without_pydantic_noise():
    with pytest.raises(ConfigError, match="worker.precision: Input should be") as err:
        daemon_config(None, precision="fp64")
    assert "pydantic" not in str(err.value)


def test_a_database_gone_at_the_close_is_logged_not_raised(caplog):
    """The rows went to a spill file: the log names it, the exit code says so (1), no traceback."""
    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.storage.errors import StorageError

    cfg, _ = daemon_config(None, workers=1)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1), record=False)
    close = daemon.driver.close

    async def close_then_fail(**kwargs):
        await close(**kwargs)
        raise StorageError("3 rows could not be written; they were saved to /tmp/spill.jsonl", spill_path=None)

    daemon.driver.close = close_then_fail
    with caplog.at_level("ERROR", logger="controlplane.daemon"), TestClient(daemon.app) as http:
        assert http.get("/healthz").status_code == 200
    assert isinstance(daemon.close_error, StorageError)
    assert any("could not be closed in the database" in r.message and "/tmp/spill.jsonl" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize(("option", "value"), [("--port", "70000"), ("--port", "-1"), ("--request-timeout", "-5"),
                                               ("--drain-timeout", "-1")])
def test_out_of_range_numbers_are_usage_errors(tmp_path, option, value):
    done = start(tmp_path, option, value)
    assert done.returncode == 2 and "Traceback" not in done.stderr and f"'{option}'" in done.stderr


def test_a_second_sigint_stops_without_the_drain_and_a_third_cuts_everything_off():
    """The second answers the clients still waiting (`Daemon.stop_now`, on the loop), the third forces
    the exit; the run is `interrupted` either way (requests were cut off: recorded ``in_flight``)."""
    import signal
    import types

    import uvicorn

    from controlplane.live.daemon import _server_class

    stops: list[str] = []
    loop = types.SimpleNamespace(call_soon_threadsafe=lambda fn, *args: fn(*args))
    server = _server_class()(uvicorn.Config(app=None))
    server._cp_loop = loop
    server.daemon = types.SimpleNamespace(exiting=True, drained_cleanly=True,  # a drain is under way
                                          stop_now=stops.append)
    server.handle_exit(signal.SIGTERM, None)
    assert stops == [] and not server.force_exit  # a second SIGTERM: the drain goes on
    server.handle_exit(signal.SIGINT, None)
    assert stops == ["received SIGINT again"] and not server.force_exit
    server.handle_exit(signal.SIGINT, None)
    assert server.force_exit and server.should_exit and server.daemon.drained_cleanly is False


def test_a_plugin_with_a_hook_typo_is_refused_before_any_worker_starts(monkeypatch):
    """The typo was found only when the run's plugin manager was built, after the guardian workers started."""
    from controlplane import Plugin, hookimpl
    from controlplane import plugin_manager
    from controlplane.errors import PluginError
    from controlplane.live import daemon
    from controlplane.live.daemon import DaemonOptions, serve
    from controlplane.plugin_manager import PluginInfo
    from controlplane.testing import make_config

    class TypoHook(Plugin):
        name = "typo-hook"

        @hookimpl
        def cp_form_batches(self, ctx, worker):
            return None

    found = plugin_manager.discover_plugins()
    monkeypatch.setattr(plugin_manager, "discover_plugins",
                        lambda **_: {**found, "typo-hook": PluginInfo("typo-hook", TypoHook, None, None, None)})
    monkeypatch.setattr(daemon, "Daemon", lambda *_a, **_k: pytest.fail("the daemon was made"))
    config = make_config(plugins={"enabled": ["typo-hook", "continuous-batching"]})
    with pytest.raises(PluginError, match="'cp_form_batches' in plugin 'typo-hook' \\(did you mean 'cp_form_batch'"):
        serve(config, DaemonOptions(port=free_port()))
