import pytest

from sim.traces import BUNDLED_TRACES, bundled_trace_path


def test_bundled_trace_ships_with_license_and_credit():
    path = bundled_trace_path()
    assert path == bundled_trace_path("azure_code")
    assert path.is_file() and path.name == "AzureLLMInferenceTrace_code.csv"
    assert (path.parent / "LICENSE.CC-BY-4.0.txt").is_file()
    readme = (path.parent / "README.md").read_text()
    for needle in ("Azure/AzurePublicDataset", "b469a11", "CC-BY-4.0", "Splitwise", "ISCA"):
        assert needle in readme
    assert set(BUNDLED_TRACES) == {"azure_code"}


def test_unknown_bundled_name():
    with pytest.raises(ValueError, match="unknown bundled trace 'sharegpt'; valid names: azure_code"):
        bundled_trace_path("sharegpt")
