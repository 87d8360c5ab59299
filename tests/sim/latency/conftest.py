"""Shared fixtures: fitted models are cached per session (fitting takes ~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

ANCHORS = Path("/work/shared/anchors/vidur")


@pytest.fixture(scope="session")
def vidur70b():
    from sim.latency.vidur_profile import VidurProfileModel

    return VidurProfileModel("meta-llama/Llama-2-70b-hf", "a100", 2, "a100_pairwise_nvlink")


@pytest.fixture(scope="session")
def anchors_dir() -> Path:
    if not ANCHORS.exists():
        pytest.skip("Vidur anchor runs not available")
    return ANCHORS
