"""The Vidur model's network: the default covers the tensor-parallel degree asked for, and an error names the
network setting that has the all-reduce rows."""

from __future__ import annotations

import shutil

import pytest

from sim.latency import IterationShape
from sim.latency.vidur_files import PROFILES_DIR, ProfileNotFoundError, list_vidur_profiles
from sim.latency.vidur_profile import VidurProfileModel


@pytest.mark.parametrize(("gpu", "tp", "network"), [
    ("h100", 8, "h100_dgx"),  # pairwise NVLink has rows for 2 and 4 workers only: TP8 was a ProfileNotFoundError
    ("a100", 8, "a100_dgx"),
    ("h100", 2, "h100_pairwise_nvlink"),  # the default where it has the rows, as before
    ("a100", 4, "a100_pairwise_nvlink"),
])
def test_the_default_network_has_rows_for_the_tensor_parallel_degree(gpu, tp, network):
    m = VidurProfileModel("Qwen/Qwen-72B", gpu, tp, attention="scaled")
    assert m.network == network
    assert m.iteration_s(IterationShape((512,))) > 0


def test_a_named_network_without_the_rows_says_which_network_has_them():
    with pytest.raises(ProfileNotFoundError, match=r"no all_reduce rows for 8 workers .* network='h100_dgx' has them"):
        VidurProfileModel("Qwen/Qwen-72B", "h100", 8, network="h100_pairwise_nvlink", attention="scaled")


def test_listed_degrees_are_the_ones_a_network_has_rows_for(tmp_path):
    bundled = list_vidur_profiles()
    assert bundled[("h100", "Qwen/Qwen-72B")] == [1, 2, 4, 8]  # each one builds (above)
    # a profiles folder without the DGX network profiles: TP8 is not advertised, since it cannot build
    mlp = PROFILES_DIR / "vidur" / "compute" / "h100" / "Qwen" / "Qwen-72B" / "mlp.csv"
    (tmp_path / "vidur" / "compute" / "h100" / "Qwen" / "Qwen-72B").mkdir(parents=True)
    shutil.copy(mlp, tmp_path / "vidur" / "compute" / "h100" / "Qwen" / "Qwen-72B" / "mlp.csv")
    (tmp_path / "vidur" / "network" / "h100_pairwise_nvlink").mkdir(parents=True)
    shutil.copy(PROFILES_DIR / "vidur" / "network" / "h100_pairwise_nvlink" / "all_reduce.csv",
                tmp_path / "vidur" / "network" / "h100_pairwise_nvlink" / "all_reduce.csv")
    assert list_vidur_profiles(tmp_path) == {("h100", "Qwen/Qwen-72B"): [1, 2, 4]}
