"""Whether a device a setting names exists here (checked at a run's start)."""

from __future__ import annotations

import pytest
import torch

from controlplane.hardware.devices import check_device


def test_cpu_is_always_here_and_an_unknown_name_is_refused():
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="not a device torch knows"):
        check_device("gpu0")


def test_cuda_is_refused_without_a_cuda_device_and_past_the_last_one():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        with pytest.raises(ValueError, match="no CUDA device is available on this machine"):
            check_device("cuda")
    else:
        assert check_device("cuda") == "cuda"
    with pytest.raises(ValueError, match="no CUDA device|CUDA device\\(s\\)"):
        check_device(f"cuda:{count}")
