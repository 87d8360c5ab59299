"""Shared fixtures: small random-weight models built locally (no downloads), one torch thread.

One intra-op thread keeps timings sane on a shared 2-core machine (two OpenMP threads competing
with another busy process can make each step ~100x slower) and the tests deterministic.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from controlplane.live.backend import CausalLMBackend  # noqa: E402
from controlplane.live.model_source import WorkerModelSettings, load_model  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_settings() -> WorkerModelSettings:
    return WorkerModelSettings(preset="tiny-llama", precision="fp32", device="cpu", max_seq_len=256)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_settings):
    return load_model(tiny_settings)


@pytest.fixture()
def engine(tiny_loaded) -> CausalLMBackend:
    """A fresh engine over the shared fp32 model (engines hold no weights of their own)."""
    return CausalLMBackend(tiny_loaded, max_seq_len=256)
