"""A command whose optional extra is not installed (`controlplane.extras`) says which to install in one line,
exit 2: `daemon`, `live-replay` and `profile` without the `live` extra crashed with a 41-line traceback ending
``No module named 'torch'``. The missing module is simulated (``sys.modules[NAME] = None`` in a fresh process):
the test environment has every extra installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from controlplane.extras import extra_needed, install_hint

#: Runs the CLI in a process where the modules named by argv[1] (comma-separated) cannot be imported.
WITHOUT = textwrap.dedent("""
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None
    sys.argv = ["controlplane", *sys.argv[2:]]
    from controlplane.cli import main
    main()
""")


def _without(modules: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("missing", ["torch", "transformers"])
@pytest.mark.parametrize("command", [["daemon", "--db", "d.db"], ["live-replay", "--limit", "3", "--db", "l.db"],
                                     ["profile", "--preset", "tiny-llama"]])
def test_a_live_command_without_the_live_extra_names_the_install_in_one_line(tmp_path, command, missing):
    proc = _without(missing, *command, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: `controlplane {command[0]}` needs torch and transformers: pip install 'controlplane[live]' "
        "(`pip install torch==2.13.0` first for torch's CPU build)"]
    assert not list(tmp_path.iterdir())  # (refused before any database was made)


def test_another_module_of_the_extra_is_named_and_one_of_no_extra_is_raised_as_it_is():
    with pytest.raises(ValueError, match=r"^`x` needs torch and transformers \(fastapi is missing\): pip install "
                                         r"'controlplane\[live\]'"):
        with extra_needed("x", "live", "torch and transformers"):
            raise ModuleNotFoundError("No module named 'fastapi.routing'", name="fastapi.routing")
    with pytest.raises(ModuleNotFoundError, match="my_module"):
        with extra_needed("x", "live", "torch and transformers"):
            raise ModuleNotFoundError("No module named 'my_module'", name="my_module")


def test_install_hint_names_the_extra():
    assert install_hint("postgres") == "pip install 'controlplane[postgres]'"


def test_a_postgresql_url_without_psycopg_names_the_postgres_extra(tmp_path):
    proc = _without("psycopg", "sim", "replay", "--db", "postgresql+psycopg://u@127.0.0.1:1/d", "--limit", "5",
                    "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unknown or uninstalled database driver in URL 'postgresql+psycopg://u@127.0.0.1:1/d': import of "
        "psycopg halted; None in sys.modules (pip install 'controlplane[postgres]')")


def test_a_redis_store_without_redis_names_the_redis_extra(monkeypatch):
    from plugins.cache_backends import RedisStore

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"^backend: redis needs the Redis client: pip install "
                                          r"'controlplane\[redis\]'$"):
        RedisStore()


def test_the_semantic_index_without_faiss_names_the_semantic_extra(monkeypatch):
    from plugins.semantic_cache_index import VectorIndex

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"^the semantic cache's index needs faiss: pip install "
                                          r"'controlplane\[semantic\]'$"):
        VectorIndex(8)


def test_a_replay_with_a_redis_backed_cache_without_redis_says_so_in_one_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("plugins:\n  enabled: [queue-limit, exact-cache, least-loaded, continuous-batching, "
                      "fixed-replicas, static-memory, builtin-latency-models]\n"
                      "  settings:\n    exact-cache: {backend: redis}\n")
    proc = _without("redis", "sim", "replay", "-c", str(config), "--db", "r.db", "--limit", "5", "--no-progress",
                    cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == ("error: plugin 'exact-cache' failed to start: ImportError: "
                                                    "backend: redis needs the Redis client: pip install "
                                                    "'controlplane[redis]'")
